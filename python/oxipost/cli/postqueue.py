"""postqueue(1): list or flush the queue.

    postqueue [-c config_dir] -p         mailq listing (Postfix's layout)
    postqueue [-c config_dir] -j         one JSON object per queued message
    postqueue [-c config_dir] -f         flush: retry all deferred mail now
    postqueue [-c config_dir] -s site    flush mail for one destination (as ETRN)
    postqueue [-c config_dir] -i id      flush one message

As Postfix's, postqueue asks the mail system: the showq service for a listing
(public/$showq_service_name, oxipost.qmgr.showq), qmgr for a flush (public/qmgr). The queue
and public/ are out of a local user's reach, so a user's postqueue (and mailq, sendmail -bp,
sendmail -q, which run it) goes through its set-gid door, POSTQUEUE_DOOR (rust/postdrop),
when it cannot reach public/ itself: the door runs this module again with the
setgid_group's privilege, and the real uid, as Postfix's postqueue is set-gid postdrop.
Behind the door, -c names a configuration directory only as Postfix allows it
(oxipost.cli.postdrop.config_dir_allowed). With the mail system down, whoever may read the
queue (root) lists it directly, after a warning, as Postfix's postqueue runs showq
stand-alone for root.

Users other than root and mail_owner must be listed in authorized_mailq_users to list the
queue and in authorized_flush_users to flush it (oxipost.user_acl).

Diagnostics, Postfix 3.7's, with $mail_name (oxipost) where Postfix prints its own; every
fatal error exits 69 (EX_UNAVAILABLE), as Postfix's postqueue:
    postqueue: fatal: Queue report unavailable - mail system is down (Connect to the
        oxipost showq service: No such file or directory)
    postqueue: warning: Mail system is down -- accessing queue directly (Connect to ...)
    postqueue: fatal: Connect to the oxipost showq service: Permission denied
    postqueue: fatal: malformed showq server response
    postqueue: warning: unable to look up public/qmgr: STRERROR        (-f, then:)
    postqueue: warning: connect to public/flush: STRERROR              (-s, -i, then:)
    postqueue: fatal: Cannot flush mail queue - mail system is down
    postqueue: fatal: open database /etc/postfix/flush.db: No such file or directory
        (-s: fast_flush_domains names a table that does not open; also logged)
    postqueue: fatal: Cannot flush mail queue - invalid destination: "SITE"  (not a host
        name or address literal; checked first)
    postqueue: fatal: Cannot flush queue ID - invalid name: "ID"
    postqueue: fatal: Flush service is not configured for destination "SITE"  (-s for a
        site fast_flush_domains does not list, judged before qmgr is asked; also logged)
    postqueue: using backwards-compatible default setting relay_domains=$mydestination to
        flush mail for domain "SITE"   (also logged; oxipost.qmgr.control.flush_site_ok)
    postqueue: fatal: User NAME(UID) is not allowed to view the mail queue   (or "flush";
        also logged)
    postqueue: invalid option -- 'x' / postqueue: fatal: usage: postqueue -f | ...
"""

from __future__ import annotations

import errno
import getopt
import os
import pwd
import stat
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from oxipost import user_acl
from oxipost.cli.postdrop import POSTQUEUE_DOOR, config_dir_allowed
from oxipost.config import Config, ConfigError, load_config
from oxipost.log import command_message, refuse_maillog_file
from oxipost.maps import TableError
from oxipost.qmgr import control, showq
from oxipost.qmgr.control import flush_site_ok
from oxipost.qmgr.queue import QueueState
from oxipost.valid import queue_id_ok, valid_hostname, valid_mailhost_literal

PROG = "postqueue"
EX_UNAVAILABLE = 69  # sysexits.h: what Postfix's postqueue exits with after any fatal error
USAGE = f"usage: {PROG} -f | {PROG} -i queueid | {PROG} -j | {PROG} -p | {PROG} -s site"
# Set by the door for the command it runs: behind it, no second try.
DOOR_ENV = "OXIPOST_DOOR"
NO_PERMISSION = (errno.EACCES, errno.EPERM)


def _fatal(text: str, cfg: Config | None = None) -> int:
    """msg_fatal's line on stderr, and in the log once main.cf is read (Postfix's
    postqueue logs from then on); EX_UNAVAILABLE."""
    command_message(cfg, PROG, text, "fatal")
    return EX_UNAVAILABLE


def _not_configured(cfg: Config, site: str) -> int:
    return _fatal(f'Flush service is not configured for destination "{site}"', cfg)


def _warning(text: str, cfg: Config) -> None:
    command_message(cfg, PROG, text, "warning")


def _load(config_dir: str | None) -> Config | int:
    """The configuration, or the exit status after saying why not. Behind the door, a
    configuration directory the default main.cf does not allow is refused (Postfix's
    mail_conf_checkdir for a set-gid program)."""
    if os.getegid() != os.getgid():
        refused = config_dir_allowed(PROG, config_dir)
        if refused:
            print(refused, file=sys.stderr)
            return EX_UNAVAILABLE
    try:
        cfg = load_config(config_dir, master_cf=False, stderr_as=PROG)
    except ConfigError as e:
        return _fatal(str(e))
    return EX_UNAVAILABLE if refuse_maillog_file(cfg, PROG) else cfg


def _not_allowed(cfg: Config, param: str, what: str) -> bool:
    """Refuse (and say so) a user that param does not list; root and mail_owner may always."""
    uid = os.getuid()
    try:
        owner = pwd.getpwnam(cfg.get("mail_owner")).pw_uid
    except KeyError:
        owner = 0
    who = None if uid in (0, owner) else user_acl.refused(cfg, param, uid)
    if who is None:
        return False
    user_acl.deny(cfg, PROG, f"User {who}({uid}) is not allowed to {what} the mail queue")
    return True


def _through_door(cfg: Config, *args: str) -> None:
    """Run postqueue args again behind its set-gid door (does not return), unless this is
    root, is already behind it, or the door has no privilege to give."""
    if os.geteuid() == 0 or os.environ.get(DOOR_ENV):
        return
    try:
        if not os.stat(POSTQUEUE_DOOR).st_mode & stat.S_ISGID:
            return
    except OSError:
        return
    config_dir = cfg.config_dir if cfg.explicit_dir else None
    sys.stdout.flush()
    os.execv(POSTQUEUE_DOOR, [POSTQUEUE_DOOR, *(["-c", config_dir] if config_dir else []), *args])


def _may_read_queue(cfg: Config) -> bool:
    segments = os.path.join(cfg.path("queue_directory"), "segments")
    return os.geteuid() == 0 or os.access(segments, os.R_OK | os.X_OK, effective_ids=True)


def _direct(cfg: Config) -> Iterable[dict[str, Any]]:
    state = QueueState(cfg)
    for problem in state.problems:
        _warning(problem, cfg)
    return list(showq.records(state))


def show(config_dir: str | None, as_json: bool) -> int:
    """Print the queue (postqueue -p / -j, mailq, sendmail -bp)."""
    cfg = _load(config_dir)
    if isinstance(cfg, int):
        return cfg
    if _not_allowed(cfg, "authorized_mailq_users", "view"):
        return EX_UNAVAILABLE
    service = f"the {cfg.get('mail_name')} {cfg.get('showq_service_name')} service"
    try:
        messages: Iterable[dict[str, Any]] = showq.listing(cfg)
    except OSError as e:
        why = f"Connect to {service}: {e.strerror}"
        if e.errno in NO_PERMISSION:
            _through_door(cfg, "-j" if as_json else "-p")
            # Not "down": the user lacks the permission (Postfix says so apart).
            return _fatal(why, cfg)
        if not _may_read_queue(cfg):
            return _fatal(f"Queue report unavailable - mail system is down ({why})", cfg)
        _warning(f"Mail system is down -- accessing queue directly ({why})", cfg)
        messages = _direct(cfg)
    lines = showq.json_lines(messages) if as_json else showq.compat_lines(messages)
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    except showq.ShowqError as e:
        sys.stdout.flush()
        return _fatal(str(e), cfg)
    return 0


def flush(config_dir: str | None, flag: str, value: str) -> int:
    """Ask qmgr to deliver deferred mail now (postqueue -f, -s site, -i queue_id)."""
    cfg = _load(config_dir)
    if isinstance(cfg, int):
        return cfg
    bad = _bad_argument(flag, value)
    if bad is not None:
        return _fatal(bad, cfg)
    if _not_allowed(cfg, "authorized_flush_users", "flush"):
        return EX_UNAVAILABLE
    req: dict[str, object] = {"op": "flush"}
    if flag == "-s":
        # Judged here first, as Postfix's flush_send_site does in postqueue: a site that is
        # not eligible is refused even with the mail system down.
        try:
            allowed = flush_site_ok(cfg, value, lambda text: command_message(cfg, PROG, text))
        except TableError as e:
            # A command's table that does not open is dict_open's fatal error.
            return _fatal(str(e), cfg)
        if not allowed:
            return _not_configured(cfg, value)
        req = {"op": "flush-site", "site": value}
    elif flag == "-i":
        req = {"op": "flush-id", "id": value}
    try:
        reply = control.request(cfg, req)
    except control.QmgrDown as e:
        if e.errno in NO_PERMISSION:
            _through_door(cfg, *([flag, value] if value else [flag]))
        # Postfix's -f triggers public/qmgr, its -s and -i ask public/flush (qmgr's here).
        why = os.strerror(e.errno) if e.errno else "no reply"
        if flag == "-f":
            _warning(f"unable to look up public/{cfg.get('queue_service_name')}: {why}", cfg)
        else:
            _warning(f"connect to public/{cfg.get('flush_service_name')}: {why}", cfg)
        return _fatal("Cannot flush mail queue - mail system is down", cfg)
    if reply.get("denied"):
        return _not_configured(cfg, value)
    if not reply.get("ok"):
        return _fatal(str(reply.get("error", "flush failed")), cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run postqueue with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, rest = getopt.getopt(args, "c:fi:jps:v")
    except getopt.GetoptError as e:
        problem = "option requires an argument" if "requires" in e.msg else "invalid option"
        print(f"{PROG}: {problem} -- '{e.opt}'", file=sys.stderr)
        return _fatal(USAGE)
    config_dir = None
    action: tuple[str, str] | None = None
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag != "-v":
            if action is not None:
                return _fatal(USAGE)
            action = (flag, value)
    if action is None or rest:
        return _fatal(USAGE)
    flag, value = action
    if flag in ("-p", "-j"):
        return show(config_dir, flag == "-j")
    return flush(config_dir, flag, value)


def _bad_argument(flag: str, value: str) -> str | None:
    """postqueue.c's check of -s's destination and -i's queue ID, made before anything
    else is done: the text of its fatal, or None when the argument is well formed."""
    shown = value[:100] + ("..." if len(value) > 100 else "")
    if flag == "-s" and not (
        valid_mailhost_literal(value) if value.startswith("[") else valid_hostname(value)
    ):
        return f'Cannot flush mail queue - invalid destination: "{shown}"'
    if flag == "-i" and not queue_id_ok(value):
        return f'Cannot flush queue ID - invalid name: "{shown}"'
    return None


if __name__ == "__main__":
    sys.exit(main())
