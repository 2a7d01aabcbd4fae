//! Maildir delivery (cr.yp.to/proto/maildir.html, Postfix `local/maildir.c`).
//!
//! tmp/<unique> is created with O_EXCL, written, hard-linked into
//! new/<unique>,S=<size> and unlinked from tmp/; then the file and its entry in
//! new/ are made durable before the delivery is reported. A reader of new/ sees
//! a whole message or nothing (catalogue 10): the link is made only after the
//! whole file is written. Missing tmp/, new/ and cur/ are created (mode 0700)
//! on the way.
//!
//! Deliveries come in batches ([`deliver_maildirs`]): every file of the batch is
//! written and linked first, then one sync per filesystem makes them all durable,
//! shared with the other deliveries in flight ([`super::durable`]). A batch whose
//! sync fails takes its files back out of new/ and defers them all.

use super::durable::make_durable;
use super::{errno_dsn, strerror, to_unix_lines, Delivery, FsIds};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `time.M<usec>P<pid>Q<n>.host`: unique per process by the counter, across
/// processes by the pid, across hosts by the host name ("/" and ":" escaped
/// as the Maildir spec asks).
pub fn maildir_unique_name(hostname: &str) -> String {
    unique_name(hostname, std::process::id())
}

fn unique_name(hostname: &str, pid: u32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        pid,
        SEQ.fetch_add(1, Ordering::Relaxed),
        host
    )
}

fn make_dirs(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["tmp", "new", "cur"] {
        b.create(dir.join(sub))?;
    }
    Ok(())
}

fn failed(dsn: &str, text: String) -> Delivery {
    Delivery::fail(dsn, format!("maildir delivery failed: {text}"))
}

/// Removes the temporary file unless disarmed (KumoMTA's UnlinkOnError).
struct UnlinkOnError<'a>(Option<&'a Path>);

impl Drop for UnlinkOnError<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn open_excl(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
}

/// One Maildir delivery: `prefix` (prepended headers) + `content` into the
/// Maildir `dir`, written as `ids` (uid, gid) when running as root.
#[derive(Clone, Copy)]
pub struct MaildirWrite<'a> {
    pub dir: &'a Path,
    pub prefix: &'a [u8],
    pub content: &'a [u8],
    pub hostname: &'a str,
    pub ids: Owner,
}

/// A message's owner: the (uid, gid) it is written as when running as root.
type Owner = Option<(u32, u32)>;

/// A message linked into new/ and not yet durable.
struct Written {
    newfile: PathBuf,
    /// The filesystem to sync.
    dev: u64,
    ids: Owner,
}

/// Creates, writes and links one message (no sync); the file stays open, for
/// the sync of its filesystem.
fn write_linked(w: &MaildirWrite, pid: u32) -> Result<(Written, File), Delivery> {
    // Tests stand for a hung filesystem with this name.
    #[cfg(test)]
    if w.dir.to_string_lossy().contains("slow-write") {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let data = to_unix_lines(w.prefix, w.content, false);
    let unique = unique_name(w.hostname, pid);
    let tmp = w.dir.join("tmp").join(&unique);
    let file = match open_excl(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match make_dirs(w.dir).and_then(|_| open_excl(&tmp)) {
                Ok(f) => f,
                Err(e) => {
                    return Err(failed(
                        errno_dsn(&e, "4.2.0"),
                        format!("create maildir file {}: {}", tmp.display(), strerror(&e)),
                    ))
                }
            }
        }
        Err(e) => {
            return Err(failed(
                errno_dsn(&e, "4.2.0"),
                format!("create maildir file {}: {}", tmp.display(), strerror(&e)),
            ))
        }
    };
    let mut guard = UnlinkOnError(Some(&tmp));
    let mut file = file;
    if let Err(e) = file.write_all(&data) {
        return Err(failed(
            errno_dsn(&e, "5.2.0"),
            format!("error writing message: {}", strerror(&e)),
        ));
    }
    let newfile = w.dir.join("new").join(format!("{unique},S={}", data.len()));
    let linked = match fs::hard_link(&tmp, &newfile) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dirs(w.dir).and_then(|_| fs::hard_link(&tmp, &newfile))
        }
        r => r,
    };
    if let Err(e) = linked {
        return Err(failed(
            errno_dsn(&e, "4.2.0"),
            format!(
                "create maildir file {}: {}",
                newfile.display(),
                strerror(&e)
            ),
        ));
    }
    // The message is in new/ now; removing tmp/ is housekeeping.
    guard.0 = None;
    let _ = fs::remove_file(&tmp);
    match file.metadata() {
        Ok(m) => Ok((
            Written {
                newfile,
                dev: m.dev(),
                ids: w.ids,
            },
            file,
        )),
        Err(e) => {
            let _ = fs::remove_file(&newfile);
            Err(not_durable(&newfile, &e))
        }
    }
}

/// The outcome of a message that could not be made durable.
fn not_durable(newfile: &Path, e: &io::Error) -> Delivery {
    let newdir = newfile.parent().unwrap_or(newfile);
    failed(
        errno_dsn(e, "4.2.0"),
        format!("fsync {}: {}", newdir.display(), strerror(e)),
    )
}

/// Calls `f(i)` for each `i` of `todo`, with the filesystem ids switched to
/// `ids(i)`: once per owner, not once per message (`todo` is sorted by owner
/// here). A refused switch is the outcome of its owner's messages.
fn as_owners<T>(
    mut todo: Vec<usize>,
    ids: impl Fn(usize) -> Owner,
    mut f: impl FnMut(usize) -> Result<T, Delivery>,
) -> Vec<(usize, Result<T, Delivery>)> {
    todo.sort_by_key(|&i| ids(i));
    let mut out = Vec::with_capacity(todo.len());
    let mut current: Option<(Owner, Result<FsIds, Delivery>)> = None;
    for i in todo {
        if current.as_ref().map(|c| c.0) != Some(ids(i)) {
            // The previous owner's ids are restored before the next are taken.
            drop(current.take());
            current = Some((ids(i), FsIds::switch(ids(i))));
        }
        match current.as_ref().map(|c| &c.1) {
            Some(Err(refused)) => out.push((i, Err(refused.clone()))),
            _ => out.push((i, f(i))),
        }
    }
    out
}

/// A batch of Maildir deliveries: [`Batch::write`] creates and links the
/// messages, [`Batch::make_durable`] then syncs them all at once.
#[derive(Default)]
pub struct Batch {
    written: Vec<Result<Written, Delivery>>,
    /// A file open on each filesystem written to, for its sync.
    filesystems: Vec<(u64, File)>,
}

impl Batch {
    /// Writes each of `writes` and links it into new/, not yet durable.
    pub fn write(&mut self, writes: &[MaildirWrite]) {
        let pid = std::process::id();
        let start = self.written.len();
        let mut done = as_owners(
            (0..writes.len()).collect(),
            |i| writes[i].ids,
            |i| write_linked(&writes[i], pid),
        );
        done.sort_unstable_by_key(|(i, _)| *i);
        for (_, r) in done {
            self.written.push(r.map(|(w, file)| {
                if !self.filesystems.iter().any(|(dev, _)| *dev == w.dev) {
                    self.filesystems.push((w.dev, file));
                }
                w
            }));
        }
        debug_assert_eq!(self.written.len(), start + writes.len());
    }

    /// Makes the batch durable with one sync per filesystem; every message
    /// linked before it is covered. Returns each delivery's new file, or its
    /// failure, in the order written.
    pub fn make_durable(self) -> Vec<Result<PathBuf, Delivery>> {
        let synced: Vec<(u64, io::Result<()>)> = self
            .filesystems
            .iter()
            .map(|(dev, file)| (*dev, make_durable(*dev, file)))
            .collect();
        let sync_error = |dev: u64| {
            synced
                .iter()
                .find(|(d, _)| *d == dev)
                .and_then(|(_, r)| r.as_ref().err())
        };
        let written = self.written;
        let undone: Vec<usize> = (0..written.len())
            .filter(|&i| matches!(&written[i], Ok(w) if sync_error(w.dev).is_some()))
            .collect();
        // Not durable: take them back out, as their owners, so a retry cannot duplicate them.
        let ids = |i: usize| written[i].as_ref().ok().and_then(|w| w.ids);
        as_owners(undone, ids, |i| {
            if let Ok(w) = &written[i] {
                let _ = fs::remove_file(&w.newfile);
            }
            Ok(())
        });
        written
            .into_iter()
            .map(|r| {
                let w = r?;
                match sync_error(w.dev) {
                    Some(e) => Err(not_durable(&w.newfile, e)),
                    None => Ok(w.newfile),
                }
            })
            .collect()
    }
}

/// Delivers a batch: every message is written and linked into new/, then the
/// batch is made durable with one sync per filesystem. Returns each delivery's
/// new file, or its failure, in the order of `writes`.
pub fn deliver_maildirs(writes: &[MaildirWrite]) -> Vec<Result<PathBuf, Delivery>> {
    let mut batch = Batch::default();
    batch.write(writes);
    batch.make_durable()
}

/// Delivers `prefix` (prepended headers) + `content` into the Maildir `dir`,
/// writing as `ids` (uid, gid) when running as root. Returns the new file's
/// path, or the failure as (status, text).
pub fn deliver_maildir(
    dir: &Path,
    prefix: &[u8],
    content: &[u8],
    hostname: &str,
    ids: Option<(u32, u32)>,
) -> Result<PathBuf, Delivery> {
    let write = MaildirWrite {
        dir,
        prefix,
        content,
        hostname,
        ids,
    };
    deliver_maildirs(&[write]).remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    #[test]
    fn creates_dirs_and_writes_whole_message() {
        // catalogue 10
        let d = TempDir::new();
        let md = d.path().join("user/Maildir");
        let p = deliver_maildir(
            &md,
            b"Delivered-To: u@x\r\n",
            b"Subject: hi\r\n\r\nbody\r\n",
            "h",
            None,
        )
        .unwrap();
        for sub in ["tmp", "new", "cur"] {
            assert!(md.join(sub).is_dir());
        }
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let body = fs::read(&p).unwrap();
        assert_eq!(body, b"Delivered-To: u@x\nSubject: hi\n\nbody\n");
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(&format!(".h,S={}", body.len())), "{name}");
        assert!(
            name.contains(&format!("P{}Q", std::process::id())),
            "{name}"
        );
    }

    #[test]
    fn concurrent_names_are_unique_and_nothing_partial() {
        // catalogue 10
        let d = TempDir::new();
        let md = Arc::new(d.path().join("md"));
        let msg: Arc<Vec<u8>> = Arc::new(b"Subject: x\r\n\r\n".repeat(2000));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let md = md.clone();
                let msg = msg.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| deliver_maildir(&md, b"", &msg, "host", None).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut names = HashSet::new();
        for t in threads {
            for p in t.join().unwrap() {
                assert!(names.insert(p));
            }
        }
        assert_eq!(names.len(), 400);
        let expect = to_unix_lines(b"", &msg, false);
        for e in fs::read_dir(md.join("new")).unwrap() {
            assert_eq!(fs::read(e.unwrap().path()).unwrap(), expect);
        }
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn unwritable_parent_defers_with_4_2_0() {
        let d = TempDir::new();
        // A regular file where the Maildir should be: ENOTDIR on create.
        fs::write(d.path().join("file"), b"x").unwrap();
        let e = deliver_maildir(&d.path().join("file/md"), b"", b"x\r\n", "h", None).unwrap_err();
        assert_eq!(e.status, "4.2.0");
        assert!(!e.permanent());
        assert!(
            e.text
                .starts_with("maildir delivery failed: create maildir file "),
            "{}",
            e.text
        );
    }

    fn write<'a>(dir: &'a Path, content: &'a [u8]) -> MaildirWrite<'a> {
        MaildirWrite {
            dir,
            prefix: b"",
            content,
            hostname: "h",
            ids: None,
        }
    }

    #[test]
    fn a_failed_write_in_a_batch_leaves_the_others_delivered() {
        let d = TempDir::new();
        fs::write(d.path().join("file"), b"x").unwrap();
        let (a, bad, b) = (
            d.path().join("a"),
            d.path().join("file/md"),
            d.path().join("b"),
        );
        let out = deliver_maildirs(&[
            write(&a, b"S: 1\r\n"),
            write(&bad, b"S: 2\r\n"),
            write(&b, b"S: 3\r\n"),
        ]);
        assert_eq!(fs::read(out[0].as_ref().unwrap()).unwrap(), b"S: 1\n");
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.status, "4.2.0");
        assert!(
            e.text
                .starts_with("maildir delivery failed: create maildir file "),
            "{}",
            e.text
        );
        assert_eq!(fs::read(out[2].as_ref().unwrap()).unwrap(), b"S: 3\n");
    }

    #[test]
    fn a_failed_sync_takes_the_whole_batch_back_out() {
        let d = TempDir::new();
        // The test hook in durable.rs fails the sync of files under this name.
        let (a, b) = (
            d.path().join("fail-syncfs/a"),
            d.path().join("fail-syncfs/b"),
        );
        let out = deliver_maildirs(&[write(&a, b"S: 1\r\n"), write(&b, b"S: 2\r\n")]);
        for (md, r) in [(&a, &out[0]), (&b, &out[1])] {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.status, "4.2.0");
            assert_eq!(
                e.text,
                format!(
                    "maildir delivery failed: fsync {}/new: Input/output error",
                    md.display()
                )
            );
            // Not in new/, where a retry would duplicate it, nor left in tmp/.
            assert_eq!(fs::read_dir(md.join("new")).unwrap().count(), 0);
            assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        }
    }

    #[test]
    fn each_message_of_a_batch_is_written_as_its_owner() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let d = TempDir::new();
        // The owners make their Maildirs here.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        let owned = |dir, content, ids| MaildirWrite {
            ids: Some(ids),
            ..write(dir, content)
        };
        let out = deliver_maildirs(&[
            owned(&a, b"1\r\n", (1001, 1002)),
            owned(&b, b"2\r\n", (0, 0)),
            owned(&c, b"3\r\n", (1003, 1004)),
            owned(&a, b"4\r\n", (1001, 1002)),
        ]);
        for (i, owner) in [(0, (1001, 1002)), (2, (1003, 1004)), (3, (1001, 1002))] {
            let m = fs::metadata(out[i].as_ref().unwrap()).unwrap();
            assert_eq!((m.uid(), m.gid()), owner, "message {i}");
        }
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.status, "4.3.0");
        assert!(e.text.contains("refusing to deliver as root"), "{}", e.text);
        // This thread's own ids are back.
        fs::write(d.path().join("mine"), b"").unwrap();
        assert_eq!(fs::metadata(d.path().join("mine")).unwrap().uid(), 0);
    }

    #[test]
    fn host_name_is_escaped() {
        let n = maildir_unique_name("a/b:c");
        assert!(n.ends_with(".a\\057b\\072c"), "{n}");
    }
}
