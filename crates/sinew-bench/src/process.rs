//! The child processes of the side-by-side binaries (peer servers, proxies,
//! upstreams, brokers) and the loopback ports they listen on: a process
//! stopped when dropped, a free port, waiting until a port listens, a check
//! that a peer program is installed. Scaffolding only: it measures nothing.

use anyhow::bail;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process stopped when dropped: SIGTERM (nginx's master then stops
/// its worker; a SIGKILLed master would leave it running), SIGKILL if it is
/// still there after a second. A child that has already been reaped (by
/// [`Process::kill`]) gets no signal, as its pid may have been reused.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    /// Spawns `command`.
    pub fn spawn(command: &mut Command) -> std::io::Result<Process> {
        command.spawn().map(Process)
    }

    /// Takes charge of a child spawned by the caller (who may first have
    /// taken its pipes).
    pub fn from_child(child: Child) -> Process {
        Process(child)
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILLs it at once, as a crash, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Reaped already (or just now): no signal may follow.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on `address`, up to 5 s.
pub fn wait_listening(address: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on {address} after 5 s")
}

/// Fails, saying how to install it, if `program` is neither on the `PATH`
/// nor in `/usr/sbin`.
pub fn require(program: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {program} || test -x /usr/sbin/{program}"
        ))
        .stdout(Stdio::null())
        .status()?
        .success();
    if !found {
        bail!("{program} is not installed: run scripts/install-peers.sh");
    }
    Ok(())
}
