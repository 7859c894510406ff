//! `sinew gateway`: the HTTP edge, run from a `gateway.toml`: a reverse
//! proxy in place of an nginx upstream block. SIGHUP reloads the file
//! (a refused file leaves the running configuration); SIGINT or SIGTERM
//! stops it, letting requests in flight finish.

use crate::error::CliError;
use sinew::gateway::{Config, Gateway};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The configuration file (TOML: [server], [upstreams.NAME], [[routes]];
    /// see the README's gateway section).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of the file's [server] listen (repeatable).
    #[arg(long = "listen", value_name = "HOST:PORT")]
    listen: Vec<SocketAddr>,
    /// Threads serving requests (default: one per core). nginx's
    /// worker_processes, within one process.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Check the file and exit: 0 if it would run.
    #[arg(long)]
    check: bool,
}

impl Args {
    /// The threads the runtime should have, if the command says.
    pub(crate) fn workers(&self) -> Option<usize> {
        self.workers.filter(|&workers| workers > 0)
    }
}

fn read(path: &Path, listen: &[SocketAddr]) -> Result<Config, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| CliError::usage(format!("cannot read {}: {error}", path.display())))?;
    let mut config = Config::from_toml(&text)
        .map_err(|error| CliError::usage(format!("{}: {error}", path.display())))?;
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    Ok(config)
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let config = read(&args.config, &args.listen)?;
    if args.check {
        println!(
            "{}: {} upstream groups, {} routes: ok",
            args.config.display(),
            config.upstreams.len(),
            config.routes.len()
        );
        return Ok(());
    }
    if config.server.listen.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no [server] listen address, and no --listen was given",
            args.config.display()
        )));
    }
    let gateway = Gateway::new(config.clone())
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    let mut listeners = Vec::new();
    for address in &config.server.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| CliError::failure(format!("cannot listen on {address}: {error}")))?;
        println!("listening on http://{}", listener.local_addr()?);
        listeners.push(listener);
    }
    println!(
        "{} upstream groups, {} routes; SIGHUP reloads {}, Ctrl-C stops",
        config.upstreams.len(),
        config.routes.len(),
        args.config.display()
    );
    let _ = std::io::stdout().flush();
    let serving = futures_util::future::join_all(listeners.into_iter().map(|listener| {
        let gateway = gateway.clone();
        async move { gateway.serve(listener).await }
    }));
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let signals = async {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let reloaded = match read(&args.config, &args.listen) {
                        Ok(config) => gateway.reload(config).await.map_err(|error| error.to_string()),
                        Err(error) => Err(error.message()),
                    };
                    match reloaded {
                        Ok(()) => println!("reloaded {}", args.config.display()),
                        Err(error) => eprintln!("reload refused, the running configuration stays: {error}"),
                    }
                    let _ = std::io::stdout().flush();
                }
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
            }
        }
        gateway.shutdown();
    };
    let (results, ()) = tokio::join!(serving, signals);
    for result in results {
        result?;
    }
    println!("stopped");
    Ok(())
}
