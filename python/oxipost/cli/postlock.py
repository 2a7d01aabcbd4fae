"""postlock(1): lock a mail folder for exclusive access and run a command meanwhile.

    postlock [-c config_dir] [-l lock_style] [-v] file command...

The file is opened for appending (created 0600 when missing) and locked as local(8) locks a
mailbox it delivers to (the same Rust code: oxipost._core.mailbox.MboxLock), with
mailbox_delivery_lock's methods or -l's, deliver_lock_attempts, deliver_lock_delay and
stale_lock_time; the command then runs directly (no shell) as this user, and the locks are
let go when it ends. import_environment's name=value entries are set for it.

Exit status, as Postfix 3.7's postlock: the command's; 1 when it died of a signal or could
not be run ("PROG: fatal: execvp CMD: REASON"); 75 (EX_TEMPFAIL) when postlock could not do
its part: usage, the configuration, 'unknown mailbox_delivery_lock value "X" in "Y"', or the
lock ("PROG: fatal: open file FILE: unable to create lock file FILE.lock: File exists",
"...: unable to lock for exclusive access: Resource temporarily unavailable"). PROG is the
command's name as it was run (argv[0]), as in Postfix's messages; -v is accepted.
"""

from __future__ import annotations

import getopt
import os
import subprocess
import sys
from collections.abc import Sequence

from oxipost._core import mailbox
from oxipost.cli import fatal
from oxipost.config import ConfigError, load_config
from oxipost.config.params import check_mask
from oxipost.delivery.mailstore import lock_options
from oxipost.environ import clean_env

EX_TEMPFAIL = 75


def main(argv: Sequence[str] | None = None) -> int:
    """Run postlock with argv (default sys.argv[1:]); return the exit status."""
    prog = sys.argv[0] if argv is None else "postlock"
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: {prog} [-c config_dir] [-l lock_style] [-v] folder command..."
    try:
        # Options end at the first other word: the command's own are its.
        opts, rest = getopt.getopt(args, "c:l:v")
    except getopt.GetoptError as e:
        print(f"{prog}: invalid option -- '{e.opt}'", file=sys.stderr)
        return fatal(prog, usage, EX_TEMPFAIL)
    if len(rest) < 2:
        return fatal(prog, usage, EX_TEMPFAIL)
    o = dict(opts)
    folder, command = rest[0], rest[1:]
    overrides = {"mailbox_delivery_lock": o["-l"]} if "-l" in o else None
    try:
        cfg = load_config(o.get("-c"), master_cf=False, main_cf_overrides=overrides)
        check_mask(cfg, "mailbox_delivery_lock")
    except ConfigError as e:
        return fatal(prog, str(e), EX_TEMPFAIL)
    # Postfix's update_env: import_environment's name=value entries, over what is set.
    env = {**os.environ, **clean_env(cfg.get_list("import_environment"), {})}
    try:
        locks = lock_options(cfg, "mailbox_delivery_lock")
        held = mailbox.MboxLock(folder, **locks)  # type: ignore[arg-type]
    except OSError as e:
        return fatal(prog, f"open file {folder}: {e}", EX_TEMPFAIL)
    try:
        try:
            done = subprocess.run(command, env=env)
        except OSError as e:
            # Postfix's child reports its failed execvp as a fatal error of its own: exit 1.
            return fatal(prog, f"execvp {command[0]}: {e.strerror}", 1)
        return done.returncode if done.returncode >= 0 else 1
    finally:
        held.release()


if __name__ == "__main__":
    sys.exit(main())
