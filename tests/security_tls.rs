//! TLS, identities and authorization against a real server: sinew's protocol
//! and gRPC on one `tls://` port, the identity a handler sees over TLS, Unix
//! sockets and shared memory, one policy over all of them, bearer tokens,
//! peers that speak the wrong thing, and certificates rotated under load.

mod common;

use common::TempDir;
use sinew::auth::{AuthenticateLayer, AuthorizeLayer, Policy, TokenVerifier};
use sinew::tls::dev::{DevCa, DevCertificate};
use sinew::tls::{ClientTls, ServerTls};
use sinew::transport::Address;
use sinew::{Channel, Code, Server};
use sinew_examples::echo::{
    echo_client::EchoClient, echo_server::EchoServer, EchoRequest, EchoService,
};
use sinew_tests::testing::{
    testing_client::TestingClient, testing_server::TestingServer, TestingService,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SPIFFE_INTERN: &str = "spiffe://example.org/ns/test/sa/intern";
const SPIFFE_TELLER: &str = "spiffe://example.org/ns/test/sa/teller";
const STREAMING: &str = "/grpc.examples.echo.Echo/ServerStreamingEcho";
const JWT_SECRET: &[u8] = b"a secret of at least thirty-two bytes";

/// A server with the echo and testing services on `tls://`, `unix://` and
/// `shm://`, gRPC too, its certificate from files in `dir`.
struct SecureServer {
    tls: Address,
    unix: Address,
    shm: Address,
    handle: sinew::rpc::server::ServerHandle,
    task: tokio::task::JoinHandle<sinew::rpc::ShutdownReport>,
}

impl SecureServer {
    async fn start(
        tls: ServerTls,
        dir: &TempDir,
        configure: impl FnOnce(sinew::rpc::ServerBuilder) -> sinew::rpc::ServerBuilder,
    ) -> SecureServer {
        let builder = Server::builder()
            .add_service(EchoServer::new(EchoService))
            .add_service(TestingServer::new(TestingService::default()))
            .add_protocol(sinew::grpc::GrpcProtocol::default())
            .tls(tls);
        let server = configure(builder)
            .bind([
                "tls://127.0.0.1:0".to_owned(),
                format!("unix://{}", dir.0.join("server.sock").display()),
                format!("shm://{}", dir.0.join("shm.sock").display()),
            ])
            .await
            .expect("bind");
        let [tls, unix, shm] = <[Address; 3]>::try_from(server.local_addresses().to_vec()).unwrap();
        SecureServer {
            tls,
            unix,
            shm,
            handle: server.handle(),
            task: tokio::spawn(server.serve()),
        }
    }

    async fn shutdown(self) {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shut down in time")
            .expect("no panic");
    }
}

fn port_of(address: &Address) -> u16 {
    address.host_port().expect("a network address").1
}

fn client_tls(ca: &DevCa, identity: Option<&DevCertificate>) -> ClientTls {
    let builder = ClientTls::builder().ca_pem(ca.certificate_pem());
    match identity {
        Some(certificate) => builder.identity_pem(certificate.chain_pem(), certificate.key_pem()),
        None => builder,
    }
    .build()
    .unwrap()
}

async fn tls_channel(address: &Address, tls: ClientTls) -> Result<Channel, sinew::Status> {
    Channel::builder(address.clone())
        .tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn grpcs_channel(port: u16, tls: ClientTls) -> Channel {
    let channel = sinew::grpc::client::GrpcChannel::builder(&format!("grpcs://127.0.0.1:{port}"))
        .unwrap()
        .tls(tls)
        .connect()
        .await
        .expect("gRPC over TLS");
    Channel::from_service(channel)
}

fn euid() -> u32 {
    // The same process: the server sees our own credentials.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_who_called_over_every_transport() {
    let dir = TempDir::new("tls-identity");
    let ca = DevCa::new("test CA").unwrap();
    let server_certificate = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let tls = ServerTls::from_pem(server_certificate.chain_pem(), server_certificate.key_pem())
        .client_ca_pem(ca.certificate_pem())
        .client_auth(sinew::tls::ClientAuth::Optional)
        .build()
        .unwrap();
    let server = SecureServer::start(tls, &dir, |builder| builder).await;
    let intern = ca.issue(&[SPIFFE_INTERN]).unwrap();

    // Mutual TLS, over sinew's protocol and over gRPC on the same port.
    let sinew_channel = tls_channel(&server.tls, client_tls(&ca, Some(&intern)))
        .await
        .unwrap();
    let grpc_channel = grpcs_channel(port_of(&server.tls), client_tls(&ca, Some(&intern))).await;
    for channel in [sinew_channel, grpc_channel] {
        let caller = TestingClient::new(channel)
            .whoami(())
            .await
            .unwrap()
            .into_inner();
        assert!(caller.tls);
        assert_eq!(
            caller.principals,
            [SPIFFE_INTERN.to_owned(), format!("cn:{SPIFFE_INTERN}")]
        );
    }
    // TLS without a client certificate: encrypted, anonymous.
    let anonymous = tls_channel(&server.tls, client_tls(&ca, None))
        .await
        .unwrap();
    let caller = TestingClient::new(anonymous)
        .whoami(())
        .await
        .unwrap()
        .into_inner();
    assert!(caller.tls && caller.principals.is_empty());
    // Unix socket and shared memory: the process's credentials.
    for address in [&server.unix, &server.shm] {
        let channel = Channel::connect(&address.to_string()).await.unwrap();
        let caller = TestingClient::new(channel)
            .whoami(())
            .await
            .unwrap()
            .into_inner();
        assert!(!caller.tls);
        assert_eq!(caller.principals[0], format!("uid:{}", euid()), "{address}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_policy_denies_one_method_to_one_identity_on_every_transport() {
    let dir = TempDir::new("tls-policy");
    let ca = DevCa::new("test CA").unwrap();
    let server_certificate = ca.issue(&["127.0.0.1"]).unwrap();
    let tls = ServerTls::from_pem(server_certificate.chain_pem(), server_certificate.key_pem())
        .client_ca_pem(ca.certificate_pem())
        .client_auth(sinew::tls::ClientAuth::Optional)
        .build()
        .unwrap();
    let policy = Policy::from_toml(&format!(
        r#"
        [[deny]]
        name = "no streaming for the intern"
        principals = ["{SPIFFE_INTERN}", "uid:{}"]
        methods = ["{STREAMING}"]

        [[allow]]
        principals = ["authenticated"]
        "#,
        euid()
    ))
    .unwrap();
    let authorize = AuthorizeLayer::new(policy);
    let verifier = TokenVerifier::hmac_secret(JWT_SECRET).unwrap();
    let server = SecureServer::start(tls, &dir, |builder| {
        // Tokens first, so that the policy sees their principals.
        builder
            .layer(AuthenticateLayer::new(verifier))
            .layer(authorize.clone())
    })
    .await;
    let intern = ca.issue(&[SPIFFE_INTERN]).unwrap();
    let teller = ca.issue(&[SPIFFE_TELLER]).unwrap();

    async fn check(channel: Channel, streaming_allowed: bool, what: &str) {
        let client = EchoClient::new(channel);
        let unary = client
            .unary_echo(EchoRequest {
                message: "hi".into(),
            })
            .await;
        assert_eq!(unary.unwrap().into_inner().message, "hi", "{what}");
        let streaming = client
            .server_streaming_echo(EchoRequest {
                message: "hi".into(),
            })
            .await;
        match (streaming, streaming_allowed) {
            (Ok(mut replies), true) => {
                assert!(
                    replies.get_mut().message().await.unwrap().is_some(),
                    "{what}"
                )
            }
            (Err(status), false) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{what}");
                // Nothing leaks: which rule, which principal.
                assert_eq!(status.message(), "permission denied", "{what}");
            }
            (outcome, _) => panic!("{what}: {:?}", outcome.map(|_| ())),
        }
    }
    let tls_port = port_of(&server.tls);
    check(
        tls_channel(&server.tls, client_tls(&ca, Some(&intern)))
            .await
            .unwrap(),
        false,
        "intern, tls://",
    )
    .await;
    check(
        grpcs_channel(tls_port, client_tls(&ca, Some(&intern))).await,
        false,
        "intern, grpcs://",
    )
    .await;
    check(
        tls_channel(&server.tls, client_tls(&ca, Some(&teller)))
            .await
            .unwrap(),
        true,
        "teller, tls://",
    )
    .await;
    check(
        grpcs_channel(tls_port, client_tls(&ca, Some(&teller))).await,
        true,
        "teller, grpcs://",
    )
    .await;
    check(
        Channel::connect(&server.unix.to_string()).await.unwrap(),
        false,
        "uid, unix://",
    )
    .await;
    check(
        Channel::connect(&server.shm.to_string()).await.unwrap(),
        false,
        "uid, shm://",
    )
    .await;
    let denied_so_far = authorize.denied();
    assert_eq!(denied_so_far, 4);

    // No certificate, no token: not authenticated, so no allow rule matches.
    let anonymous = tls_channel(&server.tls, client_tls(&ca, None))
        .await
        .unwrap();
    let status = EchoClient::new(anonymous.clone())
        .unary_echo(EchoRequest {
            message: "hi".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // A bearer token makes the anonymous TLS client someone.
    let token = jwt(serde_json::json!({"sub": "alice", "exp": now() + 300}));
    let with_token = Channel::from_service(tower::Layer::layer(
        &sinew::auth::BearerToken::new(&token).unwrap(),
        anonymous.clone(),
    ));
    let caller = TestingClient::new(with_token.clone())
        .whoami(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caller.token_subject, "alice");
    check(with_token, true, "token, tls://").await;
    // A bad token is UNAUTHENTICATED, an expired one says so.
    for (token, message) in [
        ("not-a-token".to_owned(), "invalid bearer token"),
        (
            jwt(serde_json::json!({"sub": "alice", "exp": now() - 600})),
            "bearer token expired",
        ),
    ] {
        let channel = Channel::from_service(tower::Layer::layer(
            &sinew::auth::BearerToken::new(&token).unwrap(),
            anonymous.clone(),
        ));
        let status = EchoClient::new(channel)
            .unary_echo(EchoRequest {
                message: "hi".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), message);
    }

    // The policy changes while the server runs.
    authorize.set_policy(Policy::default());
    check(
        Channel::connect(&server.unix.to_string()).await.unwrap(),
        true,
        "uid, new policy",
    )
    .await;
    server.shutdown().await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(claims: serde_json::Value) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_speak_the_wrong_thing_get_clear_errors_and_the_server_goes_on() {
    let dir = TempDir::new("tls-mismatch");
    let ca = DevCa::new("test CA").unwrap();
    let other_ca = DevCa::new("another CA").unwrap();
    let server_certificate = ca.issue(&["127.0.0.1"]).unwrap();
    let tls = ServerTls::from_pem(server_certificate.chain_pem(), server_certificate.key_pem())
        .client_ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    let server = SecureServer::start(tls, &dir, |builder| builder).await;
    let port = port_of(&server.tls);
    let client = ca.issue(&["client"]).unwrap();

    // A plaintext sinew client at the TLS port.
    let error = Channel::connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(error.message().contains("answered with TLS"), "{error}");
    // A plaintext gRPC client at the TLS port.
    let error = sinew::grpc::connect(&format!("grpc://127.0.0.1:{port}")).await;
    if let Ok(channel) = error {
        let status = EchoClient::new(channel)
            .unary_echo(EchoRequest {
                message: "hi".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }
    // No client certificate where one is required.
    let outcome = match tls_channel(&server.tls, client_tls(&ca, None)).await {
        Ok(channel) => EchoClient::new(channel)
            .unary_echo(EchoRequest {
                message: "hi".into(),
            })
            .await
            .map(drop),
        Err(status) => Err(status),
    };
    let status = outcome.unwrap_err();
    assert!(status.message().contains("CertificateRequired"), "{status}");
    // A server certificate from a CA the client does not trust.
    let error = tls_channel(&server.tls, client_tls(&other_ca, Some(&client)))
        .await
        .unwrap_err();
    assert!(error.message().contains("UnknownIssuer"), "{error}");
    // TLS at a plaintext port (a Unix socket speaks plaintext).
    let plain = Server::builder()
        .add_service(EchoServer::new(EchoService))
        .bind(["tcp://127.0.0.1:0"])
        .await
        .unwrap();
    let plain_port = port_of(&plain.local_addresses()[0]);
    let plain_handle = plain.handle();
    tokio::spawn(plain.serve());
    let error = tls_channel(
        &Address::tls("127.0.0.1", plain_port),
        client_tls(&ca, Some(&client)),
    )
    .await
    .unwrap_err();
    assert!(error.message().contains("does not speak TLS"), "{error}");
    plain_handle.shutdown();

    // Unharmed: a good client is served.
    let channel = tls_channel(&server.tls, client_tls(&ca, Some(&client)))
        .await
        .unwrap();
    let reply = EchoClient::new(channel)
        .unary_echo(EchoRequest {
            message: "still here".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "still here");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_call() {
    let dir = TempDir::new("tls-rotation");
    let ca = DevCa::new("test CA").unwrap();
    let (chain, key) = ca
        .issue(&["127.0.0.1", "before.example.org"])
        .unwrap()
        .write(&dir.0, "server")
        .unwrap();
    let tls = ServerTls::from_pem_files(&chain, &key)
        .client_ca_pem(ca.certificate_pem())
        .reload_interval(Some(Duration::from_millis(100)))
        .build()
        .unwrap();
    let server = SecureServer::start(tls, &dir, |builder| builder).await;
    let client = ca.issue(&["client"]).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Load: calls on kept connections, and new connections all the time
    // (each makes a handshake with whatever certificate is current).
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (address, tls) = (server.tls.clone(), client_tls(&ca, Some(&client)));
        let (calls, stop) = (calls.clone(), stop.clone());
        load.spawn(async move {
            let mut kept = EchoClient::new(tls_channel(&address, tls.clone()).await?);
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) && round < 20_000 {
                round += 1;
                if worker % 2 == 1 && round.is_multiple_of(10) {
                    kept = EchoClient::new(tls_channel(&address, tls.clone()).await?);
                }
                kept.unary_echo(EchoRequest {
                    message: format!("{worker}/{round}"),
                })
                .await?;
                calls.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), sinew::Status>(())
        });
    }
    // Three rotations during the load; the last adds a name to look for.
    for generation in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let names = if generation == 2 {
            vec!["127.0.0.1", "after.example.org"]
        } else {
            vec!["127.0.0.1"]
        };
        ca.issue(&names).unwrap().write(&dir.0, "server").unwrap();
    }
    // New handshakes see the new certificate.
    let expecting_new = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .identity_pem(client.chain_pem(), client.key_pem())
        .server_name("after.example.org")
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tls_channel(&server.tls, expecting_new.clone())
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(outcome) = load.join_next().await {
        outcome
            .unwrap()
            .expect("no call failed during the rotations");
    }
    assert!(calls.load(Ordering::Relaxed) > 100, "load ran: {calls:?}");
    server.shutdown().await;
}
