//! `sinew serve` over TLS with mutual TLS, a policy and bearer tokens, and
//! `sinew call` / `sinew list` with a CA, a client certificate and a token;
//! certificates and the policy reloaded on SIGHUP.

mod common;

use common::sinew;
use sinew::tls::dev::{write_atomically, DevCa};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const ECHO: &str = "grpc.examples.echo.Echo/UnaryEcho";
const STREAMING: &str = "grpc.examples.echo.Echo/ServerStreamingEcho";
const JWT_SECRET: &str = "a secret of at least thirty-two bytes";

/// A directory of certificates, removed at the end.
struct Pki {
    dir: PathBuf,
    ca: DevCa,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "sinew-cli-tls-{}-{}",
            std::process::id(),
            common::rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = DevCa::new("test CA").unwrap();
        write_atomically(&dir.join("ca.crt"), ca.certificate_pem().as_bytes(), 0o644).unwrap();
        Pki { dir, ca }
    }

    /// Issues a certificate for `names` into `STEM.crt` / `STEM.key`.
    fn issue(&self, stem: &str, names: &[&str]) -> (String, String) {
        let (cert, key) = self
            .ca
            .issue(names)
            .unwrap()
            .write(&self.dir, stem)
            .unwrap();
        (path(&cert), path(&key))
    }

    fn file(&self, name: &str) -> String {
        path(&self.dir.join(name))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// `sinew serve` on a TLS port and a Unix socket, with `flags`.
struct Server {
    child: Child,
    tls: String,
    unix: String,
}

impl Server {
    fn start(pki: &Pki, flags: &[&str]) -> Server {
        let listen = [
            "tls://127.0.0.1:0".to_owned(),
            format!("unix://{}", pki.dir.join("server.sock").display()),
        ];
        let (child, stdout, addresses) = common::spawn_serve(&listen, flags, Stdio::null());
        std::thread::spawn(move || for _ in stdout.lines() {});
        Server {
            child,
            tls: addresses[0].clone(),
            unix: addresses[1].clone(),
        }
    }

    fn hangup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(address: &str, method: &str, flags: &[&str]) -> Output {
    sinew()
        .args(["call", address, method, r#"{"message":"hi"}"#])
        .args(flags)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `attempt` until it succeeds, for up to 10 s.
fn eventually(what: &str, mut attempt: impl FnMut() -> bool) {
    let started = Instant::now();
    while !attempt() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mutual_tls_and_a_policy_decide_who_calls_what() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1", "localhost"]);
    let (intern_cert, intern_key) =
        pki.issue("intern", &["spiffe://example.org/ns/test/sa/intern"]);
    let (teller_cert, teller_key) =
        pki.issue("teller", &["spiffe://example.org/ns/test/sa/teller"]);
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let policy = pki.file("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
            [[deny]]
            principals = ["spiffe://example.org/ns/test/sa/intern", "uid:{uid}"]
            methods = ["/{STREAMING}"]

            [[allow]]
            principals = ["authenticated"]
            "#
        ),
    )
    .unwrap();
    let ca = pki.file("ca.crt");
    let server = Server::start(
        &pki,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca,
            "--policy",
            &policy,
        ],
    );
    let intern = ["--ca", &ca, "--cert", &intern_cert, "--key", &intern_key];
    let teller = ["--ca", &ca, "--cert", &teller_cert, "--key", &teller_key];

    let allowed = call(&server.tls, ECHO, &intern);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("\"hi\""));
    let denied = call(&server.tls, STREAMING, &intern);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&denied)
    );
    let streaming = call(&server.tls, STREAMING, &teller);
    assert!(streaming.status.success(), "{}", stderr(&streaming));
    // The same policy over the Unix socket, where the identity is our uid.
    assert!(call(&server.unix, ECHO, &[]).status.success());
    assert!(stderr(&call(&server.unix, STREAMING, &[])).contains("PERMISSION_DENIED"));
    // gRPC on the same TLS port.
    let grpcs = server.tls.replacen("tls://", "grpcs://", 1);
    assert!(stderr(&call(&grpcs, STREAMING, &intern)).contains("PERMISSION_DENIED"));
    assert!(call(&grpcs, STREAMING, &teller).status.success());
    // `list` over mutual TLS.
    let listed = sinew()
        .args(["list", &server.tls])
        .args(teller)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("grpc.examples.echo.Echo"));

    // No client certificate; an untrusted server; plaintext at a TLS port.
    let anonymous = call(&server.tls, ECHO, &["--ca", &ca]);
    assert!(
        stderr(&anonymous).contains("CertificateRequired"),
        "{}",
        stderr(&anonymous)
    );
    let untrusted = call(&server.tls, ECHO, &[]);
    assert!(
        stderr(&untrusted).contains("UnknownIssuer"),
        "{}",
        stderr(&untrusted)
    );
    let plaintext = call(&server.tls.replacen("tls://", "tcp://", 1), ECHO, &[]);
    assert!(
        stderr(&plaintext).contains("answered with TLS"),
        "{}",
        stderr(&plaintext)
    );

    // SIGHUP reloads the policy: the intern may stream now.
    std::fs::write(&policy, "[[allow]]\nprincipals = [\"authenticated\"]\n").unwrap();
    server.hangup();
    eventually("the new policy", || {
        call(&server.tls, STREAMING, &intern).status.success()
    });
}

#[test]
fn a_new_certificate_is_served_after_sighup() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let server = Server::start(&pki, &["--tls-cert", &cert, "--tls-key", &key]);
    let ca = pki.file("ca.crt");
    let expecting = |name: &str| call(&server.tls, ECHO, &["--ca", &ca, "--server-name", name]);
    assert!(call(&server.tls, ECHO, &["--ca", &ca]).status.success());
    assert!(!expecting("renewed.example.org").status.success());
    pki.issue("server", &["127.0.0.1", "renewed.example.org"]);
    server.hangup();
    eventually("the renewed certificate", || {
        expecting("renewed.example.org").status.success()
    });
}

#[test]
fn bearer_tokens_authenticate_callers_without_certificates() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let secret = pki.file("jwt.secret");
    std::fs::write(&secret, format!("{JWT_SECRET}\n")).unwrap();
    let server = Server::start(
        &pki,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--jwt-secret-file",
            &secret,
            "--require-token",
        ],
    );
    let ca = pki.file("ca.crt");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let with_token = call(&server.tls, ECHO, &["--ca", &ca, "--token", &token]);
    assert!(with_token.status.success(), "{}", stderr(&with_token));
    let without = call(&server.tls, ECHO, &["--ca", &ca]);
    assert!(
        stderr(&without).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&without)
    );
    let forged = call(&server.tls, ECHO, &["--ca", &ca, "--token", "e30.e30.e30"]);
    assert!(
        stderr(&forged).contains("invalid bearer token"),
        "{}",
        stderr(&forged)
    );
}

#[test]
fn security_flags_that_cannot_work_are_usage_errors() {
    let pki = Pki::new();
    let (cert, _) = pki.issue("server", &["127.0.0.1"]);
    let ca = pki.file("ca.crt");
    let policy = pki.file("bad-policy.toml");
    std::fs::write(&policy, "[[allow]]\nprincipals = [\"bob\"]\n").unwrap();
    for (flags, expected) in [
        (
            vec!["serve", "--listen", "tls://127.0.0.1:0"],
            "needs a certificate and key",
        ),
        (
            vec![
                "serve",
                "--tls-cert",
                &cert,
                "--tls-key",
                "/nonexistent.key",
            ],
            "reading /nonexistent.key",
        ),
        (
            vec!["serve", "--policy", &policy],
            "\"bob\" is not a principal",
        ),
        (
            vec!["call", "tcp://127.0.0.1:1", ECHO, "--ca", &ca],
            "a plaintext address: use tls://",
        ),
    ] {
        let output = sinew().args(&flags).stdin(Stdio::null()).output().unwrap();
        assert!(!output.status.success(), "{flags:?}");
        assert!(
            stderr(&output).contains(expected),
            "{flags:?}: {}",
            stderr(&output)
        );
    }
}
