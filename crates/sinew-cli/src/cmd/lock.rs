//! `sinew lock NAME -- COMMAND`: runs a command while holding a lock of the
//! shared-state store; the command gets the lock's fencing token in
//! `SINEW_FENCING_TOKEN`, and is stopped (SIGTERM, then SIGKILL after a
//! tenth of the TTL, before another holder can have the lock) if the lock is
//! lost. Work outside the machine it guards should still check the token.

use super::state::StoreArgs;
use crate::error::CliError;
use sinew::state::Lock;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The lock's name.
    name: String,
    /// How long the lock outlives a holder that dies without releasing it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    ttl: Duration,
    /// The command to run while holding the lock, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let lock = Lock::new(args.store.connect()?, &args.name).with_ttl(args.ttl);
    let guard = tokio::select! {
        guard = lock.acquire() => guard.map_err(|status| CliError::failure(format!("cannot take the lock: {}", status.message())))?,
        _ = tokio::signal::ctrl_c() => return Err(CliError::failure("interrupted while waiting for the lock")),
    };
    let token = guard.fencing_token().0;
    eprintln!("holding lock {} (fencing token {token})", args.name);
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("SINEW_FENCING_TOKEN", token.to_string())
        .spawn()
        .map_err(|error| CliError::failure(format!("cannot run {}: {error}", args.command[0])))?;
    let mut lost = guard.lost();
    let outcome = tokio::select! {
        status = child.wait() => Ok(status?),
        reason = lost.wait() => Err(format!("the lock was lost ({reason}): stopping the command")),
        _ = tokio::signal::ctrl_c() => Err("interrupted: stopping the command".to_owned()),
    };
    match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            eprintln!("released lock {}", args.name);
            if status.success() {
                Ok(())
            } else {
                Err(CliError::failure(format!(
                    "{} ended: {status}",
                    args.command[0]
                )))
            }
        }
        Err(why) => {
            eprintln!("{why}");
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            // SIGKILL within the lease's margin: before another holder can
            // have the lock.
            let grace = (args.ttl / 10).max(Duration::from_millis(100));
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), guard.release()).await;
            Err(CliError::failure(why))
        }
    }
}
