"""postfix(1) / oxipost: control the mail system.

    oxipost [-c config_dir] [-v] start | start-fg | stop | quick-stop | abort | reload | status
                          | check | flush | drain | logrotate | set-permissions [name=value ...]
                          | tls subcommand ...

start runs master in the background; start-fg keeps it in the foreground (make run uses
it); stop and abort end it (abort kills the services at once; quick-stop stops it so that
the next start skips check); reload re-reads main.cf and master.cf without dropping
listeners; status says whether it runs; check validates the
configuration and creates missing directories; flush asks qmgr to retry deferred mail;
drain kills master and lets the services finish their work (see drain()); logrotate
rotates maillog_file as postfix-script does (see logrotate()); set-permissions saves the
installation parameters given as name=value, creates what is missing and sets ownership
and modes as below. (upgrade-configuration, which Postfix's post-install uses to add its
daemons' services to master.cf, is not implemented: it is refused as an unknown command.)

Without -c or MAIL_CONFIG, a configuration whose multi_instance_directories lists
secondary instances hands the command to multi_instance_wrapper, as Postfix's postfix(1)
does ("multi-instance support is requested, but multi_instance_wrapper is empty" when
unset); the wrapper `${command_directory}/postmulti -p --` that `postmulti -e init` sets
is our postmulti (oxipost.cli.postmulti), which runs `postfix -- COMMAND` per instance.

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
from collections.abc import Callable, Sequence

from oxipost.cli import postfix_tls
from oxipost.cli.postdrop import SETGID_DOORS, trusted_paths, untrusted
from oxipost.config import Config, ConfigError, load_config, maincf, params
from oxipost.log import Logger, get_logger, maillog_file_refused
from oxipost.master.master import Master, read_pid
from oxipost.printable import printable
from oxipost.qmgr.queue import PRIVATE_QUEUE_DIRS, QUEUE_DIRS

USAGE = "usage: postfix [-c config_dir] [-Dv] command"
POST_INSTALL_USAGE = """Usage: post-install [name=value] command
    create-missing          Create missing queue directories.
    upgrade-source          When installing or upgrading from source code.
    upgrade-package         When installing or upgrading from pre-built package.
    first-install-reminder  Remind of mandatory first-time configuration steps.
    name=value              Specify an installation parameter"."""
# What postfix(1) says at each command while compatibility_level keeps older defaults.
COMPAT_NOTICE = (
    "Postfix is using backwards-compatible default settings",
    "See http://www.postfix.org/COMPATIBILITY_README.html for details",
    f'To disable backwards compatibility use "postconf compatibility_level='
    f'{params.LAST_COMPAT_LEVEL}" and "postfix reload"',
)
# The commands that create what is missing and set permissions (check() as root).
_SETS_PERMISSIONS = ("check", "start", "start-fg", "set-permissions")
# quick-stop's mark in the queue directory, which the next start consumes.
QUICK_START = "quick-start"
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

    def __init__(self, cfg: Config, name: str = "postfix-script") -> None:
        self.log: Logger = get_logger(name, cfg, echo_stderr=on_terminal())

    def info(self, text: str) -> None:
        self.log.info(text)

    def warning(self, text: str) -> None:
        self.log.warning(text)

    def error(self, text: str) -> None:
        self.log.error(text)

    def fatal(self, text: str) -> int:
        try:
            self.log.fatal(text)
        except SystemExit as e:
            return int(e.code or 1)


def check(cfg: Config, script: Script) -> int:
    """Create the directories the configuration names; warn as postfix check does; as
    root, set the permissions too."""
    for warning in cfg.warnings():
        script.log.warning(warning)
    status = create_missing(cfg, script)
    if status or os.geteuid() != 0:
        return status
    return set_permissions(cfg, script)


def create_missing(cfg: Config, script: Script) -> int:
    """post-install create-missing: the queue, data and log directories, made if missing."""
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
    return 0


def _mail_owner(cfg: Config) -> pwd.struct_passwd:
    """mail_owner's passwd entry; KeyError with its name if there is none."""
    try:
        return pwd.getpwnam(cfg.get("mail_owner"))
    except KeyError:
        raise KeyError(cfg.get("mail_owner")) from None


def _create_maillog(path: str, pw: pwd.struct_passwd) -> None:
    """maillog_file, mail_owner's: every process appends to it itself (there is no
    postlogd), so the file, not its directory (which may be /var/log), is theirs."""
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    os.chown(path, pw.pw_uid, pw.pw_gid)


def set_permissions(cfg: Config, script: Script) -> int:
    """The ownership and modes of postfix-files, adapted to oxipost (see the module
    docstring): what postfix set-permissions sets, and check and start as root."""
    try:
        pw = _mail_owner(cfg)
    except KeyError as e:
        return script.fatal(f"unknown mail_owner user: {e.args[0]}")
    queue = cfg.path("queue_directory")
    maillog = cfg.get("maillog_file")
    if maillog and not maillog.startswith("/dev/"):
        _create_maillog(os.path.abspath(maillog), pw)
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
    quick = os.path.join(cfg.path("queue_directory"), QUICK_START)
    if os.path.exists(quick):
        # After quick-stop: the configuration was checked when it last started.
        os.unlink(quick)
    else:
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
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # A master that exits first (its fatal error is in the log) has failed: no need to
    # wait out START_WAIT for its pid file.
    _wait_for(lambda: read_pid(cfg) is not None or proc.poll() is not None, START_WAIT)
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


def drain(cfg: Config, script: Script) -> int:
    """postfix-script's drain: master is killed (SIGKILL), and the services finish what
    they are doing and exit. Postfix's notice master's death by themselves; ours are told,
    with the SIGHUP by which a reload drains them, sent to each service master started
    (not to its process group: what a service runs, spawn's command, must not get it)."""
    pid = read_pid(cfg)
    if pid is None:
        return script.fatal("the Postfix mail system is not running")
    script.info("stopping the Postfix mail system")
    services = _children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: read_pid(cfg) is None, GONE_WAIT)
    for service in services:
        with contextlib.suppress(ProcessLookupError):
            os.kill(service, signal.SIGHUP)
    return 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The command name, in parentheses, may hold anything: read after it.
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


# The installation parameters post-install saves to main.cf when given as name=value
# (MOST_PARAMETERS); other names given set nothing.
INSTALL_PARAMETERS = frozenset(
    "command_directory daemon_directory data_directory html_directory mail_owner mailq_path"
    " manpage_directory newaliases_path queue_directory readme_directory sample_directory"
    " sendmail_path setgid_group shlib_directory meta_directory".split()
)


def post_install(cfg: Config, script: Script, config_dir: str | None, args: list[str]) -> int:
    """postfix set-permissions [name=value ...]: post-install's set-permissions. A
    name=value among the installation parameters is saved to main.cf first (as
    post-install does when one differs from main.cf's), then the missing directories are
    made and the ownership and modes set (root only: others cannot chown)."""
    post_install = os.path.join(cfg.get("daemon_directory"), "post-install")
    updates: dict[str, str | None] = {}
    for arg in args:
        if any(c in " \t" for c in arg):
            print(f"{post_install}: Error: argument contains whitespace: '{arg}'")
            return 1
        name, eq, value = arg.partition("=")
        if not eq:
            print(f"{post_install}: Error: {POST_INSTALL_USAGE}", file=sys.stderr)
            return 1
        if name in INSTALL_PARAMETERS:
            updates[name] = value
    if any(cfg.settings.get(name, cfg.default(name)) != v for name, v in updates.items()):
        maincf.edit(cfg.main_cf, updates)
        cfg = load_config(config_dir)
    status = create_missing(cfg, script)
    if status:
        return status
    if os.geteuid() != 0:
        return script.fatal("set-permissions requires root privileges")
    return set_permissions(cfg, script)


def logrotate(cfg: Config, script: Script, args: list[str]) -> int:
    """postfix-script's logrotate: maillog_file renamed with the maillog_file_rotate_suffix
    date (strftime, as date(1) formats it), a new one made (mail_owner's, as root: there
    is no postlogd to make it), master told to reload so that every process writes to the
    new one, and a second later maillog_file_compressor run on the old one. Its messages
    and its failures as the script's: "logfile 'FILE' rotation failed: ERRORS" with what
    mv or the compressor said."""
    if args:
        return script.fatal("usage postfix logrotate (no arguments)")
    values = {}
    for name in ("maillog_file", "maillog_file_compressor", "maillog_file_rotate_suffix"):
        values[name] = cfg.get(name)
        if not values[name]:
            return script.fatal(f"empty '{name}' parameter value - logfile rotation failed")
    maillog = values["maillog_file"]
    if maillog.startswith("/dev/"):
        return script.fatal(f"not rotating '{maillog}'")
    # The path every process of ours opens (log.get_logger).
    path = os.path.abspath(maillog)
    rotated = f"{path}.{time.strftime(values['maillog_file_rotate_suffix'])}"
    errors = _run(["mv", path, rotated])
    if errors is None:
        try:
            if os.geteuid() == 0:
                _create_maillog(path, _mail_owner(cfg))
            pid = read_pid(cfg)
            if pid is not None:
                os.kill(pid, signal.SIGHUP)
        except (OSError, KeyError) as e:
            errors = str(e)
    if errors is None:
        time.sleep(1)
        errors = _run([values["maillog_file_compressor"], rotated])
    if errors is not None:
        return script.fatal(f"logfile '{maillog}' rotation failed: {errors}")
    return 0


def _run(argv: list[str]) -> str | None:
    """None if argv succeeds, else what it said (on stdout and stderr, as the script's
    backquotes take it, the last newline dropped)."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as e:
        return f"{argv[0]}: {e.strerror}"
    if proc.returncode == 0:
        return None
    return (proc.stdout + proc.stderr).rstrip("\n")


def _hand_off(cfg: Config, args: list[str], say: Callable[[str, str], None]) -> int:
    """Run multi_instance_wrapper with the command, as postfix(1) execs it; postmulti as
    the wrapper is ours."""
    wrapper = cfg.get("multi_instance_wrapper").split()
    if not wrapper:
        say("fatal", "multi-instance support is requested, but multi_instance_wrapper is empty")
        return 1
    if os.path.basename(wrapper[0]) == "postmulti":
        wrapper = [sys.executable, "-m", "oxipost.cli.postmulti", *wrapper[1:]]
    try:
        os.execvp(wrapper[0], [*wrapper, *args])
    except OSError as e:
        say("fatal", f"{wrapper[0]}: {e.strerror}")
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
        if opt == "--":
            break  # postmulti -p runs `postfix -- COMMAND`
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
    # postfix(1) itself: without its configuration it logs to syslog, and like its fatal
    # errors, its warnings (about main.cf, about the values it checks) reach only a terminal.
    own_log = get_logger("postfix")

    def say(severity: str, text: str) -> None:
        if on_terminal():
            label = f"{severity}: " if severity else ""
            print(f"postfix: {label}{printable(text)}", file=sys.stderr)
        if severity == "fatal":
            own_log.fatal_line(text)
        elif severity:
            own_log.warning(text)
        else:
            own_log.info(text)

    try:
        cfg = load_config(config_dir, stderr_as="postfix" if on_terminal() else None)
        if os.geteuid() == 0 and command in _SETS_PERMISSIONS:
            # Made before Postfix's checks would refuse it missing, as Debian's postinst
            # makes it before any postfix(1) command runs.
            with contextlib.suppress(KeyError):
                _setgid_group(cfg.get("setgid_group"))
        params.check_startup(cfg, lambda text: say("warning", text), command=True)
        refused = maillog_file_refused(cfg)
        if refused is not None:
            say("fatal", refused)
            return 1
        if params.backwards_compatible(cfg):
            for line in COMPAT_NOTICE:
                say("", line)
    except ConfigError as e:
        if not e.in_master_cf:
            for warning in e.warnings:
                say("warning", warning)
            say("fatal", str(e))
            return 1
        # postfix-script's first postconf fails on it (main.cf alone has read fine).
        cfg = load_config(config_dir, master_cf=False)
        postconf = os.path.join(cfg.get("command_directory"), "postconf")
        print(f"{postconf}: fatal: {e}", file=sys.stderr)
        return Script(cfg).fatal(f"cannot execute {postconf}!")
    # As Postfix's postfix(1): without -c or MAIL_CONFIG, a primary instance with
    # secondaries hands the command to its multi-instance manager.
    if config_dir is None and "MAIL_CONFIG" not in os.environ:
        if cfg.get_list("multi_instance_directories"):
            return _hand_off(cfg, args, say)
    script = Script(cfg)
    if command in ("start", "start-fg"):
        return start(cfg, config_dir, script, foreground=command == "start-fg")
    if command == "stop":
        return stop(cfg, script)
    if command == "quick-stop":
        # postfix-script's: stop, then mark the queue so that the next start skips the
        # checks; its status is the mark's, whatever stop said.
        stop(cfg, script)
        with open(os.path.join(cfg.path("queue_directory"), QUICK_START), "a"):
            pass
        return 0
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
    if command == "drain":
        return drain(cfg, script)
    if command == "set-permissions":
        return post_install(cfg, script, config_dir, args[1:])
    if command == "logrotate":
        return logrotate(cfg, script, args[1:])
    if command == "tls":
        return postfix_tls.run(cfg, Script(cfg, "postfix-tls-script"), args[1:])
    if command == "flush":
        # As Postfix's postfix-script: flush is postqueue -f.
        cmd = [sys.executable, "-m", "oxipost.cli.postqueue", "-c", cfg.config_dir, "-f"]
        return subprocess.call(cmd)
    # postfix(1) hands any command to postfix-script, which refuses it.
    return script.fatal(f"unknown command: '{command}'. {SCRIPT_USAGE}")


if __name__ == "__main__":
    sys.exit(main())
