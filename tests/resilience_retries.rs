//! Retries and hedging over real servers, with faults injected on the
//! servers' side: a replica that fails every call costs few extra attempts
//! and no failed call (the retry goes to another replica, the throttle
//! bounds the extra load); a server's pushback stops retries or sets their
//! wait; a slow replica's copy loses to a hedge and is cancelled on its
//! server.

mod common;

use common::{eventually, TestServer};
use sinew::cluster::resolve::Fixed;
use sinew::cluster::{Balanced, Policy};
use sinew::resilience::retry::{PREVIOUS_ATTEMPTS, PUSHBACK};
use sinew::resilience::{
    FaultLayer, FaultRule, HedgingPolicy, MethodConfig, MethodName, RetryPolicy, RetryThrottling,
    ServiceConfig, ServiceConfigLayer,
};
use sinew::rpc::server::{ServerCall, ServerStack};
use sinew::{Code, Status};
use sinew_tests::testing::{testing_client::TestingClient, Chunk, SleepRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::Layer;

const SERVICE: &str = "sinew.testing.Testing";

/// What one server saw of the testing service's calls (not the health
/// checks of the balancer's endpoints): every call that reached it (before
/// any fault), how many of them were retries or hedges, and how each ended.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<SeenCalls>>);

#[derive(Default)]
struct SeenCalls {
    calls: u64,
    later_attempts: u64,
    ended: Vec<Code>,
}

impl Seen {
    /// A server layer that records into this, outermost.
    fn layer(
        &self,
    ) -> impl Layer<ServerStack, Service = ServerStack> + Clone + Send + Sync + 'static {
        let seen = self.clone();
        tower::layer::layer_fn(move |inner: ServerStack| {
            let seen = seen.clone();
            ServerStack::new(tower::service_fn(move |call: ServerCall| {
                let (inner, seen) = (inner.clone(), seen.clone());
                async move {
                    if !call.path().starts_with(&format!("/{SERVICE}/")) {
                        return tower::ServiceExt::oneshot(inner, call).await;
                    }
                    {
                        let mut calls = seen.0.lock().unwrap();
                        calls.calls += 1;
                        calls.later_attempts +=
                            u64::from(call.metadata().contains_key(PREVIOUS_ATTEMPTS));
                    }
                    let status = tower::ServiceExt::oneshot(inner, call)
                        .await
                        .unwrap_or_else(|status| status);
                    seen.0.lock().unwrap().ended.push(status.code());
                    Ok::<_, Status>(status)
                }
            }))
        })
    }

    fn calls(&self) -> u64 {
        self.0.lock().unwrap().calls
    }

    fn later_attempts(&self) -> u64 {
        self.0.lock().unwrap().later_attempts
    }

    fn ended(&self) -> Vec<Code> {
        self.0.lock().unwrap().ended.clone()
    }
}

/// A server that records what it sees, then applies `rules`.
async fn server(seen: &Seen, rules: Vec<FaultRule>) -> TestServer {
    let (seen, faults) = (seen.layer(), FaultLayer::with_rules(rules));
    TestServer::start_with(move |builder| builder.layer(seen).layer(faults)).await
}

/// A balanced channel over `servers` with `config` applied, every endpoint
/// ready.
async fn client(
    servers: &[&TestServer],
    policy: Policy,
    config: ServiceConfig,
) -> TestingClient<sinew::resilience::Configured<Balanced>> {
    let fixed = Fixed::new(servers.iter().map(|server| server.tcp.clone()));
    let balanced = Balanced::builder(fixed, SERVICE).policy(policy).build();
    tokio::time::timeout(Duration::from_secs(5), balanced.until_ready(servers.len()))
        .await
        .expect("every endpoint ready within 5 s");
    TestingClient::new(ServiceConfigLayer::new(config).layer(balanced))
}

fn retrying(policy: RetryPolicy) -> MethodConfig {
    MethodConfig::new([MethodName::service(SERVICE)]).retry(policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_failing_every_call_costs_few_attempts_and_no_call() {
    let seen: [Seen; 3] = Default::default();
    let failing = FaultRule::all().abort_with(1.0, Code::Unavailable);
    let servers = [
        server(&seen[0], vec![failing]).await,
        server(&seen[1], vec![]).await,
        server(&seen[2], vec![]).await,
    ];
    let config = ServiceConfig::new()
        .with_method(retrying(RetryPolicy::new(3, [Code::Unavailable]).backoff(
            Duration::from_millis(5),
            Duration::from_millis(50),
            2.0,
        )))
        .unwrap()
        .with_retry_throttling(RetryThrottling::new(100, 0.1).unwrap());
    let refs: Vec<&TestServer> = servers.iter().collect();
    let client = client(&refs, Policy::peak_ewma(), config).await;

    // 2000 calls from 16 callers.
    const CALLERS: usize = 16;
    const EACH: usize = 125;
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        callers.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..EACH {
                if let Err(status) = client.sleep(SleepRequest { millis: 0 }).await {
                    failed.push(status);
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for caller in callers {
        failed.extend(caller.await.unwrap());
    }
    let calls = (CALLERS * EACH) as u64;
    let attempts: u64 = seen.iter().map(Seen::calls).sum();
    println!(
        "{calls} calls, {} failed; {attempts} attempts ({:.4} per call); failing replica saw {}",
        failed.len(),
        attempts as f64 / calls as f64,
        seen[0].calls()
    );
    // The scenario's targets: success rate >= 99.9%, attempts per call <= 1.2.
    assert!(failed.len() as u64 * 1000 <= calls, "{failed:?}");
    assert!(
        attempts * 10 <= calls * 12,
        "{attempts} attempts for {calls} calls"
    );
    // Every retry went to another replica than the one that failed it.
    assert_eq!(seen[0].later_attempts(), 0);
    assert!(seen[1].later_attempts() + seen[2].later_attempts() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pushback_sets_the_wait_or_stops_the_retries() {
    let seen = Seen::default();
    let mut wait = Status::unavailable("busy for a moment");
    wait.metadata_mut().insert(PUSHBACK, "20").unwrap();
    let mut never = Status::unavailable("do not come back");
    never.metadata_mut().insert(PUSHBACK, "-1").unwrap();
    let rules = vec![
        FaultRule::all()
            .when_metadata("x-test", "wait")
            .first_attempt_only()
            .abort(1.0, wait),
        FaultRule::all()
            .when_metadata("x-test", "never")
            .abort(1.0, never),
    ];
    let server = server(&seen, rules).await;
    // A backoff far longer than the test: only a pushback makes the retry
    // come in time.
    let policy = RetryPolicy::new(3, [Code::Unavailable]).backoff(
        Duration::from_secs(60),
        Duration::from_secs(60),
        1.0,
    );
    let config = ServiceConfig::new().with_method(retrying(policy)).unwrap();
    let client = client(&[&server], Policy::round_robin(), config).await;

    let mut request = sinew::Request::new(SleepRequest { millis: 0 });
    request.metadata_mut().insert("x-test", "wait").unwrap();
    let call = tokio::time::timeout(Duration::from_secs(10), client.sleep(request));
    call.await
        .expect("the pushback's wait, not the backoff's")
        .unwrap();
    assert_eq!(seen.calls(), 2);
    assert_eq!(seen.later_attempts(), 1);

    let mut request = sinew::Request::new(SleepRequest { millis: 0 });
    request.metadata_mut().insert("x-test", "never").unwrap();
    let status = client.sleep(request).await.unwrap_err();
    assert_eq!(status.message(), "do not come back");
    assert_eq!(seen.calls(), 3, "no retry after a negative pushback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replicas_copy_loses_to_a_hedge_and_is_cancelled_on_its_server() {
    let seen: [Seen; 2] = Default::default();
    let slow = FaultRule::all().delay(1.0, Duration::from_secs(30));
    let servers = [
        server(&seen[0], vec![slow]).await,
        server(&seen[1], vec![]).await,
    ];
    let hedging = HedgingPolicy::new(2, Duration::from_millis(20), [Code::Unavailable]).unwrap();
    let config = ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::service(SERVICE)]).hedging(hedging))
        .unwrap();
    let refs: Vec<&TestServer> = servers.iter().collect();
    // Round robin: every other first copy goes to the slow replica.
    let client = client(&refs, Policy::round_robin(), config).await;
    for _ in 0..20 {
        let call = client.sleep(SleepRequest { millis: 0 });
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a hedge answers long before the slow replica")
            .unwrap();
    }
    let slow_copies = seen[0].calls();
    assert!(
        slow_copies >= 5,
        "the slow replica got first copies: {slow_copies}"
    );
    // The hedges of the slow copies went to the fast replica.
    assert!(seen[1].later_attempts() >= slow_copies);
    // Each losing copy was cancelled on the slow server, not left running.
    eventually(Duration::from_secs(5), "every slow copy ended", || {
        seen[0].ended().len() as u64 == slow_copies
    })
    .await;
    assert!(
        seen[0].ended().iter().all(|code| *code == Code::Cancelled),
        "{:?}",
        seen[0].ended()
    );
}

#[tokio::test]
async fn generated_clients_carry_each_methods_declared_idempotency() {
    use sinew::rpc::call::{CallRequest, Idempotency};
    use sinew_examples::kv::{key_value_client::KeyValueClient, GetRequest, PutRequest};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        tower::service_fn(move |request: CallRequest| {
            seen.lock().unwrap().push(request.path().idempotency());
            std::future::ready(Err::<sinew::rpc::call::CallResponse, _>(
                Status::unavailable("recorded"),
            ))
        })
    };
    let client = KeyValueClient::new(sinew::Channel::from_service(recorder));
    let _ = client.get(GetRequest::default()).await;
    let _ = client.put(PutRequest::default()).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [Idempotency::NoSideEffects, Idempotency::Unknown]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_ready_holds_a_call_until_its_server_comes_up() {
    let port = common::unused_tcp_port();
    let address: sinew::transport::Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let balanced = Balanced::builder(Fixed::new([address]), SERVICE).build();
    let config = |wait: bool| {
        ServiceConfig::new()
            .with_method(MethodConfig::new([MethodName::service(SERVICE)]).wait_for_ready(wait))
            .unwrap()
    };
    let request = || {
        let mut request = sinew::Request::new(SleepRequest { millis: 0 });
        request.set_timeout(Duration::from_secs(10));
        request
    };
    // Without waiting for ready, the call fails at once: nothing listens.
    let fail_fast =
        TestingClient::new(ServiceConfigLayer::new(config(false)).layer(balanced.clone()));
    let status = fail_fast.sleep(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");

    let waiting = TestingClient::new(ServiceConfigLayer::new(config(true)).layer(balanced));
    let call = tokio::spawn(async move { waiting.sleep(request()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the call waits");
    let _server = TestServer::start_on_tcp_port(port, |builder| builder).await;
    call.await
        .unwrap()
        .expect("the call went through once the server was up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_timeout_bounds_a_wait_for_an_endpoint_that_never_comes() {
    // A channel built to wait for ready, to a port nothing listens on: the
    // caller's own wait for readiness cannot know the method's timeout.
    let port = common::unused_tcp_port();
    let address: sinew::transport::Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let channel = sinew::Channel::builder(address).wait_for_ready(true).lazy();
    let config = ServiceConfig::new()
        .with_method(
            MethodConfig::new([MethodName::service(SERVICE)]).timeout(Duration::from_millis(300)),
        )
        .unwrap();
    let client = TestingClient::new(ServiceConfigLayer::new(config).layer(channel));
    let started = std::time::Instant::now();
    let call = client.sleep(SleepRequest { millis: 0 });
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ends at its timeout, not never")
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.is_not_processed());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_is_retried_from_its_first_message() {
    let seen = Seen::default();
    // Every stream's first attempt fails at once, whatever it has sent.
    let rules = vec![FaultRule::for_path(format!("/{SERVICE}/Sink"))
        .first_attempt_only()
        .abort(1.0, Status::unavailable("not now"))];
    let server = server(&seen, rules).await;
    let policy = RetryPolicy::new(3, [Code::Unavailable]).backoff(
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
    );
    let config = ServiceConfig::new().with_method(retrying(policy)).unwrap();
    let client = client(&[&server], Policy::round_robin(), config).await;
    // 100 chunks of 1 KiB: within the 256 KiB the call keeps for retries.
    let chunks = (0..100u64).map(|index| Chunk {
        data: vec![index as u8; 1024],
        index,
    });
    let summary = client
        .sink(futures_util::stream::iter(chunks))
        .await
        .expect("the retry sent the whole stream")
        .into_inner();
    assert_eq!((summary.chunks, summary.bytes), (100, 100 * 1024));
    assert_eq!(seen.calls(), 2);
    assert_eq!(seen.later_attempts(), 1);
    assert_eq!(seen.ended(), [Code::Unavailable, Code::Ok]);
}
