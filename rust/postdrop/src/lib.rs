//! The set-gid doors into the mail system for local users, as Postfix's set-gid
//! `$command_directory/postdrop` and `postqueue`: `postfix check` (as root) makes each
//! `root:$setgid_group` mode 2755. A door runs one oxipost command with the group
//! privilege, keeping the real uid (which the command checks against
//! authorized_submit_users / authorized_mailq_users / authorized_flush_users, and postdrop
//! stamps on the message):
//!
//! - postdrop writes into maildrop/ (`$mail_owner:$setgid_group` 1730);
//! - postqueue reaches public/ (`$mail_owner:$setgid_group` 0710): the showq service's
//!   socket for mailq, qmgr's for a flush.
//!
//! Nothing the caller controls reaches the interpreter except the arguments the command
//! accepts (`Door::flags`, `Door::valued`), re-checked here: the environment is emptied
//! (no PYTHONPATH, PYTHONSTARTUP, LD_*, MAIL_CONFIG...) but for `OXIPOST_DOOR`, which tells
//! the command it runs behind its door (postqueue does not try the door again), the
//! interpreter's path was fixed when this was built (`OXIPOST_PYTHON`, set by the Makefile),
//! and Python runs isolated (`-I`: no user site, no PYTHON* variables, not the current
//! directory on sys.path). Whether a non-root caller may name a `-c` directory is the
//! command's decision, as in Postfix (the default main.cf's alternate_config_directories).
//! Standard input, output and error are opened on /dev/null when closed (Rust's runtime
//! does it), so no file the command opens becomes one of them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// The project's interpreter, an absolute path fixed at build time.
const PYTHON: Option<&str> = option_env!("OXIPOST_PYTHON");

/// What a door runs and what it lets through.
pub struct Door {
    /// The command's name, for its messages.
    pub prog: &'static str,
    /// The Python module run with `-m`.
    pub module: &'static str,
    /// The usage text of the command's fatal message.
    pub usage: &'static str,
    /// The exit status of the command's fatal errors.
    pub status: i32,
    /// Options without a value (`-r`), one per argument.
    pub flags: &'static [u8],
    /// Options with a value (`-c dir` or `-cdir`).
    pub valued: &'static [u8],
}

impl Door {
    fn fatal(&self, text: &str) -> ! {
        eprintln!("{}: fatal: {text}", self.prog);
        exit(self.status)
    }

    /// The command's own arguments, or None for anything it does not accept. A value is
    /// joined to its option, so that one starting with "-" stays a value.
    pub fn args(&self, args: impl IntoIterator<Item = OsString>) -> Option<Vec<OsString>> {
        let mut out = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let [b'-', letter, rest @ ..] = arg.as_encoded_bytes() else {
                return None;
            };
            let (letter, alone) = (*letter, rest.is_empty());
            if self.flags.contains(&letter) && alone {
                out.push(arg);
            } else if self.valued.contains(&letter) {
                if alone {
                    let mut joined = OsString::from(format!("-{}", letter as char));
                    joined.push(args.next()?);
                    out.push(joined);
                } else {
                    out.push(arg);
                }
            } else {
                return None;
            }
        }
        Some(out)
    }

    /// Run the command with the caller's arguments (never returns).
    pub fn run(&self) -> ! {
        let Some(args) = self.args(std::env::args_os().skip(1)) else {
            self.fatal(self.usage)
        };
        let Some(python) = PYTHON.filter(|p| p.starts_with('/')) else {
            self.fatal("built without OXIPOST_PYTHON (an absolute path): run make develop")
        };
        let err = Command::new(python)
            .arg0(python)
            .args(["-I", "-m", self.module])
            .args(args)
            .env_clear()
            .env("OXIPOST_DOOR", self.prog)
            .exec();
        self.fatal(&format!("execv {python}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::Door;
    use std::ffi::OsString;

    const DOOR: Door = Door {
        prog: "postqueue",
        module: "oxipost.cli.postqueue",
        usage: "usage",
        status: 69,
        flags: b"fjpv",
        valued: b"cis",
    };

    fn parse(args: &[&str]) -> Option<Vec<String>> {
        DOOR.args(args.iter().map(OsString::from))
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn only_the_commands_options_pass() {
        assert_eq!(
            parse(&["-p", "-c", "/x"]),
            Some(vec!["-p".into(), "-c/x".into()])
        );
        assert_eq!(
            parse(&["-c-x", "-v", "-s", "-m"]),
            Some(vec!["-c-x".into(), "-v".into(), "-s-m".into()])
        );
        assert_eq!(parse(&["-iABC"]), Some(vec!["-iABC".into()]));
        assert_eq!(parse(&["-c"]), None);
        assert_eq!(parse(&["-m", "os"]), None);
        assert_eq!(parse(&["x"]), None);
        assert_eq!(parse(&["-pv"]), None);
        assert_eq!(parse(&["-"]), None);
    }
}
