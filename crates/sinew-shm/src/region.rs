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
//! The connecting side maps it with `MAP_POPULATE`, so the pages are in its
//! page tables before the first message. The accepting side checks that every
//! page is already reserved (the file's allocated blocks cover its size: a
//! sparse file would make the server's first touches allocate memory the
//! client announced but never paid for) and maps it without populating:
//! populating a large region is work the server would do on a runtime thread
//! for a peer it does not trust yet. A memfd has no name in any file system: nothing is
//! left in `/dev/shm` or on disk; the memory goes when the last mapping and
//! descriptor are gone, whichever way the processes exit.
//!
//! Layout ([`Layout`]): one page of ring control blocks (ring 0 at offset 0,
//! ring 1 at offset [`RING1_CONTROL`]), one page of slab control blocks
//! (direction 0 at [`CONTROL_AREA`] / 2, direction 1 [`RING1_CONTROL`] further),
//! then ring 0's data, ring 1's, direction 0's slabs and direction 1's. Ring 0
//! and the direction-0 slabs carry bytes from the connecting side to the
//! accepting side; ring 1 and the direction-1 slabs the other way.

use crate::ring::{RingControl, RingMemory};
use crate::slab::{SlabControl, SlabMemory};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::io;
use std::ptr::NonNull;

/// Bytes before the first data area: the ring and slab control blocks.
pub(crate) const CONTROL_AREA: u64 = 8192;
/// Offset of ring 1's control block (and of direction 1's slab control block
/// from direction 0's).
const RING1_CONTROL: usize = 2048;
/// Offset of direction 0's slab control block.
const SLAB_CONTROL: usize = 4096;
/// Largest slab, and most slabs per direction, a peer may announce.
pub(crate) const MAX_SLAB_SIZE: u64 = 16 << 20;
/// See [`MAX_SLAB_SIZE`]; also the size of the descriptor and completion rings.
pub(crate) const MAX_SLABS: u32 = crate::slab::ENTRIES as u32;
/// Smallest and largest ring capacity a peer may announce.
pub(crate) const MIN_CAPACITY: u64 = 4096;
/// See [`MIN_CAPACITY`].
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;

const _: () = assert!(std::mem::size_of::<RingControl>() <= RING1_CONTROL);
const _: () = assert!(RING1_CONTROL.is_multiple_of(std::mem::align_of::<RingControl>()));
const _: () = assert!(std::mem::size_of::<SlabControl>() <= RING1_CONTROL);
const _: () = assert!(SLAB_CONTROL.is_multiple_of(std::mem::align_of::<SlabControl>()));
const _: () = assert!(SLAB_CONTROL + 2 * RING1_CONTROL == CONTROL_AREA as usize);

/// The sizes that fix a region's layout, agreed at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bytes in each direction's ring.
    pub(crate) capacity: u64,
    /// Bytes in each slab (a power of two; 0 when there are no slabs).
    pub(crate) slab_size: u64,
    /// Slabs per direction (0 to [`MAX_SLABS`]).
    pub(crate) slab_count: u32,
}

impl Layout {
    /// Total size of the region.
    pub(crate) fn len(&self) -> u64 {
        CONTROL_AREA + 2 * self.capacity + 2 * self.slab_area()
    }

    /// Bytes of one direction's slabs.
    fn slab_area(&self) -> u64 {
        self.slab_size * u64::from(self.slab_count)
    }

    /// Why these sizes are unacceptable, if they are: a ring capacity that is
    /// not a power of two between [`MIN_CAPACITY`] and [`MAX_CAPACITY`], or slabs
    /// that are not a power of two from 4 KiB to [`MAX_SLAB_SIZE`], at most
    /// [`MAX_SLABS`] of them.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.capacity.is_power_of_two()
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&self.capacity)
        {
            return Err(format!(
                "ring capacity {} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}",
                self.capacity
            ));
        }
        let no_slabs = self.slab_count == 0 && self.slab_size == 0;
        let good_slabs = self.slab_count <= MAX_SLABS
            && self.slab_size.is_power_of_two()
            && (4096..=MAX_SLAB_SIZE).contains(&self.slab_size);
        if !no_slabs && !good_slabs {
            return Err(format!(
                "{} slabs of {} bytes: slabs must be a power of two from 4096 to {MAX_SLAB_SIZE} bytes, at most {MAX_SLABS} of them",
                self.slab_count, self.slab_size
            ));
        }
        Ok(())
    }
}

/// A mapped region; unmapped when dropped.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this value; everything that
// reads or writes it goes through `RingMemory`, whose accesses are atomic or
// raw copies, so sharing the mapping between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Creates, reserves, seals and maps a new region of this layout. Returns
    /// the mapping and the descriptor to pass to the peer.
    pub(crate) fn create(layout: Layout) -> io::Result<(Region, OwnedFd)> {
        layout
            .check()
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let len = layout.len();
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
        let region = Region::map(&fd, layout, MapFlags::SHARED | MapFlags::POPULATE)?;
        Ok((region, fd))
    }

    /// Maps a region received from the peer, after checking that it is sealed
    /// against resizing and has exactly the size its announced layout implies.
    pub(crate) fn map_received(fd: &OwnedFd, layout: Layout) -> io::Result<Region> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        layout
            .check()
            .map_err(|why| invalid(format!("the peer announced {why}")))?;
        let seals = rustix::fs::fcntl_get_seals(fd)
            .map_err(|e| invalid(format!("the peer's memory is not a sealable memfd: {e}")))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(invalid(
                "the peer's memory is not sealed against shrinking and growing".into(),
            ));
        }
        let stat = rustix::fs::fstat(fd)?;
        let expected = layout.len();
        if stat.st_size as u64 != expected {
            return Err(invalid(format!(
                "the peer's memory is {} bytes, not the {expected} its layout implies",
                stat.st_size
            )));
        }
        let reserved = stat.st_blocks as u64 * 512;
        if reserved < expected {
            return Err(invalid(format!(
                "the peer's memory has {reserved} of its {expected} bytes reserved: \
                 a region must be allocated in full (fallocate) before it is shared"
            )));
        }
        Region::map(fd, layout, MapFlags::SHARED)
    }

    fn map(fd: &impl AsFd, layout: Layout, flags: MapFlags) -> io::Result<Region> {
        let len = layout.len() as usize;
        // SAFETY: a fresh shared mapping of a file we hold; no existing memory is
        // replaced (the address is the kernel's choice). The file cannot shrink
        // under the mapping (sealed, checked by both constructors).
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )?
        };
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Region { base, len, layout })
    }

    /// Bytes each ring holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.layout.capacity
    }

    /// The slabs of direction `index` (0: connecting to accepting side), if the
    /// region has any.
    pub(crate) fn slabs(&self, index: usize) -> Option<SlabMemory> {
        assert!(index < 2, "a region has two directions");
        if self.layout.slab_count == 0 {
            return None;
        }
        let control_offset = SLAB_CONTROL + index * RING1_CONTROL;
        let area_offset =
            CONTROL_AREA + 2 * self.layout.capacity + index as u64 * self.layout.slab_area();
        // SAFETY: both offsets are inside the mapping (`Layout::len` counts the
        // control pages, both rings and both slab areas), the control block's
        // offset is a multiple of its alignment from a page-aligned base, the
        // mapping lives as long as `self`, and an all-zero control block is a
        // valid SlabControl of atomics.
        unsafe {
            let base = self.base.as_ptr();
            let control = NonNull::new_unchecked(base.add(control_offset).cast::<SlabControl>());
            let area = NonNull::new_unchecked(base.add(area_offset as usize));
            Some(SlabMemory::new(
                control,
                area,
                self.layout.slab_size as usize,
                self.layout.slab_count,
            ))
        }
    }

    /// Ring 0 (connecting side to accepting side) or ring 1 (the other way).
    pub(crate) fn ring(&self, index: usize) -> RingMemory {
        assert!(index < 2, "a region has two rings");
        let control_offset = index * RING1_CONTROL;
        let data_offset = CONTROL_AREA + index as u64 * self.layout.capacity;
        // SAFETY: both offsets are inside the mapping (`len` = control area + two
        // data areas), page-aligned base + multiples of 128 satisfy RingControl's
        // alignment, the mapping lives as long as `self`, and an all-zero control
        // block (a fresh memfd) is a valid RingControl of atomics.
        unsafe {
            let base = self.base.as_ptr();
            let control = NonNull::new_unchecked(base.add(control_offset).cast::<RingControl>());
            let data = NonNull::new_unchecked(base.add(data_offset as usize));
            RingMemory::new(control, data, self.layout.capacity)
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

    fn rings_only(capacity: u64) -> Layout {
        Layout {
            capacity,
            slab_size: 0,
            slab_count: 0,
        }
    }

    #[test]
    fn a_created_region_is_sealed_sized_and_accepted_by_the_peer_side() {
        let (region, fd) = Region::create(rings_only(MIN_CAPACITY)).unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert!(rustix::fs::ftruncate(&fd, 1).is_err(), "cannot shrink");
        let peer = Region::map_received(&fd, rings_only(MIN_CAPACITY)).unwrap();
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
        let (_region, fd) = Region::create(rings_only(MIN_CAPACITY)).unwrap();
        let error = Region::map_received(&fd, rings_only(MIN_CAPACITY * 2)).unwrap_err();
        assert!(error.to_string().contains("not the"), "{error}");
        let with_slabs = Layout {
            slab_size: 4096,
            slab_count: 2,
            ..rings_only(MIN_CAPACITY)
        };
        let error = Region::map_received(&fd, with_slabs).unwrap_err();
        assert!(error.to_string().contains("not the"), "{error}");
        for capacity in [0, 3, 5000, MAX_CAPACITY * 2] {
            assert!(Region::map_received(&fd, rings_only(capacity)).is_err());
            assert!(Region::create(rings_only(capacity)).is_err(), "{capacity}");
        }
        for (slab_size, slab_count) in [(4096, MAX_SLABS + 1), (4095, 1), (2048, 1), (0, 1)] {
            let layout = Layout {
                slab_size,
                slab_count,
                ..rings_only(MIN_CAPACITY)
            };
            assert!(Region::create(layout).is_err(), "{layout:?}");
            assert!(Region::map_received(&fd, layout).is_err(), "{layout:?}");
        }
        let unsealed =
            rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&unsealed, rings_only(MIN_CAPACITY).len()).unwrap();
        let error = Region::map_received(&unsealed, rings_only(MIN_CAPACITY)).unwrap_err();
        assert!(error.to_string().contains("not sealed"), "{error}");
    }
}
