//! [`Inbox`]: the queue of items that arrived on one stream and that its call has
//! not taken yet.
//!
//! A first-in first-out queue with O(1) pushes and amortised O(1) pops, stored
//! inline for the few items a unary call ever sees (headers, one message, the
//! end), so that the common call allocates nothing. A stream whose reader is slow
//! can hold many items (small messages fit many to a flow-control window): pops
//! never shift the queue, and the space of taken items is reclaimed once it is at
//! least half of the queue, so draining n items costs O(n) whatever their number.

use super::Inbound;
use smallvec::SmallVec;

/// Items kept inline before the queue spills to the heap.
const INLINE: usize = 3;

/// Taken items at the front below this are never reclaimed early: moving a few
/// items is not worth it, and the queue is cleared whenever it empties anyway.
const RECLAIM_AFTER: usize = 32;

/// The items of one stream, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// `items[head..]` are queued; `items[..head]` were taken (left as
    /// placeholders until reclaimed).
    items: SmallVec<[Inbound; INLINE]>,
    head: usize,
}

impl Inbox {
    /// Appends an item at the back.
    pub(crate) fn push(&mut self, item: Inbound) {
        self.items.push(item);
    }

    /// Takes the oldest item.
    pub(crate) fn pop(&mut self) -> Option<Inbound> {
        let slot = self.items.get_mut(self.head)?;
        // The placeholder is never read: `head` has moved past it.
        let item = std::mem::replace(slot, Inbound::End);
        self.head += 1;
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
        } else if self.head >= RECLAIM_AFTER && self.head * 2 >= self.items.len() {
            // Moves at most as many items as were taken since the last
            // reclaim: amortised O(1) per pop.
            self.items.drain(..self.head);
            self.head = 0;
        }
        Some(item)
    }

    /// The oldest item, without taking it.
    pub(crate) fn front(&self) -> Option<&Inbound> {
        self.items.get(self.head)
    }

    /// The queued items, oldest first.
    pub(crate) fn as_slice(&self) -> &[Inbound] {
        &self.items[self.head..]
    }

    /// Drops every queued item.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(n: usize) -> Inbound {
        Inbound::Message(Bytes::from(n.to_be_bytes().to_vec()))
    }

    fn number(item: Inbound) -> usize {
        match item {
            Inbound::Message(bytes) => usize::from_be_bytes(bytes[..].try_into().unwrap()),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn items_come_out_in_arrival_order_across_reclaims() {
        let mut inbox = Inbox::default();
        let mut next_in = 0;
        let mut next_out = 0;
        // Interleave pushes and pops so that the front is reclaimed many times
        // while items are still queued behind it.
        for round in 0..200 {
            for _ in 0..(round % 7 + 1) * 10 {
                inbox.push(message(next_in));
                next_in += 1;
            }
            for _ in 0..(round % 5 + 1) * 9 {
                match inbox.pop() {
                    Some(item) => {
                        assert_eq!(number(item), next_out);
                        next_out += 1;
                    }
                    None => break,
                }
            }
            assert_eq!(inbox.as_slice().len(), next_in - next_out);
        }
        while let Some(item) = inbox.pop() {
            assert_eq!(number(item), next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert!(inbox.as_slice().is_empty());
        assert!(inbox.front().is_none());
    }

    #[test]
    fn memory_of_taken_items_is_reclaimed_while_the_queue_never_empties() {
        let mut inbox = Inbox::default();
        // A reader one item behind a steady writer: the queue never empties,
        // yet what is kept stays bounded.
        inbox.push(message(0));
        for n in 1..100_000 {
            inbox.push(message(n));
            assert_eq!(number(inbox.pop().unwrap()), n - 1);
            assert!(inbox.items.len() <= 2 * RECLAIM_AFTER + 2);
        }
    }

    #[test]
    fn a_unary_calls_items_stay_inline() {
        let mut inbox = Inbox::default();
        inbox.push(Inbound::Headers(Default::default()));
        inbox.push(message(1));
        inbox.push(Inbound::End);
        assert!(!inbox.items.spilled());
        assert!(matches!(inbox.front(), Some(Inbound::Headers(_))));
        assert!(matches!(
            inbox.as_slice(),
            [Inbound::Headers(_), Inbound::Message(_), Inbound::End]
        ));
        inbox.pop();
        assert!(matches!(
            inbox.as_slice(),
            [Inbound::Message(_), Inbound::End]
        ));
        inbox.clear();
        assert!(inbox.as_slice().is_empty());
    }
}
