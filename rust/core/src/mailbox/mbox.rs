//! UNIX mbox append (Postfix `local/mailbox.c`, `global/mbox_open.c`,
//! `global/mail_copy.c`).
//!
//! The mailbox is locked (dotlock `<path>.lock`, then an fcntl write lock),
//! its size noted, then "From sender  date" + the message with body lines
//! starting "From " quoted as ">From " + a blank line are appended and
//! fsynced. On any write error the file is truncated back to the noted size,
//! so a failed delivery leaves no half message for the next one to join.

use super::{errno_dsn, strerror, to_unix_lines, Delivery, FsIds};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Which locks to take and how long to try (mailbox_delivery_lock,
/// deliver_lock_attempts, deliver_lock_delay, stale_lock_time).
#[derive(Debug, Clone)]
pub struct MboxLocking {
    pub fcntl: bool,
    pub flock: bool,
    pub dotlock: bool,
    pub attempts: u32,
    pub delay: Duration,
    pub stale: Duration,
    /// A character device (/dev/null) is written as it is, with no lock, sync or
    /// truncation: local(8)'s `/file` deliveries, as Postfix's deliver_file.
    pub char_devices: bool,
    /// A dotlock that cannot be made (other than one held) is warned of, and the file
    /// written under its kernel locks: local(8)'s `/file` deliveries, as Postfix's
    /// deliver_file (MBOX_DOT_LOCK_MAY_FAIL).
    pub dotlock_may_fail: bool,
}

impl Default for MboxLocking {
    fn default() -> Self {
        MboxLocking {
            fcntl: true,
            flock: false,
            dotlock: true,
            attempts: 20,
            delay: Duration::from_secs(1),
            stale: Duration::from_secs(500),
            char_devices: false,
            dotlock_may_fail: false,
        }
    }
}

struct DotLock(Option<PathBuf>);

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// The dotlock of `path`; DotLock(None) and the reason in `warning` when it cannot be
/// made and `how.dotlock_may_fail`.
fn dotlock(path: &Path, how: &MboxLocking, warning: &mut String) -> Result<DotLock, Delivery> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let mut last = None;
    for attempt in 0..how.attempts.max(1) {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(_) => return Ok(DotLock(Some(lock))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A lock older than stale_lock_time belongs to a dead process.
                if let Ok(m) = fs::metadata(&lock) {
                    if let Ok(age) = m.modified().map(|t| t.elapsed().unwrap_or_default()) {
                        if age > how.stale {
                            let _ = fs::remove_file(&lock);
                            continue;
                        }
                    }
                }
                last = Some(e);
            }
            Err(e) => {
                let reason = format!(
                    "unable to create lock file {}: {}",
                    lock.display(),
                    strerror(&e)
                );
                if how.dotlock_may_fail {
                    *warning = reason;
                    return Ok(DotLock(None));
                }
                return Err(Delivery::fail(errno_dsn(&e, "5.2.0"), reason));
            }
        }
        if attempt + 1 < how.attempts {
            std::thread::sleep(how.delay);
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EEXIST));
    Err(Delivery::fail(
        "4.2.0",
        format!(
            "unable to create lock file {}: {}",
            lock.display(),
            strerror(&e)
        ),
    ))
}

fn kernel_lock(file: &File, how: &MboxLocking) -> Result<(), Delivery> {
    let fd = file.as_raw_fd();
    for attempt in 0..how.attempts.max(1) {
        let mut busy = false;
        if how.fcntl {
            // SAFETY: a zeroed flock is a valid value; we set the fields fcntl reads.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as _;
            fl.l_whence = libc::SEEK_SET as _;
            // SAFETY: fd is an open descriptor owned by `file`; fl outlives the call.
            if unsafe { libc::fcntl(fd, libc::F_SETLK, &fl) } < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EACCES) => busy = true,
                    _ => {
                        return Err(Delivery::fail(
                            "5.2.0",
                            format!("unable to lock for exclusive access: {}", strerror(&e)),
                        ))
                    }
                }
            }
        }
        if !busy && how.flock {
            // SAFETY: fd is an open descriptor owned by `file`.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    busy = true;
                } else {
                    return Err(Delivery::fail(
                        "5.2.0",
                        format!("unable to lock for exclusive access: {}", strerror(&e)),
                    ));
                }
            }
        }
        if !busy {
            return Ok(());
        }
        if attempt + 1 < how.attempts {
            std::thread::sleep(how.delay);
        }
    }
    Err(Delivery::fail(
        "4.2.0",
        "unable to lock for exclusive access: Resource temporarily unavailable",
    ))
}

#[cfg(test)]
thread_local! {
    /// Test fault injection: write this many bytes, then fail with EFBIG.
    static FAIL_AFTER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn write_message(mut file: &File, data: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if let Some(n) = FAIL_AFTER.with(|f| f.get()) {
        file.write_all(&data[..n.min(data.len())])?;
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    file.write_all(data)
}

/// asctime(3) of the local time without its newline, as the From_ line has it.
fn ctime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: a zeroed tm is valid; localtime_r fills it from secs.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

fn write_failed(e: io::Error) -> Delivery {
    Delivery::fail(
        errno_dsn(&e, "5.2.0"),
        format!("error writing message: {}", strerror(&e)),
    )
}

fn fstat_failed(e: io::Error) -> Delivery {
    Delivery::fail(
        errno_dsn(&e, "4.2.0"),
        format!("cannot fstat file: {}", strerror(&e)),
    )
}

/// A mailbox held for exclusive access: its dotlock (removed on drop) and its
/// file opened for appending under the kernel locks (released when closed).
pub struct MboxLock {
    pub file: File,
    _dot: Option<DotLock>,
    /// Delivery::warning's: the dotlock that could not be made.
    pub warning: String,
}

/// Opens the mbox file `path` for appending (created 0600 when missing) and
/// locks it as `how` says, as Postfix's mbox_open: the dotlock first, then the
/// fcntl and flock locks.
pub fn lock_mbox(path: &Path, how: &MboxLocking) -> Result<MboxLock, Delivery> {
    // As Postfix's mbox_open: no dotlock for what is not a file (a /dev/null.lock could
    // not be made by an unprivileged user, and must not be).
    let mut warning = String::new();
    let dot = if how.dotlock && fs::metadata(path).map_or(true, |m| m.is_file()) {
        Some(dotlock(path, how, &mut warning)?)
    } else {
        None
    };
    // O_NOFOLLOW: a symlink planted as the mailbox must not redirect the write.
    // O_NONBLOCK: a FIFO planted there must not hold the open.
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            Delivery::fail(
                errno_dsn(&e, "5.2.0"),
                format!("cannot open file: {}", strerror(&e)),
            )
        })?;
    let fd = file.as_raw_fd();
    // SAFETY: fd is an open descriptor owned by `file`; the calls change only its flags.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) & !libc::O_NONBLOCK,
        )
    };
    let meta = file.metadata().map_err(fstat_failed)?;
    if how.char_devices && meta.file_type().is_char_device() {
        return Ok(MboxLock {
            file,
            _dot: dot,
            warning,
        });
    }
    if !meta.file_type().is_file() || meta.nlink() > 1 {
        return Err(Delivery::fail(
            "5.2.0",
            "cannot open file: file is not a regular file or has multiple links",
        ));
    }
    kernel_lock(&file, how)?;
    Ok(MboxLock {
        file,
        _dot: dot,
        warning,
    })
}

/// Appends one message to the mbox file `path` as `ids` (when root): the
/// From_ line names `sender` ("MAILER-DAEMON" for the null sender). Missing
/// parent directories are created (0700). Ok: Delivery::warning's text.
pub fn deliver_mbox(
    path: &Path,
    sender: &str,
    prefix: &[u8],
    content: &[u8],
    how: &MboxLocking,
    ids: Option<(u32, u32)>,
) -> Result<String, Delivery> {
    let _ids = FsIds::switch(ids)?;
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    Delivery::fail(
                        errno_dsn(&e, "4.2.0"),
                        format!("create directory {}: {}", parent.display(), strerror(&e)),
                    )
                })?;
        }
    }
    let held = lock_mbox(path, how)?;
    let file = &held.file;
    let meta = file.metadata().map_err(fstat_failed)?;
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    let mut data = format!("From {}  {}\n", sender, ctime_now()).into_bytes();
    data.extend_from_slice(&to_unix_lines(prefix, content, true));
    data.push(b'\n');
    if !meta.is_file() {
        // A device (/dev/null): written as it is, nothing to sync or take back.
        write_message(file, &data).map_err(write_failed)?;
        return Ok(held.warning);
    }
    let start = meta.len();
    if let Err(e) = write_message(file, &data).and_then(|_| file.sync_data()) {
        // Take the partial message back out; the next delivery must not join it.
        let _ = file.set_len(start);
        let _ = file.sync_data();
        return Err(write_failed(e));
    }
    Ok(held.warning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    fn quick() -> MboxLocking {
        MboxLocking {
            attempts: 2,
            delay: Duration::from_millis(10),
            ..MboxLocking::default()
        }
    }

    #[test]
    fn appends_with_from_line_and_quoting() {
        let d = TempDir::new();
        let p = d.path().join("spool/user");
        deliver_mbox(
            &p,
            "a@b",
            b"Return-Path: <a@b>\r\n",
            b"S: 1\r\n\r\nFrom here\r\n",
            &quick(),
            None,
        )
        .unwrap();
        deliver_mbox(&p, "", b"", b"S: 2\r\n\r\nx", &quick(), None).unwrap();
        let text = String::from_utf8(fs::read(&p).unwrap()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines[0].starts_with("From a@b  "), "{}", lines[0]);
        assert_eq!(lines[0].len(), "From a@b  ".len() + 24);
        assert_eq!(
            &lines[1..5],
            &["Return-Path: <a@b>", "S: 1", "", ">From here"]
        );
        assert_eq!(lines[5], "");
        assert!(lines[6].starts_with("From MAILER-DAEMON  "));
        assert!(text.ends_with("S: 2\n\nx\n\n"));
        assert!(!d.path().join("spool/user.lock").exists());
    }

    #[test]
    fn held_dotlock_defers() {
        let d = TempDir::new();
        let p = d.path().join("user");
        fs::write(d.path().join("user.lock"), b"").unwrap();
        let e = deliver_mbox(&p, "a@b", b"", b"x\r\n", &quick(), None).unwrap_err();
        assert_eq!(e.status, "4.2.0");
        assert!(
            e.text.starts_with("unable to create lock file"),
            "{}",
            e.text
        );
    }

    #[test]
    fn stale_dotlock_is_broken() {
        let d = TempDir::new();
        let p = d.path().join("user");
        fs::write(d.path().join("user.lock"), b"").unwrap();
        let how = MboxLocking {
            stale: Duration::from_millis(0),
            ..quick()
        };
        std::thread::sleep(Duration::from_millis(5));
        deliver_mbox(&p, "a@b", b"", b"x\r\n", &how, None).unwrap();
    }

    #[test]
    fn symlinked_mailbox_is_refused() {
        let d = TempDir::new();
        let target = d.path().join("target");
        fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("user")).unwrap();
        let e =
            deliver_mbox(&d.path().join("user"), "a@b", b"", b"x\r\n", &quick(), None).unwrap_err();
        assert!(e.permanent());
        assert_eq!(fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn write_error_truncates_to_original_size() {
        let d = TempDir::new();
        let p = d.path().join("user");
        fs::write(&p, b"From x  Thu Jan  1 00:00:00 1970\nold\n\n").unwrap();
        let before = fs::read(&p).unwrap();
        // The write stops half way with EFBIG, as a file size limit would.
        FAIL_AFTER.with(|f| f.set(Some(100)));
        let e = deliver_mbox(&p, "a@b", b"", &[b'a'; 4096], &quick(), None).unwrap_err();
        FAIL_AFTER.with(|f| f.set(None));
        assert_eq!(e.status, "5.2.2");
        assert_eq!(e.text, "error writing message: File too large");
        assert_eq!(fs::read(&p).unwrap(), before);
    }
}
