//! Mailbox paths from table lookups, kept under their base (catalogue 49).
//!
//! Postfix's virtual(8) refuses a lookup result containing "/../" or starting
//! with "../" (`virtual/mailbox.c`: "4.3.5 mail system configuration error").
//! That substring test misses "here/..", "..", a NUL, or a symlink leading out,
//! so we check every component and then resolve what already exists.

use super::Delivery;
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
    let Ok(real_base) = base.canonicalize() else {
        // The base itself must exist: Postfix does not create virtual_mailbox_base.
        return Err(Delivery::fail(
            "4.3.5",
            format!(
                "mail system configuration error: mailbox base {} does not exist",
                base.display()
            ),
        ));
    };
    // Resolve the longest existing prefix; what does not exist yet will be
    // created by us as plain directories, which cannot lead elsewhere.
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
    use super::super::testdir::TempDir;
    use super::*;

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
}
