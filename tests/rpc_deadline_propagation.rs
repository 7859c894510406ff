//! Deadlines and cancellation travel through the calls handlers make: a
//! chain sinew -> sinew -> gRPC where each handler calls the next with no
//! deadline of its own, and the innermost sees what is left of the outer
//! caller's (less each server's margin); a caller that gives up ends the
//! work at the far end of the chain.

use sinew::{Channel, Code, Request, Response, Server, Status};
use sinew_examples::echo::echo_client::EchoClient;
use sinew_examples::echo::echo_server::EchoServer;
use sinew_examples::echo::{EchoRequest, EchoResponse, UnaryEcho, WithUnary};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A server in the chain: forwards unary calls to the next one (making a
/// fresh request, with no deadline of its own), or, the last, answers with
/// the time its call has left in milliseconds ("none" without a deadline).
/// A call for "hang" waits until it is cancelled, and says so.
#[derive(Clone)]
struct Hop {
    next: Option<EchoClient<Channel>>,
    cancelled: Arc<AtomicBool>,
}

/// Sets its flag when dropped before `done`.
struct Hanging(Arc<AtomicBool>);

impl Drop for Hanging {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl UnaryEcho for Hop {
    async fn unary_echo(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        if let Some(next) = &self.next {
            let message = request.into_inner().message;
            return next.unary_echo(EchoRequest { message }).await;
        }
        if request.get_ref().message == "hang" {
            let _hanging = Hanging(self.cancelled.clone());
            std::future::pending::<()>().await;
        }
        let left = match request.timeout() {
            Some(left) => left.as_millis().to_string(),
            None => "none".to_owned(),
        };
        Ok(Response::new(EchoResponse { message: left }))
    }
}

/// Serves `hop` on a free TCP port (sinew and gRPC), with `margin`.
async fn serve(hop: Hop, margin: Duration) -> String {
    let server = Server::builder()
        .deadline_margin(margin)
        .add_service(EchoServer::new(WithUnary(hop)))
        .add_protocol(sinew::grpc::GrpcProtocol::default())
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let address = server.local_addresses()[0].to_string();
    tokio::spawn(server.serve());
    address
}

/// The chain outer (sinew) -> middle (sinew) -> inner (reached over gRPC);
/// the middle server has `margin`. Returns a client of the outer one and
/// the inner one's cancellation flag.
async fn chain(margin: Duration) -> (EchoClient<Channel>, Arc<AtomicBool>) {
    let cancelled = Arc::new(AtomicBool::new(false));
    let inner = serve(
        Hop {
            next: None,
            cancelled: cancelled.clone(),
        },
        Duration::ZERO,
    )
    .await;
    let over_grpc = inner.replacen("tcp://", "grpc://", 1);
    let middle = serve(
        Hop {
            next: Some(EchoClient::connect(&over_grpc).await.unwrap()),
            cancelled: cancelled.clone(),
        },
        margin,
    )
    .await;
    let outer = serve(
        Hop {
            next: Some(EchoClient::connect(&middle).await.unwrap()),
            cancelled: cancelled.clone(),
        },
        Duration::ZERO,
    )
    .await;
    (EchoClient::connect(&outer).await.unwrap(), cancelled)
}

async fn time_left_at_the_end(client: &EchoClient<Channel>, timeout: Option<Duration>) -> String {
    let mut request = Request::new(EchoRequest {
        message: "how long".into(),
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    client
        .unary_echo(request)
        .await
        .unwrap()
        .into_inner()
        .message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_innermost_handler_sees_what_is_left_of_the_outer_deadline() {
    let (client, _) = chain(Duration::ZERO).await;
    let left: u64 = time_left_at_the_end(&client, Some(Duration::from_secs(5)))
        .await
        .parse()
        .expect("the innermost call has a deadline");
    assert!(left > 0 && left <= 5000, "{left} ms left");
    // Without a deadline at the start, none anywhere.
    assert_eq!(time_left_at_the_end(&client, None).await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_margin_comes_off_what_its_calls_inherit() {
    let (client, _) = chain(Duration::from_millis(1500)).await;
    let left: u64 = time_left_at_the_end(&client, Some(Duration::from_secs(5)))
        .await
        .parse()
        .unwrap();
    assert!(left > 0 && left <= 3500, "{left} ms left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outer_deadline_ends_the_work_at_the_end_of_the_chain() {
    let (client, cancelled) = chain(Duration::ZERO).await;
    let mut request = Request::new(EchoRequest {
        message: "hang".into(),
    });
    request.set_timeout(Duration::from_millis(300));
    let status = client.unary_echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    // The innermost handler was dropped (its call cancelled or timed out),
    // not left running.
    for _ in 0..100 {
        if cancelled.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the innermost handler is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_cancels_the_whole_chain() {
    let (client, cancelled) = chain(Duration::ZERO).await;
    let call = tokio::spawn(async move {
        client
            .unary_echo(EchoRequest {
                message: "hang".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    for _ in 0..100 {
        if cancelled.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the innermost handler is still running");
}
