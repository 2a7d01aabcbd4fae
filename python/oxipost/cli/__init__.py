"""The administrator's commands, with Postfix's names, flags, output and exit codes."""

import sys
import time


def fatal(prog: str, text: str, status: int = 1) -> int:
    """Say `PROG: fatal: text` on stderr and pause a second, as Postfix's msg_fatal does
    in its commands (postlog, postlock); returns the exit status."""
    print(f"{prog}: fatal: {text}", file=sys.stderr, flush=True)
    time.sleep(1)
    return status
