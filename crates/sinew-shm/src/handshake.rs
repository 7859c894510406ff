//! Setting a connection up over its Unix-socket control channel.
//!
//! 1. The client connects to the server's control socket. Each side checks the
//!    other's credentials with `SO_PEERCRED`: by default only a process of the
//!    same effective user is accepted ([`ShmOptions::allowed_uids`] adds others).
//! 2. The client creates the region (see `region.rs`) and four eventfds, and
//!    sends a 32-byte hello with the five descriptors attached (`SCM_RIGHTS`):
//!    `"SINEWSHM"`, version (u32 LE, 2), slab count (u16 LE), log2 of the slab
//!    size (u8, 0 without slabs), a zero byte, ring capacity (u64 LE), region
//!    length (u64 LE); descriptors: the memfd, the server's two eventfds (data
//!    ready, room ready), the client's two.
//! 3. The server checks everything it received (exact descriptor count, memfd
//!    sealed and of the announced size, eventfds that are eventfds), maps the
//!    region and answers one byte: 0, or 1 followed by a u16 LE length and a
//!    UTF-8 reason.
//!
//! After that the control socket carries nothing: it stays open for the life of
//! the connection, and its hang-up tells each side the other is gone, however it
//! went (an orderly close, a crash, SIGKILL).
//!
//! A client pointed at a socket that is not a shared-memory control socket (a
//! sinew `unix://` listener, most likely: same kind of path) gets an answer
//! that is neither 0 nor 1 (a sinew listener's is its preface), or more than
//! the one byte 0, or a hang-up; it says the socket is not a shared-memory
//! endpoint rather than fail on bytes it did not expect.

use crate::region::{Layout, Region};
use crate::stream::{Parts, ShmStream};
use rustix::event::EventfdFlags;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

const MAGIC: &[u8; 8] = b"SINEWSHM";
const VERSION: u32 = 2;
const HELLO_LEN: usize = 32;
const DESCRIPTORS: usize = 5;
/// The server's answers to a hello.
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;
/// The first bytes a sinew connection sends, in both directions (sinew-wire's
/// `preface::MAGIC`, which this crate does not depend on): what a sinew
/// `unix://` listener answers a hello with, before it hangs up.
const SINEW_PREFACE_MAGIC: [u8; 8] = [0x89, b'S', b'I', b'N', b'E', b'W', b'\r', b'\n'];

/// Settings of a shared-memory connection.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// Bytes in each direction's ring (a power of two, 4 KiB to 1 GiB). Default
    /// 2 MiB: a 1 MiB message and its neighbours fit at once. The connecting
    /// side's choice applies.
    pub ring_capacity: u64,
    /// Bytes per slab, in each direction (a power of two, 4 KiB to 16 MiB;
    /// default 256 KiB). A message of at least [`ShmOptions::slab_threshold`]
    /// bytes is encoded straight into free slabs instead of being copied through
    /// the ring (see [`slab`](crate::slab)). The connecting side's choice applies.
    pub slab_size: u64,
    /// Slabs in each direction (0 to 32; default 8, so 2 MiB each way). Zero
    /// turns slabs off: everything goes through the ring.
    pub slab_count: u32,
    /// Smallest message sent through slabs rather than the ring (default
    /// 32 KiB): below it, the copy a slab saves costs less than the slab's
    /// bookkeeping. Read by the RPC layer (`sinew-rpc`), which decides where a
    /// message goes; each side uses its own.
    pub slab_threshold: usize,
    /// How long a reader or writer that finds nothing to do keeps polling before
    /// it sleeps (default 50 µs: long enough to catch the answer to a call of up
    /// to ~64 KiB without a wake-up, measured with sinew-bench; 20 µs doubled the
    /// 64 KiB latency). The poll yields to the runtime's other tasks between
    /// checks. Longer trades CPU for latency; zero never spins. A quiet
    /// connection costs nothing either way: the spin only follows traffic.
    pub spin: Duration,
    /// How long a handshake may take before the connection is dropped (default
    /// 5 s).
    pub handshake_timeout: Duration,
    /// User ids accepted as peers besides our own effective user id.
    pub allowed_uids: Vec<u32>,
    /// Largest region the accepting side maps for one connection, in bytes
    /// (default 64 MiB; the default client's region is about 8 MiB). A hello
    /// announcing more is refused with a reason saying so. The region's
    /// memory is the client's (it must have reserved every page), but the
    /// server's mapping of it still counts against the server's address space
    /// and, as pages are touched, its resident memory.
    pub max_region_size: u64,
}

impl Default for ShmOptions {
    fn default() -> Self {
        ShmOptions {
            ring_capacity: 2 * 1024 * 1024,
            slab_size: 256 * 1024,
            slab_count: 8,
            slab_threshold: 32 * 1024,
            spin: Duration::from_micros(50),
            handshake_timeout: Duration::from_secs(5),
            allowed_uids: Vec::new(),
            max_region_size: 64 * 1024 * 1024,
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// The error for a control socket at `path` that does not speak this handshake.
fn not_shared_memory(path: &Path, answered: &str) -> io::Error {
    invalid(format!(
        "{} is not a shared-memory endpoint ({answered})",
        path.display()
    ))
}

/// `error`, or if it is the peer hanging up, an error that says what that
/// means during the handshake. A shared-memory server answers even a hello it
/// refuses; it hangs up unanswered only on a peer of a user it does not accept.
fn hung_up(path: &Path, error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "{} hung up without answering the shared-memory hello: it is not a \
                 shared-memory endpoint, or not one that accepts this process's user",
                path.display()
            ),
        ),
        _ => error,
    }
}

/// Reads the server's answer to our hello: `Ok` if it accepted, else why not.
async fn read_answer(control: &mut UnixStream, path: &Path) -> io::Result<()> {
    let first = match control.read_u8().await {
        Ok(byte) => byte,
        Err(error) => return Err(hung_up(path, error)),
    };
    match first {
        ACCEPTED => {
            // A shared-memory server sends nothing after its answer. Bytes
            // already there come from a peer whose own greeting starts with a
            // zero byte, as an HTTP/2 (gRPC) server's SETTINGS frame does; a
            // greeting is written at once, so it has arrived whole.
            match control.try_read(&mut [0u8; 1]) {
                Ok(n) if n > 0 => Err(not_shared_memory(
                    path,
                    "it answered with more than a shared-memory server's one-byte answer",
                )),
                _ => Ok(()),
            }
        }
        REFUSED => {
            let len = control.read_u16_le().await?;
            let mut reason = vec![0u8; usize::from(len)];
            control.read_exact(&mut reason).await?;
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the server refused the shared-memory connection: {}",
                    String::from_utf8_lossy(&reason)
                ),
            ))
        }
        _ => {
            let mut rest = [0u8; SINEW_PREFACE_MAGIC.len() - 1];
            let sinew = first == SINEW_PREFACE_MAGIC[0]
                && control.read_exact(&mut rest).await.is_ok()
                && rest == SINEW_PREFACE_MAGIC[1..];
            Err(if sinew {
                not_shared_memory(
                    path,
                    &format!(
                        "it answered like a sinew unix:// listener; use unix://{}",
                        path.display()
                    ),
                )
            } else {
                not_shared_memory(
                    path,
                    &format!(
                        "it answered 0x{first:02x}, where a shared-memory server answers 0 or 1"
                    ),
                )
            })
        }
    }
}

/// The process at the other end of a local connection, as the kernel saw it
/// when the connection was made (`SO_PEERCRED`): its process id (in our pid
/// namespace; unknown when the peer's process is not visible from it) and
/// effective user and group ids. A peer cannot forge these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// The peer's process id, if it is visible from our pid namespace.
    pub pid: Option<u32>,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

impl PeerCredentials {
    /// The credentials of the peer of a connected Unix socket.
    pub fn of(socket: &UnixStream) -> io::Result<PeerCredentials> {
        let peer = socket.peer_cred()?;
        Ok(PeerCredentials {
            // The kernel says 0 for a process outside our pid namespace.
            pid: peer
                .pid()
                .and_then(|pid| u32::try_from(pid).ok())
                .filter(|pid| *pid != 0),
            uid: peer.uid(),
            gid: peer.gid(),
        })
    }
}

/// Refuses a peer whose effective user is neither ours nor allowed; returns
/// its credentials.
fn check_peer(socket: &UnixStream, options: &ShmOptions) -> io::Result<PeerCredentials> {
    let peer = PeerCredentials::of(socket)?;
    let uid = peer.uid;
    if uid == rustix::process::geteuid().as_raw() || options.allowed_uids.contains(&uid) {
        return Ok(peer);
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "shared-memory peer (pid {}) runs as uid {uid}, which is not allowed",
            peer.pid
                .map_or_else(|| "unknown".to_owned(), |pid| pid.to_string())
        ),
    ))
}

fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Whether `fd` is an eventfd (as the kernel reports in fdinfo).
fn is_eventfd(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .is_ok_and(|info| info.contains("eventfd-count"))
}

/// Connects to the server whose control socket is at `path`.
pub async fn connect(path: &Path, options: &ShmOptions) -> io::Result<ShmStream> {
    let mut control = UnixStream::connect(path).await?;
    let peer = check_peer(&control, options)?;
    let layout = Layout {
        capacity: options.ring_capacity,
        slab_size: if options.slab_count == 0 {
            0
        } else {
            options.slab_size
        },
        slab_count: options.slab_count,
    };
    let (region, memfd) = Region::create(layout)?;
    let (server_data, server_space) = (eventfd()?, eventfd()?);
    let (client_data, client_space) = (eventfd()?, eventfd()?);

    let hello = hello_for(layout);
    let descriptors = [
        memfd.as_fd(),
        server_data.as_fd(),
        server_space.as_fd(),
        client_data.as_fd(),
        client_space.as_fd(),
    ];
    let exchange = async {
        send_with_descriptors(&mut control, &hello, &descriptors)
            .await
            .map_err(|error| hung_up(path, error))?;
        read_answer(&mut control, path).await
    };
    tokio::time::timeout(options.handshake_timeout, exchange)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer to the shared-memory handshake",
            )
        })??;
    drop(memfd); // the mapping keeps the memory; the server has its own descriptor
    ShmStream::new(Parts {
        region,
        outbound_ring: 0,
        data_ready: client_data,
        space_ready: client_space,
        wake_peer_reader: server_data,
        wake_peer_writer: server_space,
        control,
        spin: options.spin,
        slab_threshold: options.slab_threshold,
        peer,
    })
}

/// The hello announcing `layout` (see the module docs).
fn hello_for(layout: Layout) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(MAGIC);
    hello[8..12].copy_from_slice(&VERSION.to_le_bytes());
    hello[12..14].copy_from_slice(&(layout.slab_count as u16).to_le_bytes());
    hello[14] = layout.slab_size.checked_ilog2().unwrap_or(0) as u8;
    hello[16..24].copy_from_slice(&layout.capacity.to_le_bytes());
    hello[24..32].copy_from_slice(&layout.len().to_le_bytes());
    hello
}

async fn send_with_descriptors(
    control: &mut UnixStream,
    bytes: &[u8],
    descriptors: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(DESCRIPTORS))];
    let sent = control
        .async_io(Interest::WRITABLE, || {
            let mut ancillary = SendAncillaryBuffer::new(&mut space);
            if !ancillary.push(SendAncillaryMessage::ScmRights(descriptors)) {
                return Err(io::Error::other("ancillary buffer too small"));
            }
            Ok(rustix::net::sendmsg(
                &*control,
                &[IoSlice::new(bytes)],
                &mut ancillary,
                SendFlags::NOSIGNAL,
            )?)
        })
        .await?;
    // The descriptors went with the first byte; the rest, if any, follows plainly.
    control.write_all(&bytes[sent..]).await
}

/// Reads the hello and its descriptors.
async fn receive_hello(control: &UnixStream) -> io::Result<([u8; HELLO_LEN], Vec<OwnedFd>)> {
    let mut hello = [0u8; HELLO_LEN];
    let mut filled = 0;
    let mut descriptors = Vec::new();
    while filled < HELLO_LEN {
        // Room for one descriptor more than expected, to tell "too many" apart.
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(DESCRIPTORS + 1))];
        let (bytes, truncated) = control
            .async_io(Interest::READABLE, || {
                let mut ancillary = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(&mut hello[filled..])];
                let received = rustix::net::recvmsg(
                    control,
                    &mut iov,
                    &mut ancillary,
                    RecvFlags::CMSG_CLOEXEC,
                )?;
                // Taking the descriptors out now: those not kept are closed on drop.
                for message in ancillary.drain() {
                    if let RecvAncillaryMessage::ScmRights(fds) = message {
                        descriptors.extend(fds);
                    }
                }
                Ok((received.bytes, received.flags.contains(ReturnFlags::CTRUNC)))
            })
            .await?;
        if truncated {
            return Err(invalid("the hello came with too many descriptors"));
        }
        if bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client hung up during the shared-memory handshake",
            ));
        }
        filled += bytes;
    }
    Ok((hello, descriptors))
}

/// Checks a hello and maps the region it describes.
fn validate_hello(
    hello: &[u8; HELLO_LEN],
    descriptors: Vec<OwnedFd>,
    options: &ShmOptions,
) -> io::Result<(Region, [OwnedFd; 4])> {
    if &hello[..8] != MAGIC {
        return Err(invalid("not a sinew shared-memory hello"));
    }
    let version = u32::from_le_bytes(hello[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(invalid(format!(
            "shared-memory protocol version {version}; this server speaks {VERSION}"
        )));
    }
    let slab_count = u16::from_le_bytes([hello[12], hello[13]]);
    let (slab_shift, reserved) = (hello[14], hello[15]);
    if reserved != 0 || slab_shift >= 64 {
        return Err(invalid("malformed slab fields in the hello"));
    }
    let layout = Layout {
        capacity: u64::from_le_bytes(hello[16..24].try_into().expect("8 bytes")),
        slab_size: if slab_count == 0 { 0 } else { 1 << slab_shift },
        slab_count: u32::from(slab_count),
    };
    layout.check().map_err(invalid)?;
    let len = u64::from_le_bytes(hello[24..32].try_into().expect("8 bytes"));
    if len != layout.len() {
        return Err(invalid(format!(
            "region length {len} does not match the layout {layout:?}"
        )));
    }
    if len > options.max_region_size {
        return Err(invalid(format!(
            "a region of {len} bytes is larger than this server accepts ({} bytes, \
             ShmOptions::max_region_size): use a smaller ring or fewer slabs",
            options.max_region_size
        )));
    }
    let count = descriptors.len();
    let Ok([memfd, server_data, server_space, client_data, client_space]) =
        <[OwnedFd; DESCRIPTORS]>::try_from(descriptors)
    else {
        return Err(invalid(format!(
            "expected {DESCRIPTORS} descriptors with the hello, got {count}"
        )));
    };
    let eventfds = [server_data, server_space, client_data, client_space];
    if !eventfds.iter().all(is_eventfd) {
        return Err(invalid("a wake-up descriptor is not an eventfd"));
    }
    let region = Region::map_received(&memfd, layout)?;
    Ok((region, eventfds))
}

/// The server side of one handshake.
async fn accept_one(mut control: UnixStream, options: &ShmOptions) -> io::Result<ShmStream> {
    let peer = check_peer(&control, options)?;
    let received = tokio::time::timeout(options.handshake_timeout, receive_hello(&control))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello within the timeout"))?;
    let checked =
        received.and_then(|(hello, descriptors)| validate_hello(&hello, descriptors, options));
    let (region, [server_data, server_space, client_data, client_space]) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            let reason = error.to_string();
            let reason = &reason.as_bytes()[..reason.len().min(1024)];
            let mut answer = vec![REFUSED];
            answer.extend_from_slice(&(reason.len() as u16).to_le_bytes());
            answer.extend_from_slice(reason);
            let _ = tokio::time::timeout(Duration::from_secs(1), control.write_all(&answer)).await;
            return Err(error);
        }
    };
    control.write_all(&[ACCEPTED]).await?;
    ShmStream::new(Parts {
        region,
        outbound_ring: 1,
        data_ready: server_data,
        space_ready: server_space,
        wake_peer_reader: client_data,
        wake_peer_writer: client_space,
        control,
        spin: options.spin,
        slab_threshold: options.slab_threshold,
        peer,
    })
}

/// Accepts shared-memory connections on a control socket.
///
/// Handshakes run in tasks of their own, so a client that connects and says
/// nothing holds up no one (it is dropped at the handshake timeout); a failed
/// handshake is logged and the client told why, never returned from `accept`.
#[derive(Debug)]
pub struct ShmListener {
    path: PathBuf,
    incoming: Mutex<mpsc::Receiver<ShmStream>>,
    acceptor: JoinHandle<()>,
}

impl ShmListener {
    /// Serves shared-memory connections on `listener`, a Unix socket bound at
    /// `path` (the caller binds it, and removes the file when done).
    pub fn new(listener: UnixListener, path: PathBuf, options: ShmOptions) -> ShmListener {
        let (ready, incoming) = mpsc::channel(64);
        let acceptor = tokio::spawn(async move {
            loop {
                let control = match listener.accept().await {
                    Ok((control, _)) => control,
                    Err(error) => {
                        tracing::warn!(%error, "shared-memory accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (ready, options) = (ready.clone(), options.clone());
                tokio::spawn(async move {
                    match accept_one(control, &options).await {
                        Ok(stream) => {
                            let _ = ready.send(stream).await;
                        }
                        Err(error) => {
                            tracing::debug!(%error, "shared-memory handshake failed");
                        }
                    }
                });
            }
        });
        ShmListener {
            path,
            incoming: Mutex::new(incoming),
            acceptor,
        }
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection whose handshake succeeded.
    pub async fn accept(&self) -> io::Result<ShmStream> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the shared-memory acceptor stopped"))
    }
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{MemfdFlags, SealFlags};

    /// This process's resident memory, in bytes.
    fn rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Sends a hello for `layout` with a sealed memfd of the right size that
    /// was never allocated (sparse); returns the server's answer.
    async fn hello_with_sparse_region(path: &Path, layout: Layout) -> io::Result<()> {
        let mut control = UnixStream::connect(path).await?;
        let len = layout.len();
        let memfd = rustix::fs::memfd_create(
            "sinew-shm-sparse",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&memfd, len)?;
        rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK | SealFlags::GROW)?;
        let eventfds = [eventfd()?, eventfd()?, eventfd()?, eventfd()?];
        let hello = hello_for(layout);
        let descriptors = [
            memfd.as_fd(),
            eventfds[0].as_fd(),
            eventfds[1].as_fd(),
            eventfds[2].as_fd(),
            eventfds[3].as_fd(),
        ];
        send_with_descriptors(&mut control, &hello, &descriptors).await?;
        read_answer(&mut control, path).await
    }

    /// Finding 6 of the hardening issue: the server mapped (and populated) a
    /// same-user client's memfd of whatever size it announced, though the
    /// file was sparse: 4 hellos of 32 bytes made it allocate 12.3 GB. Now a
    /// region above `max_region_size` is refused, and so is one whose pages
    /// the client did not reserve; neither is ever touched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_or_unreserved_regions_are_refused_untouched() {
        let dir = std::env::temp_dir().join(format!("sinew-shm-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let huge = Layout {
            capacity: 1 << 30,
            slab_size: 16 << 20,
            slab_count: 32,
        };
        assert!(huge.len() > 3 << 30);
        let before = rss();
        for (max_region_size, expected) in [
            (
                ShmOptions::default().max_region_size,
                "larger than this server accepts",
            ),
            (4 << 30, "must be allocated in full"),
        ] {
            let path = dir.join(format!("{max_region_size}.sock"));
            let options = ShmOptions {
                max_region_size,
                ..ShmOptions::default()
            };
            let listener =
                ShmListener::new(UnixListener::bind(&path).unwrap(), path.clone(), options);
            for _ in 0..4 {
                let error = hello_with_sparse_region(&path, huge).await.unwrap_err();
                assert!(error.to_string().contains(expected), "{error}");
            }
            // An honest client still gets in.
            let mut client = connect(&path, &ShmOptions::default()).await.unwrap();
            let mut server = listener.accept().await.unwrap();
            client.write_all(b"ok").await.unwrap();
            let mut buf = [0u8; 2];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ok");
        }
        let grown = rss().saturating_sub(before);
        assert!(grown < 64 << 20, "resident memory grew by {grown} bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
