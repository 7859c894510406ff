//! `sinew queue`: a broker's durable work queues from the command line:
//! declare one, push a job, work on jobs, and see every queue's figures.

use crate::error::CliError;
use sinew::messaging::{Broker, Job, QueueConfig};
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create a queue, or change its settings.
    Declare {
        /// The broker's address.
        address: String,
        /// The queue's name (tokens separated by dots).
        queue: String,
        /// How long a delivered job is leased before it is delivered again.
        #[arg(long, default_value = "30s", value_parser = crate::time::parse_duration)]
        ack_wait: Duration,
        /// Deliveries at most, then the job moves to the dead-letter queue.
        #[arg(long, default_value_t = sinew::messaging::work::DEFAULT_MAX_DELIVERIES)]
        max_deliveries: u32,
        /// The dead-letter queue (default QUEUE.dead).
        #[arg(long)]
        dead_letter: Option<String>,
        /// Jobs held at most.
        #[arg(long, default_value_t = sinew::messaging::work::DEFAULT_MAX_JOBS)]
        max_jobs: u64,
    },
    /// Push a job (the queue must exist).
    Push {
        /// The broker's address.
        address: String,
        /// The queue.
        queue: String,
        /// The payload.
        payload: String,
        /// An idempotency id: a second push with it within the duplicate
        /// window is dropped.
        #[arg(long)]
        id: Option<String>,
        /// An ordering key: a key's jobs go out one at a time, in order.
        #[arg(long)]
        key: Option<String>,
    },
    /// Work on jobs: print each, wait --work, ack it.
    Work {
        /// The broker's address.
        address: String,
        /// The queue.
        queue: String,
        /// Stop after this many jobs.
        #[arg(long)]
        count: Option<u64>,
        /// How long each job takes.
        #[arg(long, default_value = "0s", value_parser = crate::time::parse_duration)]
        work: Duration,
        /// Jobs held unsettled at most.
        #[arg(long, default_value_t = 1)]
        max_in_flight: usize,
    },
    /// Every queue's figures.
    Stats {
        /// The broker's address.
        address: String,
    },
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    match args.action {
        Action::Declare {
            address,
            queue,
            ack_wait,
            max_deliveries,
            dead_letter,
            max_jobs,
        } => {
            let mut config = QueueConfig::default()
                .ack_wait(ack_wait)
                .max_deliveries(max_deliveries)
                .max_jobs(max_jobs);
            if let Some(dead_letter) = dead_letter {
                config = config.dead_letter(dead_letter);
            }
            let broker = Broker::connect(&address).await?;
            let queue = broker.work_queue(&queue, config).await?;
            println!(
                "queue {} ready (dead letters to {})",
                queue.name(),
                queue.config().dead_letter_of(queue.name())
            );
        }
        Action::Push {
            address,
            queue,
            payload,
            id,
            key,
        } => {
            let broker = Broker::connect(&address).await?;
            let queue = broker.open_queue(&queue).await?;
            let mut job = Job::new(payload);
            if let Some(id) = id {
                job = job.id(id);
            }
            if let Some(key) = key {
                job = job.key(key);
            }
            let pushed = queue.push(job).await?;
            if pushed.duplicate {
                println!("duplicate of job {}: dropped", pushed.sequence);
            } else {
                println!("pushed job {}", pushed.sequence);
            }
        }
        Action::Work {
            address,
            queue,
            count,
            work,
            max_in_flight,
        } => {
            let broker = Broker::connect(&address).await?;
            let queue = broker.open_queue(&queue).await?;
            let mut worker = queue.pull(max_in_flight).await?;
            let mut done = 0;
            while count.is_none_or(|count| done < count) {
                let Some(job) = worker.next_job().await else {
                    let why = worker
                        .error()
                        .map_or_else(|| "the broker is gone".to_owned(), ToString::to_string);
                    return Err(CliError::failure(format!(
                        "the deliveries ended after {done} jobs: {why}"
                    )));
                };
                println!(
                    "job {} (delivery {}): {}",
                    job.sequence(),
                    job.attempt(),
                    String::from_utf8_lossy(job.payload())
                );
                let _ = std::io::stdout().flush();
                tokio::time::sleep(work).await;
                job.ack().await?;
                done += 1;
            }
        }
        Action::Stats { address } => {
            let broker = Broker::connect(&address).await?;
            let stats = broker.stats().await?;
            println!(
                "published {}  delivered {}  subscriptions {}  buffered {}  slow consumers {}",
                stats.published,
                stats.delivered,
                stats.subscriptions,
                stats.buffered,
                stats.slow_consumers
            );
            println!(
                "{:<24} {:>8} {:>9} {:>7} {:>8} {:>8} {:>11} {:>5} {:>7}",
                "QUEUE",
                "PENDING",
                "IN FLIGHT",
                "DELAYED",
                "PUSHED",
                "ACKED",
                "REDELIVERED",
                "DEAD",
                "WORKERS"
            );
            for queue in stats.queues {
                println!(
                    "{:<24} {:>8} {:>9} {:>7} {:>8} {:>8} {:>11} {:>5} {:>7}",
                    queue.queue,
                    queue.pending,
                    queue.in_flight,
                    queue.delayed,
                    queue.pushed,
                    queue.acked,
                    queue.redelivered,
                    queue.dead_lettered,
                    queue.workers
                );
            }
        }
    }
    Ok(())
}
