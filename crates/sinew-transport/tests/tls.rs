//! TLS over real sockets: handshakes, mutual TLS and the identity it proves,
//! every way a certificate can be wrong, a plaintext peer on a TLS port, and
//! certificates reloaded from disk.

use sinew_transport::tls::dev::{DevCa, DevCertificate};
use sinew_transport::tls::{ClientAuth, ClientTls, ServerTls, ALPN_SINEW};
use sinew_transport::{connect_with, Address, Listener, PeerIdentity, Stream, TransportOptions};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn server_tls(ca: &DevCa, server: &DevCertificate, client_auth: ClientAuth) -> ServerTls {
    let builder = ServerTls::from_pem(server.chain_pem(), server.key_pem());
    match client_auth {
        ClientAuth::None => builder,
        auth => builder
            .client_ca_pem(ca.certificate_pem())
            .client_auth(auth),
    }
    .build()
    .unwrap()
}

/// A TLS listener on a free port, whose accepted connections echo one
/// 4-byte message after the handshake and report the handshake's outcome
/// (the peer's identity, or the error).
async fn echo_server(
    tls: ServerTls,
) -> (
    Address,
    tokio::sync::mpsc::UnboundedReceiver<Result<Option<PeerIdentity>, String>>,
) {
    let options = TransportOptions {
        server_tls: Some(tls),
        ..Default::default()
    };
    let listener = Listener::bind_with(&Address::tls("127.0.0.1", 0), &options)
        .await
        .unwrap();
    let address = listener.local_address().unwrap();
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            assert!(incoming.is_tls());
            let report = report.clone();
            tokio::spawn(async move {
                match incoming.establish().await {
                    Ok(mut stream) => {
                        assert_eq!(stream.alpn_protocol(), Some(ALPN_SINEW));
                        let mut message = [0u8; 4];
                        if stream.read_exact(&mut message).await.is_ok() {
                            let _ = stream.write_all(&message).await;
                            let _ = stream.flush().await;
                        }
                        let _ = report.send(Ok(stream.peer_identity()));
                    }
                    Err(error) => {
                        let _ = report.send(Err(error.to_string()));
                    }
                }
            });
        }
    });
    (address, reports)
}

async fn connect(address: &Address, tls: ClientTls) -> std::io::Result<Stream> {
    let options = TransportOptions {
        client_tls: Some(tls),
        ..Default::default()
    };
    connect_with(address, Some(Duration::from_secs(5)), &options).await
}

/// Sends a message and reads the echo: the error, if the server refused us
/// after the handshake (TLS 1.3 clients learn of a refused certificate then).
async fn exchange(stream: &mut Stream) -> std::io::Result<()> {
    stream.write_all(b"ping").await?;
    stream.flush().await?;
    let mut answer = [0u8; 4];
    stream.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"ping");
    Ok(())
}

#[tokio::test]
async fn a_trusted_server_is_reached_and_mutual_tls_proves_the_client() {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let client = ca
        .issue(&["spiffe://example.org/ns/test/sa/client"])
        .unwrap();

    // Server authentication only.
    let (address, mut reports) = echo_server(server_tls(&ca, &server, ClientAuth::None)).await;
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    let mut stream = connect(&address, tls).await.unwrap();
    assert!(stream.is_tls());
    exchange(&mut stream).await.unwrap();
    assert_eq!(reports.recv().await.unwrap(), Ok(None), "anonymous client");

    // Mutual TLS: the server sees the client's SPIFFE ID.
    let (address, mut reports) = echo_server(server_tls(&ca, &server, ClientAuth::Required)).await;
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .identity_pem(client.chain_pem(), client.key_pem())
        .build()
        .unwrap();
    let mut stream = connect(&address, tls).await.unwrap();
    exchange(&mut stream).await.unwrap();
    let identity = reports.recv().await.unwrap().unwrap().unwrap();
    let certificate = identity.certificate().unwrap();
    assert_eq!(
        certificate.spiffe_id(),
        Some("spiffe://example.org/ns/test/sa/client")
    );
    assert_eq!(
        identity.principals()[0],
        "spiffe://example.org/ns/test/sa/client"
    );
}

#[tokio::test]
async fn a_client_certificate_is_optional_where_the_server_says_so() {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let client = ca.issue(&["client.example.org"]).unwrap();
    let (address, mut reports) = echo_server(server_tls(&ca, &server, ClientAuth::Optional)).await;
    let anonymous = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    exchange(&mut connect(&address, anonymous).await.unwrap())
        .await
        .unwrap();
    assert_eq!(reports.recv().await.unwrap(), Ok(None));
    let named = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .identity_pem(client.chain_pem(), client.key_pem())
        .build()
        .unwrap();
    exchange(&mut connect(&address, named).await.unwrap())
        .await
        .unwrap();
    let identity = reports.recv().await.unwrap().unwrap().unwrap();
    assert_eq!(
        identity.principals(),
        ["dns:client.example.org", "cn:client.example.org"]
    );
}

#[tokio::test]
async fn bad_server_certificates_are_refused_with_the_reason() {
    let ca = DevCa::new("test CA").unwrap();
    let other_ca = DevCa::new("someone else's CA").unwrap();
    let trusting = || {
        ClientTls::builder()
            .ca_pem(ca.certificate_pem())
            .build()
            .unwrap()
    };
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let cases = [
        (
            "untrusted",
            other_ca.issue(&["127.0.0.1"]).unwrap(),
            "UnknownIssuer",
        ),
        (
            "expired",
            ca.issue_valid(&["127.0.0.1"], now - 48 * hour, now - 24 * hour)
                .unwrap(),
            "certificate expired",
        ),
        (
            "wrong name",
            ca.issue(&["elsewhere.example.org"]).unwrap(),
            "not valid for name",
        ),
    ];
    for (case, certificate, reason) in cases {
        let (address, mut reports) =
            echo_server(server_tls(&ca, &certificate, ClientAuth::None)).await;
        let error = connect(&address, trusting()).await.unwrap_err().to_string();
        assert!(
            error.contains("TLS handshake failed") && error.contains(reason),
            "{case}: {error}"
        );
        // The server saw the client give up, and goes on.
        assert!(reports.recv().await.unwrap().is_err(), "{case}");
    }
}

#[tokio::test]
async fn bad_client_certificates_are_refused_and_the_server_goes_on() {
    let ca = DevCa::new("test CA").unwrap();
    let other_ca = DevCa::new("someone else's CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let (address, mut reports) = echo_server(server_tls(&ca, &server, ClientAuth::Required)).await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let untrusted = other_ca.issue(&["client"]).unwrap();
    let expired = ca
        .issue_valid(&["client"], now - 48 * hour, now - 24 * hour)
        .unwrap();
    let cases: [(&str, Option<&DevCertificate>, &str); 3] = [
        ("no certificate", None, "CertificateRequired"),
        ("untrusted", Some(&untrusted), "UnknownCA"),
        ("expired", Some(&expired), "CertificateExpired"),
    ];
    for (case, certificate, alert) in cases {
        let builder = ClientTls::builder().ca_pem(ca.certificate_pem());
        let builder = match certificate {
            Some(c) => builder.identity_pem(c.chain_pem(), c.key_pem()),
            None => builder,
        };
        // TLS 1.3: the client's handshake ends before the server has checked
        // its certificate; the refusal arrives as an alert on the first read.
        let outcome = match connect(&address, builder.build().unwrap()).await {
            Ok(mut stream) => exchange(&mut stream).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let error = outcome.unwrap_err();
        assert!(error.contains(alert), "{case}: {error}");
        let refused = reports.recv().await.unwrap().unwrap_err();
        assert!(
            refused.contains("TLS handshake failed"),
            "{case}: {refused}"
        );
    }
    // Unharmed: a good client still gets through.
    let good = ca.issue(&["client"]).unwrap();
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .identity_pem(good.chain_pem(), good.key_pem())
        .build()
        .unwrap();
    exchange(&mut connect(&address, tls).await.unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_spiffe_identity_is_checked_where_rustls_checks_none() {
    let ca = DevCa::new("test CA").unwrap();
    // SPIFFE SVIDs carry a URI SAN and no DNS name.
    let server = ca.issue(&["spiffe://example.org/ns/prod/sa/api"]).unwrap();
    let (address, _reports) = echo_server(server_tls(&ca, &server, ClientAuth::None)).await;
    let expecting = |identity: &str| {
        ClientTls::builder()
            .ca_pem(ca.certificate_pem())
            .expect_identity(identity)
            .build()
            .unwrap()
    };
    let mut stream = connect(&address, expecting("spiffe://example.org/ns/prod/sa/api"))
        .await
        .unwrap();
    exchange(&mut stream).await.unwrap();
    let error = connect(
        &address,
        expecting("spiffe://example.org/ns/prod/sa/billing"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("is for spiffe://example.org/ns/prod/sa/api, not spiffe://example.org/ns/prod/sa/billing"),
        "{error}"
    );
    // Without an expected identity the address's host is the name, which a
    // URI-only certificate does not have.
    let plain = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    let error = connect(&address, plain).await.unwrap_err().to_string();
    assert!(error.contains("not valid for name"), "{error}");
}

#[tokio::test]
async fn a_plaintext_peer_on_a_tls_port_and_back_get_clear_errors() {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let (address, mut reports) = echo_server(server_tls(&ca, &server, ClientAuth::None)).await;
    let Address::Tls { host, port } = &address else {
        unreachable!()
    };
    // Plaintext bytes at the TLS port.
    let mut plain = tokio::net::TcpStream::connect((host.as_str(), *port))
        .await
        .unwrap();
    plain
        .write_all(b"\x89SINEW\r\n\x1a\n plaintext")
        .await
        .unwrap();
    let error = reports.recv().await.unwrap().unwrap_err();
    assert!(error.contains("plaintext"), "{error}");
    // It answers with a TLS alert, which a sinew client recognizes.
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");

    // TLS at a plaintext port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = socket.write_all(b"\x89not TLS at all\r\n").await;
    });
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    let error = connect(&Address::tls("127.0.0.1", port), tls)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not speak TLS"), "{error}");
}

#[tokio::test]
async fn certificates_are_reloaded_when_their_files_change() {
    let dir = std::env::temp_dir().join(format!("sinew-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old_ca = DevCa::new("old CA").unwrap();
    let new_ca = DevCa::new("new CA").unwrap();
    let (chain, key) = old_ca
        .issue(&["127.0.0.1"])
        .unwrap()
        .write(&dir, "server")
        .unwrap();
    let tls = ServerTls::from_pem_files(&chain, &key)
        .reload_interval(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let (address, _reports) = echo_server(tls.clone()).await;
    let trusting = |ca: &DevCa| {
        ClientTls::builder()
            .ca_pem(ca.certificate_pem())
            .build()
            .unwrap()
    };
    let mut before = connect(&address, trusting(&old_ca)).await.unwrap();
    assert!(connect(&address, trusting(&new_ca)).await.is_err());

    // A half-written key is not taken: the old certificate stays.
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\ntrunc").unwrap();
    tls.reload().unwrap_err();
    connect(&address, trusting(&old_ca)).await.unwrap();

    new_ca
        .issue(&["127.0.0.1"])
        .unwrap()
        .write(&dir, "server")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if connect(&address, trusting(&new_ca)).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connect(&address, trusting(&old_ca)).await.is_err());
    // The connection made before the change is untouched.
    exchange(&mut before).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configurations_that_cannot_work_are_refused_when_built() {
    let ca = DevCa::new("test CA").unwrap();
    let one = ca.issue(&["one"]).unwrap();
    let two = ca.issue(&["two"]).unwrap();
    let error = ServerTls::from_pem(one.chain_pem(), two.key_pem())
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("server certificate and key"), "{error}");
    let error = ServerTls::from_pem(one.chain_pem(), "")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("no private key"), "{error}");
    let error = ServerTls::from_pem_files("/nonexistent/server.crt", "/nonexistent/server.key")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("reading /nonexistent/server.crt"), "{error}");
    let error = ServerTls::from_pem(one.chain_pem(), one.key_pem())
        .client_auth(ClientAuth::Required)
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("client CA"), "{error}");
    let error = ClientTls::builder()
        .ca_pem("not PEM")
        .build()
        .unwrap_err()
        .to_string();
    assert!(error.contains("no certificate"), "{error}");
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_unless_told_not_to() {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let (address, _reports) = echo_server(server_tls(&ca, &server, ClientAuth::None)).await;
    for resumption in [true, false] {
        let tls = ClientTls::builder()
            .ca_pem(ca.certificate_pem())
            .resumption(resumption)
            .build()
            .unwrap();
        check_resumption(&address, tls, resumption).await;
    }
    // With client certificates the server never resumes: every handshake
    // verifies the certificate (a resumed session would carry it unchecked).
    let client = ca.issue(&["client"]).unwrap();
    let (address, _reports) = echo_server(server_tls(&ca, &server, ClientAuth::Required)).await;
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .identity_pem(client.chain_pem(), client.key_pem())
        .build()
        .unwrap();
    check_resumption(&address, tls, false).await;
}

/// Connects three times: the later connections resume the first's session
/// when `resumed`, else every one is a full handshake.
async fn check_resumption(address: &Address, tls: ClientTls, resumed: bool) {
    for attempt in 0..3 {
        let mut stream = connect(address, tls.clone()).await.unwrap();
        exchange(&mut stream).await.unwrap();
        let Stream::Tls(session) = &stream else {
            unreachable!("a tls:// address")
        };
        let expected = if resumed && attempt > 0 {
            rustls::HandshakeKind::Resumed
        } else {
            rustls::HandshakeKind::Full
        };
        assert_eq!(
            session.get_ref().1.handshake_kind(),
            Some(expected),
            "resumed {resumed}, attempt {attempt}"
        );
    }
}

#[tokio::test]
async fn tls_1_3_with_aes_128_gcm_is_what_two_sinew_peers_agree_on() {
    let ca = DevCa::new("test CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let (address, _reports) = echo_server(server_tls(&ca, &server, ClientAuth::None)).await;
    let tls = ClientTls::builder()
        .ca_pem(ca.certificate_pem())
        .build()
        .unwrap();
    let stream = connect(&address, tls).await.unwrap();
    let Stream::Tls(tls) = &stream else {
        unreachable!()
    };
    let session = tls.get_ref().1;
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        session.negotiated_cipher_suite().map(|suite| suite.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
}
