//! Sender-owned slabs: a large message is written once, straight into shared
//! memory, and handed to the peer by reference.
//!
//! Each direction of a connection has, besides its byte ring, an area of
//! equal-sized *slabs* owned by the sending side ([`SlabPool`]). A sender asks
//! its pool for enough slabs to hold a message ([`SlabPool::alloc`]), encodes
//! the message into them in place ([`SlabBuf`] is a `BufMut`), and sends them
//! with [`ShmWriteHalf::send_slab`](crate::ShmWriteHalf::send_slab). That
//! publishes one *descriptor* per slab, `(position, slab, length, generation)`,
//! in a small descriptor ring beside the byte ring: "at this point of the byte
//! stream, insert these bytes". The reader delivers ring bytes up to the
//! position, then the slab's bytes, then carries on, so above the transport
//! nothing changes: the peer reads one ordered byte stream. Once the reader has
//! copied a slab out it writes `(slab, generation)` to the completion ring, and
//! the sender takes the slab back at its next allocation.
//!
//! What it saves: a message sent through the ring is copied twice on the send
//! side (encoded into a buffer, then copied into the ring); through a slab, once.
//! The receiving side copies out exactly once either way: it only ever parses
//! memory the peer cannot change under it.
//!
//! Exhaustion is not an error: when the pool has too few free slabs,
//! [`SlabPool::alloc`] returns `None` and the message goes through the ring,
//! which has its own backpressure. Nothing waits for a slab, and nothing is
//! dropped.
//!
//! # What the peer can break
//!
//! The receiver copies each descriptor's fields out once, then checks them
//! before use: the slab index must be below the slab count, the length at most
//! a slab, the position not behind the bytes already delivered, and (as the
//! sender publishes a slab's preceding ring bytes before its descriptor) not past
//! the bytes published. The sender checks every completion the same way: the
//! slab must be one it sent and not yet got back, with the generation it sent.
//! A bad descriptor ends the reading side with `InvalidData`; a bad completion
//! marks the pool broken, which ends the writing side with `InvalidData`.
//! Neither ever makes us copy outside the slab area.

use crate::ring::{Consumer, Corrupt, Padded};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use bytes::buf::UninitSlice;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Whatever keeps a [`SlabMemory`]'s memory alive (the region, in tests a heap
/// allocation).
pub(crate) type Mapping = Arc<dyn std::fmt::Debug + Send + Sync>;

/// Entries in each descriptor and completion ring, and so the most slabs a
/// direction may have.
pub(crate) const ENTRIES: usize = 32;

/// "Insert `len` bytes of `slab` at `position` of the byte stream."
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Descriptor {
    position: AtomicU64,
    slab: AtomicU32,
    len: AtomicU32,
    generation: AtomicU32,
    reserved: AtomicU32,
}

/// The shared part of one direction's slabs. All-zero bytes are its initial
/// state.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct SlabControl {
    /// Descriptors published in all; stored by the sender only.
    desc_tail: Padded<AtomicU64>,
    /// Descriptors taken in all; stored by the receiver only.
    desc_head: Padded<AtomicU64>,
    /// Completions published in all; stored by the receiver only.
    done_tail: Padded<AtomicU64>,
    /// Completions taken in all; stored by the sender only.
    done_head: Padded<AtomicU64>,
    descriptors: [Descriptor; ENTRIES],
    /// `slab << 32 | generation` of each slab given back.
    done: [AtomicU64; ENTRIES],
}

/// Where one direction's slabs live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlabMemory {
    control: NonNull<SlabControl>,
    area: NonNull<u8>,
    /// Bytes per slab.
    size: usize,
    count: u32,
}

// SAFETY: two addresses in a mapping that outlives every user (the contract of
// `SlabMemory::new`); the control block is only accessed through atomics and
// slab bytes only through raw copies or a `SlabBuf` that owns its slabs.
unsafe impl Send for SlabMemory {}
// SAFETY: as above.
unsafe impl Sync for SlabMemory {}

impl SlabMemory {
    /// Describes one direction's slabs.
    ///
    /// # Safety
    /// `control` must point to a `SlabControl` and `area` to `size * count`
    /// bytes, both valid (mapped, aligned) for as long as anything made from this
    /// value is used. The memory may be written concurrently by another process:
    /// every access made through this module is atomic, a raw byte copy, or a
    /// write by the slab's current owner.
    pub(crate) unsafe fn new(
        control: NonNull<SlabControl>,
        area: NonNull<u8>,
        size: usize,
        count: u32,
    ) -> SlabMemory {
        SlabMemory {
            control,
            area,
            size,
            count,
        }
    }

    fn control(&self) -> &SlabControl {
        // SAFETY: valid and aligned per `SlabMemory::new`; only accessed through
        // atomics, so shared references are sound while the peer writes to it.
        unsafe { self.control.as_ref() }
    }

    /// The address of byte `offset` of slab `slab`.
    fn at(&self, slab: u32, offset: usize) -> *mut u8 {
        assert!(slab < self.count && offset <= self.size, "slab address");
        // SAFETY: in bounds of the area (`slab < count`, `offset <= size`).
        unsafe { self.area.as_ptr().add(slab as usize * self.size + offset) }
    }

    fn entry(&self, counter: u64) -> usize {
        (counter % ENTRIES as u64) as usize
    }
}

/// What the sender knows about one of its slabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    /// Held by a [`SlabBuf`] being filled.
    Filling,
    /// Sent, not given back yet.
    Sent,
}

#[derive(Debug)]
struct PoolState {
    free: Vec<u32>,
    slots: Vec<Slot>,
    generations: Vec<u32>,
    /// Our own count of completions taken (published, never read back).
    done_head: u64,
}

#[derive(Debug)]
struct PoolInner {
    memory: SlabMemory,
    state: Mutex<PoolState>,
    /// Set, with the reason, when the peer broke the completion protocol: the
    /// connection's writing side fails from then on.
    broken: OnceLock<Corrupt>,
    /// Smallest message worth a slab ([`ShmOptions::slab_threshold`](crate::ShmOptions::slab_threshold)).
    threshold: usize,
    /// Keeps the mapping while any pool handle or buffer exists.
    _mapping: Mapping,
}

/// How many of a pool's slabs are out (being filled, or sent and not yet
/// taken back by the sender), read for metrics ([`SlabPool::gauge`]).
#[derive(Debug, Clone)]
pub struct SlabGauge {
    inner: std::sync::Weak<PoolInner>,
}

impl SlabGauge {
    /// `(out, in all)`; `None` once the pool is gone. Slabs the peer has
    /// finished with count as out until the sender takes them back at its
    /// next allocation (the gauge writes nothing to take them back itself).
    pub fn in_use(&self) -> Option<(u32, u32)> {
        let inner = self.inner.upgrade()?;
        let count = inner.memory.count;
        let free = inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .free
            .len() as u32;
        Some((count.saturating_sub(free), count))
    }
}

/// The slabs one side of a connection sends from. Cheap to clone; every clone
/// is the same pool. Get it from
/// [`ShmWriteHalf::slab_pool`](crate::ShmWriteHalf::slab_pool).
#[derive(Debug, Clone)]
pub struct SlabPool {
    inner: Arc<PoolInner>,
}

impl SlabPool {
    pub(crate) fn new(memory: SlabMemory, mapping: Mapping, threshold: usize) -> SlabPool {
        let count = memory.count;
        SlabPool {
            inner: Arc::new(PoolInner {
                memory,
                state: Mutex::new(PoolState {
                    free: (0..count).rev().collect(),
                    slots: vec![Slot::Free; count as usize],
                    generations: vec![0; count as usize],
                    done_head: 0,
                }),
                broken: OnceLock::new(),
                threshold,
                _mapping: mapping,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Smallest message worth sending through slabs rather than the ring
    /// ([`ShmOptions::slab_threshold`](crate::ShmOptions::slab_threshold)).
    pub fn threshold(&self) -> usize {
        self.inner.threshold
    }

    /// Bytes per slab.
    pub fn slab_size(&self) -> usize {
        self.inner.memory.size
    }

    /// Slabs in the pool.
    pub fn slab_count(&self) -> u32 {
        self.inner.memory.count
    }

    /// A gauge of this pool's slabs in use, that neither keeps the pool
    /// (and the connection's memory) alive nor touches shared memory.
    pub fn gauge(&self) -> SlabGauge {
        SlabGauge {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Slabs free right now (after taking back those the peer is done with).
    pub fn free_slabs(&self) -> usize {
        let mut state = self.lock();
        self.reclaim(&mut state);
        state.free.len()
    }

    /// Slabs for a message of `len` bytes (`len` > 0), or `None` if too few are
    /// free (or the pool is broken): then send the message through the ring.
    pub fn alloc(&self, len: usize) -> Option<SlabBuf> {
        if len == 0 {
            return None;
        }
        let needed = len.div_ceil(self.inner.memory.size);
        let mut state = self.lock();
        self.reclaim(&mut state);
        if self.is_broken() || state.free.len() < needed {
            return None;
        }
        let mut slabs = Vec::with_capacity(needed);
        for _ in 0..needed {
            let slab = state.free.pop().expect("counted above");
            state.slots[slab as usize] = Slot::Filling;
            let generation = &mut state.generations[slab as usize];
            *generation = generation.wrapping_add(1);
            slabs.push(slab);
        }
        Some(SlabBuf {
            pool: self.clone(),
            slabs,
            written: 0,
        })
    }

    /// Takes back every slab the peer says it is done with.
    fn reclaim(&self, state: &mut PoolState) {
        if self.is_broken() {
            return;
        }
        let memory = &self.inner.memory;
        let control = memory.control();
        let tail = control.done_tail.0.load(Ordering::Acquire);
        if tail.wrapping_sub(state.done_head) > ENTRIES as u64 {
            return self.mark_broken(Corrupt("the completion index is outside its ring"));
        }
        while state.done_head != tail {
            let entry = control.done[memory.entry(state.done_head)].load(Ordering::Relaxed);
            let (slab, generation) = ((entry >> 32) as u32, entry as u32);
            let sent = slab < memory.count
                && state.slots[slab as usize] == Slot::Sent
                && state.generations[slab as usize] == generation;
            if !sent {
                return self.mark_broken(Corrupt("the peer gave back a slab it did not hold"));
            }
            state.slots[slab as usize] = Slot::Free;
            state.free.push(slab);
            state.done_head = state.done_head.wrapping_add(1);
        }
        control
            .done_head
            .0
            .store(state.done_head, Ordering::Release);
    }

    fn mark_broken(&self, why: Corrupt) {
        tracing::warn!(%why, "shared-memory slabs disabled; the connection fails");
        let _ = self.inner.broken.set(why);
    }

    /// Whether the peer broke the completion protocol.
    pub(crate) fn is_broken(&self) -> bool {
        self.inner.broken.get().is_some()
    }

    /// How the peer broke the completion protocol, if it did.
    pub(crate) fn check(&self) -> Result<(), Corrupt> {
        self.inner.broken.get().map_or(Ok(()), |why| Err(*why))
    }

    fn is(&self, other: &SlabPool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Slabs being filled with one message: write into it as any `BufMut` (prost's
/// `encode` does), then send it with
/// [`ShmWriteHalf::send_slab`](crate::ShmWriteHalf::send_slab). Dropped
/// unsent, its slabs go back to the pool.
#[derive(Debug)]
pub struct SlabBuf {
    pool: SlabPool,
    slabs: Vec<u32>,
    written: usize,
}

impl SlabBuf {
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.written
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    fn capacity(&self) -> usize {
        self.slabs.len() * self.pool.inner.memory.size
    }
}

impl Drop for SlabBuf {
    fn drop(&mut self) {
        if self.slabs.is_empty() {
            return;
        }
        let mut state = self.pool.lock();
        for &slab in &self.slabs {
            state.slots[slab as usize] = Slot::Free;
            state.free.push(slab);
        }
    }
}

// SAFETY: `chunk_mut` returns only the unwritten part of the slabs this buffer
// holds (state `Filling`: no other buffer has them, and the peer is not told
// about them until they are sent), and `advance_mut` never moves past the
// capacity.
unsafe impl bytes::BufMut for SlabBuf {
    fn remaining_mut(&self) -> usize {
        self.capacity() - self.written
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        assert!(cnt <= self.remaining_mut(), "advance past the slabs' end");
        self.written += cnt;
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        let size = self.pool.inner.memory.size;
        let (index, offset) = (self.written / size, self.written % size);
        let Some(&slab) = self.slabs.get(index) else {
            return UninitSlice::new(&mut []);
        };
        let start = self.pool.inner.memory.at(slab, offset);
        // SAFETY: `size - offset` bytes from `start` are the rest of a slab we
        // own (see the impl's safety comment), inside the mapping, which the
        // pool keeps alive at least as long as `self`. A hostile peer may write
        // to them too: we only ever write there, never read back, so that can
        // only garble what it receives.
        unsafe { UninitSlice::from_raw_parts_mut(start, size - offset) }
    }
}

/// The sending end of one direction's descriptor ring.
#[derive(Debug)]
pub(crate) struct SlabSender {
    pub(crate) pool: SlabPool,
    /// Our own count of descriptors published.
    desc_tail: u64,
}

impl SlabSender {
    pub(crate) fn new(pool: SlabPool) -> SlabSender {
        SlabSender { pool, desc_tail: 0 }
    }

    /// Publishes `buf`'s slabs as inserted at byte-stream `position`. The
    /// caller must have published every ring byte before `position`, and wakes
    /// the reader afterwards as after a ring write.
    pub(crate) fn publish(&mut self, position: u64, mut buf: SlabBuf) -> Result<(), Corrupt> {
        if !buf.pool.is(&self.pool) {
            return Err(Corrupt("a slab buffer from another connection"));
        }
        self.pool.check()?;
        let memory = self.pool.inner.memory;
        let control = memory.control();
        let head = control.desc_head.0.load(Ordering::Acquire);
        let queued = self.desc_tail.wrapping_sub(head);
        let pieces = buf.written.div_ceil(memory.size);
        // An honest reader cannot let this fill: every queued descriptor is a
        // sent slab, and there are at most ENTRIES slabs.
        if queued > ENTRIES as u64 || ENTRIES as u64 - queued < pieces as u64 {
            return Err(Corrupt("the descriptor ring is full or its index is wrong"));
        }
        let slabs = std::mem::take(&mut buf.slabs);
        let mut state = self.pool.lock();
        let mut left = buf.written;
        for &slab in &slabs {
            if left == 0 {
                state.slots[slab as usize] = Slot::Free;
                state.free.push(slab);
                continue;
            }
            let len = left.min(memory.size);
            left -= len;
            let entry = &control.descriptors[memory.entry(self.desc_tail)];
            entry.position.store(position, Ordering::Relaxed);
            entry.slab.store(slab, Ordering::Relaxed);
            entry.len.store(len as u32, Ordering::Relaxed);
            entry
                .generation
                .store(state.generations[slab as usize], Ordering::Relaxed);
            state.slots[slab as usize] = Slot::Sent;
            self.desc_tail = self.desc_tail.wrapping_add(1);
        }
        drop(state);
        // Release: the entries and the slab bytes before the new tail.
        control.desc_tail.0.store(self.desc_tail, Ordering::Release);
        Ok(())
    }
}

/// What [`read_stream`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// Bytes copied; 0 when nothing is published now.
    pub(crate) n: usize,
    /// They came from the ring (whose writer may wait for the room).
    pub(crate) from_ring: bool,
}

/// Copies the next bytes of one direction's stream to `out`: ring bytes up to
/// the next slab's place, or that slab's bytes.
///
/// The ring is looked at before the descriptor ring: the sender publishes a
/// slab's descriptor before any ring byte that follows the slab, so every ring
/// byte counted here that lies past a slab's place has its descriptor visible
/// when we look next, and we never read past a slab we have not seen.
///
/// # Safety
/// `out` must be valid for writes of `len` bytes and must not overlap the
/// shared mapping.
pub(crate) unsafe fn read_stream(
    consumer: &mut Consumer,
    mut slabs: Option<&mut SlabReceiver>,
    out: *mut u8,
    len: usize,
) -> Result<Copied, Corrupt> {
    loop {
        let available = consumer.available()?;
        let next = match slabs.as_deref_mut() {
            Some(slabs) => slabs.next(consumer.position())?,
            None => Next::Ring,
        };
        let limit = match (next, slabs.as_deref_mut()) {
            (Next::Slab, Some(slabs)) => {
                // SAFETY: the caller's contract.
                let n = unsafe { slabs.read(out, len) }?;
                return Ok(Copied {
                    n,
                    from_ring: false,
                });
            }
            (Next::RingBytes(_), _) if available == 0 => {
                // The descriptor came after our look at the ring. The sender
                // publishes the bytes before a slab's place first, so a second
                // look must find them.
                if consumer.available()? == 0 {
                    return Err(Corrupt("a slab descriptor points past the published bytes"));
                }
                continue;
            }
            (Next::RingBytes(before_slab), _) => len.min(before_slab as usize),
            _ => len,
        };
        // SAFETY: the caller's contract, for `limit <= len` bytes.
        let n = unsafe { consumer.read(out, limit.min(available as usize)) }?;
        return Ok(Copied { n, from_ring: true });
    }
}

/// A slab being copied out by the reader.
#[derive(Debug, Clone, Copy)]
struct Current {
    slab: u32,
    generation: u32,
    len: usize,
    done: usize,
}

/// What comes next in the byte stream, as far as slabs are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A slab's bytes: copy them with [`SlabReceiver::read`].
    Slab,
    /// This many ring bytes, then a slab.
    RingBytes(u64),
    /// Ring bytes only, as far as is known.
    Ring,
}

/// The receiving end of one direction's descriptor ring, and the sending end
/// of its completion ring.
#[derive(Debug)]
pub(crate) struct SlabReceiver {
    memory: SlabMemory,
    desc_head: u64,
    done_tail: u64,
    current: Option<Current>,
    /// Keeps the mapping.
    _mapping: Mapping,
}

impl SlabReceiver {
    pub(crate) fn new(memory: SlabMemory, mapping: Mapping) -> SlabReceiver {
        SlabReceiver {
            memory,
            desc_head: 0,
            done_tail: 0,
            current: None,
            _mapping: mapping,
        }
    }

    /// Descriptors published and not taken yet.
    pub(crate) fn queued(&self) -> Result<u64, Corrupt> {
        let tail = self.memory.control().desc_tail.0.load(Ordering::Acquire);
        let queued = tail.wrapping_sub(self.desc_head);
        if queued > ENTRIES as u64 {
            return Err(Corrupt("the descriptor index is outside its ring"));
        }
        Ok(queued)
    }

    /// What comes next, `position` being the ring bytes delivered so far. Takes
    /// the next descriptor if its slab comes now.
    pub(crate) fn next(&mut self, position: u64) -> Result<Next, Corrupt> {
        if self.current.is_some() {
            return Ok(Next::Slab);
        }
        if self.queued()? == 0 {
            return Ok(Next::Ring);
        }
        let control = self.memory.control();
        let entry = &control.descriptors[self.memory.entry(self.desc_head)];
        // Each field read once, then checked: the peer may change them meanwhile.
        let at = entry.position.load(Ordering::Relaxed);
        let slab = entry.slab.load(Ordering::Relaxed);
        let len = entry.len.load(Ordering::Relaxed) as usize;
        let generation = entry.generation.load(Ordering::Relaxed);
        if slab >= self.memory.count || len == 0 || len > self.memory.size {
            return Err(Corrupt("a slab descriptor is outside the slab area"));
        }
        if at < position {
            return Err(Corrupt("a slab descriptor points behind the stream"));
        }
        if at > position {
            return Ok(Next::RingBytes(at - position));
        }
        self.desc_head = self.desc_head.wrapping_add(1);
        control.desc_head.0.store(self.desc_head, Ordering::Release);
        self.current = Some(Current {
            slab,
            generation,
            len,
            done: 0,
        });
        Ok(Next::Slab)
    }

    /// Copies up to `len` bytes of the current slab to `out`; when the slab is
    /// all copied, gives it back. Returns how many bytes were copied.
    ///
    /// # Safety
    /// `out` must be valid for writes of `len` bytes and must not overlap the
    /// shared mapping.
    pub(crate) unsafe fn read(&mut self, out: *mut u8, len: usize) -> Result<usize, Corrupt> {
        let Some(current) = &mut self.current else {
            return Ok(0);
        };
        let n = len.min(current.len - current.done);
        let from = self.memory.at(current.slab, current.done);
        // SAFETY: `done + n <= len <= size` (checked when the descriptor was
        // taken), so the source is inside the slab; the destination is the
        // caller's (its contract). As for the ring, a peer scribbling on the
        // slab meanwhile gives us garbage, never an access outside it.
        unsafe { std::ptr::copy_nonoverlapping(from, out, n) };
        current.done += n;
        if current.done == current.len {
            let (slab, generation) = (current.slab, current.generation);
            self.current = None;
            self.give_back(slab, generation)?;
        }
        Ok(n)
    }

    fn give_back(&mut self, slab: u32, generation: u32) -> Result<(), Corrupt> {
        let control = self.memory.control();
        let head = control.done_head.0.load(Ordering::Acquire);
        // An honest sender cannot let this fill: it has at most ENTRIES slabs
        // and sends each again only after taking it back.
        if self.done_tail.wrapping_sub(head) >= ENTRIES as u64 {
            return Err(Corrupt("the completion ring is full or its index is wrong"));
        }
        control.done[self.memory.entry(self.done_tail)].store(
            u64::from(slab) << 32 | u64::from(generation),
            Ordering::Relaxed,
        );
        self.done_tail = self.done_tail.wrapping_add(1);
        control.done_tail.0.store(self.done_tail, Ordering::Release);
        Ok(())
    }
}

#[cfg(all(test, not(sinew_loom)))]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// One direction's slabs in ordinary memory, held through raw pointers only
    /// (as shared memory is). The tests play the peer through `control()`.
    #[derive(Debug)]
    struct HeapSlabs {
        control: NonNull<SlabControl>,
        area: NonNull<[u8]>,
    }

    // SAFETY: the allocations are only reached through atomics and the slab
    // module's raw copies, as a real region is.
    unsafe impl Send for HeapSlabs {}
    // SAFETY: as above.
    unsafe impl Sync for HeapSlabs {}

    impl Drop for HeapSlabs {
        fn drop(&mut self) {
            // SAFETY: both came from `Box::leak` in `slabs` and are freed once,
            // after every pool and receiver holding this mapping is gone.
            unsafe {
                drop(Box::from_raw(self.control.as_ptr()));
                drop(Box::from_raw(self.area.as_ptr()));
            }
        }
    }

    const SIZE: usize = 4096;

    /// A sender and a receiver of `count` slabs of 4 KiB, and the shared part.
    fn slabs(count: u32) -> (SlabSender, SlabReceiver, Arc<HeapSlabs>) {
        let control = NonNull::from(Box::leak(Box::<SlabControl>::default()));
        let area = NonNull::from(Box::leak(
            vec![0u8; SIZE * count as usize].into_boxed_slice(),
        ));
        let heap = Arc::new(HeapSlabs { control, area });
        // SAFETY: both allocations live as long as `heap`, which the pool and
        // the receiver hold.
        let memory = unsafe { SlabMemory::new(control, area.cast::<u8>(), SIZE, count) };
        let sender = SlabSender::new(SlabPool::new(memory, heap.clone(), 1));
        let receiver = SlabReceiver::new(memory, heap.clone());
        (sender, receiver, heap)
    }

    impl HeapSlabs {
        /// The control block, as the peer sees it.
        fn control(&self) -> &SlabControl {
            // SAFETY: allocated in `slabs`, freed only in `drop`; atomics only.
            unsafe { self.control.as_ref() }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Copies out everything the receiver has as slab bytes now.
    fn read_slabs(receiver: &mut SlabReceiver, position: u64, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while receiver.next(position).unwrap() == Next::Slab {
            let mut buf = vec![0u8; chunk];
            // SAFETY: `buf` is a local buffer of `chunk` bytes.
            let n = unsafe { receiver.read(buf.as_mut_ptr(), chunk) }.unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn a_message_spread_over_slabs_arrives_whole_at_its_place_in_the_stream() {
        let (mut sender, mut receiver, _heap) = slabs(4);
        let message = pattern(10_000, 7);
        let mut buf = sender.pool.alloc(message.len()).unwrap();
        assert_eq!(buf.remaining_mut(), 3 * SIZE, "three slabs");
        buf.put_slice(&message);
        assert_eq!(buf.len(), message.len());
        assert_eq!(sender.pool.free_slabs(), 1);
        sender.publish(5, buf).unwrap();

        // Five ring bytes come first; then the slabs, in any read sizes.
        assert_eq!(receiver.next(0).unwrap(), Next::RingBytes(5));
        assert_eq!(receiver.next(3).unwrap(), Next::RingBytes(2));
        assert_eq!(read_slabs(&mut receiver, 5, 3000), message);
        assert_eq!(receiver.next(5).unwrap(), Next::Ring);
        assert_eq!(
            sender.pool.free_slabs(),
            4,
            "every slab given back once copied"
        );
    }

    #[test]
    fn exhausted_slabs_give_none_at_once_and_come_back_when_read() {
        let (mut sender, mut receiver, heap) = slabs(2);
        let pool = sender.pool.clone();
        let first = pool.alloc(2 * SIZE).unwrap();
        assert!(
            pool.alloc(1).is_none(),
            "no slab left: the caller uses the ring"
        );
        drop(first);
        assert_eq!(
            pool.free_slabs(),
            2,
            "an unsent buffer gives its slabs back"
        );

        let mut buf = pool.alloc(SIZE + 1).unwrap();
        buf.put_slice(&pattern(SIZE + 1, 1));
        sender.publish(0, buf).unwrap();
        assert!(pool.alloc(1).is_none(), "both slabs in flight");
        let generation = heap.control().descriptors[0]
            .generation
            .load(Ordering::Relaxed);

        assert_eq!(read_slabs(&mut receiver, 0, SIZE), pattern(SIZE + 1, 1));
        let mut again = pool.alloc(2 * SIZE).unwrap();
        again.put_slice(&pattern(2 * SIZE, 2));
        sender.publish(0, again).unwrap();
        let reused = heap.control().descriptors[2]
            .generation
            .load(Ordering::Relaxed);
        assert_ne!(generation, reused, "a reused slab has a new generation");
        assert_eq!(read_slabs(&mut receiver, 0, SIZE), pattern(2 * SIZE, 2));

        // A buffer filled only partly sends only the slabs it used.
        let mut short = pool.alloc(2 * SIZE).unwrap();
        short.put_slice(b"only a little");
        sender.publish(0, short).unwrap();
        assert_eq!(pool.free_slabs(), 1);
        assert_eq!(read_slabs(&mut receiver, 0, SIZE), b"only a little");
        assert_eq!(pool.free_slabs(), 2);
    }

    #[test]
    fn descriptors_from_a_hostile_sender_are_refused_not_followed() {
        let cases: [(&str, u32, u32, u64, u64); 5] = [
            ("outside the slab area", 2, 100, 0, 1),
            ("outside the slab area", 0, 0, 0, 1),
            ("outside the slab area", 0, SIZE as u32 + 1, 0, 1),
            ("behind the stream", 0, 100, 3, 1),
            ("outside its ring", 0, 100, 10, ENTRIES as u64 + 1),
        ];
        for (expected, slab, len, position, tail) in cases {
            let (_sender, mut receiver, heap) = slabs(2);
            let entry = &heap.control().descriptors[0];
            entry.slab.store(slab, Ordering::Relaxed);
            entry.len.store(len, Ordering::Relaxed);
            entry.position.store(position, Ordering::Relaxed);
            heap.control().desc_tail.0.store(tail, Ordering::Release);
            let error = receiver.next(10).unwrap_err();
            assert!(error.0.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn completions_from_a_hostile_receiver_break_the_pool_not_the_process() {
        // Each: (slab, generation) given back, or a completion index out of range.
        for case in 0..4 {
            let (mut sender, _receiver, heap) = slabs(2);
            let pool = sender.pool.clone();
            let mut buf = pool.alloc(1).unwrap();
            buf.put_slice(b"x");
            sender.publish(0, buf).unwrap();
            let filling = pool.alloc(1).unwrap();
            let control = heap.control();
            let (entry, tail) = match case {
                0 => (1u64 << 32 | 1, 1), // the slab being filled, never sent
                1 => (99, 1),             // slab 0 (the sent one), wrong generation
                2 => (7u64 << 32 | 1, 1), // no such slab
                _ => (0, ENTRIES as u64 + 1),
            };
            control.done[0].store(entry, Ordering::Relaxed);
            control.done_tail.0.store(tail, Ordering::Release);
            pool.free_slabs(); // takes completions back
            assert!(pool.is_broken(), "case {case}");
            drop(filling);
            assert!(pool.alloc(1).is_none(), "case {case}");
            let late = SlabBuf {
                pool: pool.clone(),
                slabs: Vec::new(),
                written: 0,
            };
            assert!(sender.publish(0, late).is_err(), "case {case}");
        }
    }

    #[test]
    fn a_buffer_from_another_pool_is_refused() {
        let (mut sender, _receiver, _heap) = slabs(1);
        let (other, _, _other_heap) = slabs(1);
        let buf = other.pool.alloc(1).unwrap();
        assert!(sender.publish(0, buf).is_err());
        assert_eq!(other.pool.free_slabs(), 1, "the refused buffer went home");
    }
}

/// Slabs and ring together under loom: a writer sends a ring byte and a slab,
/// waits until the reader has them all (so nothing but the slab's own
/// descriptor can wake the reader for it), then one more ring byte and the
/// close, waking the reader as `stream.rs` does; the reader reads with
/// [`read_stream`] and sleeps as `stream.rs` does (checking the descriptor ring
/// after announcing its sleep). A lost wake-up is a deadlock; a slab read at
/// the wrong place fails the assertion.
#[cfg(all(test, sinew_loom))]
mod loom_tests {
    use super::*;
    use crate::ring::{Producer, RingControl, RingMemory};
    use crate::sync::Event;
    use bytes::BufMut;

    struct Shared {
        ring: RingControl,
        data: std::cell::UnsafeCell<[u8; 4]>,
        slabs: SlabControl,
        area: std::cell::UnsafeCell<[u8; 4]>,
        data_ready: Event,
        /// The reader has the first three bytes.
        got_slab: Event,
    }

    impl std::fmt::Debug for Shared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Shared")
        }
    }

    // SAFETY: the arrays are only accessed through the ring and slab protocols;
    // the control blocks are atomics.
    unsafe impl Sync for Shared {}
    // SAFETY: as above.
    unsafe impl Send for Shared {}

    fn ring(shared: &Shared) -> RingMemory {
        let control = NonNull::from(&shared.ring);
        let data = NonNull::new(shared.data.get().cast::<u8>()).unwrap();
        // SAFETY: `shared` outlives both ends (each thread holds the Arc).
        unsafe { RingMemory::new(control, data, 4) }
    }

    fn slabs(shared: &Shared) -> SlabMemory {
        let control = NonNull::from(&shared.slabs);
        let area = NonNull::new(shared.area.get().cast::<u8>()).unwrap();
        // SAFETY: as above; one slab of 4 bytes.
        unsafe { SlabMemory::new(control, area, 4, 1) }
    }

    #[test]
    fn slab_bytes_arrive_at_their_place_and_no_wake_up_is_lost() {
        loom::model(|| {
            let shared = std::sync::Arc::new(Shared {
                ring: RingControl::default(),
                data: std::cell::UnsafeCell::new([0; 4]),
                slabs: SlabControl::default(),
                area: std::cell::UnsafeCell::new([0; 4]),
                data_ready: Event::default(),
                got_slab: Event::default(),
            });
            let writer_side = shared.clone();
            let writer = loom::thread::spawn(move || {
                let mut producer = Producer::new(ring(&writer_side));
                let pool = SlabPool::new(slabs(&writer_side), writer_side.clone(), 1);
                let mut sender = SlabSender::new(pool.clone());
                let publish = |producer: &Producer| {
                    if producer.publish() {
                        writer_side.data_ready.signal();
                    }
                };
                assert_eq!(producer.write(b"a").unwrap(), 1);
                publish(&producer);
                let mut buf = pool.alloc(2).unwrap();
                buf.put_slice(b"XY");
                sender.publish(producer.position(), buf).unwrap();
                publish(&producer);
                writer_side.got_slab.wait();
                assert_eq!(producer.write(b"b").unwrap(), 1);
                publish(&producer);
                producer.close();
                writer_side.data_ready.signal();
            });
            let mut consumer = crate::ring::Consumer::new(ring(&shared));
            let mut receiver = SlabReceiver::new(slabs(&shared), shared.clone());
            let mut received = Vec::new();
            loop {
                let mut buf = [0u8; 4];
                // SAFETY: `buf` is a local 4-byte buffer.
                let copied =
                    unsafe { read_stream(&mut consumer, Some(&mut receiver), buf.as_mut_ptr(), 4) }
                        .unwrap();
                if copied.n > 0 {
                    received.extend_from_slice(&buf[..copied.n]);
                    if received.len() == 3 {
                        shared.got_slab.signal();
                    }
                    continue;
                }
                if consumer.is_closed() {
                    if consumer.available().unwrap() > 0 || receiver.queued().unwrap() > 0 {
                        continue;
                    }
                    break;
                }
                if consumer.announce_sleep().unwrap() {
                    if receiver.queued().unwrap() > 0 {
                        consumer.end_sleep();
                        continue;
                    }
                    shared.data_ready.wait();
                    consumer.end_sleep();
                }
            }
            writer.join().unwrap();
            assert_eq!(received, b"aXYb");
        });
    }
}
