"""postdrop(1): write a message from standard input into the maildrop queue.

Usage: postdrop [-c config_dir] [-r] [-v]. Standard input is one maildrop record (what
sendmail produces, see oxipost.pickup.maildrop); it is checked, stamped with the real uid
of the caller and written durably and atomically into $queue_directory/maildrop/, then
pickup is woken.

Local users reach maildrop/ (`$mail_owner:$setgid_group` 1730, which they may neither
list nor write) through the set-gid door SETGID_PROGRAM (rust/postdrop), which runs this
module isolated, with an empty environment, as Postfix's sendmail runs the set-gid
$command_directory/postdrop. The door lives in the venv (the Makefile builds it with the
venv's interpreter fixed in it), and `postfix check` as root makes it
root:$setgid_group 2755 only when nobody but root can replace it or anything it runs: it
and its directories, the interpreter, and the venv and package trees must be root's and
not group or other writable (`trusted_paths`), otherwise check warns as postfix-script does
and leaves the door without its privilege.

As in Postfix, a caller other than root may name a configuration directory (-c) only when
it is the default one or is listed in alternate_config_directories or
multi_instance_directories of the default main.cf (`config_dir_allowed`).

Diagnostics (stderr, Postfix's wording): "postdrop: warning: uid=N: unexpected or
malformed record" (exit 69, EX_UNAVAILABLE... as Postfix, after which sendmail fails);
"postdrop: warning: mail_queue_enter: create file maildrop/NAME: Permission denied" when
maildrop/ cannot be written (Postfix's postdrop then retries every 10 s; ours exits 75,
EX_TEMPFAIL, and the caller keeps the mail); "postdrop: error: unauthorized configuration
directory name: DIR" and "postdrop: fatal: specify ..." (exit 1); "postdrop: fatal: User
NAME(UID) is not allowed to submit mail" for a user authorized_submit_users does not list
(exit 1, also logged); "postdrop: warning: uid=N: File too large" (logged) for a file
that would pass message_size_limit, Postfix's postdrop's file size limit, weighed as
Postfix's file (postdrop_size): exit 4, its CLEANUP_STAT_SIZE.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Iterator

from oxipost import user_acl
from oxipost.config import DEFAULT_CONFIG_DIR, Config, ConfigError, load_config
from oxipost.log import command_message, refuse_maillog_file
from oxipost.pickup.maildrop import (
    MaildropError,
    Submission,
    drop,
    maildrop_dir,
    postdrop_size,
    wake_pickup,
)

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
# cleanup_user.h's CLEANUP_STAT_SIZE: what Postfix's postdrop exits with (its completion
# status) when message_size_limit, its file size limit, stopped the file.
CLEANUP_STAT_SIZE = 4

# Where the Makefile installs rust/postdrop's builds, the set-gid doors of postdrop and
# postqueue: root's directory when root built the venv, which postfix check verifies before
# it grants the set-gid bit.
SETGID_DIRECTORY = os.path.join(sys.prefix, "libexec", "oxipost")
SETGID_PROGRAM = os.path.join(SETGID_DIRECTORY, "postdrop")
POSTQUEUE_DOOR = os.path.join(SETGID_DIRECTORY, "postqueue")
# What each door lets local users do, for postfix check's warning when it cannot have its
# privilege.
SETGID_DOORS = {SETGID_PROGRAM: "submit mail", POSTQUEUE_DOOR: "list or flush the queue"}


def config_dir_allowed(prog: str, config_dir: str | None) -> str | None:
    """None when the real user may run with config_dir, else the diagnostic lines (Postfix's
    mail_conf_checkdir, for the commands a local user runs with the set-gid privilege)."""
    if config_dir is None or os.getuid() == 0:
        return None
    wanted = config_dir.rstrip("/") or "/"
    if wanted == DEFAULT_CONFIG_DIR:
        return None
    try:
        default = load_config(DEFAULT_CONFIG_DIR, master_cf=False)
    except ConfigError as e:
        return f"{prog}: fatal: {e}"
    for name in ("alternate_config_directories", "multi_instance_directories"):
        listed = re.split(r"[\s,]+", default.get(name))
        if wanted in (d.rstrip("/") or "/" for d in listed if d):
            return None
    main_cf = os.path.join(DEFAULT_CONFIG_DIR, "main.cf")
    return (
        f"{prog}: error: unauthorized configuration directory name: {config_dir}\n"
        f'{prog}: fatal: specify "alternate_config_directories = {config_dir}" or '
        f'"multi_instance_directories = {config_dir}" in {main_cf}'
    )


def _with_ancestors(path: str) -> Iterator[str]:
    path = os.path.abspath(path)
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def trusted_paths() -> list[str]:
    """What the set-gid doors run, and where they live: their directories, the interpreter,
    the venv (its site-packages, .pth files included) and the oxipost package, which must
    all be replaceable by root alone."""
    import oxipost

    package = os.path.dirname(os.path.realpath(oxipost.__file__))
    python = os.path.join(sys.prefix, "bin", "python")
    roots = [os.path.realpath(sys.prefix), package]
    paths = [*SETGID_DOORS, *_with_ancestors(SETGID_DIRECTORY), *_with_ancestors(python)]
    paths += _with_ancestors(os.path.realpath(python))
    paths += _with_ancestors(package)
    for root in roots:
        for top, dirs, files in os.walk(root):
            paths += (os.path.join(top, n) for n in dirs + files)
    return list(dict.fromkeys(paths))


def untrusted(paths: list[str]) -> Iterator[str]:
    """postfix-script's check warnings for the paths others than root could replace."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_uid != 0:
            yield f"not owned by root: {path}"
        elif stat.S_ISLNK(st.st_mode) or (st.st_mode & stat.S_ISVTX and stat.S_ISDIR(st.st_mode)):
            # What a link names is checked apart; in a sticky directory (/tmp) only root
            # may rename root's entries.
            continue
        elif st.st_mode & 0o022:
            yield f"group or other writable: {path}"


def file_too_large(cfg: Config, sub: Submission) -> bool:
    """Whether postdrop's file for sub would pass message_size_limit, which Postfix's
    postdrop sets as its file size limit; if so its warning is said and logged."""
    limit = cfg.get_int("message_size_limit")
    if limit <= 0 or postdrop_size(sub, cfg.get_int("line_length_limit")) <= limit:
        return False
    command_message(cfg, "postdrop", f"uid={os.getuid()}: File too large", "warning")
    return True


def main(argv: list[str] | None = None) -> int:
    """Run postdrop with sys.argv; return the exit status."""
    parser = argparse.ArgumentParser(prog="postdrop", add_help=False)
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-r", action="store_true")
    parser.add_argument("-v", action="count", default=0)
    args = parser.parse_args(argv)
    refused = config_dir_allowed("postdrop", args.config_dir)
    if refused:
        print(refused, file=sys.stderr)
        return 1
    try:
        cfg = load_config(args.config_dir, master_cf=False, stderr_as="postdrop")
    except ConfigError as e:
        print(f"postdrop: fatal: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    if refuse_maillog_file(cfg, "postdrop"):
        return 1
    who = user_acl.refused(cfg, "authorized_submit_users", os.getuid())
    if who is not None:
        user_acl.deny(cfg, "postdrop", f"User {who}({os.getuid()}) is not allowed to submit mail")
        return 1
    data = sys.stdin.buffer.read()
    try:
        sub = Submission.decode(data)
    except MaildropError:
        print(
            f"postdrop: warning: uid={os.getuid()}: unexpected or malformed record", file=sys.stderr
        )
        return EX_UNAVAILABLE
    sub.uid = os.getuid()
    if file_too_large(cfg, sub):
        return CLEANUP_STAT_SIZE
    top = cfg.path("queue_directory")
    try:
        drop(top, sub)
    except PermissionError as e:
        name = os.path.relpath(e.filename or maildrop_dir(top), top)
        print(
            f"postdrop: warning: mail_queue_enter: create file {name}: {e.strerror}",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    except OSError as e:
        print(f"postdrop: fatal: uid={os.getuid()}: {e.strerror or e}", file=sys.stderr)
        return EX_TEMPFAIL
    wake_pickup(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
