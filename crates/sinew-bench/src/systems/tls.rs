//! TLS in the comparison: one throwaway CA and server certificate per
//! process (`sinew::tls::dev`), shared by the `sinew-tls` and `tonic-tls`
//! rows, and the handshake row, where every call is made on a connection of
//! its own.

use super::sinew_peer::echo_server;
use crate::load::{drive, Caller, Cell, Plan, Runtimes, Stats};
use sinew::tls::{ClientTls, ServerTls};
use sinew_examples::echo::{echo_client::EchoClient, EchoRequest};

/// The certificates of this process's TLS rows.
pub(crate) struct Pki {
    /// The server's settings: its certificate for localhost and 127.0.0.1.
    pub(crate) server: ServerTls,
    /// A client's: trusting the CA, resuming sessions.
    pub(crate) client: ClientTls,
    pub(crate) ca_pem: String,
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// The process's certificates, made on first use.
pub(crate) fn pki() -> &'static Pki {
    static PKI: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let ca = sinew::tls::dev::DevCa::new("sinew-bench CA").expect("a CA");
        let certificate = ca
            .issue(&["localhost", "127.0.0.1"])
            .expect("a certificate");
        Pki {
            server: ServerTls::from_pem(certificate.chain_pem(), certificate.key_pem())
                .build()
                .expect("server TLS"),
            client: client(ca.certificate_pem(), true),
            ca_pem: ca.certificate_pem().to_owned(),
            chain_pem: certificate.chain_pem().to_owned(),
            key_pem: certificate.key_pem().to_owned(),
        }
    })
}

fn client(ca_pem: &str, resumption: bool) -> ClientTls {
    ClientTls::builder()
        .ca_pem(ca_pem)
        .resumption(resumption)
        .build()
        .expect("client TLS")
}

/// Makes each call on a new TLS connection: connect, handshake, sinew's
/// preface, one echo, close.
#[derive(Clone)]
struct HandshakeCaller {
    address: sinew::Address,
    tls: ClientTls,
    payload: String,
}

impl Caller for HandshakeCaller {
    async fn call(&self) -> anyhow::Result<()> {
        let channel = sinew::Channel::builder(self.address.clone())
            .tls(self.tls.clone())
            .connect()
            .await?;
        let reply = EchoClient::new(channel)
            .unary_echo(EchoRequest {
                message: self.payload.clone(),
            })
            .await?;
        anyhow::ensure!(reply.get_ref().message == self.payload, "wrong echo");
        Ok(())
    }
}

/// The handshake row: every call on a new connection with a full handshake.
/// (Not resumed: at 64 connections opening at once, a client's few stored
/// TLS 1.3 tickets, each good for one connection, would resume only some,
/// and the figure would mean neither.)
pub(crate) fn run_handshakes(
    runtimes: &Runtimes,
    plan: &Plan,
    cell: Cell,
) -> anyhow::Result<Stats> {
    let pki = pki();
    let server = runtimes.server.block_on(
        echo_server()
            .tls(pki.server.clone())
            .bind(["tls://127.0.0.1:0"]),
    )?;
    let address = server.local_addresses()[0].clone();
    let handle = server.handle();
    let serving = runtimes.server.spawn(server.serve());
    let caller = HandshakeCaller {
        address,
        tls: client(&pki.ca_pem, false),
        payload: super::payload(cell.payload),
    };
    let stats = drive(runtimes, plan, cell, caller);
    handle.shutdown();
    runtimes.server.block_on(serving)?;
    Ok(stats)
}
