//! Mailbox paths from table lookups, kept under their base (catalogue 49).
//!
//! Postfix's virtual(8) refuses a lookup result containing "/../" or starting
//! with "../" (`virtual/mailbox.c`: "4.3.5 mail system configuration error").
//! That substring test misses "here/..", "..", a NUL, or a symlink leading out,
//! so we check every component and then resolve what already exists.

use super::Delivery;
use std::io;
use std::path::{Component, Path, PathBuf};

fn config_error(what: &str) -> Delivery {
    Delivery::fail(
        "4.3.5",
        format!("mail system configuration error: unsafe mailbox path \"{what}\""),
    )
}

/// Joins `rel` (a table lookup result, relative) onto `base` and proves the
/// result stays under `base`: no NUL, no absolute path, no ".." component,
/// and the deepest part that exists resolves (through symlinks) under the
/// resolved base. A trailing "/" (Maildir) is kept by the caller, not here.
pub fn resolve_under(base: &Path, rel: &str) -> Result<PathBuf, Delivery> {
    if rel.is_empty() || rel.contains('\0') {
        return Err(config_error(&rel.replace('\0', "\\0")));
    }
    let relp = Path::new(rel);
    for c in relp.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(config_error(rel)),
        }
    }
    let joined = base.join(relp);
    match plain_dirs(base, relp) {
        Some(true) => Ok(joined),
        Some(false) => Err(base_missing(base)),
        None => resolve_existing(base, rel, joined),
    }
}

fn base_missing(base: &Path) -> Delivery {
    // Postfix does not create virtual_mailbox_base.
    Delivery::fail(
        "4.3.5",
        format!(
            "mail system configuration error: mailbox base {} does not exist",
            base.display()
        ),
    )
}

/// The common case, one lstat per component of `rel`: what exists of it under
/// `base` is plain directories, and perhaps a last file, none a symlink; it is
/// then under `base` without resolving anything. Some(false): `base` does not
/// exist. None: a symlink or an error, for [`resolve_existing`] to judge.
fn plain_dirs(base: &Path, rel: &Path) -> Option<bool> {
    let mut probe = base.to_path_buf();
    let mut probed = false;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let first = !probed;
        probed = true;
        probe.push(name);
        match probe.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => return None,
            // A file: nothing can exist below it.
            Ok(_) => return Some(true),
            // What does not exist yet will be created by us as plain
            // directories, which cannot lead elsewhere.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Some(!first || base.exists());
            }
            Err(_) => return None,
        }
    }
    // Nothing probed ("." alone): the base is the path.
    Some(probed || base.exists())
}

/// Resolves the longest existing prefix of `joined` and the base through
/// their symlinks and compares them.
fn resolve_existing(base: &Path, rel: &str, joined: PathBuf) -> Result<PathBuf, Delivery> {
    let Ok(real_base) = base.canonicalize() else {
        return Err(base_missing(base));
    };
    let mut probe = joined.clone();
    loop {
        match probe.canonicalize() {
            Ok(real) => {
                if real.starts_with(&real_base) {
                    return Ok(joined);
                }
                return Err(config_error(rel));
            }
            Err(_) => {
                if !probe.pop() {
                    return Err(config_error(rel));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    #[test]
    fn traversal_is_refused_with_4_3_5() {
        // catalogue 49
        let d = TempDir::new();
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "..",
            "/etc/passwd",
            "a\0b",
            "",
            "dom/../../etc/",
        ] {
            let e = resolve_under(d.path(), bad).unwrap_err();
            assert_eq!(e.status, "4.3.5", "{bad:?}");
            assert!(e.text.starts_with("mail system configuration error"));
        }
        let ok = resolve_under(d.path(), "example.com/info/").unwrap();
        assert_eq!(ok, d.path().join("example.com/info"));
    }

    #[test]
    fn symlink_out_of_base_is_refused() {
        let d = TempDir::new();
        let outside = TempDir::new();
        std::os::unix::fs::symlink(outside.path(), d.path().join("evil")).unwrap();
        let e = resolve_under(d.path(), "evil/user/").unwrap_err();
        assert_eq!(e.status, "4.3.5");
        std::fs::create_dir(d.path().join("good")).unwrap();
        assert!(resolve_under(d.path(), "good/user/").is_ok());
    }

    #[test]
    fn symlink_inside_base_is_followed_and_judged() {
        // catalogue 49: a symlink is resolved, whichever component it is.
        let d = TempDir::new();
        let outside = TempDir::new();
        std::fs::create_dir_all(d.path().join("real/user")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("alias")).unwrap();
        assert!(resolve_under(d.path(), "alias/user/").is_ok());
        std::os::unix::fs::symlink(outside.path(), d.path().join("real/user/evil")).unwrap();
        assert_eq!(
            resolve_under(d.path(), "real/user/evil/new/")
                .unwrap_err()
                .status,
            "4.3.5"
        );
        // A last component linking out (an mbox file) is refused as well.
        std::fs::write(outside.path().join("f"), b"").unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), d.path().join("mbox")).unwrap();
        assert!(resolve_under(d.path(), "mbox").is_err());
        assert!(resolve_under(d.path(), "./real/user").is_ok());
    }

    #[test]
    fn missing_base_is_a_configuration_error() {
        let d = TempDir::new();
        let gone = d.path().join("gone");
        for rel in ["x/", "./", "a/b/c"] {
            let e = resolve_under(&gone, rel).unwrap_err();
            assert_eq!(e.status, "4.3.5");
            assert!(e.text.contains("does not exist"), "{rel}: {}", e.text);
        }
        // Missing below an existing base is fine: we create it.
        assert!(resolve_under(d.path(), "x/y/z/").is_ok());
        assert!(resolve_under(d.path(), "./").is_ok());
    }
}
