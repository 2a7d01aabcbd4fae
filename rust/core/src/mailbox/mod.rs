//! mailbox: the final writes of local(8) and virtual(8) — Maildir and mbox.
//!
//! Every call answers with a [`Delivery`]: Postfix's (dsn status, permanent?, text)
//! triple. Operating-system errors become the enhanced codes Postfix's
//! `mbox_dsn()` picks (`global/mbox_open.c`): EAGAIN/ESTALE → 4.2.0, ENOSPC →
//! 4.3.0, EDQUOT/EFBIG → 5.2.2, anything else the caller's default (4.2.0 for
//! creating a file, 5.2.0 for writing one, as `local/maildir.c` and
//! `global/mail_copy.c` do).
//!
//! Paths never come from an address: the caller passes the table lookup's
//! result and the base it must stay under ([`resolve_under`], catalogue 49).

mod durable;
mod maildir;
mod mbox;
mod path;
mod pool;

pub use maildir::{deliver_maildir, maildir_unique_name};
pub use mbox::{deliver_mbox, lock_mbox, MboxLock, MboxLocking};
pub use path::resolve_under;
pub use pool::{Job, Pool};

use std::io;

/// The outcome of one mailbox write: (dsn status, permanent?, text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The RFC 3463 enhanced status, "2.0.0" when delivered.
    pub status: String,
    /// The text Postfix logs in parentheses after status=...
    pub text: String,
    /// What the write got past, for a warning in the log ("" for nothing): a /file's
    /// dotlock that could not be made (MboxLocking::dotlock_may_fail).
    pub warning: String,
}

impl Delivery {
    pub fn ok(text: impl Into<String>) -> Self {
        Delivery {
            status: "2.0.0".into(),
            text: text.into(),
            warning: String::new(),
        }
    }

    pub fn fail(status: &str, text: impl Into<String>) -> Self {
        Delivery {
            status: status.into(),
            text: text.into(),
            warning: String::new(),
        }
    }

    /// A 5.x.x status: the recipient bounces rather than waits for a retry.
    pub fn permanent(&self) -> bool {
        self.status.starts_with('5')
    }

    pub fn delivered(&self) -> bool {
        self.status.starts_with('2')
    }
}

/// Postfix's `mbox_dsn()`: the enhanced code for an errno, or `default`.
pub fn errno_dsn(err: &io::Error, default: &'static str) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::ESTALE) => "4.2.0",
        Some(libc::ENOSPC) => "4.3.0",
        Some(libc::EDQUOT) | Some(libc::EFBIG) => "5.2.2",
        _ => default,
    }
}

/// The errno text as `%m` prints it ("No such file or directory"), without
/// Rust's " (os error N)" suffix.
pub fn strerror(err: &io::Error) -> String {
    let s = err.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Copies `content` (CRLF or LF line ends) as LF lines, the way Postfix's
/// `mail_copy()` writes a mailbox: `quote_from` prefixes ">" to body lines
/// that start with "From " (mbox), and the result always ends in a newline.
pub(crate) fn to_unix_lines(prefix: &[u8], content: &[u8], quote_from: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + content.len() + 2);
    for part in [prefix, content] {
        let mut start = 0;
        while start < part.len() {
            // memchr: a byte-at-a-time search was most of the CPU of a 1 KiB write's copy.
            let end = match memchr::memchr(b'\n', &part[start..]) {
                Some(i) => start + i,
                None => part.len(),
            };
            let mut line = &part[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if quote_from && line.starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
            out.push(b'\n');
            start = end + 1;
        }
    }
    out
}

/// Switches the calling thread's filesystem uid/gid for the duration of a
/// write (Linux keeps fsuid per thread), only when the process runs as root
/// and never *to* root (catalogue 50). Restored on drop.
pub struct FsIds {
    saved: Option<(u32, u32)>,
}

impl FsIds {
    pub fn switch(ids: Option<(u32, u32)>) -> Result<FsIds, Delivery> {
        let Some((uid, gid)) = ids else {
            return Ok(FsIds { saved: None });
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(FsIds { saved: None });
        }
        if uid == 0 {
            return Err(Delivery::fail(
                "4.3.0",
                "mail system configuration error: refusing to deliver as root",
            ));
        }
        // SAFETY: setfsgid/setfsuid only change this thread's filesystem ids;
        // they return the previous id, which we restore in Drop.
        let old_gid = unsafe { libc::setfsgid(gid) } as u32;
        // SAFETY: as above.
        let old_uid = unsafe { libc::setfsuid(uid) } as u32;
        Ok(FsIds {
            saved: Some((old_uid, old_gid)),
        })
    }
}

impl Drop for FsIds {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.saved {
            // SAFETY: restores the ids saved in `switch`, on the same thread.
            unsafe {
                libc::setfsuid(uid);
                libc::setfsgid(gid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_follows_mbox_dsn() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(errno_dsn(&e(libc::ENOSPC), "4.2.0"), "4.3.0");
        assert_eq!(errno_dsn(&e(libc::EDQUOT), "4.2.0"), "5.2.2");
        assert_eq!(errno_dsn(&e(libc::EFBIG), "4.2.0"), "5.2.2");
        assert_eq!(errno_dsn(&e(libc::EAGAIN), "5.2.0"), "4.2.0");
        assert_eq!(errno_dsn(&e(libc::EACCES), "5.2.0"), "5.2.0");
        assert_eq!(strerror(&e(libc::ENOENT)), "No such file or directory");
    }

    #[test]
    fn unix_lines_and_from_quoting() {
        let out = to_unix_lines(
            b"Delivered-To: a@b\n",
            b"S: x\r\n\r\nFrom me\r\n>From x\r\nend",
            true,
        );
        assert_eq!(
            out,
            b"Delivered-To: a@b\nS: x\n\n>From me\n>From x\nend\n".to_vec()
        );
        assert_eq!(
            to_unix_lines(b"", b"From a\r\n", false),
            b"From a\n".to_vec()
        );
    }
}
