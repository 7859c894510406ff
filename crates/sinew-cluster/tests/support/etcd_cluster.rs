//! A real etcd cluster on loopback for tests: members of Debian's `etcd`
//! (3.4, installed by scripts/install-peers.sh) on free ports, data in a
//! temporary directory, killed and removed on drop. Shared by the tests that
//! need one (`#[path]`-included).

#![allow(dead_code)]

use sinew_cluster::etcd::Etcd;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real etcd cluster on loopback; members killed on drop, data removed.
pub(crate) struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdCluster {
    /// `size` members, started and answering.
    pub(crate) async fn start(size: usize) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!(
            "sinew-etcd-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster.until_healthy().await;
        cluster
    }

    pub(crate) fn start_member(&mut self, i: usize) {
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", member.name))).unwrap();
        let process = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "sinew-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd runs (scripts/install-peers.sh installs Debian's etcd-server)");
        self.members[i].process = Some(process);
    }

    /// SIGKILL.
    pub(crate) fn kill_member(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill().unwrap();
            process.wait().unwrap();
        }
    }

    pub(crate) fn client_address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub(crate) fn client_addresses(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_address(i))
            .collect()
    }

    /// Waits until a linearizable read succeeds through every running member.
    pub(crate) async fn until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                continue;
            }
            let etcd = Etcd::connect([self.client_address(i)]).unwrap();
            loop {
                match etcd.get_prefix(b"/health-probe/").await {
                    Ok(_) => break,
                    Err(status) => {
                        assert!(
                            Instant::now() < deadline,
                            "etcd member {i} not healthy: {status}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
