"""smtpd service - one worker process on the listening socket master handed down

main(ctx) is the entry master calls for a master.cf service whose command is "smtpd": it
opens the queue, builds the TLS context and SASL backend from the service's configuration,
checks the restrictions (an open-relay configuration is fatal, as in Postfix), and serves
sessions on one asyncio loop until SIGTERM.

Diagnostics: "fatal: ..." and exit 1 for a configuration Postfix would refuse.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (asyncio.to_thread imports it on first use)
import os
import socket
import ssl
from collections.abc import Coroutine
from typing import Any

# Everything a worker needs is imported here, when master's child loads this module: the
# worker then drops to mail_owner, who may not be able to read the interpreter's own tree
# (a Python under /root), so an import after that point fails.
from oxipost import runloop
from oxipost.cleanup.message import cleanup_message
from oxipost.cleanup.state import open_cleanup_tables
from oxipost.flow import FlowGate, FlowPipe
from oxipost.qmgr import control
from oxipost.qmgr.queue import Queue
from oxipost.rewrite.resolve import open_rewrite_tables
from oxipost.smtpd.check import CheckConfigError, open_smtpd_tables
from oxipost.smtpd.sasl import make_authenticator
from oxipost.smtpd.server import SmtpdServer


def tls_context(cfg: Any) -> ssl.SSLContext | None:
    """The server context (None when TLS is not set up): smtpd_tls_chain_files, else the
    RSA pair smtpd_tls_cert_file/key_file and the ECDSA pair smtpd_tls_eccert_file/
    eckey_file, either or both, as Postfix's tls_set_my_certificate_key_info loads them
    (`postfix tls enable-server -a ecdsa` deploys the ECDSA pair alone); OpenSSL keeps
    one certificate per key type and offers the one a client can use."""
    chain = cfg.get_list("smtpd_tls_chain_files")
    pairs = [
        (cert, cfg.get(key).strip() or cert)
        for cert, key in (
            (cfg.get("smtpd_tls_cert_file").strip(), "smtpd_tls_key_file"),
            (cfg.get("smtpd_tls_eccert_file").strip(), "smtpd_tls_eckey_file"),
        )
        if cert
    ]
    if not pairs and not chain:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if chain:
        for path in chain:
            ctx.load_cert_chain(path)
    else:
        for cert, key in pairs:
            ctx.load_cert_chain(cert, key)
    return ctx


def authenticator(cfg: Any) -> Any:
    if not cfg.get_bool("smtpd_sasl_auth_enable"):
        return None
    return make_authenticator(cfg)


def open_queue(cfg: Any) -> Any:
    return Queue.open(cfg, writer=f"smtpd-{os.getpid()}")


def open_tables(cfg: Any, log: Any) -> None:
    """Open the tables of smtpd and of the daemons it does the work of (cleanup,
    trivial-rewrite), each logging one that does not open under its own name, as
    Postfix's do when they start."""
    open_smtpd_tables(cfg)
    if log is not None:
        open_cleanup_tables(cfg, log.for_program("cleanup"))
        open_rewrite_tables(cfg, log.for_program("trivial-rewrite"))


def build_server(cfg: Any, queue: Any, log: Any = None) -> SmtpdServer:
    open_tables(cfg, log)
    return SmtpdServer(
        cfg,
        queue,
        log=log,
        tls_context=tls_context(cfg),
        authenticator=authenticator(cfg),
        cleanup=_cleanup_entry(),
        notify=QmgrNotifier(cfg),
    )


def _cleanup_entry() -> Any:
    return cleanup_message


# Under load, at most one wakeup per this many seconds (the first goes out at once): each
# one makes qmgr look at the new mail, which costs more than the message that caused it.
# It must stay short: qmgr tops up the in_flow_delay tokens once per turn of its loop, and
# Postfix's cleanup wakes qmgr for every message. At 0.1 s a turn's default_process_limit
# (100) tokens were gone long before the next wakeup, so sessions sat out in_flow_delay
# and receiving was held near 1,000 msg/s (bench/RESULTS.md).
WAKEUP_INTERVAL = 0.02
# How long a stopping smtpd waits for qmgr to take the wakeup the interval held back.
LAST_WAKEUP_TIMEOUT = 1.0


class QmgrNotifier:
    """Tell a running qmgr about new mail ({"op": "wakeup"} on public/qmgr), as Postfix's
    cleanup does, never holding up a session. Wakeups are coalesced: one in flight, at most
    one per WAKEUP_INTERVAL, and the last one is always sent. Other requests (ETRN's
    flush-site) go out at once."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.path = control.socket_path(cfg)
        # The loop keeps only weak references to tasks, and close() must find them.
        self.tasks: set[asyncio.Task[None]] = set()
        self.wakeup_pending = False
        self.wakeup_running = False

    def __call__(self, req: dict[str, object]) -> None:
        if not os.path.exists(self.path):
            return
        if req.get("op") != "wakeup":
            self._spawn(self._send(req))
            return
        self.wakeup_pending = True
        if not self.wakeup_running:
            self.wakeup_running = True
            self._spawn(self._wakeups())

    async def close(self) -> None:
        """Stop sending. A wakeup the interval still held back goes out now: the mail it
        announces would otherwise wait for qmgr's next queue_run_delay scan."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.wakeup_pending:
            self.wakeup_pending = False
            await self._send({"op": "wakeup"}, LAST_WAKEUP_TIMEOUT)

    async def _send(self, req: dict[str, object], timeout: float = 5.0) -> None:
        try:
            await asyncio.to_thread(control.request, self.cfg, req, timeout)
        except Exception:
            pass  # qmgr also rescans every queue_run_delay

    async def _wakeups(self) -> None:
        try:
            while self.wakeup_pending:
                self.wakeup_pending = False
                await self._send({"op": "wakeup"})
                await asyncio.sleep(WAKEUP_INTERVAL)
        finally:
            self.wakeup_running = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def serve(
    cfg: Any,
    sock: socket.socket,
    queue: Any,
    log: Any = None,
    max_sessions: int = 0,
    flow: FlowPipe | None = None,
) -> None:
    server = build_server(cfg, queue, log)
    server.max_sessions = max_sessions
    if flow is not None:
        server.flow = FlowGate(flow, cfg)
    listener = await server.serve(sock)
    stop, drain = runloop.stop_and_drain()
    stop_wait = asyncio.ensure_future(stop.wait())
    drain_wait = asyncio.ensure_future(drain.wait())
    await asyncio.wait({stop_wait, drain_wait}, return_when=asyncio.FIRST_COMPLETED)
    listener.close()
    if drain.is_set() and not stop.is_set():
        # postfix reload: finish the sessions in progress, accept no new ones.
        sessions = asyncio.gather(*server.sessions, return_exceptions=True)
        either: set[asyncio.Future[Any]] = {stop_wait, sessions}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    drain_wait.cancel()
    await server.close()


def main(ctx: Any) -> int:
    cfg = ctx.cfg
    log = ctx.log
    if ctx.listen_socket is None:
        log.fatal("smtpd: no listening socket")
        return 1
    try:
        queue = open_queue(cfg)
    except Exception as e:
        log.fatal(f"open queue: {e}")
        return 1
    try:
        runloop.run(serve(cfg, ctx.listen_socket, queue, log, ctx.max_sessions, ctx.flow))
    except CheckConfigError as e:
        log.fatal(str(e))
        return 1
    except (OSError, ssl.SSLError) as e:
        log.fatal(f"smtpd: {e}")
        return 1
    return 0
