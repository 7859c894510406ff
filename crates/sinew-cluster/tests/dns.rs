//! The DNS resolver against a real DNS server (hickory's authoritative server,
//! in this process, on a UDP port of 127.0.0.1): A and SRV records, a new
//! lookup when the TTL runs out and when the balancer asks, and the error for
//! a name that does not exist.

use futures_util::StreamExt;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use sinew_cluster::resolve::{Dns, Updates};
use sinew_cluster::{Endpoint, Resolve, Update};
use sinew_rpc::Status;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn a(host: &str, last: u8, ttl: u32) -> Record {
    Record::from_rdata(name(host), ttl, RData::A(A(Ipv4Addr::new(127, 0, 0, last))))
}

fn srv(service: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(service),
        30,
        RData::SRV(SRV::new(priority, weight, port, name(target))),
    )
}

/// A DNS server for `svc.test.` holding `records`; the zone stays
/// changeable through the returned handler.
async fn serve(records: Vec<Record>) -> (SocketAddr, Arc<Zone>, Server<Catalog>) {
    let origin = name("svc.test.");
    let mut zone = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name("ns.svc.test."),
        name("admin.svc.test."),
        1,
        3600,
        600,
        86400,
        1,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1);
    for record in records {
        zone.upsert_mut(record, 1);
    }
    let zone = Arc::new(zone);
    let mut catalog = Catalog::new();
    let handler: Arc<dyn ZoneHandler> = zone.clone();
    catalog.upsert(LowerName::new(&origin), vec![handler]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let mut server = Server::new(catalog);
    server.register_socket(socket);
    (address, zone, server)
}

/// The next update, within 10 s.
async fn next(updates: &mut Updates) -> Result<Update, Status> {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update in time")
        .expect("the stream goes on")
}

/// The endpoints of a reset, as `address weight` strings, sorted.
fn reset(update: Update) -> Vec<String> {
    let Update::Reset(endpoints) = update else {
        panic!("expected a reset, got {update:?}");
    };
    let mut listed: Vec<String> = endpoints
        .iter()
        .map(|endpoint: &Endpoint| format!("{} {}", endpoint.address(), endpoint.weight()))
        .collect();
    listed.sort();
    listed
}

#[tokio::test]
async fn a_records_at_a_port_and_a_new_lookup_after_the_ttl() {
    let (nameserver, zone, _server) =
        serve(vec![a("echo.svc.test.", 1, 1), a("echo.svc.test.", 2, 1)]).await;
    let dns = Dns::host("echo.svc.test.", 7000)
        .nameserver(nameserver)
        .refresh_between(Duration::from_millis(50), Duration::from_secs(5));
    let mut updates = dns.resolve("grpc.examples.echo.Echo");
    assert_eq!(
        reset(next(&mut updates).await.unwrap()),
        ["tcp://127.0.0.1:7000 1", "tcp://127.0.0.2:7000 1"]
    );
    // A third replica: seen once the 1 s TTL has run out.
    zone.upsert(a("echo.svc.test.", 3, 1), 2).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen = reset(next(&mut updates).await.unwrap());
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "tcp://127.0.0.1:7000 1",
            "tcp://127.0.0.2:7000 1",
            "tcp://127.0.0.3:7000 1"
        ]
    );
}

#[tokio::test]
async fn srv_records_of_the_lowest_priority_with_their_ports_and_weights() {
    let (nameserver, _zone, _server) = serve(vec![
        srv("_echo._tcp.svc.test.", 0, 5, 7001, "a.svc.test."),
        srv("_echo._tcp.svc.test.", 0, 10, 7002, "b.svc.test."),
        // A backup (higher priority value): not used while the others exist.
        srv("_echo._tcp.svc.test.", 1, 1, 7003, "c.svc.test."),
        a("a.svc.test.", 1, 30),
        a("b.svc.test.", 2, 30),
        a("c.svc.test.", 3, 30),
    ])
    .await;
    let dns = Dns::parse(&format!("dns+srv://{nameserver}/_echo._tcp.svc.test.")).unwrap();
    let mut updates = dns.resolve("grpc.examples.echo.Echo");
    assert_eq!(
        reset(next(&mut updates).await.unwrap()),
        ["tcp://127.0.0.1:7001 5", "tcp://127.0.0.2:7002 10"]
    );
}

#[tokio::test]
async fn a_failed_connect_makes_it_look_again_before_the_ttl() {
    let (nameserver, zone, _server) = serve(vec![a("echo.svc.test.", 1, 300)]).await;
    let dns = Dns::host("echo.svc.test.", 7000)
        .nameserver(nameserver)
        .refresh_between(Duration::from_millis(50), Duration::from_secs(300));
    let mut updates = dns.resolve("grpc.examples.echo.Echo");
    assert_eq!(
        reset(next(&mut updates).await.unwrap()),
        ["tcp://127.0.0.1:7000 1"]
    );
    zone.upsert(a("echo.svc.test.", 2, 300), 2).await;
    // Without the hint nothing comes for 300 s; with it, at once.
    let waiting = tokio::spawn(async move { next(&mut updates).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    dns.reresolve("grpc.examples.echo.Echo");
    let update = waiting.await.unwrap().unwrap();
    assert_eq!(
        reset(update),
        ["tcp://127.0.0.1:7000 1", "tcp://127.0.0.2:7000 1"]
    );
}

#[tokio::test]
async fn a_name_that_does_not_exist_is_an_error_naming_it() {
    let (nameserver, _zone, _server) = serve(vec![a("echo.svc.test.", 1, 30)]).await;
    let dns = Dns::parse(&format!("dns://{nameserver}/missing.svc.test.:7000")).unwrap();
    let mut updates = dns.resolve("grpc.examples.echo.Echo");
    let status = next(&mut updates).await.unwrap_err();
    assert_eq!(status.code(), sinew_rpc::Code::Unavailable);
    assert!(status.message().contains("missing.svc.test."), "{status}");
}
