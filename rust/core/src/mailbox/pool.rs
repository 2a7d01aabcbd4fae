//! Mailbox writes for an event loop: submitted, done by a pool of threads, reported
//! through one eventfd.
//!
//! A Maildir write mostly waits for the `syncfs` that makes it durable, so Maildir jobs go
//! in batches: one thread takes every Maildir job queued, writes and links them all,
//! takes the ones queued meanwhile too, then makes the batch durable with one sync
//! (shared with other batches through [`super::durable`]) and reports it with one eventfd
//! signal. While it waits for that sync, the next jobs queued start the next batch on
//! another thread. A thread and two wakeups per message cost more CPU than the write.
//! Should a write hang (a filesystem gone), the jobs queued behind it go to another
//! thread after [`STUCK_WRITE`], so Maildirs elsewhere go on being written.
//!
//! An mbox write may wait for a lock another process holds, so each gets a thread of its
//! own, and the two kinds never wait for each other's threads: at most `max_threads`
//! mbox writes and `max_threads` Maildir batches run at once. Python's thread pool cost
//! the delivering process a Python future, lock and condition per write and a GIL handoff
//! to the worker and back; here the loop's side is a submit and a poll.

use super::maildir::{deliver_maildir, Batch, MaildirWrite};
use super::{deliver_mbox, Delivery, MboxLocking};
use crate::event::EventFd;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
            } => maildir_outcome(deliver_maildir(dir, prefix, content, hostname, *ids)),
            Job::Mbox {
                path,
                sender,
                prefix,
                content,
                how,
                ids,
            } => match deliver_mbox(path, sender, prefix, content, how, *ids) {
                Ok(warning) => Delivery {
                    warning,
                    ..Delivery::ok("delivered to mailbox")
                },
                Err(d) => d,
            },
        }
    }

    fn is_maildir(&self) -> bool {
        matches!(self, Job::Maildir { .. })
    }
}

/// The Maildir writes of `jobs` (mbox jobs have none).
fn maildir_writes<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<MaildirWrite<'a>> {
    jobs.filter_map(|job| match job {
        Job::Maildir {
            dir,
            prefix,
            content,
            hostname,
            ids,
        } => Some(MaildirWrite {
            dir,
            prefix,
            content,
            hostname,
            ids: *ids,
        }),
        Job::Mbox { .. } => None,
    })
    .collect()
}

/// The outcome Postfix logs for a Maildir write.
fn maildir_outcome(r: Result<PathBuf, Delivery>) -> Delivery {
    match r {
        Ok(_) => Delivery::ok("delivered to maildir"),
        Err(d) => d,
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    max_threads: usize,
}

#[derive(Default)]
struct State {
    maildir: VecDeque<(u64, Job)>,
    mbox: VecDeque<(u64, Job)>,
    done: Vec<(u64, Delivery)>,
    next_ticket: u64,
    threads: usize,
    /// Threads waiting for a job, including any notified that have not taken one yet:
    /// work for which none is left needs a thread of its own.
    waiting: usize,
    /// The thread writing a Maildir batch (an id, and when its current round of writes
    /// began): jobs queued meanwhile join its batch, unwoken.
    collector: Option<(u64, Instant)>,
    collectors: u64,
    /// A thread has been woken to take over from a collector stuck in a write.
    takeover: bool,
    maildir_batches: usize,
    mbox_writes: usize,
    closing: bool,
    /// Maildir batches started so far.
    #[cfg(test)]
    batches: usize,
}

impl State {
    /// What idle threads could start now: a Maildir batch, and mbox writes.
    fn startable(&self, max: usize) -> usize {
        let batch =
            !self.maildir.is_empty() && self.collector.is_none() && self.maildir_batches < max;
        usize::from(batch) + self.mbox.len().min(max.saturating_sub(self.mbox_writes))
    }

    /// Can a thread start a Maildir batch: jobs queued, and no collector or a stuck one.
    fn can_collect(&self, max: usize) -> bool {
        self.collector.is_none() && !self.maildir.is_empty() && self.maildir_batches < max
            || self.collector_stuck(max)
    }

    /// The collector's round of writes has taken so long that it must be stuck (a hung
    /// filesystem), and jobs wait: the Maildirs elsewhere must not wait for it.
    fn collector_stuck(&self, max: usize) -> bool {
        self.collector
            .is_some_and(|(_, since)| since.elapsed() > STUCK_WRITE)
            && !self.maildir.is_empty()
            && self.maildir_batches < max
    }
}

/// A round of Maildir writes is a few tens of microseconds per message.
const STUCK_WRITE: Duration = Duration::from_millis(200);

/// The writer threads, started as the load needs them.
pub struct Pool {
    shared: Arc<Shared>,
    event: Arc<EventFd>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub fn new(max_threads: usize) -> io::Result<Pool> {
        Ok(Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
            event: Arc::new(EventFd::new()?),
            handles: Mutex::new(Vec::new()),
        })
    }

    /// Queues `job`; its ticket comes back from [`Pool::poll`] with the outcome.
    pub fn submit(&self, job: Job) -> io::Result<u64> {
        let max = self.shared.max_threads;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        let before = st.startable(max);
        let maildir = job.is_maildir();
        if maildir {
            st.maildir.push_back((ticket, job));
        } else {
            st.mbox.push_back((ticket, job));
        }
        let startable = st.startable(max);
        // Once per stuck collector: a thread to take over its queue.
        let take_over = maildir && !st.takeover && st.collector_stuck(max);
        st.takeover |= take_over;
        let wanted = if take_over { startable + 1 } else { startable };
        if wanted <= before {
            // A batch being written, or a thread already woken, takes it.
        } else if wanted <= st.waiting {
            // Woken after the lock is let go: a worker woken while the submitter holds it
            // only blocks on it again, two more context switches a message.
            drop(st);
            self.shared.wake.notify_one();
        } else if st.threads < 2 * max {
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
                    if maildir {
                        st.maildir.pop_back();
                    } else {
                        st.mbox.pop_back();
                    }
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
    let max = shared.max_threads;
    let lock = || shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = lock();
    loop {
        if st.can_collect(max) {
            st.collectors += 1;
            let me = st.collectors;
            st.collector = Some((me, Instant::now()));
            st.takeover = false;
            st.maildir_batches += 1;
            #[cfg(test)]
            {
                st.batches += 1;
            }
            let mut batch: Vec<(u64, Job)> = Vec::new();
            let mut written = Batch::default();
            loop {
                let start = batch.len();
                batch.extend(st.maildir.drain(..));
                drop(st);
                written.write(&maildir_writes(batch[start..].iter().map(|(_, j)| j)));
                st = lock();
                if st.collector.is_none_or(|(c, _)| c != me) {
                    // Another thread took over while this one was stuck.
                    break;
                }
                if st.maildir.is_empty() {
                    // From here on a job submitted starts the next batch.
                    st.collector = None;
                    st.takeover = false;
                    break;
                }
                st.collector = Some((me, Instant::now()));
            }
            drop(st);
            let outcomes = written.make_durable().into_iter().map(maildir_outcome);
            st = lock();
            st.maildir_batches -= 1;
            st.done.extend(batch.iter().map(|(t, _)| *t).zip(outcomes));
            event.signal();
            continue;
        }
        if st.mbox_writes < max {
            if let Some((ticket, job)) = st.mbox.pop_front() {
                st.mbox_writes += 1;
                drop(st);
                let outcome = job.run();
                st = lock();
                st.mbox_writes -= 1;
                st.done.push((ticket, outcome));
                event.signal();
                continue;
            }
        }
        // Work still queued is for the threads busy now: they come back for it.
        if st.closing {
            return;
        }
        st.waiting += 1;
        st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        st.waiting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    fn wait_for(pool: &Pool, n: usize) -> Vec<(u64, Delivery)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < n {
            assert!(Instant::now() < deadline, "outcomes did not come");
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

    fn maildir(dir: &std::path::Path, i: usize) -> Job {
        Job::Maildir {
            dir: dir.to_path_buf(),
            prefix: Vec::new(),
            content: format!("Subject: {i}\r\n\r\n").into_bytes(),
            hostname: "host".into(),
            ids: None,
        }
    }

    /// Waits for the outcomes of `first` and then `second`, which must come in this order;
    /// returns them, with how long the first took.
    fn in_order(pool: &Pool, first: u64, second: u64) -> (Delivery, Duration, Delivery) {
        let started = Instant::now();
        let a = wait_for(pool, 1);
        assert_eq!(a[0].0, first, "{a:?}");
        let took = started.elapsed();
        let b = wait_for(pool, 1);
        assert_eq!(b[0].0, second, "{b:?}");
        (a[0].1.clone(), took, b[0].1.clone())
    }

    /// A pool of `threads` with one Maildir job under `hook` (a test hook's slow
    /// write or sync) submitted `after` ago.
    fn held_up(dir: &TempDir, threads: usize, hook: &str, after: Duration) -> (Pool, u64) {
        let pool = Pool::new(threads).unwrap();
        let ticket = pool
            .submit(maildir(&dir.path().join(hook).join("box"), 0))
            .unwrap();
        std::thread::sleep(after);
        (pool, ticket)
    }

    fn mbox(dir: &std::path::Path, how: MboxLocking) -> Job {
        Job::Mbox {
            path: dir.join("mbox"),
            sender: "a@b".into(),
            prefix: Vec::new(),
            content: b"x\r\n".to_vec(),
            how,
            ids: None,
        }
    }

    #[test]
    fn maildir_jobs_queued_during_a_sync_share_one_batch() {
        let dir = TempDir::new();
        // Each sync there takes a second: the jobs queued meanwhile pile up.
        let slow = dir.path().join("slow-syncfs");
        let pool = Pool::new(8).unwrap();
        let mut tickets = vec![pool.submit(maildir(&slow.join("box0"), 0)).unwrap()];
        std::thread::sleep(Duration::from_millis(100));
        for i in 1..20 {
            tickets.push(
                pool.submit(maildir(&slow.join(format!("box{}", i % 3)), i))
                    .unwrap(),
            );
        }
        let mut got: Vec<u64> = wait_for(&pool, 20)
            .into_iter()
            .map(|(t, d)| {
                assert_eq!(d, Delivery::ok("delivered to maildir"));
                t
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, tickets);
        let batches = pool.shared.state.lock().unwrap().batches;
        // The first job's batch, then one (at most a few, if a batch ended between two
        // submits) for the other 19.
        assert!((2..=4).contains(&batches), "{batches} batches");
    }

    #[test]
    fn a_maildir_write_stuck_does_not_hold_up_the_others() {
        let dir = TempDir::new();
        let (pool, stuck) = held_up(
            &dir,
            4,
            "slow-write",
            STUCK_WRITE + Duration::from_millis(100),
        );
        let other = pool.submit(maildir(&dir.path().join("box"), 1)).unwrap();
        let (first, took, second) = in_order(&pool, other, stuck);
        assert!(first.delivered() && second.delivered());
        assert!(took < Duration::from_millis(500), "{took:?}");
        // The jobs queued behind the stuck write are still batched, not one per thread.
        assert_eq!(pool.shared.state.lock().unwrap().batches, 2);
    }

    #[test]
    fn an_mbox_write_does_not_wait_for_a_maildir_batch() {
        let dir = TempDir::new();
        let (pool, md) = held_up(&dir, 1, "slow-syncfs", Duration::from_millis(50));
        let mb = pool
            .submit(mbox(dir.path(), MboxLocking::default()))
            .unwrap();
        let (first, _, second) = in_order(&pool, mb, md);
        assert_eq!(first, Delivery::ok("delivered to mailbox"));
        assert!(second.delivered());
    }

    #[test]
    fn a_locked_mbox_does_not_hold_up_maildir_writes() {
        let dir = TempDir::new();
        let pool = Pool::new(1).unwrap();
        // Someone else's dotlock: the mbox write retries for two seconds.
        std::fs::write(dir.path().join("mbox.lock"), b"").unwrap();
        let mb = pool
            .submit(mbox(
                dir.path(),
                MboxLocking {
                    attempts: 20,
                    delay: Duration::from_millis(100),
                    ..MboxLocking::default()
                },
            ))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let md = pool.submit(maildir(&dir.path().join("box"), 0)).unwrap();
        let (first, took, second) = in_order(&pool, md, mb);
        assert!(first.delivered());
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(second.status, "4.2.0");
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
