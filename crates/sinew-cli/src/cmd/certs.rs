//! `sinew certs`: a throwaway CA and certificates for trying TLS and mutual
//! TLS, for tests and development (not a production CA: its key is never
//! written, so nothing more can be issued from it later).

use crate::error::CliError;
use sinew::tls::dev::{write_atomically, DevCa};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
sinew certs /tmp/pki --issue server=127.0.0.1,localhost --issue client=spiffe://example.org/ns/dev/sa/client\n  \
sinew serve --listen tls://127.0.0.1:7443 --tls-cert /tmp/pki/server.crt --tls-key /tmp/pki/server.key --client-ca /tmp/pki/ca.crt\n  \
sinew call tls://127.0.0.1:7443 grpc.examples.echo.Echo/UnaryEcho '{\"message\":\"hi\"}' --ca /tmp/pki/ca.crt --cert /tmp/pki/client.crt --key /tmp/pki/client.key")]
pub(crate) struct Args {
    /// Directory to write into (created if missing): ca.crt, and STEM.crt and
    /// STEM.key for each certificate.
    dir: PathBuf,
    /// A certificate to issue, as STEM=NAME[,NAME...]: IP addresses become IP
    /// SANs, URIs (spiffe://...) URI SANs, anything else DNS SANs. Valid for
    /// a year, for servers and clients alike (repeatable).
    #[arg(long, value_name = "STEM=NAMES")]
    issue: Vec<String>,
    /// As --issue, but expired yesterday (to see it refused).
    #[arg(long, value_name = "STEM=NAMES")]
    issue_expired: Vec<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let failure = |e: &dyn std::fmt::Display| CliError::failure(e.to_string());
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| CliError::failure(format!("creating {}: {e}", args.dir.display())))?;
    // A name of its own: another run's CA is another issuer, and a
    // certificate of one is refused by the other as such (UnknownIssuer).
    let tag = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
        ^ u128::from(std::process::id());
    let ca =
        DevCa::new(&format!("sinew development CA {:08x}", tag as u32)).map_err(|e| failure(&e))?;
    let ca_path = args.dir.join("ca.crt");
    write_atomically(&ca_path, ca.certificate_pem().as_bytes(), 0o644)?;
    println!("wrote {}", ca_path.display());
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let requests = args
        .issue
        .iter()
        .map(|spec| (spec, false))
        .chain(args.issue_expired.iter().map(|spec| (spec, true)));
    for (spec, expired) in requests {
        let (stem, names) = spec
            .split_once('=')
            .filter(|(stem, names)| !stem.is_empty() && !names.is_empty() && !stem.contains('/'))
            .ok_or_else(|| {
                CliError::usage(format!("--issue {spec:?} is not STEM=NAME[,NAME...]"))
            })?;
        let names: Vec<&str> = names.split(',').map(str::trim).collect();
        let certificate = if expired {
            ca.issue_valid(&names, now - 2 * day, now - day)
        } else {
            ca.issue(&names)
        }
        .map_err(|e| CliError::usage(e.to_string()))?;
        let (cert, key) = certificate.write(&args.dir, stem)?;
        println!(
            "wrote {} and {} for {}{}",
            cert.display(),
            key.display(),
            names.join(", "),
            if expired { " (expired)" } else { "" }
        );
    }
    Ok(())
}
