//! Mailbox writes for an event loop: submitted, done by a pool of threads, reported
//! through one eventfd.
//!
//! A write mostly waits — for the group `syncfs` that makes a batch of them durable, for
//! a mailbox lock — so as many run at once as deliveries are in flight. Python's thread
//! pool cost the delivering process a Python future, lock and condition per write and a
//! GIL handoff to the worker and back; here the loop's side is a submit and a poll.

use super::{deliver_maildir, deliver_mbox, Delivery, MboxLocking};
use crate::event::EventFd;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One mailbox write.
pub enum Job {
    Maildir {
        dir: PathBuf,
        prefix: Vec<u8>,
        content: Vec<u8>,
        hostname: String,
        ids: Option<(u32, u32)>,
    },
    Mbox {
        path: PathBuf,
        sender: String,
        prefix: Vec<u8>,
        content: Vec<u8>,
        how: MboxLocking,
        ids: Option<(u32, u32)>,
    },
}

impl Job {
    /// Does the write; the outcome Postfix logs, "delivered to maildir" or "... mailbox"
    /// when it succeeded.
    pub fn run(&self) -> Delivery {
        match self {
            Job::Maildir {
                dir,
                prefix,
                content,
                hostname,
                ids,
            } => match deliver_maildir(dir, prefix, content, hostname, *ids) {
                Ok(_) => Delivery::ok("delivered to maildir"),
                Err(d) => d,
            },
            Job::Mbox {
                path,
                sender,
                prefix,
                content,
                how,
                ids,
            } => match deliver_mbox(path, sender, prefix, content, how, *ids) {
                Ok(()) => Delivery::ok("delivered to mailbox"),
                Err(d) => d,
            },
        }
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<(u64, Job)>,
    done: Vec<(u64, Delivery)>,
    next_ticket: u64,
    threads: usize,
    /// Threads waiting for a job, including any notified that have not taken one yet:
    /// a job for which none is left needs a thread of its own.
    waiting: usize,
    closing: bool,
}

/// The writer threads (at most `max_threads`, started as the load needs them).
pub struct Pool {
    shared: Arc<Shared>,
    event: Arc<EventFd>,
    max_threads: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub fn new(max_threads: usize) -> io::Result<Pool> {
        Ok(Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
            event: Arc::new(EventFd::new()?),
            max_threads: max_threads.max(1),
            handles: Mutex::new(Vec::new()),
        })
    }

    /// Queues `job`; its ticket comes back from [`Pool::poll`] with the outcome.
    pub fn submit(&self, job: Job) -> io::Result<u64> {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.jobs.push_back((ticket, job));
        if st.jobs.len() <= st.waiting {
            self.shared.wake.notify_one();
        } else if st.threads < self.max_threads {
            let shared = Arc::clone(&self.shared);
            let event = Arc::clone(&self.event);
            let spawned = std::thread::Builder::new()
                .name("mailbox".into())
                .spawn(move || work(&shared, &event));
            match spawned {
                Ok(handle) => {
                    st.threads += 1;
                    self.handles
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(handle);
                }
                Err(e) if st.threads == 0 => {
                    st.jobs.pop_back();
                    return Err(e);
                }
                // The threads there are will come to it.
                Err(_) => {}
            }
        }
        Ok(ticket)
    }

    /// The eventfd that becomes readable when outcomes are waiting.
    pub fn event_fd(&self) -> RawFd {
        self.event.raw()
    }

    /// Takes every outcome reported so far.
    pub fn poll(&self) -> Vec<(u64, Delivery)> {
        self.event.clear();
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut st.done)
    }

    /// Finishes the jobs queued and stops the threads.
    pub fn close(&self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closing = true;
        self.shared.wake.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

fn work(shared: &Shared, event: &EventFd) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let Some((ticket, job)) = st.jobs.pop_front() else {
            if st.closing {
                return;
            }
            st.waiting += 1;
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            st.waiting -= 1;
            continue;
        };
        drop(st);
        let outcome = job.run();
        st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.done.push((ticket, outcome));
        event.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TempDir;
    use super::*;

    fn wait_for(pool: &Pool, n: usize) -> Vec<(u64, Delivery)> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "outcomes did not come"
            );
            EventFd::wait(&pool.event, 100);
            out.extend(pool.poll());
        }
        out
    }

    #[test]
    fn every_job_is_reported_once_with_its_ticket() {
        let dir = TempDir::new();
        let pool = Pool::new(3).unwrap();
        let mut tickets = Vec::new();
        for i in 0..20 {
            let job = Job::Maildir {
                dir: dir.path().join(format!("box{}", i % 4)),
                prefix: Vec::new(),
                content: format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes(),
                hostname: "host".into(),
                ids: None,
            };
            tickets.push(pool.submit(job).unwrap());
        }
        let mut got: Vec<u64> = wait_for(&pool, 20)
            .into_iter()
            .map(|(t, d)| {
                assert!(d.delivered(), "{d:?}");
                t
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, tickets);
        let files: usize = (0..4)
            .map(|b| {
                std::fs::read_dir(dir.path().join(format!("box{b}/new")))
                    .unwrap()
                    .count()
            })
            .sum();
        assert_eq!(files, 20);
        assert!(pool.shared.state.lock().unwrap().threads <= 3);
    }

    #[test]
    fn a_failed_write_is_reported_not_lost() {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let pool = Pool::new(2).unwrap();
        let job = Job::Maildir {
            // A Maildir under a regular file cannot be made.
            dir: dir.path().join("file/box"),
            prefix: Vec::new(),
            content: b"Subject: x\r\n\r\n".to_vec(),
            hostname: "host".into(),
            ids: None,
        };
        let ticket = pool.submit(job).unwrap();
        let out = wait_for(&pool, 1);
        assert_eq!(out[0].0, ticket);
        assert!(!out[0].1.delivered());
        assert!(out[0].1.status.starts_with('4') || out[0].1.status.starts_with('5'));
    }

    #[test]
    fn close_finishes_what_was_queued() {
        let dir = TempDir::new();
        let pool = Pool::new(1).unwrap();
        for i in 0..5 {
            let job = Job::Maildir {
                dir: dir.path().join("box"),
                prefix: Vec::new(),
                content: format!("Subject: {i}\r\n\r\n").into_bytes(),
                hostname: "host".into(),
                ids: None,
            };
            pool.submit(job).unwrap();
        }
        pool.close();
        assert_eq!(pool.poll().len(), 5);
        assert_eq!(
            std::fs::read_dir(dir.path().join("box/new"))
                .unwrap()
                .count(),
            5
        );
    }
}
