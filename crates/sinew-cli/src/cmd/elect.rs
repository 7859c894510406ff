//! `sinew elect NAME VALUE`: stands in an election of the shared-state
//! store and leads until Ctrl-C (then resigns) or until leadership is lost;
//! `sinew elect NAME --observe` prints each leader as it changes.

use super::state::StoreArgs;
use crate::error::CliError;
use sinew::state::Election;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The election's name.
    name: String,
    /// The value to lead with (what observers see: an address, a name).
    #[arg(required_unless_present = "observe")]
    value: Option<String>,
    /// Print the leader and each change of it, instead of standing.
    #[arg(long, conflicts_with = "value")]
    observe: bool,
    /// How long a leader that dies goes on leading before another is
    /// elected.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::time::parse_duration)]
    ttl: Duration,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let election = Election::new(args.store.connect()?, &args.name).with_ttl(args.ttl);
    let mut out = std::io::stdout();
    let Some(value) = args.value else {
        let mut observer = election.observe();
        loop {
            let next = tokio::select! {
                next = observer.next() => next,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match next {
                Ok(Some(leader)) => writeln!(
                    out,
                    "leader: {} (term {})",
                    String::from_utf8_lossy(&leader.value),
                    leader.term.0
                )?,
                Ok(None) => writeln!(out, "no leader")?,
                Err(status) => {
                    eprintln!(
                        "the store cannot be reached ({}); trying again",
                        status.message()
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            out.flush()?;
        }
    };
    writeln!(out, "campaigning in {} as {value}", args.name)?;
    out.flush()?;
    let leadership = tokio::select! {
        won = election.campaign(value.clone()) => won.map_err(|status| CliError::failure(format!("the campaign failed: {}", status.message())))?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    writeln!(
        out,
        "leading {} as {value} (term {})",
        args.name,
        leadership.fencing_token().0
    )?;
    out.flush()?;
    let mut lost = leadership.lost();
    tokio::select! {
        reason = lost.wait() => Err(CliError::failure(format!("leadership lost: {reason}"))),
        _ = tokio::signal::ctrl_c() => {
            leadership.resign().await.map_err(|status| CliError::failure(status.message().to_owned()))?;
            writeln!(out, "resigned")?;
            Ok(())
        }
    }
}
