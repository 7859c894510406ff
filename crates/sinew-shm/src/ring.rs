//! A single-producer single-consumer byte ring whose indices live in memory
//! shared with another process.
//!
//! The ring is a byte stream: the producer copies bytes in at `tail`, the
//! consumer copies them out at `head`; both are running totals (`u64`, never
//! wrapped in practice), and a position maps to the data area by masking with
//! the power-of-two capacity. Each end keeps its own index locally and only
//! *publishes* it to the shared control block; the other end's index is read
//! from there and checked before use (see "What the peer can break" in the crate
//! docs): `tail - head` must lie within `0..=capacity`, or the ring is reported
//! [`Corrupt`] and the connection ends.
//!
//! Besides the indices, the control block holds one "sleeping" flag per end and a
//! `closed` flag. The wake-up protocol built on them is described, with its
//! ordering argument, in the crate docs; [`Consumer::announce_sleep`],
//! [`Producer::publish`] and their mirror images are its two halves.

use crate::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::ptr::NonNull;

/// Alignment of each shared field: two cache lines, so that the producer's and
/// the consumer's fields never share a line (nor an adjacent-line prefetch pair).
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The shared part of one ring. All-zero bytes are its initial state (a fresh
/// memfd is zero-filled), so it needs no initialisation in shared memory.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct RingControl {
    /// Bytes written in all; stored by the producer only.
    pub(crate) tail: Padded<AtomicU64>,
    /// Bytes consumed in all; stored by the consumer only.
    pub(crate) head: Padded<AtomicU64>,
    /// 1 while the consumer sleeps, or is about to, waiting for data.
    pub(crate) reader_sleeping: Padded<AtomicU32>,
    /// 1 while the producer sleeps, or is about to, waiting for room.
    pub(crate) writer_sleeping: Padded<AtomicU32>,
    /// 1 once the producer will write nothing more (an orderly close).
    pub(crate) closed: Padded<AtomicU32>,
}

/// The peer broke the ring's invariants: its index is outside the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shared-memory ring corrupted by the peer: {}", self.0)
    }
}

impl From<Corrupt> for std::io::Error {
    fn from(corrupt: Corrupt) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, corrupt.to_string())
    }
}

/// Where a ring lives: its control block and its data area.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingMemory {
    pub(crate) control: NonNull<RingControl>,
    pub(crate) data: NonNull<u8>,
    /// A power of two.
    pub(crate) capacity: u64,
}

impl RingMemory {
    fn control(&self) -> &RingControl {
        // SAFETY: `RingMemory::new`'s contract: the control block is valid and
        // aligned for as long as this ring end exists. It is only ever accessed
        // through atomics, so shared references to it are sound even while the
        // other process writes to it.
        unsafe { self.control.as_ref() }
    }

    /// Bytes written and not yet consumed, as the two indexes say now (a
    /// gauge: either side may move meanwhile, and a broken peer's index is
    /// clamped to the capacity).
    pub(crate) fn used(&self) -> u64 {
        let control = self.control();
        let head = control.head.0.load(Ordering::Acquire);
        let tail = control.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity)
    }

    /// Where `n` bytes (at most the capacity) from running position `position`
    /// lie in the data area: their offset, and how many fit before the end
    /// (the rest continue at offset 0).
    fn span(&self, position: u64, n: usize) -> (usize, usize) {
        let start = (position & (self.capacity - 1)) as usize;
        (start, n.min(self.capacity as usize - start))
    }

    /// Describes a ring.
    ///
    /// # Safety
    /// `control` must point to a `RingControl` and `data` to `capacity` bytes,
    /// both valid (mapped, aligned) for as long as any `Producer` or `Consumer`
    /// made from this value is used, and `capacity` must be a power of two. The
    /// memory may be written concurrently by another process: every access made
    /// through this module is either atomic or a raw byte copy.
    pub(crate) unsafe fn new(
        control: NonNull<RingControl>,
        data: NonNull<u8>,
        capacity: u64,
    ) -> RingMemory {
        debug_assert!(capacity.is_power_of_two());
        RingMemory {
            control,
            data,
            capacity,
        }
    }
}

// SAFETY: a RingMemory is two addresses in a mapping that outlives it (the
// contract of `RingMemory::new`); all access to the memory is atomic or a raw
// copy, and each ring end is used by one thread at a time (it is `&mut`-owned).
unsafe impl Send for RingMemory {}
// SAFETY: as above; shared use only reads the control block through atomics.
unsafe impl Sync for RingMemory {}

/// The writing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    memory: RingMemory,
    /// Our own running total: the one in shared memory is published from it and
    /// never read back, so the peer cannot move it.
    tail: u64,
}

/// The reading end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    memory: RingMemory,
    /// Our own running total, as for the producer.
    head: u64,
}

impl Producer {
    /// The producer of a fresh (all-zero) ring.
    pub(crate) fn new(memory: RingMemory) -> Producer {
        Producer { memory, tail: 0 }
    }

    /// Bytes written in all (the byte-stream position of the next one).
    pub(crate) fn position(&self) -> u64 {
        self.tail
    }

    /// Bytes that can be written now.
    pub(crate) fn free(&self) -> Result<u64, Corrupt> {
        let head = self.memory.control().head.0.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.memory.capacity {
            return Err(Corrupt("the consumer's read index is outside the ring"));
        }
        Ok(self.memory.capacity - used)
    }

    /// Copies as much of `bytes` as fits without publishing it; returns how much.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<usize, Corrupt> {
        let n = (self.free()? as usize).min(bytes.len());
        if n == 0 {
            return Ok(0);
        }
        let (start, first) = self.memory.span(self.tail, n);
        // SAFETY: `start + first <= capacity` and `n - first <= start`, so both
        // copies stay inside the data area (valid per `RingMemory::new`), and
        // the bytes between tail and tail + free are ours until we publish them:
        // the consumer reads only below the published tail. `bytes` is our own
        // memory and cannot overlap the mapping.
        unsafe {
            let data = self.memory.data.as_ptr();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.add(start), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), data, n - first);
        }
        self.tail = self.tail.wrapping_add(n as u64);
        Ok(n)
    }

    /// Makes everything written visible to the consumer. Returns true if the
    /// consumer was asleep and must be woken (exactly one publisher sees true per
    /// sleep).
    pub(crate) fn publish(&self) -> bool {
        let control = self.memory.control();
        control.tail.0.store(self.tail, Ordering::Release);
        // Pairs with the fence in `Consumer::announce_sleep`: either the
        // consumer sees this tail, or we see its flag.
        fence(Ordering::SeqCst);
        control.reader_sleeping.0.load(Ordering::Relaxed) == 1
            && control.reader_sleeping.0.swap(0, Ordering::AcqRel) == 1
    }

    /// Says we are about to sleep for lack of room. Returns false (and takes it
    /// back) if room appeared meanwhile: then do not sleep.
    pub(crate) fn announce_sleep(&self) -> Result<bool, Corrupt> {
        let control = self.memory.control();
        control.writer_sleeping.0.store(1, Ordering::SeqCst);
        // Pairs with the fence in `Consumer::release`.
        fence(Ordering::SeqCst);
        if self.free()? > 0 {
            control.writer_sleeping.0.store(0, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears our sleeping flag after a wake-up.
    pub(crate) fn end_sleep(&self) {
        self.memory
            .control()
            .writer_sleeping
            .0
            .store(0, Ordering::Relaxed);
    }

    /// Marks the stream closed: the consumer reads what is left, then the end.
    /// The caller wakes the consumer unconditionally.
    pub(crate) fn close(&self) {
        let control = self.memory.control();
        control.tail.0.store(self.tail, Ordering::Release);
        control.closed.0.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
    }
}

impl Consumer {
    /// The consumer of a fresh (all-zero) ring.
    pub(crate) fn new(memory: RingMemory) -> Consumer {
        Consumer { memory, head: 0 }
    }

    /// Bytes read in all (the byte-stream position of the next one).
    pub(crate) fn position(&self) -> u64 {
        self.head
    }

    /// Bytes ready to be read.
    pub(crate) fn available(&self) -> Result<u64, Corrupt> {
        let tail = self.memory.control().tail.0.load(Ordering::Acquire);
        let available = tail.wrapping_sub(self.head);
        if available > self.memory.capacity {
            return Err(Corrupt("the producer's write index is outside the ring"));
        }
        Ok(available)
    }

    /// Copies up to `len` ready bytes to `out` and frees their room; returns how
    /// many. Call [`Consumer::release`] afterwards to wake a waiting producer.
    ///
    /// # Safety
    /// `out` must be valid for writes of `len` bytes and must not overlap the
    /// shared mapping.
    pub(crate) unsafe fn read(&mut self, out: *mut u8, len: usize) -> Result<usize, Corrupt> {
        let n = (self.available()? as usize).min(len);
        if n == 0 {
            return Ok(0);
        }
        let (start, first) = self.memory.span(self.head, n);
        // SAFETY: both copies stay inside the data area (as in
        // `Producer::write`) and inside `out` (`n <= len`, the caller's
        // contract). The bytes below the published tail were written before the
        // tail was stored with Release, which our Acquire load in `available`
        // saw. A hostile producer may still be scribbling on them: then we copy
        // garbage, which the protocol above us rejects, but we never read
        // outside the mapping nor hand out references into it.
        unsafe {
            let data = self.memory.data.as_ptr();
            std::ptr::copy_nonoverlapping(data.add(start), out, first);
            std::ptr::copy_nonoverlapping(data, out.add(first), n - first);
        }
        self.head = self.head.wrapping_add(n as u64);
        self.memory
            .control()
            .head
            .0
            .store(self.head, Ordering::Release);
        Ok(n)
    }

    /// After reading: returns true if the producer was asleep waiting for room
    /// and must be woken.
    pub(crate) fn release(&self) -> bool {
        let control = self.memory.control();
        // Pairs with the fence in `Producer::announce_sleep`.
        fence(Ordering::SeqCst);
        control.writer_sleeping.0.load(Ordering::Relaxed) == 1
            && control.writer_sleeping.0.swap(0, Ordering::AcqRel) == 1
    }

    /// Whether the producer closed the stream (check after `available` is 0).
    pub(crate) fn is_closed(&self) -> bool {
        self.memory.control().closed.0.load(Ordering::Acquire) == 1
    }

    /// Says we are about to sleep for lack of data. Returns false (and takes it
    /// back) if data or the close arrived meanwhile: then do not sleep.
    pub(crate) fn announce_sleep(&self) -> Result<bool, Corrupt> {
        let control = self.memory.control();
        control.reader_sleeping.0.store(1, Ordering::SeqCst);
        // Pairs with the fence in `Producer::publish` and `Producer::close`.
        fence(Ordering::SeqCst);
        if self.available()? > 0 || self.is_closed() {
            control.reader_sleeping.0.store(0, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears our sleeping flag after a wake-up.
    pub(crate) fn end_sleep(&self) {
        self.memory
            .control()
            .reader_sleeping
            .0
            .store(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(sinew_loom)))]
mod tests {
    use super::*;

    /// A ring in ordinary memory (the layout does not care where it lives).
    /// Held through raw pointers only, as shared memory is: the test plays the
    /// peer through `control()`, and Miri checks no reference is invalidated.
    struct HeapRing {
        control: NonNull<RingControl>,
        data: NonNull<[u8]>,
    }

    impl HeapRing {
        fn new(capacity: usize) -> HeapRing {
            let control = NonNull::from(Box::leak(Box::<RingControl>::default()));
            let data = NonNull::from(Box::leak(vec![0u8; capacity].into_boxed_slice()));
            HeapRing { control, data }
        }

        fn memory(&self) -> RingMemory {
            let data = self.data.cast::<u8>();
            // SAFETY: both allocations live until `self` is dropped, after the
            // ring ends of each test.
            unsafe { RingMemory::new(self.control, data, self.data.len() as u64) }
        }

        /// The control block, as the peer sees it.
        fn control(&self) -> &RingControl {
            // SAFETY: allocated in `new`, freed only in `drop`; atomics only.
            unsafe { self.control.as_ref() }
        }
    }

    impl Drop for HeapRing {
        fn drop(&mut self) {
            // SAFETY: both came from `Box::leak` in `new` and are freed once.
            unsafe {
                drop(Box::from_raw(self.control.as_ptr()));
                drop(Box::from_raw(self.data.as_ptr()));
            }
        }
    }

    fn read_all(consumer: &mut Consumer, max: usize) -> Vec<u8> {
        let mut out = vec![0u8; max];
        // SAFETY: `out` is a local buffer of `max` bytes.
        let n = unsafe { consumer.read(out.as_mut_ptr(), max) }.unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn the_control_block_layout_is_the_documented_one() {
        // docs/protocol.md, section 9: another implementation relies on these.
        use std::mem::offset_of;
        assert_eq!(offset_of!(RingControl, tail), 0);
        assert_eq!(offset_of!(RingControl, head), 128);
        assert_eq!(offset_of!(RingControl, reader_sleeping), 256);
        assert_eq!(offset_of!(RingControl, writer_sleeping), 384);
        assert_eq!(offset_of!(RingControl, closed), 512);
        assert!(std::mem::size_of::<RingControl>() <= 2048);
    }

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let ring = HeapRing::new(16);
        let memory = ring.memory();
        let (mut producer, mut consumer) = (Producer::new(memory), Consumer::new(memory));
        let mut expected = Vec::new();
        let mut received = Vec::new();
        let mut next = 0u8;
        for round in 0..50usize {
            let chunk: Vec<u8> = (0..(round % 7 + 1) as u8)
                .map(|i| next.wrapping_add(i))
                .collect();
            let written = producer.write(&chunk).unwrap();
            next = next.wrapping_add(written as u8);
            expected.extend_from_slice(&chunk[..written]);
            producer.publish();
            received.extend(read_all(&mut consumer, round % 5 + 1));
        }
        received.extend(read_all(&mut consumer, 64));
        assert_eq!(received, expected);
    }

    #[test]
    fn a_full_ring_takes_nothing_more_and_unpublished_bytes_stay_invisible() {
        let ring = HeapRing::new(8);
        let memory = ring.memory();
        let (mut producer, mut consumer) = (Producer::new(memory), Consumer::new(memory));
        assert_eq!(producer.write(b"0123456789").unwrap(), 8);
        assert_eq!(producer.write(b"x").unwrap(), 0);
        assert_eq!(consumer.available().unwrap(), 0, "not published yet");
        producer.publish();
        assert_eq!(read_all(&mut consumer, 3), b"012");
        assert_eq!(producer.free().unwrap(), 3);
        assert_eq!(producer.write(b"abcd").unwrap(), 3);
        producer.publish();
        assert_eq!(read_all(&mut consumer, 100), b"34567abc");
    }

    #[test]
    fn indices_from_a_hostile_peer_are_refused_not_followed() {
        let ring = HeapRing::new(16);
        let memory = ring.memory();
        let (mut producer, consumer) = (Producer::new(memory), Consumer::new(memory));
        // The "producer" claims more bytes than the ring holds.
        ring.control().tail.0.store(17, Ordering::Relaxed);
        assert!(consumer.available().is_err());
        let mut out = [0u8; 32];
        // SAFETY: `out` is local and 32 bytes long.
        assert!(unsafe { Consumer::new(memory).read(out.as_mut_ptr(), 32) }.is_err());
        // A tail that went backwards wraps to a huge count: refused too.
        ring.control().tail.0.store(u64::MAX, Ordering::Relaxed);
        assert!(consumer.available().is_err());
        // The "consumer" claims to have read bytes never written.
        ring.control().head.0.store(5, Ordering::Relaxed);
        assert!(producer.free().is_err());
        assert!(producer.write(b"abc").is_err());
        // Our own tail is ours: the peer overwriting the shared copy does not
        // move it.
        ring.control().head.0.store(0, Ordering::Relaxed);
        ring.control().tail.0.store(9, Ordering::Relaxed);
        assert_eq!(producer.free().unwrap(), 16);
    }

    #[test]
    fn sleep_announcements_are_withdrawn_when_work_is_there() {
        let ring = HeapRing::new(8);
        let memory = ring.memory();
        let (mut producer, mut consumer) = (Producer::new(memory), Consumer::new(memory));
        assert!(consumer.announce_sleep().unwrap(), "empty: may sleep");
        producer.write(b"a").unwrap();
        assert!(producer.publish(), "the sleeping consumer must be woken");
        assert!(!producer.publish(), "only once per sleep");
        assert!(!consumer.announce_sleep().unwrap(), "data is there");
        assert_eq!(read_all(&mut consumer, 8), b"a");
        producer.write(b"12345678").unwrap();
        producer.publish();
        assert!(producer.announce_sleep().unwrap(), "full: may sleep");
        read_all(&mut consumer, 1);
        assert!(consumer.release(), "the sleeping producer must be woken");
        assert!(!producer.announce_sleep().unwrap(), "room is there");
        producer.close();
        read_all(&mut consumer, 8);
        assert!(consumer.is_closed());
        assert!(!consumer.announce_sleep().unwrap(), "closed: do not sleep");
    }
}

/// The wake-up protocol under loom: a producer and a consumer on a ring smaller
/// than what passes through it, each sleeping on an event (the eventfd's
/// stand-in) whenever it cannot go on. A lost wake-up leaves one side asleep
/// forever, which loom reports as a deadlock.
#[cfg(all(test, sinew_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Event;
    use loom::sync::Arc;

    struct Shared {
        control: RingControl,
        data: std::cell::UnsafeCell<[u8; 2]>,
        data_ready: Event,
        space_ready: Event,
    }

    // SAFETY: the data array is only accessed through the ring protocol (the
    // producer below the consumer's head + capacity, the consumer below the
    // published tail); the control block is atomics.
    unsafe impl Sync for Shared {}

    fn memory(shared: &Shared) -> RingMemory {
        let control = NonNull::from(&shared.control);
        let data = NonNull::new(shared.data.get().cast::<u8>()).unwrap();
        // SAFETY: `shared` outlives both ends (each thread holds the Arc).
        unsafe { RingMemory::new(control, data, 2) }
    }

    #[test]
    fn no_wake_up_is_lost_and_bytes_arrive_in_order() {
        const MESSAGE: &[u8] = b"abc";
        loom::model(|| {
            let shared = Arc::new(Shared {
                control: RingControl::default(),
                data: std::cell::UnsafeCell::new([0; 2]),
                data_ready: Event::default(),
                space_ready: Event::default(),
            });
            let producer_side = shared.clone();
            let producer = loom::thread::spawn(move || {
                let mut producer = Producer::new(memory(&producer_side));
                let mut sent = 0;
                while sent < MESSAGE.len() {
                    let n = producer.write(&MESSAGE[sent..]).unwrap();
                    if n > 0 {
                        sent += n;
                        if producer.publish() {
                            producer_side.data_ready.signal();
                        }
                    } else if producer.announce_sleep().unwrap() {
                        producer_side.space_ready.wait();
                        producer.end_sleep();
                    }
                }
            });
            let mut consumer = Consumer::new(memory(&shared));
            let mut received = Vec::new();
            while received.len() < MESSAGE.len() {
                let mut buf = [0u8; 2];
                // SAFETY: `buf` is a local 2-byte buffer.
                let n = unsafe { consumer.read(buf.as_mut_ptr(), 2) }.unwrap();
                if n > 0 {
                    received.extend_from_slice(&buf[..n]);
                    if consumer.release() {
                        shared.space_ready.signal();
                    }
                } else if consumer.announce_sleep().unwrap() {
                    shared.data_ready.wait();
                    consumer.end_sleep();
                }
            }
            producer.join().unwrap();
            assert_eq!(received, MESSAGE);
        });
    }
}
