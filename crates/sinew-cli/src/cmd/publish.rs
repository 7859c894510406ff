//! `sinew pub`: publishes a message (or several) to a broker.

use crate::error::CliError;
use sinew::messaging::{Broker, Message, Subject};
use std::io::Read;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The broker's address (`sinew broker`, or any server offering one).
    address: String,
    /// The subject: tokens separated by dots, no wildcard.
    subject: String,
    /// The payload; read from standard input if absent.
    payload: Option<String>,
    /// A header as NAME=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Publish it this many times, then wait until the broker has
    /// delivered them all.
    #[arg(long, default_value_t = 1)]
    count: u64,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let subject =
        Subject::new(&args.subject).map_err(|error| CliError::usage(error.to_string()))?;
    let payload = match args.payload {
        Some(payload) => payload.into_bytes(),
        None => {
            let mut payload = Vec::new();
            std::io::stdin().read_to_end(&mut payload)?;
            payload
        }
    };
    let mut message = Message::new(subject, payload);
    for header in &args.headers {
        let (name, value) = header
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("header {header:?} is not NAME=VALUE")))?;
        message = message.with_header(name, value);
    }
    let broker = Broker::connect(&args.address).await?;
    for _ in 0..args.count {
        broker.publish_message(message.clone()).await?;
    }
    broker.flush().await?;
    println!("published {} to {}", args.count, args.subject);
    Ok(())
}
