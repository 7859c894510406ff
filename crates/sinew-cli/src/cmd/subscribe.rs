//! `sinew sub`: prints the messages published to subjects a filter
//! matches.

use crate::error::CliError;
use sinew::messaging::{Broker, SlowConsumer, SubscribeOptions};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The broker's address (`sinew broker`, or any server offering one).
    address: String,
    /// What to listen to: tokens separated by dots, `*` for any one token,
    /// a final `>` for the rest (`orders.*.created`, `orders.>`).
    filter: String,
    /// Join this queue group: each message goes to one of its members.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Messages the broker buffers for this subscriber.
    #[arg(long, default_value_t = sinew::messaging::broker::DEFAULT_CAPACITY)]
    capacity: usize,
    /// When the buffer is full: make publishers wait (backpressure), drop
    /// the oldest message (drop-oldest), or end this subscription
    /// (disconnect).
    #[arg(long, default_value = "backpressure", value_parser = ["backpressure", "drop-oldest", "disconnect"])]
    slow_consumer: String,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let policy = match args.slow_consumer.as_str() {
        "drop-oldest" => SlowConsumer::DropOldest,
        "disconnect" => SlowConsumer::Disconnect,
        _ => SlowConsumer::Backpressure,
    };
    let options = SubscribeOptions::default()
        .capacity(args.capacity)
        .slow_consumer(policy);
    let broker = Broker::connect(&args.address).await?;
    let mut subscription = broker
        .subscribe_with(&args.filter, args.group.as_deref(), options)
        .await?;
    println!("subscribed to {}", args.filter);
    let _ = std::io::stdout().flush();
    let mut received = 0;
    while args.count.is_none_or(|count| received < count) {
        let Some(message) = subscription.next_message().await else {
            break;
        };
        received += 1;
        let mut line = format!("{}", message.subject);
        for (name, value) in &message.headers {
            line.push_str(&format!(" {name}={value}"));
        }
        line.push_str(": ");
        line.push_str(&String::from_utf8_lossy(&message.payload));
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
    if subscription.disconnected() {
        return Err(CliError::failure(format!(
            "disconnected as a slow consumer after {received} messages ({} dropped)",
            subscription.dropped()
        )));
    }
    if let Some(error) = subscription.error() {
        return Err(CliError::failure(format!(
            "the subscription ended after {received} messages: {error}"
        )));
    }
    Ok(())
}
