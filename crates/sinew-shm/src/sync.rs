//! Atomics, from `loom` when the ring protocol is model-checked (`--cfg sinew_loom`),
//! from `std` otherwise.

#[cfg(sinew_loom)]
pub(crate) use loom::sync::atomic;
#[cfg(not(sinew_loom))]
pub(crate) use std::sync::atomic;

/// A counting event under loom, as an eventfd: a signal before the wait is not
/// lost. The model tests' stand-in for the eventfds of `stream.rs`.
#[cfg(all(test, sinew_loom))]
#[derive(Default)]
pub(crate) struct Event {
    signalled: loom::sync::Mutex<bool>,
    condvar: loom::sync::Condvar,
}

#[cfg(all(test, sinew_loom))]
impl Event {
    pub(crate) fn signal(&self) {
        *self.signalled.lock().unwrap() = true;
        self.condvar.notify_one();
    }

    pub(crate) fn wait(&self) {
        let mut signalled = self.signalled.lock().unwrap();
        while !*signalled {
            signalled = self.condvar.wait(signalled).unwrap();
        }
        *signalled = false;
    }
}
