"""postsuper(1): queue maintenance by the administrator.

    postsuper [-c config_dir] -d ID|ALL|- [queue...] delete
    postsuper [-c config_dir] -h ID|ALL|- [queue...] put on hold
    postsuper [-c config_dir] -H ID|ALL|- [queue...] release from hold
    postsuper [-c config_dir] -r ID|ALL|- [queue...] requeue: back to maildrop/, from where
                                                    pickup queues it again as new mail
    postsuper [-c config_dir] -e ID|ALL|- [queue...] expire: returned to the sender at the
                                                    next delivery pass (mailq's '#')
    postsuper [-c config_dir] -f ID|ALL|- [queue...] expire and release from hold

`-` reads queue IDs from standard input, one per line. Several actions may be given; they
run in Postfix's order (delete, expire, hold, release, requeue). Summary lines on stderr are
Postfix's: `postsuper: Deleted: N messages`, `Placed on hold: N`, `Released from hold: N`,
`Requeued: N`. While qmgr runs (it holds the state lock) the request goes to qmgr. -d
also deletes in the maildrop queue (what pickup has not taken yet: local submissions, what
-r put there), as Postfix's does, and -d QID looks there first (a message there by a
queued message's name is the one deleted): -d ALL empties it whatever the names there
and counts the whole messages (READY) among them; the other actions accept `maildrop` as the queue
and find nothing there, as Postfix's. Postfix's logfile directories are queues too, where
no message is found or counted: -d ALL defer drops every message's deferral reasons (mailq
then lists none), -d ALL bounce and trace its bounce and success notice logs.

Diagnostics, as Postfix's: `warning: remove subdirectory maildrop/NAME: ...` (-d ALL),
`warning: maildrop/QID: uid N: not a regular file` (-d QID), `fatal: remove file
maildrop/NAME: ...`.
"""

from __future__ import annotations

import getopt
import os
import stat
import sys
from collections.abc import Callable, Sequence

from oxipost.config import ConfigError, load_config
from oxipost.log import get_logger, refuse_maillog_file
from oxipost.pickup.maildrop import READY, maildrop_dir, open_ok, requeue
from oxipost.qmgr import control
from oxipost.qmgr.queue import LOGFILE_QUEUES, QUEUES, QueueBusy, QueueState, in_queues
from oxipost.valid import queue_id_ok

PROG = "postsuper"
# Each message named by its ID is reported as it changes (not those of ALL), as Postfix's.
DONE = {
    "delete": "removed",
    "expire": "expired",
    "hold": "placed on hold",
    "release": "released from hold",
    "requeue": "requeued",
}
SUMMARY = {
    "delete": "Deleted",
    "expire": "Force-expired",
    "hold": "Placed on hold",
    "release": "Released from hold",
    "requeue": "Requeued",
}
_FLAG = {"-d": "delete", "-e": "expire", "-h": "hold", "-H": "release", "-r": "requeue"}
ORDER = ("delete", "expire", "hold", "release", "requeue")
# The queues -e and -f look in without a queue named (not corrupt/).
EXPIRABLE = ("hold", "incoming", "active", "deferred")
# What may be named as the queue: Postfix's logfile directories too, where only -d ALL
# does anything (flush/'s logs are none of ours: postqueue -s looks in the deferred queue).
NAMED_QUEUES = (*QUEUES, "maildrop", *LOGFILE_QUEUES, "flush")


def _count(n: int) -> str:
    return f"{n} message{'' if n == 1 else 's'}"


def apply(
    state: QueueState, action: str, ids: list[str] | str, queues: list[str] | None
) -> list[str]:
    """Do one action on the queue state (as the state writer), in the queues named (None:
    all); return the IDs it changed."""
    for logs in queues or ():
        # Logfiles, not messages: none is counted, and -d names none by its ID there.
        if logs in LOGFILE_QUEUES and action == "delete" and ids == "ALL":
            for qid in list(state.messages):
                state.drop_log(qid, logs)
    if ids == "ALL":
        chosen = [i.queue_id for i in state.messages.values() if in_queues(i.state, queues)]
    else:
        chosen = [
            q for q in ids if q in state.messages and in_queues(state.messages[q].state, queues)
        ]
    done = []
    for qid in chosen:
        info = state.messages[qid]
        if action == "delete":
            state.remove(qid)
        elif action == "expire":
            if info.expired or info.state not in EXPIRABLE:
                continue
            state.expire(qid)
        elif action == "hold":
            if info.state == "hold":
                continue
            state.move(qid, "hold")
        elif action == "release":
            if info.state != "hold":
                continue
            state.move(qid, "deferred" if info.reason else "incoming")
        else:
            if info.state == "corrupt":
                continue  # Postfix's -r looks in hold, incoming, active and deferred
            requeue(state, qid)
        done.append(qid)
    return done


class _Fatal(Exception):
    """A file postsuper cannot remove: Postfix's postsuper stops there (msg_fatal)."""


class _Refused(Exception):
    """The queue cannot be changed (a qmgr that does not answer, or refuses)."""


def _delete_all_maildrop(d: str, warn: Callable[[str], None]) -> int:
    """-d ALL in maildrop/, as Postfix's postsuper's mass deletion: whatever is there
    goes, in directory order and whatever its name (a file being written, a dot file,
    junk, a symlink), a subdirectory with rmdir (warned of when it stays). Return how
    many were whole messages: READY as lstat() sees them (a symlink is, as Postfix's)."""
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    deleted = 0
    for name in names:
        path, shown = os.path.join(d, name), f"maildrop/{name}"
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                warn(f"remove subdirectory {shown}: {e.strerror}")
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _Fatal(f"remove file {shown}: {e.strerror}") from None
        if st.st_mode & READY == READY:
            deleted += 1
    return deleted


def _remove_ready(d: str, qid: str, warn: Callable[[str], None]) -> bool:
    """maildrop/QID removed if it is a whole message (open_ok); anything else by that
    name stays."""
    if not open_ok(d, qid, warn):
        return False
    try:
        os.unlink(os.path.join(d, qid))
    except FileNotFoundError:
        return False  # taken by pickup meanwhile
    except OSError as e:
        raise _Fatal(f"remove file maildrop/{qid}: {e.strerror}") from None
    return True


def _delete_one(
    qid: str,
    maildrop: str | None,
    delete_queued: Callable[[str], bool],
    warn: Callable[[str], None],
) -> bool:
    """-d QID as Postfix's delete_one: maildrop/ first (when it is searched), then the
    queues, and all that twice before it gives up (a file moved meanwhile): a message by
    that name in maildrop/ is the one deleted, what is in the queue stays."""
    for _pass in range(2):
        if maildrop is not None and _remove_ready(maildrop, qid, warn):
            return True
        if delete_queued(qid):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run postsuper with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, rest = getopt.getopt(args, "c:d:e:f:h:H:r:psSv")
    except getopt.GetoptError as e:
        print(
            f"{PROG}: fatal: usage: {PROG} [-c config_dir] [-d|-h|-H|-r id] [queue] ({e})",
            file=sys.stderr,
        )
        return 1
    config_dir = None
    actions: dict[str, list[str] | str] = {}
    stdin_ids: list[str] | None = None
    for flag, value in opts:
        if flag == "-c":
            config_dir = value
        elif flag in _FLAG or flag == "-f":
            if value == "-":
                if stdin_ids is None:
                    stdin_ids = [line.strip() for line in sys.stdin if line.strip()]
                ids = stdin_ids
            else:
                ids = [value]
            # -f is -e and -H together.
            for action in ("expire", "release") if flag == "-f" else (_FLAG[flag],):
                if value == "ALL":
                    actions[action] = "ALL"
                    continue
                current = actions.setdefault(action, [])
                if isinstance(current, list):
                    current.extend(ids)
    # As Postfix's postsuper: any number of queues, each checked before anything is done.
    queues = rest or None
    for queue in rest:
        if queue not in NAMED_QUEUES:
            print(f"{PROG}: fatal: invalid directory name: {queue}", file=sys.stderr)
            return 1
    try:
        cfg = load_config(config_dir, master_cf=False, stderr_as=PROG)
    except ConfigError as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    if refuse_maillog_file(cfg, PROG):
        return 1
    log = get_logger(PROG, cfg)

    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr)
        log.info(text)

    def warn(text: str) -> None:
        print(f"{PROG}: warning: {text}", file=sys.stderr)
        log.warning(text)

    for action, named in actions.items():
        if isinstance(named, list):
            for qid in named:
                if not queue_id_ok(qid):
                    warn(f"invalid mail queue id: {qid}")
            actions[action] = [q for q in named if queue_id_ok(q)]

    counts: dict[str, int] = {}
    try:
        state = QueueState(cfg, lock=True)
    except QueueBusy:
        state = None

    def change(action: str, ids: list[str] | str) -> list[str]:
        if state is not None:
            return apply(state, action, ids, queues)
        try:
            reply = control.request(
                cfg, {"op": "super", "action": action, "ids": ids, "queues": queues}
            )
        except control.QmgrDown:
            raise _Refused("the queue is locked by another process") from None
        if not reply.get("ok"):
            raise _Refused(str(reply.get("error")))
        return [str(qid) for qid in reply.get("ids", [])]

    # Postfix's postsuper deletes in maildrop/ too, before the queues; no state writer is
    # needed there.
    maildrop = maildrop_dir(cfg.path("queue_directory")) if in_queues("maildrop", queues) else None
    try:
        for action in ORDER:
            if action not in actions:
                continue
            named = actions[action]
            if action == "delete" and named == "ALL":
                counts[action] = _delete_all_maildrop(maildrop, warn) if maildrop else 0
                counts[action] += len(change(action, named))
            elif action == "delete":
                counts[action] = 0
                for qid in named:
                    if _delete_one(qid, maildrop, lambda q: bool(change("delete", [q])), warn):
                        say(f"{qid}: {DONE[action]}")
                        counts[action] += 1
            else:
                changed = change(action, named)
                if named != "ALL":
                    for qid in changed:
                        say(f"{qid}: {DONE[action]}")
                counts[action] = len(changed)
    except _Refused as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    except _Fatal as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        log.fatal(str(e))
    if state is not None:
        state.reclaim()
        state.close()
    for action in ORDER:
        if action in counts:
            say(f"{SUMMARY[action]}: {_count(counts[action])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
