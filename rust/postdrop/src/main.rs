//! postdrop(1)'s set-gid door: local users' sendmail runs this program, which `postfix
//! check` (as root) makes `root:$setgid_group` mode 2755, as Postfix's postfix-files has
//! `$command_directory/postdrop`. It runs oxipost's postdrop with the group privilege that
//! writes into maildrop/ (`$mail_owner:$setgid_group` 1730), keeping the real uid, which
//! postdrop stamps on the message (pickup logs it as `uid=N`).
//!
//! Nothing the caller controls reaches the interpreter except the arguments postdrop
//! accepts (`-c config_dir`, `-r`, `-v`), re-checked here: the environment is emptied (no
//! PYTHONPATH, PYTHONSTARTUP, LD_*, MAIL_CONFIG...), the interpreter's path was fixed when
//! this was built (`OXIPOST_PYTHON`, set by the Makefile), and Python runs isolated (`-I`:
//! no user site, no PYTHON* variables, not the current directory on sys.path). Whether a
//! non-root caller may name a `-c` directory is postdrop's decision, as in Postfix (the
//! default main.cf's alternate_config_directories). Standard input, output and error are
//! opened on /dev/null when closed (Rust's runtime does it), so no file postdrop opens
//! becomes one of them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// The project's interpreter, an absolute path fixed at build time.
const PYTHON: Option<&str> = option_env!("OXIPOST_PYTHON");

fn fatal(text: &str) -> ! {
    eprintln!("postdrop: fatal: {text}");
    exit(1)
}

/// postdrop's own arguments, or None for anything postdrop does not accept.
fn postdrop_args(args: impl IntoIterator<Item = OsString>) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bytes = arg.as_encoded_bytes();
        match bytes {
            b"-r" | b"-v" => out.push(arg),
            b"-c" => {
                // Joined to its option, so a directory that starts with "-" stays a value.
                let mut joined = OsString::from("-c");
                joined.push(args.next()?);
                out.push(joined);
            }
            _ if bytes.len() > 2 && bytes.starts_with(b"-c") => out.push(arg),
            _ => return None,
        }
    }
    Some(out)
}

fn main() {
    let Some(args) = postdrop_args(std::env::args_os().skip(1)) else {
        fatal("usage: postdrop [-c config_dir] [-v]")
    };
    let Some(python) = PYTHON.filter(|p| p.starts_with('/')) else {
        fatal("built without OXIPOST_PYTHON (an absolute path): run make develop")
    };
    let err = Command::new(python)
        .arg0(python)
        .args(["-I", "-m", "oxipost.cli.postdrop"])
        .args(args)
        .env_clear()
        .exec();
    fatal(&format!("execv {python}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::postdrop_args;
    use std::ffi::OsString;

    fn parse(args: &[&str]) -> Option<Vec<String>> {
        postdrop_args(args.iter().map(OsString::from))
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn only_postdrops_options_pass() {
        assert_eq!(
            parse(&["-r", "-c", "/x"]),
            Some(vec!["-r".into(), "-c/x".into()])
        );
        assert_eq!(
            parse(&["-c-x", "-v"]),
            Some(vec!["-c-x".into(), "-v".into()])
        );
        assert_eq!(parse(&["-c", "-m"]), Some(vec!["-c-m".into()]));
        assert_eq!(parse(&["-c"]), None);
        assert_eq!(parse(&["-m", "os"]), None);
        assert_eq!(parse(&["x"]), None);
        assert_eq!(parse(&["-rv"]), None);
    }
}
