//! Room for a connection reader's next read, and the process-wide store of
//! retired read buffers that readers reuse.
//!
//! Decoded messages are `Bytes` slices of the read buffer (no copy), so once
//! one is handed out the buffer's allocation is shared until every message
//! split from it is dropped. When the buffer runs out of room while messages
//! still hold it, the reader moves on to another buffer and the old one is
//! *retired*: kept in a bounded first-in-first-out store shared by every
//! connection of the process. A reader that needs a buffer takes the oldest
//! retired one whose messages are all gone before it allocates.
//!
//! Why: a fresh allocation's pages are faulted in by the kernel as `recv`
//! copies into them, and glibc returns freed 256 KiB blocks to the system
//! (it trims the heap), so every fresh buffer costs its pages' faults again.
//! With 64 KiB messages and 64 calls in flight that was nine page faults per
//! call, most of them in `recv`, and a quarter of the CPU. A retired buffer's
//! pages are resident.
//!
//! Bound: the store holds at most [`RETIRED_MAX`] buffers of at most two
//! [`READ_CHUNK`]s. Those still shared cost nothing extra (their messages
//! hold them anyway); those whose messages are gone are what the store keeps
//! from the allocator: at most 16 MiB per process, whatever the number of
//! connections, and nothing for a process whose messages never outlive their
//! buffer (an idle connection keeps only its own buffer).

use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Smallest free space a read is given; larger reads mean fewer syscalls.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// Most buffers the retired store holds.
const RETIRED_MAX: usize = 32;

/// How many of the oldest retired buffers a reader looks at: they are freed
/// roughly in the order they were retired, so if none of the oldest is free,
/// a younger one hardly is.
const SCAN: usize = 8;

/// Buffers left behind by readers, oldest first (see the module docs).
static RETIRED: Mutex<VecDeque<BytesMut>> = Mutex::new(VecDeque::new());

/// Makes room in the read buffer before the next read.
///
/// Growing happens in large chunks (at least 256 KiB, and enough for the rest
/// of the frame that has started), so moving to another buffer (and copying
/// the partial frame at the end of the old one) happens once per many frames
/// instead of on nearly every read of large messages.
///
/// A frame's announced length is the peer's word, not its bytes: room for the
/// rest of a frame is given only up to four times what has arrived (at least
/// 256 KiB), so a peer that announces a 4 MiB frame and trickles it makes the
/// buffer grow with what it actually sends, not with what it announced.
pub(crate) fn reserve_for_read(buf: &mut BytesMut) {
    let mut wanted = READ_CHUNK / 8;
    if buf.len() >= 4 {
        let frame = sinew_wire::FRAME_HEADER_LEN
            + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let earned = (4 * buf.len()).max(READ_CHUNK);
        wanted = wanted.max(frame.saturating_sub(buf.len()).min(earned));
    }
    // Reuse the allocation if every message split from it is gone (moving the
    // partial frame to its front). Not `reserve`: on a buffer messages were
    // split from, it may grow the whole allocation in place (a realloc),
    // copying every byte already handed out too and faulting in fresh pages
    // for them.
    if buf.capacity() - buf.len() >= wanted || buf.try_reclaim(wanted) {
        return;
    }
    let needed = buf.len() + wanted;
    let mut retired = RETIRED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut next = take_free(&mut retired, needed)
        .unwrap_or_else(|| BytesMut::with_capacity(buf.len() + wanted.max(READ_CHUNK)));
    next.extend_from_slice(buf);
    let mut old = std::mem::replace(buf, next);
    old.clear();
    retired.push_back(old);
    if retired.len() > RETIRED_MAX {
        retired.pop_front();
    }
    drop_free_oversized(&mut retired);
}

/// Drops every free buffer too large to keep (those of big frames), so that
/// what the store keeps from the allocator stays within its bound.
fn drop_free_oversized(retired: &mut VecDeque<BytesMut>) {
    retired.retain_mut(|buffer| free_room(buffer).is_none_or(|room| room <= 2 * READ_CHUNK));
}

/// The room of a retired (empty) buffer that no message can reach, if it is
/// at least a [`READ_CHUNK`]: reclaiming succeeds when no message holds the
/// buffer any more (the room is then the whole allocation), or when its tail,
/// which no message shares, is that large already.
fn free_room(buffer: &mut BytesMut) -> Option<usize> {
    buffer.try_reclaim(READ_CHUNK).then(|| buffer.capacity())
}

/// Takes the oldest retired buffer with room for `needed` bytes that no
/// message can reach: one no message holds any more, or (rarely) one whose
/// unused tail alone is that large.
fn take_free(retired: &mut VecDeque<BytesMut>, needed: usize) -> Option<BytesMut> {
    let mut i = 0;
    while i < retired.len().min(SCAN) {
        if free_room(&mut retired[i]).is_some_and(|room| room >= needed) {
            return retired.remove(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// A frame header announcing `len` bytes of payload, then `have` of them.
    fn partial_frame(len: usize, have: usize) -> Vec<u8> {
        let mut frame = vec![0u8; sinew_wire::FRAME_HEADER_LEN + have];
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
        frame
    }

    #[test]
    fn reuses_its_own_buffer_when_no_message_holds_it() {
        let mut buf = BytesMut::new();
        reserve_for_read(&mut buf);
        let start = buf.as_ptr();
        // Zeros: the partial frame left at the end announces an empty frame.
        buf.put_bytes(0, READ_CHUNK - 100);
        drop(buf.split_to(READ_CHUNK - 200).freeze());
        reserve_for_read(&mut buf);
        assert_eq!(buf.as_ptr(), start, "reclaimed in place");
        assert_eq!(&buf[..], &[0u8; 100][..]);
        assert!(buf.capacity() - buf.len() >= READ_CHUNK / 8);
    }

    #[test]
    fn a_buffer_held_by_a_message_is_left_with_the_partial_frame_moved() {
        let mut buf = BytesMut::new();
        reserve_for_read(&mut buf);
        let first = buf.as_ptr();
        let room = buf.capacity();
        buf.put_bytes(0, room);
        let message = buf.split_to(room - 10).freeze();
        reserve_for_read(&mut buf);
        assert_ne!(buf.as_ptr(), first, "the held buffer is not written over");
        assert_eq!(&buf[..], &[0u8; 10][..], "the partial frame moved along");
        assert!(buf.capacity() - buf.len() >= READ_CHUNK / 8);
        assert_eq!(&message[..], &vec![0u8; room - 10][..]);
    }

    #[test]
    fn room_for_the_rest_of_a_large_frame_is_earned_by_what_arrived() {
        // A 4 MiB frame announced with 1 KiB of it here: room for 256 KiB
        // more, not 4 MiB.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&partial_frame(4 << 20, 1024));
        reserve_for_read(&mut buf);
        let room = buf.capacity() - buf.len();
        assert!((READ_CHUNK..2 * READ_CHUNK).contains(&room), "room {room}");

        // 1 MiB of it here: room for 4 MiB more, the rest of the frame.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&partial_frame(4 << 20, 1 << 20));
        reserve_for_read(&mut buf);
        assert!(buf.capacity() - buf.len() >= (3 << 20));
    }

    #[test]
    fn free_buffers_too_large_to_keep_are_dropped_wherever_they_are() {
        let mut retired = VecDeque::new();
        let mut messages = Vec::new();
        // Held buffers: the small one first, then enough to put the large
        // one beyond the part take_free looks at.
        for capacity in std::iter::repeat_n(READ_CHUNK, SCAN + 1).chain([4 * READ_CHUNK]) {
            // As the reader leaves them: filled, messages split off, the
            // partial frame at the end moved on.
            let mut buffer = BytesMut::with_capacity(capacity);
            buffer.put_bytes(0, capacity);
            messages.push(buffer.split_to(capacity - 10).freeze());
            buffer.clear();
            retired.push_back(buffer);
        }
        drop_free_oversized(&mut retired);
        assert_eq!(retired.len(), SCAN + 2, "held buffers stay");
        // The large one's message gone: it goes, wherever it is.
        messages.pop();
        drop_free_oversized(&mut retired);
        assert_eq!(retired.len(), SCAN + 1);
        assert!(take_free(&mut retired, READ_CHUNK).is_none(), "all held");
        // The first one's message gone: it is reused.
        messages.remove(0);
        assert!(take_free(&mut retired, READ_CHUNK).is_some());
        assert_eq!(retired.len(), SCAN);
    }
}
