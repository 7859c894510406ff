//! The policy logic of [`Configured`] against `tower-test`'s mock service,
//! in paused time: what is sent, how often, and when.

use super::*;
use crate::config::{MethodConfig, MethodName};
use crate::hedge::HedgingPolicy;
use crate::retry::{RetryPolicy, RetryThrottling, PREVIOUS_ATTEMPTS, PUSHBACK};
use crate::testing::{self, ok_response, pair, Handle, Mock};
use bytes::Bytes;
use futures_util::StreamExt;
use sinew_rpc::call::{Attempts, Idempotency, MethodPath, Payload, RequestBody};
use sinew_rpc::Code;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use tower_test::mock;

const PATH: &str = "/test.Svc/Get";

fn configured(config: ServiceConfig) -> (Configured<Mock>, Handle) {
    let (service, handle) = pair();
    (Configured::new(service, ConfigHandle::new(config)), handle)
}

fn retry_config(policy: RetryPolicy) -> ServiceConfig {
    ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::service("test.Svc")]).retry(policy))
        .unwrap()
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts, [Code::Unavailable]).backoff(
        Duration::from_millis(100),
        Duration::from_secs(1),
        2.0,
    )
}

fn request() -> CallRequest {
    testing::request(PATH)
}

/// Starts a call on `service` (waiting for it to be ready).
fn start(
    service: &mut Configured<Mock>,
    request: CallRequest,
) -> tokio::task::JoinHandle<Result<CallResponse, Status>> {
    let service = service.clone();
    tokio::spawn(service.oneshot(request))
}

/// The next request the mock receives, and its responder.
async fn next(handle: &mut Handle) -> (CallRequest, mock::SendResponse<CallResponse>) {
    handle.allow(1);
    handle
        .next_request()
        .await
        .expect("the service sent another attempt")
}

/// Whether the mock receives no request until the task settles.
async fn no_more(handle: &mut Handle) {
    handle.allow(1);
    tokio::task::yield_now().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), handle.next_request())
            .await
            .is_err(),
        "no other attempt"
    );
}

fn attempt_number(request: &CallRequest) -> Option<&str> {
    request.metadata().get(PREVIOUS_ATTEMPTS)
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_tried_again_after_a_backoff_and_the_retry_says_so() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let call = start(&mut service, request());
    let (first, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&first), None);
    let failed_at = Instant::now();
    respond.send_error(Status::unavailable("down"));
    let (second, respond) = next(&mut handle).await;
    assert!(
        Instant::now() - failed_at < Duration::from_millis(100),
        "the first backoff is under 100 ms"
    );
    assert_eq!(attempt_number(&second), Some("1"));
    assert_eq!(second.body().as_single().unwrap().to_bytes(), "ping");
    respond.send_response(ok_response(b"pong"));
    let mut response = call.await.unwrap().unwrap();
    assert_eq!(
        response.body_mut().message().await.unwrap().unwrap(),
        "pong"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_with_another_code_is_not_retried() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::invalid_argument("bad"));
    assert_eq!(
        call.await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn attempts_stop_at_the_maximum_with_the_last_failure() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let call = start(&mut service, request());
    for attempt in 0..3 {
        let (request, respond) = next(&mut handle).await;
        let expected = (attempt > 0).then(|| attempt.to_string());
        assert_eq!(attempt_number(&request), expected.as_deref());
        respond.send_error(Status::unavailable(format!("down {attempt}")));
    }
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.message(), "down 2");
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn pushback_sets_the_wait_or_refuses_the_retry() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    let mut busy = Status::unavailable("busy");
    busy.metadata_mut().insert(PUSHBACK, "1500").unwrap();
    let failed_at = Instant::now();
    respond.send_error(busy);
    let (_, respond) = next(&mut handle).await;
    // Exactly the pushback: longer than any backoff of this policy (1 s).
    assert!(Instant::now() - failed_at >= Duration::from_millis(1500));
    let mut refused = Status::unavailable("go away");
    refused.metadata_mut().insert(PUSHBACK, "-1").unwrap();
    respond.send_error(refused);
    assert_eq!(call.await.unwrap().unwrap_err().message(), "go away");
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_call_no_server_saw_is_sent_again_at_once_without_counting() {
    // Two attempts allowed; the transparent retry is not one of them.
    let (mut service, mut handle) = configured(retry_config(policy(2)));
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    let refused_at = Instant::now();
    respond.send_error(Status::unavailable("refused").mark_not_processed());
    let (again, respond) = next(&mut handle).await;
    assert_eq!(Instant::now(), refused_at, "at once");
    assert_eq!(attempt_number(&again), Some("1"));
    respond.send_error(Status::unavailable("down"));
    let (third, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&third), Some("2"));
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_throttle_stops_retries_when_most_calls_fail_and_successes_bring_them_back() {
    let config =
        retry_config(policy(5)).with_retry_throttling(RetryThrottling::new(4, 1.0).unwrap());
    let (mut service, mut handle) = configured(config);
    // 4 tokens: the first failure leaves 3 (retry), the second 2 (not more
    // than half: no retry).
    let call = start(&mut service, request());
    for _ in 0..2 {
        let (_, respond) = next(&mut handle).await;
        respond.send_error(Status::unavailable("down"));
    }
    assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);
    assert_eq!(service.config().throttle().unwrap().tokens(), 2.0);
    // Each success gives one token back (ratio 1): two refill the bucket,
    // and a failure leaves 3 again, enough for a retry.
    for tokens in [3.0, 4.0] {
        let call = start(&mut service, request());
        let (_, respond) = next(&mut handle).await;
        respond.send_response(ok_response(b"pong"));
        assert!(call.await.unwrap().is_ok());
        assert_eq!(service.config().throttle().unwrap().tokens(), tokens);
    }
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("down"));
    let (retry, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&retry), Some("1"));
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_after_the_deadline() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let mut request = request();
    request.set_timeout(Duration::from_millis(100));
    let call = start(&mut service, request);
    // The server asks for a wait that ends past the deadline: no retry.
    let (_, respond) = next(&mut handle).await;
    let mut busy = Status::unavailable("busy");
    busy.metadata_mut().insert(PUSHBACK, "150").unwrap();
    respond.send_error(busy);
    assert_eq!(call.await.unwrap().unwrap_err().message(), "busy");
    no_more(&mut handle).await;
}

/// A streaming request of `messages`, each `size` bytes, the caller's
/// stream read through a channel so the test sees how far it was read.
fn streaming_request(messages: usize, size: usize) -> (CallRequest, Arc<AtomicUsize>) {
    let read = Arc::new(AtomicUsize::new(0));
    let counted = read.clone();
    let stream = futures_util::stream::iter(0..messages).map(move |n| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(Payload::from_bytes(Bytes::from(vec![n as u8; size])))
    });
    (CallRequest::new(PATH, RequestBody::stream(stream)), read)
}

/// The messages of a request's body, as bytes.
async fn messages(request: CallRequest) -> Vec<Result<Bytes, Code>> {
    request
        .into_parts()
        .body
        .into_stream()
        .map(|message| message.map(|m| m.to_bytes()).map_err(|s| s.code()))
        .collect()
        .await
}

#[tokio::test(start_paused = true)]
async fn a_streaming_request_is_retried_from_its_first_message() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let (request, read) = streaming_request(3, 10);
    let call = start(&mut service, request);
    let (first, respond) = next(&mut handle).await;
    assert_eq!(messages(first).await.len(), 3);
    respond.send_error(Status::unavailable("down"));
    let (retry, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&retry), Some("1"));
    let again = messages(retry).await;
    assert_eq!(
        again,
        (0..3u8)
            .map(|n| Ok(Bytes::from(vec![n; 10])))
            .collect::<Vec<_>>()
    );
    // The caller's stream was read once.
    assert_eq!(read.load(Ordering::SeqCst), 3);
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_stream_past_the_retry_buffer_is_not_retried() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    service.config().set_retry_buffer(25);
    // A new config keeps it: it is the channel's.
    service.config().set(retry_config(policy(3)));
    let (request, _) = streaming_request(3, 10);
    let call = start(&mut service, request);
    let (first, respond) = next(&mut handle).await;
    // 30 bytes: more than the 25 kept, all sent all the same.
    assert_eq!(messages(first).await.len(), 3);
    respond.send_error(Status::unavailable("down"));
    assert_eq!(call.await.unwrap().unwrap_err().message(), "down");
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_streaming_request_is_not_hedged() {
    let (mut service, mut handle) = configured(hedging_config(3, Duration::from_millis(50)));
    let (request, _) = streaming_request(1, 1);
    let call = start(&mut service, request);
    let (sent, respond) = next(&mut handle).await;
    assert!(sent.extensions().get::<Attempts>().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    respond.send_error(Status::unavailable("down"));
    assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn the_timeout_sets_the_deadline_unless_the_call_has_a_sooner_one() {
    let config = ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::all()]).timeout(Duration::from_secs(2)))
        .unwrap();
    let (mut service, mut handle) = configured(config);
    let started = Instant::now();
    let call = start(&mut service, request());
    let (sent, respond) = next(&mut handle).await;
    assert_eq!(sent.deadline(), Some(started + Duration::from_secs(2)));
    respond.send_response(ok_response(b"pong"));
    call.await.unwrap().unwrap();

    let mut sooner = request();
    sooner.set_timeout(Duration::from_millis(300));
    let call = start(&mut service, sooner);
    let (sent, respond) = next(&mut handle).await;
    assert_eq!(sent.deadline(), Some(started + Duration::from_millis(300)));
    respond.send_response(ok_response(b"pong"));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn size_limits_fail_large_messages_both_ways() {
    let config = ServiceConfig::new()
        .with_method(
            MethodConfig::new([MethodName::method("test.Svc", "Get")])
                .max_request_bytes(3)
                .max_response_bytes(4),
        )
        .unwrap();
    let (mut service, mut handle) = configured(config);
    // "ping" is 4 bytes: refused before it is sent.
    let status = start(&mut service, request()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("4 bytes"), "{status}");
    no_more(&mut handle).await;

    let small = CallRequest::new(
        PATH,
        RequestBody::single(Payload::from_bytes(Bytes::from_static(b"hi"))),
    );
    let call = start(&mut service, small);
    let (_, respond) = next(&mut handle).await;
    respond.send_response(ok_response(b"too long"));
    let mut response = call.await.unwrap().unwrap();
    let status = response.body_mut().message().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(response.body_mut().next().await.is_none(), "the body ended");
}

#[tokio::test(start_paused = true)]
async fn a_method_the_config_does_not_name_passes_through() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let other = CallRequest::new(
        "/other.Svc/Get",
        RequestBody::single(Payload::from_bytes(Bytes::from_static(b"ping"))),
    );
    let call = start(&mut service, other);
    let (sent, respond) = next(&mut handle).await;
    assert!(sent.extensions().get::<Attempts>().is_none());
    assert_eq!(sent.deadline(), None);
    respond.send_error(Status::unavailable("down"));
    assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_new_config_applies_to_the_next_calls_and_keeps_the_throttle() {
    let throttling = RetryThrottling::new(10, 0.5).unwrap();
    let (mut service, mut handle) =
        configured(retry_config(policy(3)).with_retry_throttling(throttling));
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::invalid_argument("bad"));
    call.await.unwrap().unwrap_err();
    let throttle = service.config().throttle().unwrap();
    throttle.failed();
    // Now INVALID_ARGUMENT is retryable, once.
    let policy = RetryPolicy::new(2, [Code::InvalidArgument]);
    service
        .config()
        .set(retry_config(policy).with_retry_throttling(throttling));
    assert_eq!(
        service.config().throttle().unwrap().tokens(),
        9.0,
        "tokens kept"
    );
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::invalid_argument("bad"));
    let (retry, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&retry), Some("1"));
    respond.send_error(Status::invalid_argument("still bad"));
    assert_eq!(call.await.unwrap().unwrap_err().message(), "still bad");
    no_more(&mut handle).await;
}

fn hedging_config(attempts: u32, delay: Duration) -> ServiceConfig {
    let policy = HedgingPolicy::new(attempts, delay, [Code::Unavailable]).unwrap();
    ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::service("test.Svc")]).hedging(policy))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_hedged_after_the_delay_and_the_first_answer_wins() {
    let (mut service, mut handle) = configured(hedging_config(3, Duration::from_millis(50)));
    let started = Instant::now();
    let call = start(&mut service, request());
    let (_, slow) = next(&mut handle).await;
    let (hedge, respond) = next(&mut handle).await;
    assert_eq!(Instant::now() - started, Duration::from_millis(50));
    assert_eq!(attempt_number(&hedge), Some("1"));
    respond.send_response(ok_response(b"fast"));
    let mut response = call.await.unwrap().unwrap();
    assert_eq!(
        response.body_mut().message().await.unwrap().unwrap(),
        "fast"
    );
    // The slow copy's answer has nowhere to go: it was cancelled.
    slow.send_response(ok_response(b"slow"));
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_non_fatal_failure_sends_the_next_copy_at_once() {
    let (mut service, mut handle) = configured(hedging_config(3, Duration::from_secs(5)));
    let started = Instant::now();
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("down"));
    let (second, respond) = next(&mut handle).await;
    assert_eq!(Instant::now(), started, "no wait for the delay");
    assert_eq!(attempt_number(&second), Some("1"));
    respond.send_error(Status::unavailable("down again"));
    let (third, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&third), Some("2"));
    respond.send_error(Status::unavailable("down a third time"));
    // Three copies, all failed: the last failure.
    assert_eq!(
        call.await.unwrap().unwrap_err().message(),
        "down a third time"
    );
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_fatal_failure_ends_the_call_while_copies_are_in_flight() {
    let (mut service, mut handle) = configured(hedging_config(3, Duration::from_millis(10)));
    let call = start(&mut service, request());
    let (_, first) = next(&mut handle).await;
    let (_, second) = next(&mut handle).await;
    second.send_error(Status::permission_denied("no"));
    assert_eq!(
        call.await.unwrap().unwrap_err().code(),
        Code::PermissionDenied
    );
    first.send_response(ok_response(b"late"));
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_delay_sends_every_copy_at_once() {
    let (mut service, mut handle) = configured(hedging_config(3, Duration::ZERO));
    let started = Instant::now();
    let call = start(&mut service, request());
    let mut responders = Vec::new();
    for copy in 0..3 {
        let (request, respond) = next(&mut handle).await;
        let expected = (copy > 0).then(|| copy.to_string());
        assert_eq!(attempt_number(&request), expected.as_deref());
        responders.push(respond);
    }
    assert_eq!(Instant::now(), started);
    responders
        .pop()
        .unwrap()
        .send_response(ok_response(b"third"));
    assert!(call.await.unwrap().is_ok());
    no_more(&mut handle).await;
}

fn idempotent_request() -> CallRequest {
    let path = MethodPath::from(PATH).with_idempotency(Idempotency::Idempotent);
    CallRequest::new(
        path,
        RequestBody::single(Payload::from_bytes(Bytes::from_static(b"ping"))),
    )
}

#[tokio::test(start_paused = true)]
async fn idempotent_methods_are_retried_by_default_and_others_are_not() {
    let (mut service, mut handle) = configured(ServiceConfig::new());
    let call = start(&mut service, idempotent_request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("down"));
    let (retry, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&retry), Some("1"));
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());

    // Not declared idempotent: sent once.
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("down"));
    assert!(call.await.unwrap().is_err());
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn the_default_retry_of_idempotent_methods_can_be_turned_off() {
    let (mut service, mut handle) = configured(ServiceConfig::new().with_idempotent_retry(None));
    let call = start(&mut service, idempotent_request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("down"));
    assert!(call.await.unwrap().is_err());
    no_more(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_retry_carries_where_the_failed_attempt_went_and_a_first_attempt_carries_nothing() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    let call = start(&mut service, request());
    let (first, respond) = next(&mut handle).await;
    assert!(
        first.extensions().get::<Attempts>().is_none(),
        "nothing to pay for on the way"
    );
    let mut failed = Status::unavailable("down");
    failed.set_destination(sinew_rpc::call::Destination::new(std::sync::Arc::new(
        "replica-1",
    )));
    respond.send_error(failed);
    let (retry, respond) = next(&mut handle).await;
    let avoid = retry
        .extensions()
        .get::<Attempts>()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(avoid.get::<&str>().as_deref(), Some(&"replica-1"));
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}

fn ready_config() -> ServiceConfig {
    ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::service("test.Svc")]).wait_for_ready(true))
        .unwrap()
}

fn none_ready() -> Status {
    Status::unavailable("no endpoint is ready").mark_not_processed()
}

#[tokio::test(start_paused = true)]
async fn wait_for_ready_sends_a_call_again_until_an_endpoint_is_ready() {
    let (mut service, mut handle) = configured(ready_config());
    let started = Instant::now();
    let call = start(&mut service, request());
    // At once (transparent), then after 10 ms, 20 ms, 40 ms.
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (_, respond) = next(&mut handle).await;
        waits.push(Instant::now() - started);
        respond.send_error(none_ready());
    }
    let (_, respond) = next(&mut handle).await;
    waits.push(Instant::now() - started);
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
    let ms = |ms| Duration::from_millis(ms);
    assert_eq!(waits, [ms(0), ms(0), ms(10), ms(30), ms(70)]);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_ready_ends_at_the_deadline_and_other_failures_end_it_at_once() {
    let (mut service, mut handle) = configured(ready_config());
    let mut timed = request();
    timed.set_timeout(Duration::from_millis(25));
    let call = start(&mut service, timed);
    for _ in 0..3 {
        let (_, respond) = next(&mut handle).await;
        respond.send_error(none_ready());
    }
    // 0 + 10 ms, then 20 ms more would pass the 25 ms deadline.
    assert_eq!(
        call.await.unwrap().unwrap_err().message(),
        "no endpoint is ready"
    );
    no_more(&mut handle).await;

    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("the server went away"));
    assert!(
        call.await.unwrap().is_err(),
        "a processed failure is not waited out"
    );
    no_more(&mut handle).await;
}

#[tokio::test]
async fn absurd_durations_from_a_config_or_a_server_do_not_panic() {
    // A timeout no clock can add (protobuf allows 10,000 years; this is more).
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{}], "timeout": "999999999999999999s",
            "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.001s", "maxBackoff": "0.001s",
                            "backoffMultiplier": 1, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    )
    .unwrap();
    let (mut service, mut handle) = configured(config);
    let mut timed = request();
    timed.set_timeout(Duration::from_secs(5));
    let call = start(&mut service, timed);
    let (_, respond) = next(&mut handle).await;
    // A pushback of u64::MAX milliseconds: past any deadline, no retry.
    let mut busy = Status::unavailable("busy");
    busy.metadata_mut()
        .insert(PUSHBACK, &u64::MAX.to_string())
        .unwrap();
    respond.send_error(busy);
    assert_eq!(call.await.unwrap().unwrap_err().message(), "busy");
}

#[tokio::test(start_paused = true)]
async fn a_hedged_copy_no_server_saw_is_not_fatal() {
    // No non-fatal codes: only "not processed" keeps the call going.
    let policy = HedgingPolicy::new(2, Duration::from_secs(5), []).unwrap();
    let config = ServiceConfig::new()
        .with_method(MethodConfig::new([MethodName::service("test.Svc")]).hedging(policy))
        .unwrap();
    let (mut service, mut handle) = configured(config);
    let call = start(&mut service, request());
    let (_, respond) = next(&mut handle).await;
    respond.send_error(Status::unavailable("goaway").mark_not_processed());
    let (copy, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&copy), Some("1"));
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_method_timeout_bounds_the_wait_for_a_service_not_ready() {
    let method =
        || MethodConfig::new([MethodName::service("test.Svc")]).timeout(Duration::from_millis(200));
    let hedging = HedgingPolicy::new(3, Duration::from_millis(50), [Code::Unavailable]).unwrap();
    for method in [
        method(),
        method().retry(policy(3)),
        method().hedging(hedging),
    ] {
        let config = ServiceConfig::new().with_method(method).unwrap();
        let (mut service, mut handle) = configured(config);
        // Nothing is ready, and the call has no deadline of its own: the
        // caller is told ready, and the call waits until the timeout.
        handle.allow(0);
        let started = Instant::now();
        let call = start(&mut service, request());
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
        assert!(status.is_not_processed());
        assert_eq!(Instant::now() - started, Duration::from_millis(200));
        no_more(&mut handle).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_found_the_service_not_ready_goes_once_it_is() {
    let (mut service, mut handle) = configured(retry_config(policy(3)));
    handle.allow(0);
    let call = start(&mut service, request());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (sent, respond) = next(&mut handle).await;
    assert_eq!(attempt_number(&sent), None, "the first attempt");
    respond.send_response(ok_response(b"pong"));
    assert!(call.await.unwrap().is_ok());
}
