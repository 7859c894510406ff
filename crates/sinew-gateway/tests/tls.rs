//! TLS in front: the gateway's `tls_listen` listeners with a certificate
//! from a throwaway CA, HTTP/1.1 and HTTP/2 as ALPN settles, the upstream
//! told the request came over https, mutual TLS refusing clients without a
//! certificate.

mod common;

use common::{gateway, one_group, Upstream};
use http_body_util::{BodyExt, Full};
use sinew_transport::tls::dev::DevCa;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A TLS client trusting `ca`, offering `alpn`, with a client certificate
/// when given.
fn connector(
    ca: &DevCa,
    alpn: &[&[u8]],
    client: Option<&sinew_transport::tls::dev::DevCertificate>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca.certificate_pem().as_bytes()) {
        let cert: rustls_pki_types::CertificateDer<'static> = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            use rustls_pki_types::pem::PemObject;
            let chain =
                rustls_pki_types::CertificateDer::pem_slice_iter(client.chain_pem().as_bytes())
                    .map(Result::unwrap)
                    .collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(client.key_pem().as_bytes())
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 GET over `stream`: the status and the body.
async fn get_over<S>(stream: S, path: &str) -> Result<(u16, String), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A gateway to `upstream` serving TLS on a port of its own: the gateway
/// and that port.
async fn tls_gateway(
    dir: &std::path::Path,
    ca: &DevCa,
    upstream: &Upstream,
    mutual: bool,
) -> (common::Running, std::net::SocketAddr) {
    let (cert, key) = ca
        .issue(&["localhost"])
        .unwrap()
        .write(dir, "server")
        .unwrap();
    let client_ca = dir.join("ca.pem");
    std::fs::write(&client_ca, ca.certificate_pem()).unwrap();
    let client_ca = if mutual {
        format!(", client_ca = \"{}\"", client_ca.display())
    } else {
        String::new()
    };
    let tls = format!(
        "[server]\ntls = {{ cert = \"{}\", key = \"{}\"{client_ca} }}\n",
        cert.display(),
        key.display()
    );
    // The fixture serves its listener with serve(); TLS is serve_tls().
    let running = gateway(&format!("{tls}{}", one_group(&[upstream.address], "", ""))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serving = running.gateway.clone();
    tokio::spawn(async move { serving.serve_tls(listener).await });
    (running, address)
}

#[tokio::test]
async fn tls_listeners_speak_http1_and_h2_by_alpn() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("gateway test CA").unwrap();
    let (_running, address) = tls_gateway(dir.path(), &ca, &upstream, false).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    // HTTP/1.1.
    let stream = TcpStream::connect(address).await.unwrap();
    let tls = connector(&ca, &[b"http/1.1"], None)
        .connect(name.clone(), stream)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_over(tls, "/secure").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("x-forwarded-proto: https\n"), "{body}");

    // HTTP/2, as browsers and curl pick it.
    let stream = TcpStream::connect(address).await.unwrap();
    let tls = connector(&ca, &[b"h2", b"http/1.1"], None)
        .connect(name, stream)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get("https://localhost/h2")
                .body(Full::<bytes::Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Plaintext to the TLS port: the handshake fails, nothing is served.
    let reply = common::raw(
        address,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(!reply.contains("200"), "{reply}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("gateway test CA").unwrap();
    let (_running, address) = tls_gateway(dir.path(), &ca, &upstream, true).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    let client = ca.issue(&["client-1"]).unwrap();
    let stream = TcpStream::connect(address).await.unwrap();
    let tls = connector(&ca, &[b"http/1.1"], Some(&client))
        .connect(name.clone(), stream)
        .await
        .unwrap();
    assert_eq!(get_over(tls, "/").await.unwrap().0, 200);

    // Without a certificate: TLS 1.3 tells the client at its first read.
    let stream = TcpStream::connect(address).await.unwrap();
    let refused = match connector(&ca, &[b"http/1.1"], None)
        .connect(name, stream)
        .await
    {
        Err(_) => true,
        Ok(tls) => get_over(tls, "/").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused() {
    let config = sinew_gateway::Config::from_toml("[server]\ntls_listen = [\"127.0.0.1:0\"]\n");
    assert!(config
        .unwrap_err()
        .to_string()
        .contains("tls_listen needs tls"));
    let config = sinew_gateway::Config::from_toml(
        "[server]\ntls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }\n",
    )
    .unwrap();
    let error = sinew_gateway::Gateway::new(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("[server] tls") && error.contains("/nonexistent/cert.pem"),
        "{error}"
    );
}
