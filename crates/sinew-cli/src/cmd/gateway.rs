//! `sinew gateway`: the HTTP edge, run from a `gateway.toml`: a reverse
//! proxy in place of an nginx upstream block. SIGHUP reloads the file
//! (a refused file leaves the running configuration); SIGINT or SIGTERM
//! stops it, letting requests in flight finish. `sinew gateway
//! import-nginx nginx.conf` writes the gateway.toml of an nginx
//! configuration and says what it could not convert.

use crate::error::CliError;
use sinew::gateway::{Config, Gateway};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// The configuration file (TOML: a server table, upstreams.NAME
    /// tables, routes; see the README's gateway section).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here instead of the file's server listen addresses
    /// (repeatable).
    #[arg(long = "listen", value_name = "HOST:PORT")]
    listen: Vec<SocketAddr>,
    /// Threads serving requests (default: one per core). nginx's
    /// worker_processes, within one process.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Check the file and exit: 0 if it would run.
    #[arg(long)]
    check: bool,
    /// Serve the admin endpoint on this address (HTTP: /metrics with every
    /// upstream server's figures, /healthz, /readyz).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<SocketAddr>,
}

#[derive(clap::Subcommand, Debug)]
enum GatewayCommand {
    /// Convert an nginx configuration (upstream, server, location,
    /// proxy_pass, proxy_next_upstream, proxy_*_timeout, keepalive,
    /// limit_req, ...) into a gateway.toml, printed or written with -o;
    /// what could not be converted is listed on stderr.
    ImportNginx {
        /// The nginx configuration file.
        file: PathBuf,
        /// Write the gateway.toml here instead of printing it.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

impl Args {
    /// The threads the runtime should have, if the command says.
    pub(crate) fn workers(&self) -> Option<usize> {
        self.workers.filter(|&workers| workers > 0)
    }
}

fn read(path: &Path, listen: &[SocketAddr]) -> Result<Config, CliError> {
    let mut config = Config::from_file(path).map_err(|error| CliError::usage(error.to_string()))?;
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    Ok(config)
}

/// `sinew gateway import-nginx`.
fn import_nginx(file: &Path, output: Option<&Path>) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| CliError::usage(format!("cannot read {}: {error}", file.display())))?;
    let imported = sinew::gateway::nginx::import(&text)
        .map_err(|error| CliError::usage(format!("{}: {error}", file.display())))?;
    match output {
        Some(path) => std::fs::write(path, &imported.toml).map_err(|error| {
            CliError::failure(format!("cannot write {}: {error}", path.display()))
        })?,
        None => print!("{}", imported.toml),
    }
    if imported.notes.is_empty() {
        eprintln!("{}: every directive converted", file.display());
    } else {
        eprintln!(
            "{}: {} things not converted as they are:",
            file.display(),
            imported.notes.len()
        );
        for note in &imported.notes {
            eprintln!("  {note}");
        }
    }
    Ok(())
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    if let Some(GatewayCommand::ImportNginx { file, output }) = &args.command {
        return import_nginx(file, output.as_deref());
    }
    let Some(path) = args.config.clone() else {
        return Err(CliError::usage(
            "sinew gateway needs --config FILE (or: sinew gateway import-nginx nginx.conf)",
        ));
    };
    let config = read(&path, &args.listen)?;
    if args.check {
        println!(
            "{}: {} upstream groups, {} services, {} routes: ok",
            path.display(),
            config.upstreams.len(),
            config.services.len(),
            config.routes.len()
        );
        return Ok(());
    }
    if config.server.listen.is_empty() && config.server.tls_listen.is_empty() {
        return Err(CliError::usage(format!(
            "{} has no [server] listen or tls_listen address, and no --listen was given",
            path.display()
        )));
    }
    let gateway = Gateway::with_connector(config.clone(), sinew::gateway_connector())
        .await
        .map_err(|error| CliError::failure(error.to_string()))?;
    let telemetry = sinew::telemetry::Telemetry::new();
    telemetry.watch_gateway("gateway", &gateway);
    let mut listeners = Vec::new();
    let plain = config.server.listen.iter().map(|address| (address, false));
    let secure = config
        .server
        .tls_listen
        .iter()
        .map(|address| (address, true));
    for (address, tls) in plain.chain(secure) {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| CliError::failure(format!("cannot listen on {address}: {error}")))?;
        let scheme = if tls { "https" } else { "http" };
        println!("listening on {scheme}://{}", listener.local_addr()?);
        listeners.push((listener, tls));
    }
    println!(
        "{} upstream groups, {} services, {} routes; SIGHUP reloads {}, Ctrl-C stops",
        config.upstreams.len(),
        config.services.len(),
        config.routes.len(),
        path.display()
    );
    let admin = super::serve_admin(&telemetry, args.admin).await?;
    telemetry.readiness().set_ready();
    let _ = std::io::stdout().flush();
    let serving = futures_util::future::join_all(listeners.into_iter().map(|(listener, tls)| {
        let gateway = gateway.clone();
        async move {
            if tls {
                gateway.serve_tls(listener).await
            } else {
                gateway.serve(listener).await
            }
        }
    }));
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let signals = async {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let reloaded = match read(&path, &args.listen) {
                        Ok(config) => gateway.reload(config).await.map_err(|error| error.to_string()),
                        Err(error) => Err(error.message()),
                    };
                    match reloaded {
                        Ok(()) => println!("reloaded {}", path.display()),
                        Err(error) => eprintln!("reload refused, the running configuration stays: {error}"),
                    }
                    if let Err(error) = gateway.reload_tls() {
                        eprintln!("certificate reload refused, the one in use stays: {error}");
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
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    for result in results {
        result?;
    }
    println!("stopped");
    Ok(())
}
