//! Endpoint addresses as URLs: `tcp://host:port`, `tls://host:port`,
//! `unix:///path` and `shm:///path`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a sinew endpoint listens or a client connects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// `tcp://host:port`: a host name or IP literal (IPv6 in brackets) and a port.
    /// Port 0 in a listener address means "any free port".
    Tcp {
        /// Host name or IP address (without brackets).
        host: String,
        /// Port number.
        port: u16,
    },
    /// `tls://host:port`: TCP with TLS (see [`crate::tls`]); the host is also
    /// the name a client verifies the server's certificate against, unless
    /// its TLS settings name another.
    Tls {
        /// Host name or IP address (without brackets).
        host: String,
        /// Port number.
        port: u16,
    },
    /// `unix:///absolute/path` or `unix://relative/path`: a Unix domain socket.
    Unix(PathBuf),
    /// `shm:///path/to/control.sock`: shared memory between processes on this
    /// host, set up over a Unix-socket control channel at that path (`sinew-shm`).
    Shm(PathBuf),
}

/// A string that is not a valid sinew address, with what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {problem}")]
pub struct AddressError {
    input: String,
    problem: &'static str,
}

impl AddressError {
    fn new(input: &str, problem: &'static str) -> AddressError {
        AddressError {
            input: input.to_owned(),
            problem,
        }
    }
}

impl Address {
    /// `tcp://host:port`.
    pub fn tcp(host: impl Into<String>, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    /// `tls://host:port`.
    pub fn tls(host: impl Into<String>, port: u16) -> Address {
        Address::Tls {
            host: host.into(),
            port,
        }
    }

    /// `unix://path`.
    pub fn unix(path: impl Into<PathBuf>) -> Address {
        Address::Unix(path.into())
    }

    /// `shm://path`.
    pub fn shm(path: impl Into<PathBuf>) -> Address {
        Address::Shm(path.into())
    }

    /// The URL scheme: `tcp`, `tls`, `unix` or `shm`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Tcp { .. } => "tcp",
            Address::Tls { .. } => "tls",
            Address::Unix(_) => "unix",
            Address::Shm(_) => "shm",
        }
    }

    /// True for transports that cannot leave this host (Unix sockets, shared
    /// memory).
    pub fn is_local_only(&self) -> bool {
        matches!(self, Address::Unix(_) | Address::Shm(_))
    }

    /// The host and port of a network address (`tcp://`, `tls://`).
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match self {
            Address::Tcp { host, port } | Address::Tls { host, port } => Some((host, *port)),
            Address::Unix(_) | Address::Shm(_) => None,
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Address, AddressError> {
        let (scheme, rest) = input.split_once("://").ok_or_else(|| {
            AddressError::new(
                input,
                "expected scheme://..., for example tcp://127.0.0.1:7000, tls://api.example.org:7443, unix:///tmp/sinew.sock or shm:///tmp/sinew.sock",
            )
        })?;
        match scheme {
            "tcp" | "tls" => {
                let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
                    let (host, after) = bracketed
                        .split_once(']')
                        .ok_or_else(|| AddressError::new(input, "unclosed '[' in IPv6 host"))?;
                    let port = after
                        .strip_prefix(':')
                        .ok_or_else(|| AddressError::new(input, "missing :port after the host"))?;
                    (host, port)
                } else {
                    rest.rsplit_once(':')
                        .ok_or_else(|| AddressError::new(input, "missing :port after the host"))?
                };
                if host.is_empty() {
                    return Err(AddressError::new(input, "empty host"));
                }
                if host.contains(['/', '?', '#', '@']) {
                    return Err(AddressError::new(
                        input,
                        "host may not contain '/', '?', '#' or '@'",
                    ));
                }
                let port = port.parse::<u16>().map_err(|_| {
                    AddressError::new(input, "port is not a number from 0 to 65535")
                })?;
                Ok(if scheme == "tcp" {
                    Address::tcp(host, port)
                } else {
                    Address::tls(host, port)
                })
            }
            "unix" | "shm" => {
                if rest.is_empty() {
                    return Err(AddressError::new(input, "empty socket path"));
                }
                if rest.contains('\0') {
                    return Err(AddressError::new(input, "socket path contains a NUL byte"));
                }
                let path = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    Address::Unix(path)
                } else {
                    Address::Shm(path)
                })
            }
            _ => Err(AddressError::new(
                input,
                "unknown scheme; supported: tcp://host:port, tls://host:port, unix:///path, shm:///path",
            )),
        }
    }
}

impl TryFrom<&str> for Address {
    type Error = AddressError;
    fn try_from(input: &str) -> Result<Address, AddressError> {
        input.parse()
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(input: String) -> Result<Address, AddressError> {
        input.parse()
    }
}

impl TryFrom<&String> for Address {
    type Error = AddressError;
    fn try_from(input: &String) -> Result<Address, AddressError> {
        input.parse()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Address::Tls { host, port } if host.contains(':') => write!(f, "tls://[{host}]:{port}"),
            Address::Tls { host, port } => write!(f, "tls://{host}:{port}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Shm(path) => write!(f, "shm://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in [
            "tcp://127.0.0.1:7000",
            "tcp://localhost:0",
            "tcp://[::1]:8080",
            "tls://api.example.org:7443",
            "tls://[::1]:7443",
            "unix:///tmp/sinew.sock",
            "unix://relative.sock",
            "shm:///run/app/api.sock",
        ] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        assert_eq!(
            "tcp://[::1]:1".parse::<Address>().unwrap(),
            Address::tcp("::1", 1)
        );
    }

    #[test]
    fn malformed_addresses_say_what_is_wrong() {
        for (text, problem) in [
            ("127.0.0.1:7000", "expected scheme"),
            ("http://x:1", "unknown scheme"),
            ("tcp://host", "missing :port"),
            ("tcp://:80", "empty host"),
            ("tcp://h:99999", "port is not a number"),
            ("tcp://h:x", "port is not a number"),
            ("tcp://[::1:80", "unclosed"),
            ("tcp://a/b:80", "host may not contain"),
            ("tls://host", "missing :port"),
            ("unix://", "empty socket path"),
            ("shm://", "empty socket path"),
        ] {
            let err = text.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(problem), "{text}: {err}");
        }
    }
}
