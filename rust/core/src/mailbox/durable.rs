//! Group commit for mailbox files: one `syncfs(2)` makes a whole batch durable.
//!
//! A Maildir delivery must not be reported before both the new file's data and
//! its directory entry in new/ are on stable storage. Done per delivery, that
//! is two fsyncs, each forcing its own journal commit: on these machines about
//! 270 µs of CPU per message (system-wide, ext4), against about 70 µs when the
//! deliveries in flight share one `syncfs` of their filesystem (bench/RESULTS.md).
//!
//! The protocol is the spool's group commit, per filesystem: a delivery that has
//! written and linked its file calls [`make_durable`]; it needs a sync that
//! *starts* after that point. If no sync is running, it runs one itself (and
//! covers everyone who arrived before); otherwise it waits for the next one,
//! which the first waiter to find the filesystem idle starts. Deliveries that
//! arrive while a sync runs pile up and share the next.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Failed generations kept for waiters that wake late; a waiter needs its own
/// generation's result, and at most a few syncs complete while it sleeps.
const FAILURES_KEPT: usize = 64;

#[derive(Default)]
struct State {
    /// The generation of the most recently started sync.
    started: u64,
    /// Every generation up to this one has completed.
    done: u64,
    running: bool,
    failures: VecDeque<(u64, i32)>,
}

#[derive(Default)]
struct Group {
    state: Mutex<State>,
    finished: Condvar,
}

impl Group {
    fn sync(&self, fd: &File) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A sync already running may have started before our writes: not ours.
        let mine = st.started + 1;
        loop {
            if st.done >= mine {
                return match st.failures.iter().find(|(g, _)| *g == mine) {
                    Some(&(_, errno)) => Err(io::Error::from_raw_os_error(errno)),
                    None => Ok(()),
                };
            }
            if st.running {
                st = self.finished.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            st.started += 1;
            let generation = st.started;
            drop(st);
            let result = syncfs(fd);
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.running = false;
            st.done = generation;
            if let Err(e) = result {
                st.failures
                    .push_back((generation, e.raw_os_error().unwrap_or(libc::EIO)));
                if st.failures.len() > FAILURES_KEPT {
                    st.failures.pop_front();
                }
            }
            self.finished.notify_all();
        }
    }
}

fn syncfs(fd: &File) -> io::Result<()> {
    #[cfg(test)]
    SYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(test)]
    if let Some(fail) = test_hook(fd) {
        return fail;
    }
    // SAFETY: syncfs takes any open descriptor on the filesystem; `fd` is live.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) static SYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tests mark a file's path with "fail-syncfs" (its sync fails with EIO) or "slow-syncfs"
/// (its sync takes a second). Such a sync gets a group of its own, so that tests running
/// alongside, which share the real group, are not failed or slowed by it.
#[cfg(test)]
fn test_hook(fd: &File) -> Option<io::Result<()>> {
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let path = path.to_string_lossy();
    if path.contains("fail-syncfs") {
        return Some(Err(io::Error::from_raw_os_error(libc::EIO)));
    }
    if path.contains("slow-syncfs") {
        std::thread::sleep(std::time::Duration::from_secs(1));
        return Some(Ok(()));
    }
    None
}

fn group(dev: u64) -> Arc<Group> {
    static GROUPS: OnceLock<Mutex<HashMap<u64, Arc<Group>>>> = OnceLock::new();
    let mut groups = GROUPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    groups.entry(dev).or_default().clone()
}

/// Returns once everything written on the filesystem `dev` before the call —
/// file data, and directory entries created or removed — is on stable storage;
/// `fd` is any file open on that filesystem.
pub fn make_durable(dev: u64, fd: &File) -> io::Result<()> {
    #[cfg(test)]
    if test_hook(fd).is_some() {
        return Group::default().sync(fd);
    }
    group(dev).sync(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::Ordering;

    #[test]
    fn concurrent_callers_share_syncs() {
        let d = TempDir::new();
        let before = SYNCS.load(Ordering::Relaxed);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let p = d.path().to_path_buf();
                std::thread::spawn(move || {
                    for n in 0..20 {
                        std::fs::write(p.join(format!("{i}-{n}")), b"x").unwrap();
                        let d = File::open(&p).unwrap();
                        make_durable(d.metadata().unwrap().dev(), &d).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = SYNCS.load(Ordering::Relaxed) - before;
        // Other tests may sync too; 320 callers alone would need 320 without sharing.
        assert!(syncs > 0 && syncs < 320, "{syncs} syncs for 320 callers");
    }

    #[test]
    fn a_sync_running_before_the_call_does_not_count() {
        let g = Group::default();
        {
            let mut st = g.state.lock().unwrap();
            st.started = 5;
            st.done = 4;
            st.running = true;
        }
        let g = Arc::new(g);
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || {
                let d = TempDir::new();
                g.sync(&File::open(d.path()).unwrap())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        {
            // Sync 5 ends: the waiter (who needs 6) must start its own, not return.
            let mut st = g.state.lock().unwrap();
            st.running = false;
            st.done = 5;
            st.failures.push_back((5, libc::EIO));
            g.finished.notify_all();
        }
        waiter.join().unwrap().unwrap();
        let st = g.state.lock().unwrap();
        assert_eq!((st.started, st.done), (6, 6));
    }

    #[test]
    fn an_earlier_failure_does_not_fail_later_callers() {
        let g = Group::default();
        {
            let mut st = g.state.lock().unwrap();
            st.started = 1;
            st.done = 1;
            st.failures.push_back((2, libc::EIO));
            st.started = 2;
            st.done = 2;
        }
        // Generation 2 failed and has completed; a caller arriving now needs 3.
        let d = TempDir::new();
        assert!(g.sync(&File::open(d.path()).unwrap()).is_ok());
        let st = g.state.lock().unwrap();
        assert_eq!(st.done, 3);
    }
}
