//! The breaker against `tower-test`'s mock service, in paused time.

use super::*;
use crate::testing::{ok_response, pair, request, Handle, Mock};
use tower::ServiceExt;

fn config() -> BreakerConfig {
    BreakerConfig::default()
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_for(Duration::from_secs(5))
        .probes(2)
        .probe_timeout(Duration::from_secs(1))
}

fn breaker(layer: &BreakerLayer) -> (Breaker<Mock>, Handle) {
    let (service, handle) = pair();
    (layer.layer(service), handle)
}

fn ok() -> CallResponse {
    ok_response(b"pong")
}

/// Makes one call that the mock answers with `answer`.
async fn call(
    service: &Breaker<Mock>,
    handle: &mut Handle,
    path: &'static str,
    answer: Result<(), Status>,
) -> Result<CallResponse, Status> {
    handle.allow(1);
    let call = tokio::spawn(service.clone().oneshot(request(path)));
    let (_, respond) = handle.next_request().await.expect("the call went through");
    match answer {
        Ok(()) => respond.send_response(ok()),
        Err(status) => respond.send_error(status),
    }
    call.await.unwrap()
}

/// Opens the circuit of `path` with 4 failures.
async fn open(service: &Breaker<Mock>, handle: &mut Handle, path: &'static str) {
    for _ in 0..4 {
        let _ = call(service, handle, path, Err(Status::unavailable("down"))).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_refuses_at_once_without_waiting_for_the_service_below() {
    let layer = BreakerLayer::per_method(config());
    let mut events = layer.events();
    let (service, mut handle) = breaker(&layer);
    open(&service, &mut handle, "/a.B/C").await;
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.from, event.to),
        (CircuitState::Closed, CircuitState::Open)
    );
    assert_eq!(&*event.key, "/a.B/C");
    assert_eq!(event.failure_rate, Some(1.0));

    // The service below is not ready (no call allowed): the refusal does
    // not wait for it.
    handle.allow(0);
    let status = service
        .clone()
        .oneshot(request("/a.B/C"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.is_not_processed());
    assert!(
        status.message().contains("circuit open for /a.B/C"),
        "{status}"
    );
    assert_eq!(status.metadata().get(PUSHBACK), Some("5000"));
    assert_eq!(layer.states(), [("/a.B/C".into(), CircuitState::Open)]);
}

#[tokio::test(start_paused = true)]
async fn circuits_are_per_method_and_caller_mistakes_do_not_count() {
    let layer = BreakerLayer::per_method(config());
    let (service, mut handle) = breaker(&layer);
    open(&service, &mut handle, "/a.B/Broken").await;
    assert!(call(&service, &mut handle, "/a.B/Fine", Ok(()))
        .await
        .is_ok());
    for _ in 0..10 {
        let status = call(
            &service,
            &mut handle,
            "/a.B/Picky",
            Err(Status::invalid_argument("no")),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let states = layer.states();
    assert_eq!(
        states,
        [
            ("/a.B/Broken".into(), CircuitState::Open),
            ("/a.B/Fine".into(), CircuitState::Closed),
            ("/a.B/Picky".into(), CircuitState::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_a_bounded_number_of_probes_through_and_closes_after_them() {
    let layer = BreakerLayer::per_service(config());
    let mut events = layer.events();
    let (service, mut handle) = breaker(&layer);
    open(&service, &mut handle, "/a.B/C").await;
    tokio::time::advance(Duration::from_secs(5)).await;
    handle.allow(2);
    let first = tokio::spawn(service.clone().oneshot(request("/a.B/C")));
    let second = tokio::spawn(service.clone().oneshot(request("/a.B/D")));
    let (_, first_respond) = handle.next_request().await.unwrap();
    let (_, second_respond) = handle.next_request().await.unwrap();
    // Both probes out: a third call is refused.
    let third = service
        .clone()
        .oneshot(request("/a.B/C"))
        .await
        .unwrap_err();
    assert!(third.message().contains("circuit open for a.B"), "{third}");
    first_respond.send_response(ok());
    second_respond.send_response(ok());
    assert!(first.await.unwrap().is_ok() && second.await.unwrap().is_ok());
    let changes: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|event| (event.from, event.to))
        .collect();
    assert_eq!(
        changes,
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
    assert!(call(&service, &mut handle, "/a.B/C", Ok(())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_opens_the_circuit_again_when_its_time_is_up() {
    let layer = BreakerLayer::single(config());
    let mut events = layer.events();
    let (service, mut handle) = breaker(&layer);
    open(&service, &mut handle, "/a.B/C").await;
    tokio::time::advance(Duration::from_secs(5)).await;
    handle.allow(1);
    let probe = tokio::spawn(service.clone().oneshot(request("/a.B/C")));
    let (_, respond) = handle.next_request().await.unwrap();
    // The probe hangs past its 1 s: the circuit is open again, not wedged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let changes: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|event| event.to)
        .collect();
    assert_eq!(
        changes,
        [
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::Open
        ]
    );
    assert_eq!(layer.states(), [("*".into(), CircuitState::Open)]);
    // The call itself still gets its answer.
    respond.send_response(ok());
    assert!(probe.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_caller_gives_up_frees_its_place() {
    let layer = BreakerLayer::single(config().probes(1));
    let (service, mut handle) = breaker(&layer);
    open(&service, &mut handle, "/a.B/C").await;
    tokio::time::advance(Duration::from_secs(5)).await;
    handle.allow(1);
    let probe = tokio::spawn(service.clone().oneshot(request("/a.B/C")));
    let (_, _respond) = handle.next_request().await.unwrap();
    assert!(
        service.clone().oneshot(request("/a.B/C")).await.is_err(),
        "the one probe is out"
    );
    probe.abort();
    let _ = probe.await;
    // Its place is free: the next call is a probe, and closes the circuit.
    assert!(call(&service, &mut handle, "/a.B/C", Ok(())).await.is_ok());
    assert_eq!(layer.states(), [("*".into(), CircuitState::Closed)]);
}

#[tokio::test(start_paused = true)]
async fn a_call_let_through_waits_for_the_service_below_only_until_its_deadline() {
    let layer = BreakerLayer::per_method(config());
    let (service, mut handle) = breaker(&layer);
    handle.allow(0);
    let mut timed = request("/a.B/C");
    timed.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let status = service.clone().oneshot(timed).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.is_not_processed());
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    // One outcome in the window, under the minimum: still closed.
    assert_eq!(layer.states(), [("/a.B/C".into(), CircuitState::Closed)]);
}
