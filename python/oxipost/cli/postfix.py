"""postfix(1) / oxipost: control the mail system.

    oxipost [-c config_dir] [-v] start | start-fg | stop | abort | reload | status | check
                                 | flush

start runs master in the background; start-fg keeps it in the foreground (make run uses
it); stop and abort end it (abort kills the services at once); reload re-reads main.cf and
master.cf without dropping listeners; status says whether it runs; check validates the
configuration and creates missing directories; flush asks qmgr to retry deferred mail.

check (and start) as root also sets the permissions of postfix-files (Debian's for
maildrop/): the queue is mail_owner's, except pid/ (root's), maildrop/
(`$mail_owner:$setgid_group` 1730: local users' postdrop writes there, nobody but pickup
lists it) and public/ (`$mail_owner:$setgid_group` 0710); the setgid_group is created if
missing (`groupadd --system`, as Debian's postinst does), and the set-gid doors of postdrop
and postqueue become `root:$setgid_group` 2755 when nothing they run can be replaced by
others than root (see oxipost.cli.postdrop).

Messages are postfix-script's, in the log and, when stderr is a terminal, on stderr too
(postlog(1) writes there only then: `postfix reload` from cron prints nothing, so cron mails
nothing): `postfix/postfix-script: starting the Postfix mail system`, `... the Postfix mail
system is running: PID: N`, `... fatal: the Postfix mail system is not running` (exit 1),
`... fatal: the Postfix mail system is already running` (exit 1), `refreshing the Postfix
mail system`, `aborting the Postfix mail system`. The exit status is the same either way.
postfix(1)'s own `postfix: fatal: ...` (main.cf unreadable, a bad option) also reaches
stderr only on a terminal, and is logged as `postfix/postfix`. A missing or unknown command
is postfix-script's `fatal: unknown command: 'CMD'. Usage: postfix start (or stop, ...)`
(exit 1); words after the command are ignored, as postfix-script reads $1 alone.

stop is postfix-script's sequence: `stopping the Postfix mail system`, SIGTERM to master,
then five looks a second apart, each one that still finds master running logging `waiting
for the Postfix mail system to terminate`; master gone ends it (exit 0). After the fifth,
`warning: stopping the Postfix mail system with force`, SIGKILL to master's process group,
and exit status 1.
- The status is Debian's Postfix 3.7's: its script reads the pid with `awk '{ print $1;
  exit 0 } END { exit 1 }'`, whose END always exits 1, so its `kill -9` never runs and the
  script ends with that 1. We do send the SIGKILL the script means to send (a master left
  stopped would otherwise hold the queue until someone finds it); the status still tells a
  caller that master had to be forced.
- A look here is a second of watching for master to go, where the script's is an instant
  check followed by a second's sleep: Postfix's master exits as soon as it has signalled
  its children, before the script's first check, while ours waits for its services to exit
  (a tenth of a second or so), which an instant first check would always report as one
  "waiting" line. The count, the bound (five seconds) and the lines are the script's.

Every command first asks postconf about the configuration, as postfix-script does: a
master.cf that postconf refuses stops it there (reload signals nothing, start starts
nothing), with postconf's `$command_directory/postconf: fatal: ...` on stderr and
`postfix/postfix-script: fatal: cannot execute $command_directory/postconf!`.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence

from oxipost.cli.postdrop import SETGID_DOORS, trusted_paths, untrusted
from oxipost.config import Config, ConfigError, load_config
from oxipost.log import Logger, get_logger
from oxipost.master.master import Master, read_pid
from oxipost.qmgr.queue import PRIVATE_QUEUE_DIRS, QUEUE_DIRS

USAGE = "usage: postfix [-c config_dir] [-Dv] command"
# postfix-script's text for a missing or unknown command, word for word.
SCRIPT_USAGE = (
    "Usage: postfix start (or stop, reload, abort, flush, check, status, set-permissions,"
    " upgrade-configuration, logrotate)"
)
# How long start waits for the new master to take its lock.
START_WAIT = 15.0
# postfix-script's stop: this many looks for master, STOP_LOOK seconds each, then force.
STOP_LOOKS = 5
STOP_LOOK = 1.0
# How long abort, and stop after its SIGKILL, wait for master's lock to go.
GONE_WAIT = 10.0


def on_terminal() -> bool:
    """Whether stderr is a terminal: postlog(1) and postfix(1) write there only then (stdin
    does not count)."""
    return os.isatty(2)


class Script:
    """postfix-script's voice: each message in the log, and on stderr when it is a terminal."""

    def __init__(self, cfg: Config) -> None:
        self.log: Logger = get_logger("postfix-script", cfg, echo_stderr=on_terminal())

    def info(self, text: str) -> None:
        self.log.info(text)

    def warning(self, text: str) -> None:
        self.log.warning(text)

    def fatal(self, text: str) -> int:
        try:
            self.log.fatal(text)
        except SystemExit as e:
            return int(e.code or 1)


def check(cfg: Config, script: Script) -> int:
    """Create the directories the configuration names; warn as postfix check does."""
    for warning in cfg.warnings():
        script.log.warning(warning)
    queue = cfg.path("queue_directory")
    dirs = [queue, cfg.path("data_directory")]
    maillog = cfg.get("maillog_file")
    if maillog:
        dirs.append(os.path.dirname(os.path.abspath(maillog)))
    dirs += [os.path.join(queue, sub) for sub in QUEUE_DIRS]
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            return script.fatal(f"cannot create directory {d}: {e.strerror}")
    if os.geteuid() == 0:
        # Services run as mail_owner: the queue, data and log directories must be theirs,
        # as Postfix's post-install sets them.
        try:
            pw = pwd.getpwnam(cfg.get("mail_owner"))
        except KeyError:
            return script.fatal(f"unknown mail_owner user: {cfg.get('mail_owner')}")
        if maillog:
            # Every process appends to maillog_file itself (there is no postlogd): the file,
            # not its directory (which may be /var/log), becomes mail_owner's.
            path = os.path.abspath(maillog)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
            os.chown(path, pw.pw_uid, pw.pw_gid)
        try:
            group = _setgid_group(cfg.get("setgid_group"))
        except KeyError as e:
            return script.fatal(f"unknown setgid_group group: {e.args[0]}")
        # Except, as in Postfix's postfix-files: queue_directory itself and pid/, root's
        # (master keeps its files in pid/, and the privileged agents read master.cf's copy
        # there: a mail_owner able to rename pid/ away could hand them another), and what
        # local users' postdrop writes into maildrop/ (theirs).
        pid_dir, maildrop, public = (os.path.join(queue, d) for d in ("pid", "maildrop", "public"))
        data = cfg.path("data_directory")
        for top in (queue, data):
            for root, subdirs, files in os.walk(top):
                if root in (pid_dir, maildrop):
                    subdirs.clear()
                    continue
                for name in [root] + [os.path.join(root, n) for n in subdirs + files]:
                    if name not in (queue, pid_dir, maildrop):
                        os.lchown(name, pw.pw_uid, pw.pw_gid)
        os.chown(queue, 0, 0)
        for path, mode in ((queue, 0o755), (pid_dir, 0o755), (data, 0o700)):
            os.chmod(path, mode)
        for sub in PRIVATE_QUEUE_DIRS:
            os.chmod(os.path.join(queue, sub), 0o700)
        for path, mode in ((maildrop, 0o1730), (public, 0o710)):
            os.chown(path, pw.pw_uid, group)
            os.chmod(path, mode)
        _install_doors(group, script)
    return 0


def _setgid_group(name: str) -> int:
    """The gid of setgid_group, created as a system group when missing; KeyError if not."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], stdout=subprocess.DEVNULL, check=False)
    return grp.getgrnam(name).gr_gid


def _install_doors(group: int, script: Script) -> None:
    """Give the set-gid doors (postdrop, postqueue) their privilege, or take it away when
    others than root could replace a door or what it runs (postfix-script's warnings)."""
    doors = [door for door in SETGID_DOORS if os.path.exists(door)]
    for door in SETGID_DOORS.keys() - set(doors):
        script.log.warning(f"not found: {door} (make develop builds it)")
    if not doors:
        return
    warnings = list(untrusted(trusted_paths()))
    for warning in warnings:
        script.log.warning(warning)
    for door in doors:
        if warnings:
            os.chmod(door, 0o755)
            script.log.warning(f"not set-gid: {door}: local users cannot {SETGID_DOORS[door]}")
            continue
        st = os.stat(door)
        if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, group, 0o2755):
            # chown clears the set-gid bit: the mode comes after it.
            os.chown(door, 0, group)
            os.chmod(door, 0o2755)


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def start(cfg: Config, config_dir: str | None, script: Script, foreground: bool) -> int:
    if read_pid(cfg) is not None:
        return script.fatal("the Postfix mail system is already running")
    status = check(cfg, script)
    if status:
        return status
    script.info("starting the Postfix mail system")
    if foreground:
        master = Master(config_dir)
        return master.run()
    argv = [sys.executable, "-m", "oxipost.master"]
    if config_dir:
        argv += ["-c", config_dir]
    master = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # A master that exits first (its fatal error is in the log) has failed: no need to
    # wait out START_WAIT for its pid file.
    _wait_for(lambda: read_pid(cfg) is not None or master.poll() is not None, START_WAIT)
    if read_pid(cfg) is None:
        return script.fatal("mail system startup failed")
    return 0


def signal_master(cfg: Config, script: Script, sig: int, message: str) -> int:
    """postfix-script's reload and abort: signal a running master. abort then waits,
    silently, for master to go (the script does not; a start right after should not find
    the old master's lock)."""
    pid = read_pid(cfg)
    if pid is None:
        return script.fatal("the Postfix mail system is not running")
    script.info(message)
    os.kill(pid, sig)
    if sig == signal.SIGQUIT:
        _wait_for(lambda: read_pid(cfg) is None, GONE_WAIT)
    return 0


def stop(cfg: Config, script: Script) -> int:
    """postfix-script's stop (see the module docstring)."""
    pid = read_pid(cfg)
    if pid is None:
        return script.fatal("the Postfix mail system is not running")
    script.info("stopping the Postfix mail system")
    os.kill(pid, signal.SIGTERM)
    for _ in range(STOP_LOOKS):
        if _wait_for(lambda: read_pid(cfg) is None, STOP_LOOK):
            return 0
        script.info("waiting for the Postfix mail system to terminate")
    script.warning("stopping the Postfix mail system with force")
    # The process group that start gave master (its session) holds every service it
    # started; a master started otherwise (start-fg under a shell) is killed alone.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: read_pid(cfg) is None, GONE_WAIT)
    return 1


def _usage(text: str) -> int:
    """postfix(1)'s own usage fatal: getopt's complaint always, the fatal at a terminal."""
    print(f"postfix: {text}", file=sys.stderr)
    if on_terminal():
        print(f"postfix: fatal: {USAGE}", file=sys.stderr)
    get_logger("postfix").fatal_line(USAGE)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the control command with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_dir: str | None = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "-c" and args:
            config_dir = args.pop(0)
        elif opt.startswith("-c") and len(opt) > 2:
            config_dir = opt[2:]
        elif opt == "-c":
            return _usage("option requires an argument -- 'c'")
        elif opt in ("-v", "-D"):
            continue
        else:
            return _usage(f"invalid option -- '{opt[1:2]}'")
    command = args[0] if args else ""
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        if not e.in_master_cf:
            # postfix(1) itself: without its configuration it logs to syslog.
            if on_terminal():
                print(f"postfix: fatal: {e}", file=sys.stderr)
            get_logger("postfix").fatal_line(str(e))
            return 1
        # postfix-script's first postconf fails on it (main.cf alone has read fine).
        cfg = load_config(config_dir, master_cf=False)
        postconf = os.path.join(cfg.get("command_directory"), "postconf")
        print(f"{postconf}: fatal: {e}", file=sys.stderr)
        return Script(cfg).fatal(f"cannot execute {postconf}!")
    script = Script(cfg)
    if command in ("start", "start-fg"):
        return start(cfg, config_dir, script, foreground=command == "start-fg")
    if command == "stop":
        return stop(cfg, script)
    if command == "abort":
        return signal_master(cfg, script, signal.SIGQUIT, "aborting the Postfix mail system")
    if command == "reload":
        return signal_master(cfg, script, signal.SIGHUP, "refreshing the Postfix mail system")
    if command == "status":
        pid = read_pid(cfg)
        if pid is None:
            script.info("the Postfix mail system is not running")
            return 1
        script.info(f"the Postfix mail system is running: PID: {pid}")
        return 0
    if command == "check":
        return check(cfg, script)
    if command == "flush":
        # As Postfix's postfix-script: flush is postqueue -f.
        cmd = [sys.executable, "-m", "oxipost.cli.postqueue", "-c", cfg.config_dir, "-f"]
        return subprocess.call(cmd)
    # postfix(1) hands any command to postfix-script, which refuses it.
    return script.fatal(f"unknown command: '{command}'. {SCRIPT_USAGE}")


if __name__ == "__main__":
    sys.exit(main())
