//! An eventfd that worker threads signal and an event loop watches: one readable file
//! descriptor reports any number of completions, instead of a thread parked per job.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the descriptor readable (again).
    pub fn signal(&self) {
        signal(self.raw());
    }

    /// Makes it unreadable until the next signal; called before taking completions, so
    /// one signalled after the taking wakes the loop again.
    pub fn clear(&self) {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN just means none pending.
        unsafe {
            libc::read(self.raw(), counter.as_mut_ptr().cast(), 8);
        }
    }

    /// Waits up to `timeout_ms` for a signal (for callers without an event loop).
    pub fn wait(&self, timeout_ms: i32) {
        let mut fds = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd struct.
        unsafe {
            libc::poll(&mut fds, 1, timeout_ms);
        }
    }
}

/// [`EventFd::signal`] for a thread that holds only the descriptor's number.
pub fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd; a full counter only means the
    // reader has a wakeup pending already.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), 8);
    }
}
