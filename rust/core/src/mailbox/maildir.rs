//! Maildir delivery (cr.yp.to/proto/maildir.html, Postfix `local/maildir.c`).
//!
//! tmp/<unique> is created with O_EXCL, written, hard-linked into
//! new/<unique>,S=<size> and unlinked from tmp/; then the file and its entry in
//! new/ are made durable together with the other deliveries in flight (one
//! syncfs, [`super::durable`]) before the delivery is reported. A reader of
//! new/ sees a whole message or nothing (catalogue 10): the link is made only
//! after the whole file is written. Missing tmp/, new/ and cur/ are created
//! (mode 0700) on the way.

use super::durable::make_durable;
use super::{errno_dsn, strerror, to_unix_lines, Delivery, FsIds};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `time.M<usec>P<pid>Q<n>.host`: unique per process by the counter, across
/// processes by the pid, across hosts by the host name ("/" and ":" escaped
/// as the Maildir spec asks).
pub fn maildir_unique_name(hostname: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
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
    let _ids = FsIds::switch(ids)?;
    let data = to_unix_lines(prefix, content, false);
    let unique = maildir_unique_name(hostname);
    let tmp = dir.join("tmp").join(&unique);
    let file = match open_excl(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match make_dirs(dir).and_then(|_| open_excl(&tmp)) {
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
    drop(file);
    let newdir = dir.join("new");
    let newfile = newdir.join(format!("{unique},S={}", data.len()));
    let linked = match fs::hard_link(&tmp, &newfile) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dirs(dir).and_then(|_| fs::hard_link(&tmp, &newfile))
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
    if let Err(e) = File::open(&newdir).and_then(|d| make_durable(&d)) {
        // Not durable yet: take it back out so a retry cannot duplicate it.
        let _ = fs::remove_file(&newfile);
        return Err(failed(
            errno_dsn(&e, "4.2.0"),
            format!("fsync {}: {}", newdir.display(), strerror(&e)),
        ));
    }
    Ok(newfile)
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TempDir;
    use super::*;
    use std::collections::HashSet;
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

    #[test]
    fn host_name_is_escaped() {
        let n = maildir_unique_name("a/b:c");
        assert!(n.ends_with(".a\\057b\\072c"), "{n}");
    }
}
