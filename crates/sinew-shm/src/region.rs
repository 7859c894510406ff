//! The shared memory of one connection: a sealed memfd, mapped by both sides.
//!
//! The connecting side creates it: `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`,
//! sized with `ftruncate`, its pages reserved with `fallocate` (so that a memory
//! shortage fails the connection now, with an error, rather than later as a
//! SIGBUS in the middle of a copy), then sealed against shrinking and growing
//! (and against further seals) before the descriptor is passed to the server.
//! The server refuses a descriptor that is not sealed that way or whose size is
//! not the one announced: an unsealed file could be truncated under it by the
//! peer, and touching a truncated page raises SIGBUS.
//!
//! Both sides map it with `MAP_POPULATE`, so the pages are in the page tables
//! before the first message. A memfd has no name in any file system: nothing is
//! left in `/dev/shm` or on disk; the memory goes when the last mapping and
//! descriptor are gone, whichever way the processes exit.
//!
//! Layout: one page of control blocks (ring 0 at offset 0, ring 1 at offset
//! [`RING1_CONTROL`]), then ring 0's data, then ring 1's. Ring 0 carries bytes
//! from the connecting side to the accepting side, ring 1 the other way.

use crate::ring::{RingControl, RingMemory};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::io;
use std::ptr::NonNull;

/// Bytes before the first data area: the control blocks.
pub(crate) const CONTROL_AREA: u64 = 4096;
/// Offset of ring 1's control block.
const RING1_CONTROL: usize = 2048;
/// Smallest and largest ring capacity a peer may announce.
pub(crate) const MIN_CAPACITY: u64 = 4096;
/// See [`MIN_CAPACITY`].
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;

const _: () = assert!(std::mem::size_of::<RingControl>() <= RING1_CONTROL);
const _: () = assert!(RING1_CONTROL % std::mem::align_of::<RingControl>() == 0);

/// Total size of a region whose two rings hold `capacity` bytes each.
pub(crate) fn region_len(capacity: u64) -> u64 {
    CONTROL_AREA + 2 * capacity
}

/// Whether a ring capacity is acceptable (power of two, within limits).
pub(crate) fn valid_capacity(capacity: u64) -> bool {
    capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
}

/// A mapped region; unmapped when dropped.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
    capacity: u64,
}

// SAFETY: the region is plain memory owned by this value; everything that
// reads or writes it goes through `RingMemory`, whose accesses are atomic or
// raw copies, so sharing the mapping between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Creates, reserves, seals and maps a new region for rings of `capacity`
    /// bytes. Returns the mapping and the descriptor to pass to the peer.
    pub(crate) fn create(capacity: u64) -> io::Result<(Region, OwnedFd)> {
        if !valid_capacity(capacity) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring capacity {capacity} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
                ),
            ));
        }
        let len = region_len(capacity);
        let fd =
            rustix::fs::memfd_create("sinew-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len)?;
        rustix::fs::fallocate(&fd, FallocateFlags::empty(), 0, len).map_err(|error| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot reserve {len} bytes of shared memory: {error}"),
            )
        })?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let region = Region::map(&fd, capacity)?;
        Ok((region, fd))
    }

    /// Maps a region received from the peer, after checking that it is sealed
    /// against resizing and has exactly the size its announced capacity implies.
    pub(crate) fn map_received(fd: &OwnedFd, capacity: u64) -> io::Result<Region> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if !valid_capacity(capacity) {
            return Err(invalid(format!(
                "the peer announced a ring capacity of {capacity} bytes"
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(fd)
            .map_err(|e| invalid(format!("the peer's memory is not a sealable memfd: {e}")))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(invalid(
                "the peer's memory is not sealed against shrinking and growing".into(),
            ));
        }
        let stat = rustix::fs::fstat(fd)?;
        let expected = region_len(capacity);
        if stat.st_size as u64 != expected {
            return Err(invalid(format!(
                "the peer's memory is {} bytes, not the {expected} its capacity implies",
                stat.st_size
            )));
        }
        Region::map(fd, capacity)
    }

    fn map(fd: &impl AsFd, capacity: u64) -> io::Result<Region> {
        let len = region_len(capacity) as usize;
        // SAFETY: a fresh shared mapping of a file we hold; no existing memory is
        // replaced (the address is the kernel's choice). The file cannot shrink
        // under the mapping (sealed, checked by both constructors).
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                0,
            )?
        };
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Region {
            base,
            len,
            capacity,
        })
    }

    /// Bytes each ring holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Ring 0 (connecting side to accepting side) or ring 1 (the other way).
    pub(crate) fn ring(&self, index: usize) -> RingMemory {
        assert!(index < 2, "a region has two rings");
        let control_offset = index * RING1_CONTROL;
        let data_offset = CONTROL_AREA + index as u64 * self.capacity;
        // SAFETY: both offsets are inside the mapping (`len` = control area + two
        // data areas), page-aligned base + multiples of 128 satisfy RingControl's
        // alignment, the mapping lives as long as `self`, and an all-zero control
        // block (a fresh memfd) is a valid RingControl of atomics.
        unsafe {
            let base = self.base.as_ptr();
            let control = NonNull::new_unchecked(base.add(control_offset).cast::<RingControl>());
            let data = NonNull::new_unchecked(base.add(data_offset as usize));
            RingMemory::new(control, data, self.capacity)
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly `base..base + len`, and nothing uses the
        // rings after the region is dropped (their owners hold the region).
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(all(test, not(sinew_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_created_region_is_sealed_sized_and_accepted_by_the_peer_side() {
        let (region, fd) = Region::create(MIN_CAPACITY).unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert!(rustix::fs::ftruncate(&fd, 1).is_err(), "cannot shrink");
        let peer = Region::map_received(&fd, MIN_CAPACITY).unwrap();
        // Both mappings see the same memory.
        let mut producer = crate::ring::Producer::new(region.ring(0));
        let mut consumer = crate::ring::Consumer::new(peer.ring(0));
        producer.write(b"shared").unwrap();
        producer.publish();
        let mut out = [0u8; 6];
        // SAFETY: `out` is a local buffer of 6 bytes.
        assert_eq!(unsafe { consumer.read(out.as_mut_ptr(), 6) }.unwrap(), 6);
        assert_eq!(&out, b"shared");
    }

    #[test]
    fn unsealed_or_missized_memory_and_bad_capacities_are_refused() {
        let (_region, fd) = Region::create(MIN_CAPACITY).unwrap();
        let error = Region::map_received(&fd, MIN_CAPACITY * 2).unwrap_err();
        assert!(error.to_string().contains("not the"), "{error}");
        for capacity in [0, 3, 5000, MAX_CAPACITY * 2] {
            assert!(Region::map_received(&fd, capacity).is_err(), "{capacity}");
            assert!(Region::create(capacity).is_err(), "{capacity}");
        }
        let unsealed =
            rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&unsealed, region_len(MIN_CAPACITY)).unwrap();
        let error = Region::map_received(&unsealed, MIN_CAPACITY).unwrap_err();
        assert!(error.to_string().contains("not sealed"), "{error}");
    }
}
