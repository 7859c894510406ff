//! sinew's shared-memory transport: two processes on one host exchange bytes
//! through lock-free rings in memory they both map, with no copy through the
//! kernel and no system call while both sides are busy.
//!
//! This is the only sinew crate that uses `unsafe`: mapping memory, and copying
//! bytes in and out of it. Every unsafe block says why it holds.
//!
//! # What it is
//!
//! A connection is a byte stream ([`ShmStream`], `AsyncRead + AsyncWrite`), so
//! sinew's own protocol runs over it unchanged: multiplexed calls, streaming,
//! flow control, deadlines. Underneath:
//!
//! * a control channel: a Unix socket at the address's path
//!   (`shm:///run/app/api.sock`), used for the handshake (peer credentials, the
//!   memory and the wake-up descriptors passed with `SCM_RIGHTS`) and then only
//!   for its hang-up, which tells each side the other is gone ([`handshake`]);
//! * one sealed memfd per connection, mapped by both sides (`region.rs`);
//! * two single-producer single-consumer byte rings in it, one per direction,
//!   whose indices sit on cache-line pairs of their own (`ring.rs`);
//! * each direction's slabs, owned by its sender: a large message is encoded
//!   straight into them and takes its place in the byte stream by a descriptor,
//!   one copy fewer than through the ring ([`slab`]);
//! * four eventfds, registered with tokio, to wake a side that sleeps
//!   (`stream.rs`).
//!
//! A write larger than the free room is taken in pieces as the reader frees
//! room, so messages of any size pass (sinew's frame limit applies above).
//!
//! # Wake-ups, and why none is lost
//!
//! A reader that finds its ring empty spins briefly ([`ShmOptions::spin`]),
//! then *announces* that it sleeps and waits on its eventfd. A writer pays for a
//! wake-up (one `write` to the eventfd) only when it sees that announcement.
//! The same holds the other way for a writer waiting for room. The two halves
//! of the protocol, for the reader (the writer's is the mirror image):
//!
//! ```text
//! reader (Consumer::announce_sleep)        writer (Producer::publish)
//!   R1 store reader_sleeping = 1             W1 store tail = t (Release)
//!   R2 fence(SeqCst)                         W2 fence(SeqCst)
//!   R3 load tail; if data: clear flag,       W3 load reader_sleeping; if 1 and
//!      do not sleep                             swap(0) returned 1: signal
//!   R4 wait for the eventfd
//! ```
//!
//! The two SeqCst fences are ordered one before the other. If R2 comes first,
//! R1 is visible to W3, so the writer signals; if W2 comes first, W1 is visible
//! to R3, so the reader does not sleep. Either way the data is not left
//! unannounced while the reader sleeps. The eventfd counts signals, so a signal
//! sent between R3 and R4 is not lost either: R4 returns at once. The `swap`
//! makes exactly one writer signal per sleep. Spurious wake-ups are harmless:
//! the reader just checks the ring again. The `loom` model test in `ring.rs`
//! (`scripts/loom.sh`: `RUSTFLAGS="--cfg sinew_loom" cargo test -p sinew-shm --lib`)
//! checks this protocol, with a full and an empty ring, in every interleaving
//! the model allows: no lost wake-up (loom reports a deadlock), bytes in order.
//!
//! Sending a slab is one more kind of W1 (its descriptor ring's tail is stored
//! with Release, then W2 and W3 follow as after a ring write), and R3 looks at
//! that tail too, so the same argument covers it. A second loom model, in
//! `slab.rs`, checks that and that slab bytes arrive at their place in the
//! stream; it fails if the reader looks at the ring after the descriptor ring,
//! or skips its look at the descriptor ring after announcing its sleep.
//!
//! # What the peer can break, and what it cannot
//!
//! Everything in shared memory can be written by the peer at any time, so
//! nothing read from it is trusted:
//!
//! * Each side keeps its own index (`head` or `tail`) locally and only
//!   publishes it; the peer's index is read, checked (`tail - head` must be
//!   within the capacity) and only then used. A bad index ends the connection
//!   with an `InvalidData` error, before any byte is copied.
//! * Slab descriptors and completions are copied out field by field and
//!   checked (slab index, length, stream position, generation) before use; see
//!   [`slab`].
//! * The ring capacity and the region size come from the handshake, are
//!   checked against the memfd's real size and seals, and are never read from
//!   shared memory again.
//! * Bytes are only ever copied out with raw copies, never referenced in
//!   place, from the ring and from slabs alike: we only parse memory the peer
//!   cannot change under us. A peer scribbling on them while we copy gives us
//!   garbage, which the frame decoder above rejects as malformed input.
//! * The memfd is sealed against shrinking, so the peer cannot make our
//!   accesses fault (SIGBUS).
//!
//! A hostile or buggy peer can therefore make its own calls fail, or the
//! connection end, but never make us read or write outside the region.
//!
//! # What it is not
//!
//! Not a way across hosts: the peer must be on the same machine, under a user
//! id we accept ([`ShmOptions::allowed_uids`]).

#![warn(missing_docs)]

pub mod handshake;
mod region;
mod ring;
pub mod slab;
mod stream;
mod sync;

pub use handshake::{connect, PeerCredentials, ShmListener, ShmOptions};
pub use slab::{SlabBuf, SlabGauge, SlabPool};
pub use stream::{RingGauge, ShmReadHalf, ShmStream, ShmWriteHalf};
