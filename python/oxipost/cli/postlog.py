"""postlog(1): log text from the command line or standard input into the mail log.

    postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text...]

The text on the command line is one record (its words joined by spaces); with none, each
line of standard input is one (an empty line an empty record). Records go where the mail
system's own do (maillog_file, else syslog with syslog_facility), tagged `$syslog_name/postlog`
or with -t's tag as given, and to standard error as well when that is a terminal. The
priority (case does not matter) is info, warn or warning, error or err, fatal or crit, panic;
the last four are written with Postfix's "warning: ", "error: ", "fatal: ", "panic: ".
As Postfix 3.7's postlog, a fatal or panic record only pauses the command a second and it
still exits 0; -i (obsolete: the pid is always in the tag) and -v are accepted.

Diagnostics, on standard error only, exit 1 after a second's pause, as Postfix's:
`postlog: invalid option -- 'x'` then `postfix/postlog: fatal: usage: ...`;
`postfix/postlog: fatal: bad severity: "NAME"`; the configuration's own errors
(`postfix/postlog: fatal: open DIR/main.cf: No such file or directory`).
Deviation: Postfix's postlog is set-gid postdrop to reach postlogd(8); ours writes
maillog_file itself, so a user who may not write that file gets "cannot log to".
"""

from __future__ import annotations

import getopt
import sys
import time
from collections.abc import Sequence

from oxipost.cli import fatal
from oxipost.config import ConfigError, load_config
from oxipost.log import flush, get_logger, refuse_maillog_file

PROG = "postlog"
USAGE = f"usage: {PROG} [-c config_dir] [-i] [-p priority] [-t tag] [-v] [text]"
# postlog.c's severity names: the Logger method that writes each.
_SEVERITIES = {
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "fatal": "fatal_line",
    "crit": "fatal_line",
    "panic": "panic_line",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run postlog with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    default_tag = f"postfix/{PROG}"
    try:
        opts, words = getopt.getopt(args, "c:ip:t:v")
    except getopt.GetoptError as e:
        print(f"{PROG}: invalid option -- '{e.opt}'", file=sys.stderr)
        return fatal(default_tag, USAGE)
    o = dict(opts)
    try:
        cfg = load_config(o.get("-c"), master_cf=False)
    except ConfigError as e:
        return fatal(default_tag, str(e))
    if refuse_maillog_file(cfg, default_tag, stderr=sys.stderr.isatty()):
        return 1
    log = get_logger(PROG, cfg, echo_stderr=sys.stderr.isatty())
    if "-t" in o:
        log.tag = o["-t"]
    method = _SEVERITIES.get(o.get("-p", "info").lower())
    if method is None:
        return fatal(log.tag, f'bad severity: "{o["-p"]}"')
    record = getattr(log, method)
    if words:
        record(" ".join(words))
    else:
        # Bytes that are not UTF-8 are kept as surrogates, which the log writes as `?`.
        for line in sys.stdin.buffer:
            record(line.rstrip(b"\n").decode("utf-8", "surrogateescape"))
    flush()
    if method in ("fatal_line", "panic_line"):
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
