//! A service config kept in a file: put in force at once, again whenever
//! the file changes; a bad edit changes nothing; following stops when its
//! guard is dropped; a file that is not there is an error at once.

mod support;

use sinew_resilience::{ConfigHandle, ServiceConfig};
use std::path::Path;
use std::time::Duration;
use support::{config, timeout, until};

fn write(path: &Path, timeout: &str) {
    // Written aside and renamed in, as operators should.
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, config(timeout)).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_file_is_put_in_force_when_it_changes_and_a_bad_edit_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("sinew-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("service_config.json");
    write(&path, "1s");
    let handle = ConfigHandle::new(ServiceConfig::new());
    let followed = handle
        .follow_file(&path, Duration::from_millis(20))
        .unwrap();
    assert_eq!(
        timeout(&handle),
        Some(Duration::from_secs(1)),
        "in force at once"
    );

    write(&path, "2.5s");
    until(&handle, Some(Duration::from_millis(2500))).await;

    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(timeout(&handle), Some(Duration::from_millis(2500)), "kept");

    write(&path, "3s");
    until(&handle, Some(Duration::from_secs(3))).await;

    // Dropped: no longer followed.
    drop(followed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&path, "4s");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(timeout(&handle), Some(Duration::from_secs(3)));

    let missing = handle.follow_file(dir.join("missing.json"), Duration::from_millis(20));
    assert!(missing.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
