//! The balancing policies through a real [`Balanced`] channel (its worker,
//! its readiness, its fail-over), over endpoints in this process: each
//! endpoint's channel is a service ([`Channel::from_service`]) that answers
//! with the address it serves, so a test sees where every call went without
//! sockets. The policies' statistics are tested in their modules; here, that
//! the channel feeds them what they need: the call's key, the zone, the
//! subset, the weights.

use futures_util::StreamExt;
use sinew_cluster::resolve::Updates;
use sinew_cluster::{Balanced, Endpoint, Policy, Resolve, Update};
use sinew_rpc::call::{CallRequest, CallResponse, Payload, RequestBody, ResponseBody};
use sinew_rpc::{Channel, Code, MetadataMap, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};

const SERVICE: &str = "test.Policies";

/// A resolver whose updates the test sends.
struct Manual {
    updates: Mutex<Option<mpsc::UnboundedReceiver<Update>>>,
}

fn manual(first: Update) -> (Manual, mpsc::UnboundedSender<Update>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    sender.send(first).unwrap();
    let resolver = Manual {
        updates: Mutex::new(Some(receiver)),
    };
    (resolver, sender)
}

impl Resolve for Manual {
    fn resolve(&self, _service: &str) -> Updates {
        let receiver = self.updates.lock().unwrap().take().expect("resolved once");
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|update| (Ok(update), receiver))
        })
        .boxed()
    }
}

fn endpoint(i: usize) -> Endpoint {
    Endpoint::new(format!("tcp://10.9.0.{}:7000", i + 1).parse().unwrap())
}

/// How endpoints answer: with the address they serve in the `served-by`
/// header; those listed in `refusing` refuse every call *not processed*
/// (as a server shutting down does), so that it fails over.
#[derive(Clone, Default)]
struct Fleet {
    refusing: Arc<Mutex<BTreeSet<String>>>,
    /// Those listed here fail every third call with `UNAVAILABLE` (after
    /// processing it: it counts against them).
    flaky: Arc<Mutex<BTreeSet<String>>>,
    /// Channels made, by address.
    made: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    fn channel(&self, endpoint: &Endpoint) -> Channel {
        let address = endpoint.address().to_string();
        self.made.lock().unwrap().push(address.clone());
        let (refusing, flaky) = (self.refusing.clone(), self.flaky.clone());
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        Channel::from_service(tower::service_fn(move |_request: CallRequest| {
            let address = address.clone();
            let refused = refusing.lock().unwrap().contains(&address);
            let n = answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let failed = flaky.lock().unwrap().contains(&address) && n % 3 == 2;
            async move {
                if refused {
                    return Err(Status::unavailable("shutting down").mark_not_processed());
                }
                if failed {
                    return Err(Status::unavailable("flaky"));
                }
                let mut headers = MetadataMap::new();
                headers.insert("served-by", &address).unwrap();
                Ok::<_, Status>(CallResponse::new(
                    headers,
                    ResponseBody::from_status(Status::new(Code::Ok, "")),
                ))
            }
        }))
    }

    fn balanced(&self, resolver: impl Resolve, policy: Policy) -> sinew_cluster::BalancedBuilder {
        let fleet = self.clone();
        Balanced::builder(resolver, SERVICE)
            .policy(policy)
            .health_check(false)
            .channel(move |endpoint| fleet.channel(endpoint))
    }
}

/// A call, with `user` in its `x-user` entry if given; where it went.
async fn call(channel: &mut Balanced, user: Option<&str>) -> Result<String, Status> {
    let mut request = CallRequest::new(
        "/test.Policies/Call",
        RequestBody::single(Payload::from_bytes(Vec::new().into())),
    );
    if let Some(user) = user {
        request.metadata_mut().insert("x-user", user).unwrap();
    }
    let response = channel.ready().await?.call(request).await?;
    Ok(response.headers().get("served-by").unwrap().to_owned())
}

/// Waits until the channel has `count` endpoints, every one ready.
async fn until_ready(channel: &Balanced, count: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let endpoints = channel.endpoints();
            if endpoints.len() == count
                && endpoints
                    .iter()
                    .all(|e| e.health == sinew_cluster::balance::Health::Ready)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every endpoint ready within 10 s");
}

#[tokio::test]
async fn calls_with_the_same_key_reach_the_same_endpoint() {
    let fleet = Fleet::default();
    let endpoints: Vec<Endpoint> = (0..5).map(endpoint).collect();
    for policy in [Policy::ring_hash("x-user"), Policy::maglev("x-user")] {
        let (resolver, _updates) = manual(Update::Reset(endpoints.clone()));
        let mut channel = fleet.balanced(resolver, policy.clone()).build();
        until_ready(&channel, 5).await;
        let mut homes = BTreeMap::new();
        for user in 0..60 {
            let user = format!("user-{user}");
            let home = call(&mut channel, Some(&user)).await.unwrap();
            for _ in 0..3 {
                assert_eq!(call(&mut channel, Some(&user)).await.unwrap(), home);
            }
            // A clone (another task's handle) agrees.
            let mut clone = channel.clone();
            assert_eq!(call(&mut clone, Some(&user)).await.unwrap(), home);
            homes.insert(user, home);
        }
        // Sixty keys over five endpoints: every endpoint has some
        // (each misses all sixty with probability (4/5)^60, ~1e-6, and
        // the keys are fixed).
        let used: BTreeSet<&String> = homes.values().collect();
        assert_eq!(used.len(), 5, "{policy:?}: {homes:?}");
        // Calls without the key, or with an empty one, are spread.
        let mut spread = BTreeSet::new();
        for i in 0..100 {
            let user = if i % 2 == 0 { None } else { Some("") };
            spread.insert(call(&mut channel, user).await.unwrap());
        }
        assert!(spread.len() >= 3, "{policy:?}: {spread:?}");
    }
}

#[tokio::test]
async fn a_hash_call_fails_over_to_the_next_endpoint_of_its_key() {
    let fleet = Fleet::default();
    let endpoints: Vec<Endpoint> = (0..6).map(endpoint).collect();
    let (resolver, _updates) = manual(Update::Reset(endpoints.clone()));
    let mut channel = fleet
        .balanced(resolver, Policy::ring_hash("x-user"))
        .build();
    until_ready(&channel, 6).await;
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let mut homes = Vec::new();
    for user in &users {
        homes.push(call(&mut channel, Some(user)).await.unwrap());
    }
    // The first key's endpoint refuses: its keys fail over to where a ring
    // without it sends them (the next point of the ring), every time; the
    // other keys stay.
    let down = homes[0].clone();
    fleet.refusing.lock().unwrap().insert(down.clone());
    let without: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| e.address().to_string() != down)
        .cloned()
        .collect();
    let (resolver, _updates) = manual(Update::Reset(without));
    let mut reference = fleet
        .balanced(resolver, Policy::ring_hash("x-user"))
        .build();
    until_ready(&reference, 5).await;
    for (user, home) in users.iter().zip(&homes) {
        let now = call(&mut channel, Some(user)).await.unwrap();
        if *home == down {
            assert_eq!(now, call(&mut reference, Some(user)).await.unwrap());
        } else {
            assert_eq!(now, *home);
        }
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_the_resolvers_weights() {
    let fleet = Fleet::default();
    let endpoints = vec![endpoint(0).with_weight(5), endpoint(1), endpoint(2)];
    let (resolver, updates) = manual(Update::Reset(endpoints));
    let mut channel = fleet
        .balanced(resolver, Policy::weighted_round_robin())
        .build();
    until_ready(&channel, 3).await;
    let mut sequence = String::new();
    for _ in 0..14 {
        let served = call(&mut channel, None).await.unwrap();
        sequence.push(match served.as_str() {
            "tcp://10.9.0.1:7000" => 'a',
            "tcp://10.9.0.2:7000" => 'b',
            _ => 'c',
        });
    }
    assert_eq!(sequence, "aabacaaaabacaa");
    // A new weight from the resolver: a new set, new turns.
    updates
        .send(Update::Add(vec![endpoint(1).with_weight(5)]))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while channel.endpoints()[1].endpoint.weight() != 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    for _ in 0..110 {
        *counts
            .entry(call(&mut channel, None).await.unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [50, 50, 10],
        "{counts:?}"
    );
}

#[tokio::test]
async fn calls_prefer_the_callers_zone_and_spill_when_it_has_none() {
    let fleet = Fleet::default();
    let local = endpoint(0).with_zone("eu-1");
    let endpoints = vec![
        local.clone(),
        endpoint(1).with_zone("eu-1"),
        endpoint(2).with_zone("us-1"),
        endpoint(3),
    ];
    let (resolver, updates) = manual(Update::Reset(endpoints));
    let mut channel = fleet
        .balanced(resolver, Policy::peak_ewma())
        .zone("eu-1")
        .build();
    until_ready(&channel, 4).await;
    let zone_of = |address: &str| match address {
        "tcp://10.9.0.1:7000" | "tcp://10.9.0.2:7000" => "eu-1",
        _ => "elsewhere",
    };
    for _ in 0..200 {
        assert_eq!(zone_of(&call(&mut channel, None).await.unwrap()), "eu-1");
    }
    // The zone's endpoints leave: calls go to the others.
    updates
        .send(Update::Remove(vec![
            endpoint(0).address().clone(),
            endpoint(1).address().clone(),
        ]))
        .unwrap();
    until_ready(&channel, 2).await;
    for _ in 0..50 {
        assert_eq!(
            zone_of(&call(&mut channel, None).await.unwrap()),
            "elsewhere"
        );
    }
    // One comes back: the zone takes the calls again.
    updates.send(Update::Add(vec![local])).unwrap();
    until_ready(&channel, 3).await;
    for _ in 0..50 {
        assert_eq!(
            call(&mut channel, None).await.unwrap(),
            "tcp://10.9.0.1:7000"
        );
    }
}

#[tokio::test]
async fn a_subset_connects_only_its_endpoints_and_changes_little() {
    let fleet = Fleet::default();
    let endpoints: Vec<Endpoint> = (0..20).map(endpoint).collect();
    let (resolver, updates) = manual(Update::Reset(endpoints.clone()));
    let mut channel = fleet
        .balanced(resolver, Policy::round_robin())
        .subset(5)
        .client_id("client-a")
        .build();
    until_ready(&channel, 5).await;
    // Five channels made, no more: the others are never connected.
    let made: BTreeSet<String> = fleet.made.lock().unwrap().iter().cloned().collect();
    assert_eq!(made.len(), 5);
    assert_eq!(fleet.made.lock().unwrap().len(), 5);
    let mut served = BTreeSet::new();
    for _ in 0..50 {
        served.insert(call(&mut channel, None).await.unwrap());
    }
    assert_eq!(served, made);

    // A member leaves: one other endpoint replaces it; the rest stay.
    let leaving = made.iter().next().unwrap().clone();
    updates
        .send(Update::Remove(vec![leaving.parse().unwrap()]))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while fleet.made.lock().unwrap().len() < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    until_ready(&channel, 5).await;
    let now: BTreeSet<String> = channel
        .endpoints()
        .iter()
        .map(|e| e.endpoint.address().to_string())
        .collect();
    assert_eq!(now.difference(&made).count(), 1, "{now:?} {made:?}");
    assert!(!now.contains(&leaving));
    assert_eq!(fleet.made.lock().unwrap().len(), 6);

    // Another client id: another subset of the same size.
    let (resolver, _updates) = manual(Update::Reset(endpoints));
    let other_fleet = Fleet::default();
    let other = other_fleet
        .balanced(resolver, Policy::round_robin())
        .subset(5)
        .client_id("client-b")
        .build();
    until_ready(&other, 5).await;
    let theirs: BTreeSet<String> = other_fleet.made.lock().unwrap().iter().cloned().collect();
    assert_eq!(theirs.len(), 5);
    assert_ne!(theirs, made);
}

#[tokio::test]
async fn a_subset_larger_than_the_service_or_zero_takes_every_endpoint() {
    for size in [0, 10] {
        let fleet = Fleet::default();
        let endpoints: Vec<Endpoint> = (0..4).map(endpoint).collect();
        let (resolver, _updates) = manual(Update::Reset(endpoints));
        let channel = fleet
            .balanced(resolver, Policy::round_robin())
            .subset(size)
            .build();
        until_ready(&channel, 4).await;
        assert_eq!(fleet.made.lock().unwrap().len(), 4);
    }
}

#[tokio::test]
async fn a_hash_policy_waits_for_an_endpoint_like_any_other() {
    // No endpoint yet: not ready; the first one makes it ready, and the
    // keyed call goes there.
    let fleet = Fleet::default();
    let (resolver, updates) = manual(Update::Reset(Vec::new()));
    let mut channel = fleet
        .balanced(resolver, Policy::maglev("x-user"))
        .wait_for_ready(true)
        .build();
    let ready = tokio::time::timeout(Duration::from_millis(100), channel.ready()).await;
    assert!(ready.is_err(), "ready with no endpoint");
    updates.send(Update::Add(vec![endpoint(0)])).unwrap();
    assert_eq!(
        call(&mut channel, Some("someone")).await.unwrap(),
        "tcp://10.9.0.1:7000"
    );
}

#[tokio::test]
async fn an_endpoint_failing_one_call_in_three_is_ejected_by_its_success_rate() {
    let fleet = Fleet::default();
    let flaky = endpoint(2).address().to_string();
    fleet.flaky.lock().unwrap().insert(flaky.clone());
    let (resolver, _updates) = manual(Update::Reset((0..5).map(endpoint).collect()));
    // Never five failures in a row: only the success rate can tell.
    let outlier = sinew_cluster::balance::OutlierDetection::new().success_rate(
        Duration::from_millis(100),
        20,
        5,
        1.9,
    );
    let mut channel = fleet
        .balanced(resolver, Policy::round_robin())
        .outlier_detection(outlier)
        .build();
    until_ready(&channel, 5).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut failed = 0;
    loop {
        let ejected = channel
            .endpoints()
            .iter()
            .any(|e| e.ejected && e.endpoint.address().to_string() == flaky);
        if ejected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ejected");
        for _ in 0..25 {
            if call(&mut channel, None).await.is_err() {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed > 0);
    // Ejected, it gets no calls; the others take them all.
    for _ in 0..100 {
        let served_by = call(&mut channel, None).await.unwrap();
        assert_ne!(served_by, flaky);
    }
    // Only the flaky one: the others' success rates are alike.
    let ejected: Vec<_> = channel
        .endpoints()
        .into_iter()
        .filter(|e| e.ejected)
        .collect();
    assert_eq!(ejected.len(), 1, "{ejected:#?}");
}
