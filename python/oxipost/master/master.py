"""master(8): the resident process that runs the mail system.

Reads master.cf, binds every listener itself (inet `host:port`/`port` services; unix
services under $queue_directory/{private,public}/NAME), and starts each service whose
command oxipost runs as a process: several workers for an inet service
(`smtpd_worker_processes`) sharing the inherited socket, one otherwise. The privileged
delivery agents (local, virtual, pipe) and showq start on demand, as Postfix's master starts
every daemon: master keeps their socket and starts the process when a client (qmgr,
postqueue) waits on it with none running; the process ends by itself after max_idle. maxproc
of an inet service is divided among its workers as their session cap. A worker that dies is
restarted; one that fails before it has served a request or run its service for a second
is throttled for `service_throttle_time`, as Postfix's master throttles a process whose
use_count is 0. The master.cf wakeup column becomes a
SIGUSR1 to the service every N seconds. Master and its services run as SCHED_BATCH (see
`_batch_scheduling`).

SIGTERM stops everything. SIGHUP reloads: main.cf and master.cf are read again, listeners
that still exist stay bound (clients keep their connections; new ones keep being accepted),
old workers are told to drain (SIGHUP) and a new generation starts at once. A configuration
master cannot run is fatal to the reload as to Postfix's master: `reload -- ...` then
`fatal: FILE: line N: ...`, and master stops its children and exits (postfix reload has
already refused, before signalling, what postconf refuses). SIGQUIT aborts: children are
killed.

Master keeps of its environment only what import_environment names (name=value entries set
the value; PYTHONPATH and PYTHONHOME stay, see oxipost.environ), so every service inherits
that, as Postfix's master does.

Master writes $queue_directory/pid/master.pid and holds a lock on it; a second master
refuses: `fatal: the Postfix mail system is already running`.

Log lines (Postfix's): `daemon started -- version V, configuration DIR`, `reload -- version
V, configuration DIR`, `terminating on signal 15`, `warning: process PATH pid N exit status
S`, `warning: process PATH pid N killed by signal S`, `warning: PATH: bad command startup --
throttling`, `warning: duplicate master.cf entry for service "NAME" (ENDPOINT) -- using the
last entry` (each time master.cf is read; the last entry runs); and once per entry oxipost
folds elsewhere or has not built.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from oxipost.config import Config, ConfigError, Service, load_config
from oxipost.durable import write_atomically
from oxipost.environ import import_environment
from oxipost.flow import FlowPipe
from oxipost.log import Logger, flush, get_logger, refuse_maillog_file
from oxipost.master.services import FOLDED, ON_DEMAND, SERVICES

# A worker that fails before its service has run this long, or served a request (see
# ServiceContext.used), is crash-looping: throttle it. The child tells master through a pipe
# once it has (interpreter start-up and imports do not count, so a loaded machine does not
# turn a bad command into a restart loop).
STARTUP_GRACE = 1.0


class MasterError(Exception):
    """Master cannot run (Postfix's fatal message text)."""


def pid_file(cfg: Config) -> str:
    return os.path.join(cfg.path("queue_directory"), "pid", "master.pid")


def master_cf_copy(cfg: Config) -> str:
    """Where master keeps the master.cf it last loaded, for its service processes."""
    return os.path.join(cfg.path("queue_directory"), "pid", "master.cf")


def save_master_cf(cfg: Config) -> None:
    """Write master_cf_copy whole: a service started later reads the master.cf of this
    start or reload, whatever the file says by then."""
    write_atomically(
        master_cf_copy(cfg), cfg.master_cf_text.encode("utf-8", "surrogateescape"), 0o644
    )


def read_pid(cfg: Config) -> int | None:
    """The pid of the running master, or None when none holds the pid file's lock."""
    path = pid_file(cfg)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def inet_address(service: Service, cfg: Config) -> list[tuple[str, int]]:
    """The (host, port) pairs an inet service listens on: `host:port` or a port/service name
    on every inet_interfaces address."""
    name = service.name
    host, sep, port_text = name.rpartition(":")
    if port_text.isdigit():
        port = int(port_text)
    else:
        try:
            port = socket.getservbyname(port_text, "tcp")
        except OSError:
            raise MasterError(f"unknown service: {port_text}/tcp") from None
    if sep:
        return [(host.strip("[]") or "0.0.0.0", port)]
    interfaces = cfg.get_list("inet_interfaces")
    protocols = cfg.get("inet_protocols")
    hosts: list[str] = []
    for iface in interfaces:
        if iface == "all":
            hosts.append("::" if protocols in ("all", "ipv6") and socket.has_ipv6 else "0.0.0.0")
        elif iface in ("loopback-only", "localhost"):
            hosts.append("127.0.0.1")
        else:
            hosts.append(iface.strip("[]"))
    return [(h, port) for h in hosts]


def _bind_inet(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def _bind_unix(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    # As Postfix's unix_listen(): the socket itself is open to all and its directory decides
    # who reaches it. Bound by root, it would otherwise refuse the services that run as
    # mail_owner (smtpd could not wake qmgr over public/qmgr).
    os.chmod(path, 0o666)
    sock.listen(256)
    return sock


@dataclass
class Worker:
    service_key: str
    index: int
    proc: subprocess.Popen[bytes]
    # Read end of the pipe the child writes one byte to after STARTUP_GRACE in its service.
    ready_fd: int

    def survived_startup(self) -> bool:
        """Whether the child's service served a request or ran for STARTUP_GRACE
        (Postfix: its use_count is not 0)."""
        try:
            return os.read(self.ready_fd, 1) != b""
        except BlockingIOError:
            return False
        finally:
            os.close(self.ready_fd)


@dataclass
class Listener:
    key: str  # "inet:host:port" or "unix:path": what identifies it across reloads
    sock: socket.socket


@dataclass
class ServiceState:
    service: Service
    command_path: str
    listeners: list[Listener] = field(default_factory=list)
    workers: int = 1
    max_sessions: int = 0
    throttled_until: dict[int, float] = field(default_factory=dict)
    next_wakeup: float = 0.0
    on_demand: bool = False  # started when a client waits on its socket


class Master:
    def __init__(self, config_dir: str | None) -> None:
        self.config_dir = config_dir
        try:
            self.cfg = load_config(config_dir, as_master=True)
        except ConfigError as e:
            # Where the administrator looks, as Postfix's master logs it: main.cf alone
            # names the log.
            get_logger("master", load_config(config_dir, master_cf=False)).fatal(str(e))
        # Postfix's master reads main.cf before it knows maillog_file: what that warns of
        # goes to syslog as it starts, to the maillog at a reload.
        for warning in self.cfg.read_warnings():
            get_logger("master").warning(warning)
        # Checked here too, not only by postfix(1): a master started by hand (python -m
        # oxipost.master) would log anywhere. Postfix's master says it to syslog alone.
        if refuse_maillog_file(self.cfg, "master", stderr=False):
            flush()
            raise SystemExit(1)
        self.log: Logger = get_logger("master", self.cfg)
        self.listeners: dict[str, Listener] = {}
        self.states: dict[str, ServiceState] = {}
        self.workers: dict[int, Worker] = {}
        self.draining: list[subprocess.Popen[bytes]] = []
        self.noted: set[str] = set()
        self.pid_fd: int | None = None
        self.pending_signals: list[int] = []
        # A signal writes a byte here (signal.set_wakeup_fd), so wait() returns at once
        # instead of at its timeout: SIGTERM reaches the services without delay (postfix
        # stop waits for master as long as they take to exit, no longer), and a dead
        # worker is reaped and restarted at once.
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # in_flow_delay's token pipe: every service inherits both ends (Postfix's
        # MASTER_FLOW_READ/WRITE); one for master's life, so a reload keeps its tokens.
        self.flow = FlowPipe.create()

    # Start-up ----------------------------------------------------------------------------

    def lock_pid_file(self) -> None:
        path = pid_file(self.cfg)
        pid_dir = os.path.dirname(path)
        os.makedirs(pid_dir, exist_ok=True)
        if os.geteuid() == 0:
            # root's, as Postfix's postfix-files has it: the privileged agents read
            # master's copy of master.cf from here, which mail_owner must not replace.
            os.chown(pid_dir, 0, 0)
            os.chmod(pid_dir, 0o755)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MasterError("the Postfix mail system is already running") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid():>10}\n".encode())
        os.fsync(fd)
        self.pid_fd = fd

    def plan(self, cfg: Config) -> dict[str, ServiceState]:
        """Which services to run and how, from a (re)loaded configuration."""
        states: dict[str, ServiceState] = {}
        workers_default = max(1, cfg.get_int("smtpd_worker_processes"))
        process_limit = cfg.get_int("default_process_limit")
        daemon_dir = cfg.get("daemon_directory")
        seen: set[str] = set()
        disabled = _service_patterns(cfg.get("master_service_disable"))
        for svc in cfg.services:
            if disabled and _service_match(disabled, svc):
                continue  # as Postfix's master skips the entry before reading it
            # A service entered twice runs as its last entry, as Postfix's master_config
            # has it (Config.service answers that one too).
            if svc.ident in seen:
                self.log.warning(
                    f'duplicate master.cf entry for service "{svc.name}" ({svc.endpoint}) '
                    "-- using the last entry"
                )
                states.pop(svc.ident, None)
            seen.add(svc.ident)
            entry = SERVICES.get(svc.command)
            if entry is None:
                self._note_unrun(svc)
                continue
            state = ServiceState(svc, os.path.join(daemon_dir, svc.command))
            maxproc = svc.process_limit(process_limit)
            if svc.type == "inet":
                state.workers = workers_default if maxproc == 0 else min(workers_default, maxproc)
                if maxproc:
                    state.max_sessions = -(-maxproc // state.workers)
            else:
                state.max_sessions = maxproc
                state.on_demand = svc.command in ON_DEMAND
            states[svc.ident] = state
        return states

    def _note_unrun(self, svc: Service) -> None:
        note = f"{svc.key}:{svc.command}"
        if note in self.noted:
            return
        self.noted.add(note)
        where = FOLDED.get(svc.command)
        if where:
            self.log.info(f'service "{svc.key}" ({svc.command}): folded into {where} by oxipost')
        else:
            self.log.warning(
                f'service "{svc.key}" ({svc.command}): not built in oxipost yet; not started'
            )

    def bind(self, cfg: Config, states: dict[str, ServiceState]) -> None:
        """Bind what the plan needs, reusing listeners that are already open."""
        wanted: dict[str, Listener] = {}
        for state in states.values():
            svc = state.service
            if svc.type == "inet":
                addrs = [f"inet:{h}:{p}" for h, p in inet_address(svc, cfg)]
                pairs = inet_address(svc, cfg)
                for key, (host, port) in zip(addrs, pairs, strict=True):
                    wanted[key] = self.listeners.get(key) or Listener(key, _bind_inet(host, port))
                    state.listeners.append(wanted[key])
            elif svc.type == "unix":
                sub = "private" if svc.is_private else "public"
                path = os.path.join(cfg.path("queue_directory"), sub, svc.name)
                key = f"unix:{path}"
                wanted[key] = self.listeners.get(key) or Listener(key, _bind_unix(path))
                state.listeners.append(wanted[key])
        for key, old in self.listeners.items():
            if key not in wanted:
                old.sock.close()
        self.listeners = wanted

    # Workers -----------------------------------------------------------------------------

    def spawn(self, state: ServiceState, index: int) -> None:
        svc = state.service
        fds = [listener.sock.fileno() for listener in state.listeners]
        argv = [
            sys.executable,
            "-m",
            "oxipost.master.child",
            "--config",
            self.cfg.config_dir,
            "--service",
            svc.key,
            "--entry",
            svc.ident,
            "--worker",
            str(index),
            "--workers",
            str(state.workers),
            "--max-sessions",
            str(state.max_sessions),
            "--master-cf",
            master_cf_copy(self.cfg),
        ]
        if fds:
            argv += ["--fd", str(fds[0])]
        ready_r, ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        argv += ["--ready-fd", str(ready_w), "--flow-fds", self.flow.arg]
        try:
            proc = subprocess.Popen(argv, pass_fds=[*fds, ready_w, *self.flow.fds], close_fds=True)
        except OSError:
            os.close(ready_r)
            raise
        finally:
            os.close(ready_w)
        self.workers[proc.pid] = Worker(svc.ident, index, proc, ready_r)

    def start_all(self) -> None:
        for state in self.states.values():
            for i in range(0 if state.on_demand else state.workers):
                self.spawn(state, i)
            if state.service.wakeup_seconds:
                state.next_wakeup = time.monotonic() + state.service.wakeup_seconds

    def reap(self) -> None:
        now = time.monotonic()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.draining = [p for p in self.draining if p.pid != pid]
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            worker.proc.returncode = os.waitstatus_to_exitcode(status)
            state = self.states.get(worker.service_key)
            if state is None:
                continue
            path = state.command_path
            if os.WIFSIGNALED(status):
                self.log.warning(f"process {path} pid {pid} killed by signal {os.WTERMSIG(status)}")
            elif os.WEXITSTATUS(status):
                self.log.warning(f"process {path} pid {pid} exit status {os.WEXITSTATUS(status)}")
            if not worker.survived_startup() and status != 0:
                self.log.warning(f"{path}: bad command startup -- throttling")
                throttle = self.cfg.get_time("service_throttle_time")
                state.throttled_until[worker.index] = now + throttle
            elif not state.on_demand:
                self.spawn(state, worker.index)

    def tick(self) -> None:
        now = time.monotonic()
        for state in self.states.values():
            for index, until in list(state.throttled_until.items()):
                if now >= until:
                    del state.throttled_until[index]
                    if not state.on_demand:
                        self.spawn(state, index)
            wake = state.service.wakeup_seconds
            if wake and now >= state.next_wakeup:
                state.next_wakeup = now + wake
                for w in self.workers.values():
                    if w.service_key == state.service.ident:
                        _signal(w.proc.pid, signal.SIGUSR1)

    def wait(self, timeout: float) -> None:
        """Sleep up to timeout, starting an on-demand service as soon as a client waits on
        its socket while none of its processes runs (and it is not throttled)."""
        running = {w.service_key for w in self.workers.values()}
        idle = {
            listener.sock.fileno(): state
            for state in self.states.values()
            if state.on_demand and not state.throttled_until and state.service.ident not in running
            for listener in state.listeners
        }
        ready, _, _ = select.select([self.wakeup_r, *idle], [], [], timeout)
        for fd in ready:
            if fd == self.wakeup_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_r, 512)
            else:  # a unix service has its one socket
                self.spawn(idle[fd], 0)

    # Signals -----------------------------------------------------------------------------

    def reload(self) -> None:
        # Postfix's master says so before it reads anything, and dies of what it cannot run.
        self.log.info(
            f"reload -- version {self.cfg.get('mail_version')}, configuration {self.cfg.config_dir}"
        )
        try:
            cfg = load_config(self.config_dir, as_master=True)
            for warning in cfg.read_warnings():
                self.log.warning(warning)
            states = self.plan(cfg)
            self.bind(cfg, states)
            save_master_cf(cfg)
        except (ConfigError, MasterError, OSError) as e:
            self.stop(signal.SIGTERM)
            self.log.fatal(_fatal_text(e))
        self.cfg = cfg
        # A new logger opens maillog_file anew: after postfix logrotate renamed it, master
        # writes to the new file, as the services of the new generation do.
        self.log.close()
        self.log = get_logger("master", cfg)
        old = list(self.workers.values())
        self.workers.clear()
        for w in old:
            _signal(w.proc.pid, signal.SIGHUP)
            os.close(w.ready_fd)
            self.draining.append(w.proc)
        self.states = states
        self.start_all()

    def stop(self, how: int) -> None:
        procs = [w.proc for w in self.workers.values()] + self.draining
        for p in procs:
            _signal(p.pid, signal.SIGKILL if how == signal.SIGQUIT else signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(p.pid, signal.SIGKILL)
                p.wait()
        for listener in self.listeners.values():
            listener.sock.close()
            if listener.key.startswith("unix:"):
                try:
                    os.unlink(listener.key[5:])
                except OSError:
                    pass

    def run(self) -> int:
        # Whether started by hand or at boot, the services see the same environment: only
        # import_environment (Postfix's master runs clean_env() as it starts).
        import_environment(self.cfg)
        try:
            self.lock_pid_file()
            self.states = self.plan(self.cfg)
            self.bind(self.cfg, self.states)
            save_master_cf(self.cfg)
        except (MasterError, OSError) as e:
            self.log.fatal(_fatal_text(e))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(self.wakeup_w)
        version = self.cfg.get("mail_version")
        self.log.info(f"daemon started -- version {version}, configuration {self.cfg.config_dir}")
        _batch_scheduling()
        self.start_all()
        while True:
            self.tick()
            while self.pending_signals:
                signum = self.pending_signals.pop(0)
                if signum == signal.SIGCHLD:
                    self.reap()
                elif signum == signal.SIGHUP:
                    self.reload()
                else:
                    self.log.info(f"terminating on signal {signum}")
                    self.stop(signum)
                    return 0
            self.reap()
            self.wait(0.2)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.pending_signals.append(signum)


def _service_patterns(value: str) -> list[str]:
    """master_service_disable's patterns as match_service_init takes them: "type" or
    "name/type", the older "name.type" read as the latter."""
    patterns = value.replace(",", " ").split()
    return [p if "/" in p or "." not in p else "/".join(p.rsplit(".", 1)) for p in patterns]


def _service_match(patterns: list[str], svc: Service) -> bool:
    """match_service_match: the first pattern that matches the service's name/type (or
    its type alone, for a pattern without '/') decides; each leading '!' negates."""
    name_type = svc.key.lower()
    for pattern in patterns:
        bare = pattern.lstrip("!")
        negated = (len(pattern) - len(bare)) % 2 == 1
        if (name_type if "/" in bare else svc.type.lower()) == bare.lower():
            return not negated
    return False


def _batch_scheduling() -> None:
    """Run master, and so every service it starts (the policy is inherited), as SCHED_BATCH.

    The mail system is a throughput workload nobody waits on at a terminal. A woken
    SCHED_BATCH process does not preempt the one running but waits for its turn: smtpd
    woken by a client's command, virtual by qmgr's request, qmgr by a wakeup each let the
    running process go on, so each runs longer and does more per wakeup, and fewer context
    switches are paid. Measured +6 % msg/s into Maildir and +8 % relaying (bench/RESULTS.md).
    Any process may choose it (no privilege needed); where it does not exist, nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _fatal_text(e: Exception) -> str:
    if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
        return f"bind: {e.strerror}"
    return str(e)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def drop_privileges(cfg: Config, log: Logger) -> None:
    """Run as mail_owner (for services master.cf marks unprivileged) when started as root."""
    if os.geteuid() != 0:
        return
    owner = cfg.get("mail_owner")
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        log.fatal(f"file {cfg.main_cf}: parameter mail_owner: unknown user name value: {owner}")
    if pw.pw_uid == 0:
        log.fatal(f"mail_owner {owner} has root privileges")
    groups = [g.gr_gid for g in grp.getgrall() if owner in g.gr_mem]
    os.setgroups(groups)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
