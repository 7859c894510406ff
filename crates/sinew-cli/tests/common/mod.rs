//! A real `sinew serve` child process, shared by the CLI's test files.

#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `sinew` binary under test.
pub fn sinew() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sinew"))
}

/// Starts `sinew serve --listen ADDRESS...` with `flags`, and reads up to
/// its "listening on" line for each address: the child, the rest of its
/// stdout, and the addresses bound (in the order given).
pub fn spawn_serve(
    listen: &[String],
    flags: &[&str],
    stderr: Stdio,
) -> (Child, BufReader<std::process::ChildStdout>, Vec<String>) {
    let mut command = sinew();
    command.arg("serve");
    for address in listen {
        command.args(["--listen", address]);
    }
    let mut child = command
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start sinew serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addresses = Vec::new();
    while addresses.len() < listen.len() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if let Some(address) = line.trim().strip_prefix("listening on ") {
            addresses.push(address.to_owned());
        }
    }
    (child, stdout, addresses)
}

/// A `sinew serve` child process on a free TCP port, a Unix socket and a
/// shared-memory control socket.
pub struct Serve {
    pub child: Child,
    pub tcp: String,
    pub unix: String,
    pub shm: String,
    pub socket: PathBuf,
    pub shm_socket: PathBuf,
    pub stdout: BufReader<std::process::ChildStdout>,
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// `sinew serve` with extra flags (limits, timeouts).
    pub fn start_with(flags: &[&str]) -> Serve {
        let base = std::env::temp_dir().join(format!(
            "sinew-cli-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let socket = base.with_extension("sock");
        let shm_socket = base.with_extension("shm.sock");
        let listen = [
            "tcp://127.0.0.1:0".to_owned(),
            format!("unix://{}", socket.display()),
            format!("shm://{}", shm_socket.display()),
        ];
        let (child, stdout, addresses) = spawn_serve(&listen, flags, Stdio::piped());
        Serve {
            child,
            tcp: addresses[0].clone(),
            unix: addresses[1].clone(),
            shm: addresses[2].clone(),
            socket,
            shm_socket,
            stdout,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then the rest of stdout.
    pub fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        let status = self.child.wait().unwrap();
        (status, rest)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.shm_socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Open descriptors and shared-memory mappings of process `pid` ("self" for
/// this one).
pub fn fds_and_shm_mappings(pid: &str) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    let mappings = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| {
            maps.lines()
                .filter(|l| l.contains("memfd:sinew-shm"))
                .count()
        })
        .unwrap_or(0);
    (fds, mappings)
}

pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// What the kernel says process `pid` has used: CPU time (user + system) and
/// resident memory now and at its peak. Tests bound attacks with these, not
/// with wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub cpu: std::time::Duration,
    pub rss: u64,
    pub peak_rss: u64,
}

pub fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // /proc counts in USER_HZ, which Linux fixes at 100 on every architecture
    // it reports to user space for.
    let per_second = 100;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Usage {
        cpu: std::time::Duration::from_millis(ticks * 1000 / per_second),
        rss: kib("VmRSS:") * 1024,
        peak_rss: kib("VmHWM:") * 1024,
    }
}

/// Kills the child when dropped (a failed assertion leaves nothing behind).
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `address` over HTTP/1.1: the status code and the body,
/// read to its Content-Length (some servers, Chromium's DevTools one, keep
/// the connection open), or to the end without one; `None` if the exchange
/// fails or takes over 10 s.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut buffer).ok()?;
        response.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if read == 0 || length.is_some_and(|length| body.len() >= length) {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, body.to_owned()));
            }
        }
        if read == 0 {
            return None;
        }
    }
}
