//! `sinew members`: the members of a gossip cluster and what each publishes,
//! or what is registered in etcd, and each service's endpoints as a client
//! sees them.

use crate::error::{CliError, ExitCode};
use crate::time::format_duration;
use sinew::cluster::balance::Health;
use sinew::cluster::gossip::MemberReport;
use sinew::cluster::name::gossip::Target;
use sinew::cluster::Balanced;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sinew members gossip://127.0.0.1:7946\n  sinew members gossip://127.0.0.1:7946?cluster=prod --wait 3s\n  sinew members etcd://127.0.0.1:2379"
)]
pub(crate) struct Args {
    /// A member of the cluster, as gossip://HOST:PORT (more seeds after commas;
    /// ?cluster=NAME for a cluster other than sinew), or an etcd registry, as
    /// etcd://HOST:PORT (more members after commas; ?prefix=PREFIX for a key
    /// prefix other than /sinew/endpoints/).
    target: String,
    /// How long to gossip before reporting (the cluster's state arrives in the
    /// first rounds; endpoints are connected meanwhile).
    #[arg(long, value_name = "DURATION", default_value = "1500ms", value_parser = crate::time::parse_duration)]
    wait: Duration,
}

/// An observer member of the gossip cluster at `target`
/// (`gossip://HOST:PORT[,HOST:PORT][?cluster=NAME]`).
pub(crate) async fn observe(target: &str) -> Result<sinew::cluster::gossip::Member, CliError> {
    let target =
        Target::parse(target).map_err(|status| CliError::usage(status.message().to_owned()))?;
    target
        .observe()
        .await
        .map_err(|status| CliError::new(ExitCode::Unreachable, status.message().to_owned()))
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    if args.target.starts_with("etcd://") {
        return run_etcd(args).await;
    }
    let target = Target::parse(&args.target)
        .map_err(|status| CliError::usage(status.message().to_owned()))?;
    let observer = observe(&args.target).await?;
    let started = Instant::now();
    // Half the wait to learn the services, the rest to connect to them.
    tokio::time::sleep(args.wait / 2).await;
    let channels = connected(
        observer.resolver(),
        observer.services(),
        started + args.wait,
    )
    .await;
    // Observers come and go with the clients (each `sinew call` by name is
    // one); those gone are not worth a line each.
    let (members, departed): (Vec<MemberReport>, Vec<MemberReport>) = observer
        .members()
        .await
        .into_iter()
        .filter(|member| member.name != observer.name())
        .partition(|member| member.live || member.role != "observer");
    if members.is_empty() {
        return Err(CliError::new(
            ExitCode::Unreachable,
            format!(
                "no member of cluster {} answered at {} within {}",
                target.cluster,
                target.seeds.join(", "),
                format_duration(args.wait)
            ),
        ));
    }
    println!("cluster {}: {} members", target.cluster, members.len());
    print!("{}", members_table(&members));
    if !departed.is_empty() {
        println!("  (and {} observers gone)", departed.len());
    }
    print_channels(&channels);
    Ok(())
}

/// `sinew members etcd://...`: what is registered, and each service's
/// endpoints as a client sees them.
async fn run_etcd(args: Args) -> Result<(), CliError> {
    let target = sinew::cluster::name::etcd::Target::parse(&args.target)
        .map_err(|status| CliError::usage(status.message().to_owned()))?;
    let started = Instant::now();
    let unreachable =
        |status: sinew::Status| CliError::new(ExitCode::Unreachable, status.message().to_owned());
    let registry = target.registry().map_err(unreachable)?;
    let registered = registry.registered().await.map_err(unreachable)?;
    println!(
        "etcd at {} under {}: {} endpoints registered",
        target.members.join(","),
        target.prefix,
        registered.len()
    );
    let mut services = std::collections::BTreeSet::new();
    for (address, served) in &registered {
        println!("  {:<28} {}", address.to_string(), served.join(", "));
        services.extend(served.iter().cloned());
    }
    let channels = connected(registry.resolver(), services, started + args.wait).await;
    print_channels(&channels);
    Ok(())
}

/// A balanced channel to each of `services`, given until `deadline` to
/// connect its endpoints.
async fn connected(
    resolver: impl sinew::cluster::Resolve + Clone,
    services: impl IntoIterator<Item = String>,
    deadline: Instant,
) -> Vec<Balanced> {
    let channels: Vec<Balanced> = services
        .into_iter()
        .map(|service| Balanced::builder(resolver.clone(), service).build())
        .collect();
    while Instant::now() < deadline && channels.iter().any(still_connecting) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    channels
}

/// Each channel's endpoints: health, calls in flight, latency, last error.
fn print_channels(channels: &[Balanced]) {
    for channel in channels {
        println!();
        println!("{} (as this client sees it):", channel.service());
        for report in channel.endpoints() {
            let mut state = report.health.to_string();
            if !report.serving {
                state.push_str(", not serving");
            }
            if report.ejected {
                state.push_str(", ejected");
            }
            if report.on_probation {
                state.push_str(", on probation");
            }
            let error = report
                .last_error
                .map(|status| format!("  last error: {}", status.message()))
                .unwrap_or_default();
            println!(
                "  {:<28} {:<22} in flight {:<4} latency {}{error}",
                report.endpoint.address().to_string(),
                state,
                report.in_flight,
                format_duration(report.rtt_estimate),
            );
        }
    }
}

/// Whether a channel has yet to hear of its endpoints or to connect one.
fn still_connecting(channel: &Balanced) -> bool {
    let endpoints = channel.endpoints();
    endpoints.is_empty()
        || endpoints
            .iter()
            .any(|report| report.health == Health::Connecting)
}

/// One line per member: name, state, role, zone, gossip address, then what
/// it publishes.
fn members_table(members: &[MemberReport]) -> String {
    let width = members
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "  {:<width$}  {:<7}  {:<8}  {:<6}  {:<21}  PUBLISHES\n",
        "NAME", "STATE", "ROLE", "ZONE", "GOSSIP"
    );
    for member in members {
        let state = match (member.live, member.leaving) {
            (_, true) => "leaving",
            (true, false) => "live",
            (false, false) => "dead",
        };
        let publishes: Vec<String> = member
            .endpoints
            .iter()
            .map(|(address, services)| format!("{address} ({})", services.join(", ")))
            .collect();
        out.push_str(&format!(
            "  {:<width$}  {:<7}  {:<8}  {:<6}  {:<21}  {}\n",
            member.name,
            state,
            member.role,
            member.zone.as_deref().unwrap_or("-"),
            member.gossip_address.to_string(),
            if publishes.is_empty() {
                "-".to_owned()
            } else {
                publishes.join("; ")
            }
        ));
    }
    out
}
