//! Fault rules against `tower-test`'s mock service, in paused time.

use super::*;
use crate::testing::{ok_response, pair, request, Handle, Mock};
use sinew_rpc::call::CallResponse;
use tokio::time::Instant;
use tower::ServiceExt;

fn faulty(rules: Vec<FaultRule>) -> (Fault<Mock>, Handle) {
    let (service, handle) = pair();
    (FaultLayer::with_rules(rules).layer(service), handle)
}

fn response() -> CallResponse {
    ok_response(b"pong")
}

#[tokio::test(start_paused = true)]
async fn without_rules_calls_pass_untouched() {
    let (service, mut handle) = faulty(vec![]);
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(request("/a.B/C")));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn an_abort_rule_fails_the_calls_it_matches_and_only_those() {
    let rule = FaultRule::for_path("/a.B/").abort_with(1.0, Code::Unavailable);
    let (service, mut handle) = faulty(vec![rule]);
    let status = service
        .clone()
        .oneshot(request("/a.B/C"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("injected"), "{status}");
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(request("/a.Other/C")));
    let (sent, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        sent.path().as_str(),
        "/a.Other/C",
        "the aborted call never reached the service"
    );
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_delay_rule_holds_the_call_then_passes_it_on() {
    let rule = FaultRule::all().delay(1.0, Duration::from_millis(250));
    let (service, mut handle) = faulty(vec![rule]);
    handle.allow(1);
    let started = Instant::now();
    let call = tokio::spawn(service.oneshot(request("/a.B/C")));
    let (_, respond) = handle.next_request().await.unwrap();
    assert_eq!(Instant::now() - started, Duration::from_millis(250));
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_delayed_abort_fails_after_the_delay() {
    let rule = FaultRule::all()
        .delay(1.0, Duration::from_millis(40))
        .abort_with(1.0, Code::Internal);
    let (service, _handle) = faulty(vec![rule]);
    let started = Instant::now();
    let status = service.oneshot(request("/a.B/C")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(Instant::now() - started, Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn a_metadata_rule_matches_only_calls_carrying_the_entry() {
    let rule = FaultRule::all()
        .when_metadata("X-Fault", "abort")
        .abort_with(1.0, Code::Aborted);
    let (service, mut handle) = faulty(vec![rule]);
    let mut marked = request("/a.B/C");
    marked.metadata_mut().insert("x-fault", "abort").unwrap();
    let status = service.clone().oneshot(marked).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    let mut other = request("/a.B/C");
    other.metadata_mut().insert("x-fault", "no").unwrap();
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(other));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_share_applies_to_about_that_share_of_the_calls() {
    let rule = FaultRule::all().abort_with(0.3, Code::Unavailable);
    let (service, mut handle) = faulty(vec![rule]);
    let calls = 4000;
    let mut aborted = 0;
    handle.allow(calls);
    let answering = tokio::spawn(async move {
        while let Some((_, respond)) = handle.next_request().await {
            respond.send_response(response());
        }
    });
    for _ in 0..calls {
        if service.clone().oneshot(request("/a.B/C")).await.is_err() {
            aborted += 1;
        }
    }
    // Binomial(4000, 0.3): standard deviation 29; six of them either side.
    assert!((1026..=1374).contains(&aborted), "{aborted} of {calls}");
    drop(service);
    answering.abort();
}

#[tokio::test(start_paused = true)]
async fn rules_change_live() {
    let layer = FaultLayer::new();
    let (service, mut handle) = pair();
    let service = layer.layer(service);
    layer
        .handle()
        .set([FaultRule::all().abort_with(1.0, Code::Unavailable)]);
    assert!(service.clone().oneshot(request("/a.B/C")).await.is_err());
    layer.handle().clear();
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(request("/a.B/C")));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_rule_lets_retries_through() {
    let rule = FaultRule::all()
        .first_attempt_only()
        .abort_with(1.0, Code::Unavailable);
    let (service, mut handle) = faulty(vec![rule]);
    assert!(service.clone().oneshot(request("/a.B/C")).await.is_err());
    let mut retry = request("/a.B/C");
    retry
        .metadata_mut()
        .insert(crate::retry::PREVIOUS_ATTEMPTS, "1")
        .unwrap();
    handle.allow(1);
    let call = tokio::spawn(service.oneshot(retry));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(response());
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_delay_ends_at_the_calls_deadline() {
    let rule = FaultRule::all().delay(1.0, Duration::from_secs(10));
    let (service, _handle) = faulty(vec![rule]);
    let mut call = request("/a.B/C");
    call.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = service.oneshot(call).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(Instant::now() - started, Duration::from_millis(300));
}
