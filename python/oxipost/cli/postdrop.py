"""postdrop(1): write a message from standard input into the maildrop queue.

Usage: postdrop [-c config_dir] [-r] [-v]. Standard input is one maildrop record (what
sendmail produces, see oxipost.pickup.maildrop); it is checked and written durably and
atomically into $queue_directory/maildrop/, then pickup is woken.

Diagnostics (stderr, Postfix's wording): "postdrop: warning: uid=N: unexpected or
malformed record" (exit 69, EX_UNAVAILABLE... as Postfix, after which sendmail fails);
"postdrop: fatal: ..." on a write error (exit 75, EX_TEMPFAIL: the caller keeps the mail).
"""

from __future__ import annotations

import argparse
import os
import sys

from oxipost.config import ConfigError, load_config
from oxipost.pickup.maildrop import MaildropError, Submission, drop, wake_pickup

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75


def main(argv: list[str] | None = None) -> int:
    """Run postdrop with sys.argv; return the exit status."""
    parser = argparse.ArgumentParser(prog="postdrop", add_help=False)
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-r", action="store_true")
    parser.add_argument("-v", action="count", default=0)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_dir, master_cf=False)
    except ConfigError as e:
        print(f"postdrop: fatal: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    data = sys.stdin.buffer.read()
    try:
        sub = Submission.decode(data)
    except MaildropError:
        print(
            f"postdrop: warning: uid={os.getuid()}: unexpected or malformed record", file=sys.stderr
        )
        return EX_UNAVAILABLE
    sub.uid = os.getuid()
    top = cfg.path("queue_directory")
    try:
        drop(top, sub)
    except OSError as e:
        print(f"postdrop: fatal: uid={os.getuid()}: {e.strerror or e}", file=sys.stderr)
        return EX_TEMPFAIL
    wake_pickup(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
