"""postkick(1): send a request to a service's socket or FIFO, for use in shell scripts.

    postkick [-c config_dir] [-v] class service request

The request string goes as is to $queue_directory/class/service (public or private; a
UNIX-domain socket, or a FIFO opened without waiting for a reader), as Postfix's
mail_trigger sends it. oxipost's pickup scans maildrop/ on any request, and qmgr takes
Postfix's trigger letters: A (scan all queues now: postqueue -f's flush), D, I, F, W (a
wakeup).

Diagnostics and exit status, as Postfix 3.7's: "postkick: warning: unable to look up
CLASS/SERVICE: REASON" (not there) or "CLASS/SERVICE is not a socket or a fifo", then
"postkick: warning: Cannot contact class CLASS service SERVICE - perhaps the mail system
is down" (also alone, for a socket nothing listens on), exit 1; usage and configuration
errors are fatal (exit 1). -v is accepted.
"""

from __future__ import annotations

import getopt
import os
import socket
import stat
import sys
from collections.abc import Sequence

from oxipost.cli import fatal
from oxipost.config import ConfigError, load_config

PROG = "postkick"
USAGE = f"usage: {PROG} [-c config_dir] [-v] class service request"


def _warning(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def _trigger(path: str, name: str, request: bytes) -> bool:
    """Send request to the socket or FIFO at path (named `name` in warnings); whether it
    went. As Postfix's triggers, it does not wait for the service to act on it."""
    try:
        st = os.stat(path)
    except OSError as e:
        _warning(f"unable to look up {name}: {e.strerror}")
        return False
    try:
        if stat.S_ISFIFO(st.st_mode):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, request)
            finally:
                os.close(fd)
            return True
        if stat.S_ISSOCK(st.st_mode):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                s.sendall(request)
            return True
    except OSError:
        return False  # Postfix's triggers say why only when verbose
    _warning(f"{name} is not a socket or a fifo")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run postkick with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, rest = getopt.getopt(args, "c:v")
    except getopt.GetoptError as e:
        print(f"{PROG}: invalid option -- '{e.opt}'", file=sys.stderr)
        return fatal(PROG, USAGE)
    if len(rest) != 3:
        return fatal(PROG, USAGE)
    klass, service, request = rest
    try:
        cfg = load_config(dict(opts).get("-c"), master_cf=False)
    except ConfigError as e:
        return fatal(PROG, str(e))
    name = f"{klass}/{service}"
    path = os.path.join(cfg.path("queue_directory"), name)
    if _trigger(path, name, os.fsencode(request)):
        return 0
    _warning(f"Cannot contact class {klass} service {service} - perhaps the mail system is down")
    return 1


if __name__ == "__main__":
    sys.exit(main())
