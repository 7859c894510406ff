//! One module per verb of the `sinew` command, plus the options calls share.

pub(crate) mod bench;
pub(crate) mod broker;
pub(crate) mod call;
pub(crate) mod certs;
pub(crate) mod dashboard;
pub(crate) mod demo;
pub(crate) mod demo_election;
pub(crate) mod demo_tasks;
pub(crate) mod describe;
pub(crate) mod elect;
pub(crate) mod gateway;
pub(crate) mod kv;
pub(crate) mod list;
pub(crate) mod lock;
pub(crate) mod members;
pub(crate) mod publish;
pub(crate) mod queue;
pub(crate) mod security;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod subscribe;
pub(crate) mod top;

use crate::error::CliError;
use sinew::Request;

/// Serves `telemetry`'s admin endpoint on `address`, when one was asked
/// for, and says where it listens.
pub(crate) async fn serve_admin(
    telemetry: &sinew::telemetry::Telemetry,
    address: Option<std::net::SocketAddr>,
) -> Result<Option<sinew::telemetry::AdminServer>, CliError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let admin = telemetry.serve_admin(address).await.map_err(|error| {
        CliError::failure(format!(
            "cannot serve the admin endpoint on {address}: {error}"
        ))
    })?;
    println!(
        "admin endpoint on http://{} (/metrics /healthz /readyz)",
        admin.local_addr()
    );
    Ok(Some(admin))
}

/// Options of every command that makes calls.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct CallOptions {
    /// Request metadata as KEY=VALUE (repeatable). For keys ending in -bin the
    /// bytes of VALUE are sent as they are.
    #[arg(short = 'H', long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Time allowed for each call: a number and a unit, us, ms, s or m (250us,
    /// 500ms, 1.5s, 2m; a bare number is refused). Sent to the server, which
    /// enforces it too.
    #[arg(long, value_name = "DURATION", value_parser = crate::time::parse_duration)]
    deadline: Option<std::time::Duration>,
    /// A gRPC service config (JSON, as grpc-go and grpc-java take it) applied
    /// to the calls: per-method timeouts, retries (retryPolicy, with
    /// backoff, pushback and retryThrottling), hedging (hedgingPolicy),
    /// message size limits.
    #[arg(long, value_name = "FILE")]
    service_config: Option<std::path::PathBuf>,
}

impl CallOptions {
    /// `channel`, with the service config applied if one was given.
    pub(crate) fn channel(&self, channel: sinew::Channel) -> Result<sinew::Channel, CliError> {
        let Some(path) = &self.service_config else {
            return Ok(channel);
        };
        let config = sinew::resilience::ServiceConfig::from_file(path)
            .map_err(|error| CliError::usage(error.to_string()))?;
        let layer = sinew::resilience::ServiceConfigLayer::new(config);
        Ok(sinew::Channel::from_service(tower::Layer::layer(
            &layer, channel,
        )))
    }

    /// A request carrying the metadata and deadline.
    pub(crate) fn request<T>(&self, message: T) -> Result<Request<T>, CliError> {
        let mut request = Request::new(message);
        for pair in &self.metadata {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| CliError::usage(format!("metadata {pair:?} is not KEY=VALUE")))?;
            let result = if key.ends_with("-bin") {
                request
                    .metadata_mut()
                    .insert_bin(key, value.as_bytes().to_vec())
            } else {
                request.metadata_mut().append(key, value)
            };
            result.map_err(|error| CliError::usage(error.to_string()))?;
        }
        if let Some(deadline) = self.deadline {
            request.set_timeout(deadline);
        }
        Ok(request)
    }
}
