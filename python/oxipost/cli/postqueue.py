"""postqueue(1): list or flush the queue.

    postqueue [-c config_dir] -p         mailq listing (Postfix's layout)
    postqueue [-c config_dir] -j         one JSON object per queued message
    postqueue [-c config_dir] -f         flush: retry all deferred mail now
    postqueue [-c config_dir] -s site    flush mail for one destination (as ETRN)
    postqueue [-c config_dir] -i id      flush one message

Users other than root and mail_owner must be listed in authorized_mailq_users to list the
queue and in authorized_flush_users to flush it (oxipost.user_acl).

Diagnostics: `postqueue: fatal: Cannot flush mail queue - mail system is down` when no
qmgr answers, usage errors as Postfix's; exit 1 on failure. "postqueue: fatal: User
NAME(UID) is not allowed to view the mail queue" (or "flush"), also logged, exit 69
(Postfix's postqueue exits EX_UNAVAILABLE after any fatal error).
"""

from __future__ import annotations

import getopt
import os
import pwd
import sys
from collections.abc import Sequence

from oxipost import user_acl
from oxipost.config import Config, ConfigError, load_config
from oxipost.qmgr import control
from oxipost.qmgr.queue import QueueState
from oxipost.qmgr.showq import compat_lines, json_lines

PROG = "postqueue"
EX_UNAVAILABLE = 69  # sysexits.h: what Postfix's postqueue exits with when qmgr is down


def _fatal(text: str, status: int = 1) -> int:
    print(f"{PROG}: fatal: {text}", file=sys.stderr)
    return status


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


def show(config_dir: str | None, as_json: bool) -> int:
    """Print the queue (postqueue -p / -j, mailq)."""
    try:
        cfg = load_config(config_dir, master_cf=False)
    except ConfigError as e:
        return _fatal(str(e))
    if _not_allowed(cfg, "authorized_mailq_users", "view"):
        return EX_UNAVAILABLE
    state = QueueState(cfg)
    for problem in state.problems:
        print(f"{PROG}: warning: {problem}", file=sys.stderr)
    lines = json_lines(state) if as_json else compat_lines(state)
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run postqueue with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, rest = getopt.getopt(args, "c:fi:jps:v")
    except getopt.GetoptError as e:
        return _fatal(
            f"usage: {PROG} -f | {PROG} -i queueid | {PROG} -j | {PROG} -p | {PROG} -s site ({e})"
        )
    config_dir = None
    action: tuple[str, str] | None = None
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag != "-v":
            action = (flag, value)
    if action is None or rest:
        return _fatal(
            f"usage: {PROG} -f | {PROG} -i queueid | {PROG} -j | {PROG} -p | {PROG} -s site"
        )
    flag, value = action
    if flag in ("-p", "-j"):
        return show(config_dir, flag == "-j")
    try:
        cfg = load_config(config_dir, master_cf=False)
    except ConfigError as e:
        return _fatal(str(e))
    if _not_allowed(cfg, "authorized_flush_users", "flush"):
        return EX_UNAVAILABLE
    req: dict[str, object] = {"op": "flush"}
    if flag == "-s":
        req = {"op": "flush-site", "site": value}
    elif flag == "-i":
        req = {"op": "flush-id", "id": value}
    try:
        reply = control.request(cfg, req)
    except control.QmgrDown:
        what = "mail queue" if flag == "-f" else ("queue for site" if flag == "-s" else "message")
        return _fatal(f"Cannot flush {what} - mail system is down", EX_UNAVAILABLE)
    if not reply.get("ok"):
        return _fatal(str(reply.get("error", "flush failed")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
