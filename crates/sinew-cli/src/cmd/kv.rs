//! `sinew kv`: read, write and watch keys of the shared-state store (etcd,
//! or a `sinew state`).

use super::state::StoreArgs;
use crate::error::CliError;
use futures_util::StreamExt;
use sinew::state::Kv;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a key's value (nothing and exit code 1 if it is not set), or
    /// with --prefix every KEY=VALUE under it.
    Get {
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Read from the member reached alone (may be stale) instead of
        /// linearizably.
        #[arg(long)]
        serializable: bool,
    },
    /// Set a key; prints the revision of the write.
    Put { key: String, value: String },
    /// Delete a key, or with --prefix every key under it; prints how many.
    Delete {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// Print the keys under a prefix, then each change (`put KEY=VALUE`,
    /// `delete KEY`) until Ctrl-C.
    Watch { prefix: String },
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn failed(status: sinew::Status) -> CliError {
    CliError::failure(format!("{:?}: {}", status.code(), status.message()))
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let kv = Kv::new(args.store.connect()?);
    let mut out = std::io::stdout();
    match args.command {
        Command::Get {
            key,
            prefix,
            serializable,
        } => {
            let kv = if serializable { kv.serializable() } else { kv };
            if prefix {
                let (kvs, _) = kv.list(&key).await.map_err(failed)?;
                for kv in kvs {
                    writeln!(out, "{}={}", text(&kv.key), text(&kv.value))?;
                }
                return Ok(());
            }
            match kv.get(&key).await.map_err(failed)? {
                Some(kv) => writeln!(out, "{}", text(&kv.value))?,
                None => return Err(CliError::failure(format!("{key} is not set"))),
            }
        }
        Command::Put { key, value } => {
            let revision = kv.put(&key, &value).await.map_err(failed)?;
            writeln!(out, "revision {revision}")?;
        }
        Command::Delete { key, prefix } => {
            let deleted = if prefix {
                kv.delete_prefix(&key).await.map_err(failed)?
            } else {
                i64::from(kv.delete(&key).await.map_err(failed)?)
            };
            writeln!(out, "deleted {deleted}")?;
        }
        Command::Watch { prefix } => {
            let mut follower = kv.follow(&prefix);
            let mut known = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
            let mut first = true;
            loop {
                let next = tokio::select! {
                    next = follower.next() => next,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                let Some(next) = next else { return Ok(()) };
                let snapshot = match next {
                    Ok(snapshot) => snapshot,
                    Err(status) => {
                        eprintln!(
                            "the store cannot be reached ({}); trying again",
                            status.message()
                        );
                        continue;
                    }
                };
                for (key, value) in &snapshot.entries {
                    if known.get(key) != Some(value) {
                        let verb = if first { "" } else { "put " };
                        writeln!(out, "{verb}{}={}", text(key), text(value))?;
                    }
                }
                for key in known.keys() {
                    if !snapshot.entries.contains_key(key) {
                        writeln!(out, "delete {}", text(key))?;
                    }
                }
                if first {
                    writeln!(out, "(revision {}; watching)", snapshot.revision)?;
                }
                out.flush()?;
                first = false;
                known = snapshot.entries;
            }
        }
    }
    Ok(())
}
