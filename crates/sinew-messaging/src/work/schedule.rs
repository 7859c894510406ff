//! [`Schedule`]: which job of one work queue goes out next, in memory.
//!
//! Every job held is in exactly one of five places: ready (deliverable
//! now), leased (delivered, not settled, until its deadline), delayed (a
//! nak's delay), held (delivered for the last time, waiting to move to the
//! dead-letter queue), or waiting behind an earlier job with the same
//! ordering key. A key's jobs go out one at a time in push order: only the first
//! one of a key is ever ready, leased or delayed; the rest wait until it is
//! removed (acked, terminated or dead-lettered), then the next one becomes
//! ready. Jobs without a key are delivered in sequence order, as workers
//! have room.
//!
//! Nothing here touches the store; the store keeps this in step with what
//! it wrote.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// What the schedule knows of a job.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) key: Option<Arc<str>>,
    pub(crate) size: u64,
    /// Deliveries so far.
    pub(crate) attempts: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) attempt: u32,
    pub(crate) worker: u64,
    deadline: Instant,
}

/// One work queue's jobs, by where they are.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    jobs: HashMap<u64, Meta>,
    ready: BTreeSet<u64>,
    /// Keys with a job ready, leased or delayed, and the jobs behind it.
    keys: HashMap<Arc<str>, VecDeque<u64>>,
    leased: HashMap<u64, Lease>,
    deadlines: BTreeSet<(Instant, u64)>,
    delayed: BTreeSet<(Instant, u64)>,
    held: BTreeSet<u64>,
    bytes: u64,
}

/// Why a lease cannot be settled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotLeased;

impl Schedule {
    /// Jobs held.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Bytes of payload held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn leased_len(&self) -> usize {
        self.leased.len()
    }

    pub(crate) fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// Deliveries of a job so far.
    pub(crate) fn attempts(&self, sequence: u64) -> u32 {
        self.jobs.get(&sequence).map_or(0, |meta| meta.attempts)
    }

    /// Jobs waiting to move to the dead-letter queue.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Jobs waiting to move to the dead-letter queue, in order.
    pub(crate) fn held(&self) -> Vec<u64> {
        self.held.iter().copied().collect()
    }

    /// Jobs not ready because an earlier job of their key is out.
    pub(crate) fn waiting_len(&self) -> usize {
        self.keys.values().map(VecDeque::len).sum()
    }

    /// Adds a job (pushed, or loaded from the store in sequence order).
    pub(crate) fn add(&mut self, sequence: u64, meta: Meta) {
        self.bytes += meta.size;
        match &meta.key {
            Some(key) => match self.keys.get_mut(key) {
                Some(behind) => behind.push_back(sequence),
                None => {
                    self.keys.insert(key.clone(), VecDeque::new());
                    self.ready.insert(sequence);
                }
            },
            None => {
                self.ready.insert(sequence);
            }
        }
        self.jobs.insert(sequence, meta);
    }

    /// Takes the next ready job and leases it to `worker` until
    /// `deadline`; returns its sequence and delivery number.
    pub(crate) fn lease_next(&mut self, worker: u64, deadline: Instant) -> Option<(u64, u32)> {
        let sequence = self.ready.pop_first()?;
        let meta = self.jobs.get_mut(&sequence)?;
        meta.attempts += 1;
        let attempt = meta.attempts;
        self.leased.insert(
            sequence,
            Lease {
                attempt,
                worker,
                deadline,
            },
        );
        self.deadlines.insert((deadline, sequence));
        Some((sequence, attempt))
    }

    /// Puts a leased job back as ready, now or at `until`, leaving its
    /// delivery count as it is: a worker that left before it saw the job.
    pub(crate) fn unlease(&mut self, sequence: u64) {
        if let Some(lease) = self.leased.remove(&sequence) {
            self.deadlines.remove(&(lease.deadline, sequence));
            if let Some(meta) = self.jobs.get_mut(&sequence) {
                meta.attempts = meta.attempts.saturating_sub(1);
            }
            self.ready.insert(sequence);
        }
    }

    /// The lease of delivery `attempt` of `sequence`, if it is still the
    /// job's current one.
    pub(crate) fn lease(&self, sequence: u64, attempt: u32) -> Result<Lease, NotLeased> {
        match self.leased.get(&sequence) {
            Some(lease) if lease.attempt == attempt => Ok(*lease),
            _ => Err(NotLeased),
        }
    }

    /// Ends a lease; the job stays held (see `release`, `remove`).
    fn end_lease(&mut self, sequence: u64, attempt: u32) -> Result<Lease, NotLeased> {
        let lease = self.lease(sequence, attempt)?;
        self.leased.remove(&sequence);
        self.deadlines.remove(&(lease.deadline, sequence));
        Ok(lease)
    }

    /// Extends a lease to `deadline` (a worker's "in progress").
    pub(crate) fn extend(
        &mut self,
        sequence: u64,
        attempt: u32,
        deadline: Instant,
    ) -> Result<(), NotLeased> {
        let lease = self.end_lease(sequence, attempt)?;
        self.leased.insert(sequence, Lease { deadline, ..lease });
        self.deadlines.insert((deadline, sequence));
        Ok(())
    }

    /// Ends a lease and makes the job ready again, at once or at `until`.
    pub(crate) fn release(
        &mut self,
        sequence: u64,
        attempt: u32,
        until: Option<Instant>,
    ) -> Result<Lease, NotLeased> {
        let lease = self.end_lease(sequence, attempt)?;
        self.requeue(sequence, until);
        Ok(lease)
    }

    fn requeue(&mut self, sequence: u64, until: Option<Instant>) {
        match until {
            Some(until) => {
                self.delayed.insert((until, sequence));
            }
            None => {
                self.ready.insert(sequence);
            }
        }
    }

    /// Ends a lease and holds the job for the dead-letter queue: never
    /// delivered again, its key still taken, until it is forgotten.
    pub(crate) fn hold(&mut self, sequence: u64, attempt: u32) -> Result<Lease, NotLeased> {
        let lease = self.end_lease(sequence, attempt)?;
        self.held.insert(sequence);
        Ok(lease)
    }

    /// Holds a job whose lease expired (see `expire`) for the dead-letter
    /// queue.
    pub(crate) fn hold_expired(&mut self, sequence: u64) {
        if self.jobs.contains_key(&sequence) {
            self.held.insert(sequence);
        }
    }

    /// Ends a lease and forgets the job (acked, terminated, or
    /// dead-lettered); the next job of its key, if any, becomes ready.
    pub(crate) fn settle(&mut self, sequence: u64, attempt: u32) -> Result<Lease, NotLeased> {
        let lease = self.end_lease(sequence, attempt)?;
        self.forget(sequence);
        Ok(lease)
    }

    /// Forgets a job wherever it is (dead-lettered, typically).
    pub(crate) fn forget(&mut self, sequence: u64) -> Option<Meta> {
        let meta = self.jobs.remove(&sequence)?;
        self.ready.remove(&sequence);
        if let Some(lease) = self.leased.remove(&sequence) {
            self.deadlines.remove(&(lease.deadline, sequence));
        }
        self.delayed.retain(|&(_, delayed)| delayed != sequence);
        self.held.remove(&sequence);
        self.bytes -= meta.size;
        if let Some(key) = &meta.key {
            if let Some(behind) = self.keys.get_mut(key) {
                match behind.pop_front() {
                    Some(next) => {
                        self.ready.insert(next);
                    }
                    None => {
                        self.keys.remove(key);
                    }
                }
            }
        }
        Some(meta)
    }

    /// Leases whose deadline passed by `now`: ended, and returned with
    /// their delivery numbers; the jobs stay held for the caller to
    /// requeue or dead-letter.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(u64, Lease)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, sequence)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(lease) = self.leased.remove(&sequence) {
                expired.push((sequence, lease));
            }
        }
        expired
    }

    /// Makes a job whose lease expired ready again (see `expire`).
    pub(crate) fn requeue_expired(&mut self, sequence: u64) {
        if self.jobs.contains_key(&sequence) {
            self.requeue(sequence, None);
        }
    }

    /// Makes delayed jobs whose delay is over by `now` ready.
    pub(crate) fn wake_delayed(&mut self, now: Instant) {
        while let Some(&(until, sequence)) = self.delayed.first() {
            if until > now {
                break;
            }
            self.delayed.pop_first();
            self.ready.insert(sequence);
        }
    }

    /// When something next changes by itself (a lease runs out, a delay
    /// ends).
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        let lease = self.deadlines.first().map(|&(at, _)| at);
        let delay = self.delayed.first().map(|&(at, _)| at);
        match (lease, delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(key: Option<&str>) -> Meta {
        Meta {
            key: key.map(Arc::from),
            size: 10,
            attempts: 0,
        }
    }

    fn later(seconds: u64) -> Instant {
        Instant::now() + Duration::from_secs(seconds)
    }

    #[test]
    fn jobs_without_a_key_go_out_in_sequence_order() {
        let mut schedule = Schedule::default();
        for sequence in [3, 1, 2] {
            schedule.add(sequence, meta(None));
        }
        let order: Vec<u64> = (0..3)
            .map(|_| schedule.lease_next(0, later(30)).unwrap().0)
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(schedule.lease_next(0, later(30)), None);
        assert_eq!((schedule.len(), schedule.bytes()), (3, 30));
    }

    #[test]
    fn a_keys_jobs_go_out_one_at_a_time_in_push_order() {
        let mut schedule = Schedule::default();
        schedule.add(1, meta(Some("a")));
        schedule.add(2, meta(Some("a")));
        schedule.add(3, meta(Some("b")));
        schedule.add(4, meta(Some("a")));
        assert_eq!(schedule.lease_next(0, later(30)), Some((1, 1)));
        assert_eq!(schedule.lease_next(0, later(30)), Some((3, 1)));
        // 2 waits for 1, even with a worker free.
        assert_eq!(schedule.lease_next(0, later(30)), None);
        assert_eq!(schedule.waiting_len(), 2);
        // A nak keeps the key's turn: 1 again, not 2.
        schedule.release(1, 1, None).unwrap();
        assert_eq!(schedule.lease_next(0, later(30)), Some((1, 2)));
        schedule.settle(1, 2).unwrap();
        assert_eq!(schedule.lease_next(0, later(30)), Some((2, 1)));
        schedule.settle(2, 1).unwrap();
        assert_eq!(schedule.lease_next(0, later(30)), Some((4, 1)));
        schedule.settle(4, 1).unwrap();
        schedule.settle(3, 1).unwrap();
        assert_eq!(schedule.len(), 0);
        assert!(schedule.keys.is_empty());
    }

    #[test]
    fn a_stale_or_repeated_settlement_is_refused() {
        let mut schedule = Schedule::default();
        schedule.add(1, meta(None));
        let now = Instant::now();
        assert_eq!(schedule.lease_next(7, now), Some((1, 1)));
        // The lease runs out; the job goes out again as delivery 2.
        let expired = schedule.expire(now);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.worker, 7);
        schedule.requeue_expired(1);
        assert_eq!(schedule.lease_next(8, later(30)), Some((1, 2)));
        assert_eq!(schedule.settle(1, 1).unwrap_err(), NotLeased);
        schedule.settle(1, 2).unwrap();
        assert_eq!(schedule.settle(1, 2).unwrap_err(), NotLeased);
    }

    #[test]
    fn in_progress_moves_the_deadline_and_a_delay_holds_the_job_back() {
        let mut schedule = Schedule::default();
        schedule.add(1, meta(Some("k")));
        schedule.add(2, meta(Some("k")));
        let now = Instant::now();
        schedule.lease_next(0, now + Duration::from_secs(1));
        schedule
            .extend(1, 1, now + Duration::from_secs(60))
            .unwrap();
        assert!(schedule.expire(now + Duration::from_secs(2)).is_empty());
        let until = now + Duration::from_secs(5);
        schedule.release(1, 1, Some(until)).unwrap();
        assert_eq!(schedule.next_timer(), Some(until));
        // Delayed: neither 1 nor 2 (behind it) goes out.
        assert_eq!(schedule.lease_next(0, later(30)), None);
        schedule.wake_delayed(until);
        assert_eq!(schedule.lease_next(0, later(30)), Some((1, 2)));
    }

    #[test]
    fn a_held_job_goes_out_no_more_and_keeps_its_key_until_forgotten() {
        let mut schedule = Schedule::default();
        schedule.add(1, meta(Some("k")));
        schedule.add(2, meta(Some("k")));
        schedule.lease_next(0, later(30));
        schedule.hold(1, 1).unwrap();
        assert_eq!(schedule.held(), [1]);
        assert_eq!(schedule.lease_next(0, later(30)), None);
        schedule.forget(1).unwrap();
        assert!(schedule.held().is_empty());
        assert_eq!(schedule.lease_next(0, later(30)), Some((2, 1)));
    }

    #[test]
    fn forgetting_a_leased_job_frees_its_key() {
        let mut schedule = Schedule::default();
        schedule.add(1, meta(Some("k")));
        schedule.add(2, meta(Some("k")));
        schedule.lease_next(0, Instant::now());
        assert_eq!(schedule.leased_len(), 1);
        schedule.forget(1).unwrap();
        assert_eq!(schedule.leased_len(), 0);
        assert_eq!(schedule.lease_next(0, later(30)), Some((2, 1)));
    }
}
