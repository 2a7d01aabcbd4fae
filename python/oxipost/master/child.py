"""The first code a service process runs: `python -m oxipost.master.child ...`, exec'd by
master (never a bare fork, so no Rust thread is ever forked).

It reads the configuration (master.cf as master read it), narrows it to its master.cf
entry (-o overrides; one that is not name=value is fatal, as to Postfix's daemons: `fatal:
invalid "-o a b" option value: missing '=' after attribute name`), adopts the
listening socket master passed, drops to mail_owner when master runs as root and the entry
is unprivileged, and calls the service's entry point from SERVICES.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from oxipost.config import ConfigError, load_config, params
from oxipost.delivery.service import PRIVILEGED_AGENTS
from oxipost.flow import FlowPipe
from oxipost.log import Logger, capture_python_logging, get_logger
from oxipost.maps import allow_surrogates, set_warning_sink
from oxipost.master.context import ServiceContext
from oxipost.master.master import STARTUP_GRACE, drop_privileges
from oxipost.master.services import SERVICES

# Modules the services import inside functions, from outside the oxipost package.
_LAZY_THIRD_PARTY = ("dns.asyncresolver", "dns.exception", "dns.resolver", "grp", "struct")


def _import_everything() -> None:
    """Import every oxipost module (and what they import lazily) while the interpreter's
    tree is still readable: after the drop to mail_owner it may not be (a Python under
    /root), and a function-level import would then fail in the middle of a delivery."""
    import oxipost

    for info in pkgutil.walk_packages(oxipost.__path__, "oxipost."):
        if ".cli." in info.name or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    for name in _LAZY_THIRD_PARTY:
        importlib.import_module(name)


def _report_survival(fd: int) -> Callable[[], None]:
    """Tell master, once the service has run for STARTUP_GRACE or served a request
    (whichever comes first), that this is not a bad command startup; returns the function
    a service calls when it has served one. The timer is a thread: services own their
    event loops."""
    lock = threading.Lock()
    told = False

    def report() -> None:
        nonlocal told
        with lock:
            if told:
                return
            told = True
            with contextlib.suppress(OSError):
                os.write(fd, b"1")
                os.close(fd)

    timer = threading.Timer(STARTUP_GRACE, report)
    timer.daemon = True
    timer.start()
    return report


def _fatal(log: Logger, error: ConfigError) -> NoReturn:
    """A configuration the service cannot use: what Postfix warns of first (a compatibility
    level comparison's operand), then its fatal line."""
    for warning in error.warnings:
        log.warning(warning)
    log.fatal(str(error))


def main(argv: list[str] | None = None) -> int:
    """Start one service process; returns its exit status."""
    p = argparse.ArgumentParser(prog="oxipost-child")
    p.add_argument("--config", required=True)
    p.add_argument("--service", required=True, help="name/type, what ps shows")
    # Which entry of that name and type: `x unix -` (private/x) and `x unix n` (public/x)
    # are two services.
    p.add_argument("--entry", help="the entry's Service.ident")
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-sessions", type=int, default=0)
    p.add_argument("--fd", type=int)
    p.add_argument("--ready-fd", type=int)
    p.add_argument("--flow-fds", type=FlowPipe.from_arg)
    p.add_argument("--master-cf", help="master's copy of the master.cf it last loaded")
    args = p.parse_args(argv)
    # Until the service installs its own handlers, a reload means "exit when convenient".
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        base = load_config(args.config, as_master=True, master_cf_copy=args.master_cf)
        svc = base.entry(args.entry) if args.entry else base.service(args.service)
        cfg = base.for_entry(svc)
    except (ConfigError, KeyError) as e:
        print(f"oxipost/master/child: fatal: {e}", file=sys.stderr)
        return 1
    log = get_logger(svc.command, cfg)
    # Every Postfix daemon reads main.cf as it starts, and logs what that warns of.
    for warning in base.read_warnings():
        log.warning(warning)
    option_error = svc.option_error()
    if option_error:
        log.fatal(option_error)
    # As each Postfix daemon's mail_params_init, then the daemon's own tables: a value it
    # cannot use (a -o override of this service's too) ends the process, in the maillog.
    try:
        params.check_startup(cfg, log.warning)
        params.check_daemon(cfg, svc.command)
    except ConfigError as e:
        _fatal(log, e)
    listen = socket.socket(fileno=args.fd) if args.fd is not None else None
    # Import the service (and open the log) while still able to read everything: after the
    # drop to mail_owner, the interpreter's own tree may be out of reach (e.g. under /root).
    module_name, _, func_name = SERVICES[svc.command].partition(":")
    entry = getattr(importlib.import_module(module_name), func_name)
    if svc.is_unprivileged:
        _import_everything()
    log.open()
    # smtp(8) and lmtp(8) run in qmgr's process and log as themselves, as Postfix's do;
    # so does the cleanup that local(8) resubmits through.
    capture_python_logging(log, (*PRIVILEGED_AGENTS, "smtp", "lmtp", "cleanup"))
    # A table's skipped lines, as Postfix's daemons log them: to the maillog, not to a
    # stderr nobody reads (local(8)'s "regexp map ...: substitution is not allowed").
    set_warning_sink(log.warning)
    # A table that does not open: "error: REASON" and a surrogate, not a failing daemon.
    allow_surrogates(log.error)
    # What a service opens with root's rights (Postfix's pre_jail_init): verify's cache.
    pre_jail = getattr(importlib.import_module(module_name), "pre_jail_init", None)
    if pre_jail is not None:
        pre_jail(cfg)
    if svc.is_unprivileged:
        drop_privileges(cfg, log)
    ctx = ServiceContext(
        cfg=cfg,
        base=base,
        service=svc,
        listen_socket=listen,
        log=log,
        worker=args.worker,
        workers=args.workers,
        max_sessions=args.max_sessions,
        flow=args.flow_fds,
    )
    if args.ready_fd is not None:
        ctx.used = _report_survival(args.ready_fd)
    try:
        return int(entry(ctx) or 0)
    except KeyboardInterrupt:
        return 0
    except SystemExit:
        raise
    except ConfigError as e:
        # A parameter the service reads later that Postfix's daemon would have refused as
        # it started: its fatal line, as that daemon's.
        _fatal(log, e)
    except Exception as e:
        # A bug in a service: one log line for the administrator, and master restarts it.
        log.error(f"{svc.command}: unexpected {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
