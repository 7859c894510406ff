//! `sinew call`: call any method with JSON, print the response as JSON.

use super::CallOptions;
use crate::error::CliError;
use crate::schema;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use std::path::PathBuf;
use tokio::io::AsyncBufReadExt;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
sinew call tcp://127.0.0.1:7000 grpc.examples.echo.Echo/UnaryEcho '{\"message\":\"hi\"}'\n  \
sinew call tcp://127.0.0.1:7000 grpc.examples.echo.Echo/ServerStreamingEcho '{\"message\":\"tick\"}' -H x-repeat=3\n  \
printf '{\"message\":\"a\"}\\n{\"message\":\"b\"}\\n' | sinew call unix:///tmp/sinew.sock grpc.examples.echo.Echo/ClientStreamingEcho")]
pub(crate) struct Args {
    /// Server address: tcp://HOST:PORT, unix:///PATH or shm:///PATH (sinew), or
    /// grpc://HOST:PORT, grpc+unix:///PATH (any gRPC server).
    address: String,
    /// Method to call: package.Service/Method.
    method: String,
    /// The request as JSON, for methods that take one request (default {}).
    /// Client-streaming and bidirectional methods read one JSON message per line
    /// from stdin instead; responses of streaming methods are printed one per line.
    json: Option<String>,
    /// Take the schema from this .proto file instead of asking the server.
    #[arg(long, value_name = "FILE")]
    proto: Option<PathBuf>,
    #[command(flatten)]
    options: CallOptions,
    #[command(flatten)]
    security: super::security::ClientSecurity,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let schema::ResolvedMethod {
        channel,
        method,
        path,
    } = schema::resolve_method(
        &args.address,
        &args.method,
        args.proto.as_deref(),
        &args.security,
    )
    .await?;
    let channel = args.options.channel(channel)?;
    let output = method.output();
    let decoder = schema::decoder(output.clone());
    let client = sinew::Client::new(channel);
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, server_streaming) => {
            let message =
                schema::parse_message(&method.input(), args.json.as_deref().unwrap_or("{}"))?;
            let request = args.options.request(message)?;
            if server_streaming {
                let mut responses = client
                    .server_streaming_with(path, request, decoder)
                    .await?
                    .into_inner();
                while let Some(response) = responses.message().await? {
                    println!("{}", schema::to_json(&response, false));
                }
            } else {
                let response = client.unary_with(path, request, &decoder).await?;
                println!("{}", schema::to_json(response.get_ref(), true));
            }
        }
        (true, server_streaming) => {
            if args.json.is_some() {
                return Err(CliError::usage(format!(
                    "{} takes a stream of requests: give them as JSON lines on stdin, not as an argument",
                    method.full_name()
                )));
            }
            let (requests, input_error) = stdin_messages(method.input());
            let request = args.options.request(requests)?;
            let call = async {
                if server_streaming {
                    let mut responses = client
                        .bidirectional_with(path, request, decoder)
                        .await?
                        .into_inner();
                    while let Some(response) = responses.message().await? {
                        println!("{}", schema::to_json(&response, false));
                    }
                } else {
                    let response = client
                        .client_streaming_with(path, request, &decoder)
                        .await?;
                    println!("{}", schema::to_json(response.get_ref(), true));
                }
                Ok::<(), CliError>(())
            };
            // A line that does not parse cancels the call (dropping it resets the
            // stream): the server never sees a stream cut short as if complete.
            tokio::select! {
                result = call => result?,
                error = input_error => return Err(error),
            }
        }
    }
    Ok(())
}

/// Messages parsed from stdin, one JSON message per non-empty line, as a stream
/// that ends at end of input; and a future that resolves with the first line that
/// does not parse (it never resolves if every line parses).
fn stdin_messages(
    descriptor: MessageDescriptor,
) -> (
    tokio_stream::wrappers::ReceiverStream<DynamicMessage>,
    impl std::future::Future<Output = CliError>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let (error_sender, error_receiver) = tokio::sync::oneshot::channel::<CliError>();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut number = 0;
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return, // end of input: the request stream ends
                Err(error) => {
                    let _ = error_sender.send(CliError::failure(format!("reading stdin: {error}")));
                    std::future::pending::<()>().await;
                    return;
                }
            };
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            match schema::parse_message(&descriptor, &line) {
                Ok(message) => {
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let error = CliError::new(
                        error.exit_code(),
                        format!("stdin line {number}: {}", error.message()),
                    );
                    let _ = error_sender.send(error);
                    // Keep the request stream open: the call is cancelled, not ended.
                    let _keep_open = sender;
                    std::future::pending::<()>().await;
                    return;
                }
            }
        }
    });
    let first_error = async move {
        match error_receiver.await {
            Ok(error) => error,
            Err(_) => std::future::pending().await,
        }
    };
    (
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        first_error,
    )
}
