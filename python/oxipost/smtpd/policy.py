"""smtpd_policy - Postfix SMTP access policy delegation client

check_policy_service asks a policy server (SMTPD_POLICY_README) over unix:/path,
unix:private/name (under queue_directory) or inet:host:port: one "name=value" line per
attribute of the request, then an empty line; the server answers "action=..." and an empty
line, and the action is judged as an access(5) table's result. "{ server, name=value, ... }"
gives the server settings of its own (Postfix 3.0). Connections are kept per
server and reused, as Postfix's attr_clnt: closed after smtpd_policy_service_max_idle idle,
smtpd_policy_service_max_ttl of life or smtpd_policy_service_request_limit requests.

The client blocks: the restriction engine is synchronous, and smtpd runs it in a worker
thread when a restriction list names check_policy_service (Checker.threaded), so that a
slow policy server holds only its own session.

Diagnostics: a request that fails (cannot connect, times out, a reply without action=:
"warning: missing attribute action in input from NAME") is tried
smtpd_policy_service_try_limit times, smtpd_policy_service_retry_delay apart, each failure
logged "warning: problem talking to server NAME: REASON" (the first only for a system error
other than a closed connection); then the answer is smtpd_policy_service_default_action.
Attributes besides action are ignored; an empty action is "warning: access table SERVER
entry  has empty value" and the next restriction.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oxipost.config import split_list

if TYPE_CHECKING:
    from oxipost.config import Config


class PolicyError(Exception):
    """A request that got no usable answer without a system error (Postfix's %m then
    says "Application error")."""


_QUIET_ERRNOS = (None, 0, errno.EPIPE, errno.ENOENT, errno.ECONNRESET)


@dataclass
class _Conn:
    sock: socket.socket
    born: float
    used: float
    requests: int = 0
    # What the server sent that was not read yet.
    unread: bytearray = field(default_factory=bytearray)

    def readline(self) -> bytes:
        """One line with its newline; without one at the end of the stream."""
        while True:
            end = self.unread.find(b"\n")
            if end >= 0:
                line = bytes(self.unread[: end + 1])
                del self.unread[: end + 1]
                return line
            data = self.sock.recv(4096)
            if not data:
                line = bytes(self.unread)
                self.unread.clear()
                return line
            self.unread += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class PolicyClient:
    """The connections of one smtpd process to one policy server, idle ones pooled."""

    def __init__(self, cfg: Config, server: str, log: Any = None) -> None:
        """`server` is an endpoint, or Postfix 3.0's "{ endpoint, name=value, ... }" with
        settings of its own in place of the smtpd_policy_service_* ones (timeout,
        default_action, max_idle, max_ttl, request_limit, try_limit, retry_delay,
        policy_context)."""
        words = split_list(server.strip().removeprefix("{").removesuffix("}"))
        own = dict(setting_word(word) for word in words[1:])
        self.server = words[0] if words else ""
        # The name attr_clnt logs: the endpoint without its transport type.
        self.name = self.server.partition(":")[2]
        self.log = log

        def setting(name: str) -> str:
            return own.get(name) or cfg.get("smtpd_policy_service_" + name)

        self.timeout = time_seconds(setting("timeout"))
        self.max_idle = time_seconds(setting("max_idle"))
        self.max_ttl = time_seconds(setting("max_ttl"))
        self.request_limit = int(setting("request_limit"))
        self.try_limit = max(1, int(setting("try_limit")))
        self.retry_delay = time_seconds(setting("retry_delay"))
        self.default_action = setting("default_action")
        self.policy_context = setting("policy_context")
        self.queue_directory = cfg.get("queue_directory")
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        # The kept connections close with the smtpd that made them, not at random later.
        weakref.finalize(self, _close_all, self._idle)

    def query(self, attrs: list[tuple[str, str]]) -> str | None:
        """The server's action for this request; None when every try failed."""
        request = "".join(f"{name}={value}\n" for name, value in attrs) + "\n"
        data = request.encode("utf-8", "surrogateescape")
        for count in range(1, self.try_limit + 1):
            conn = None
            try:
                conn = self._take()
                # As Postfix's client, what the server sent beyond its last reply is
                # dropped, not taken for the next one.
                conn.unread.clear()
                conn.sock.sendall(data)
                action = self._read_reply(conn)
            except (OSError, PolicyError) as e:
                if conn is not None:
                    conn.close()
                # As attr_clnt_request: a first failure that is no system error, or the
                # server having closed a kept connection (EPIPE, ECONNRESET), is retried
                # without a word.
                timed_out = isinstance(e, TimeoutError)  # Postfix's ETIMEDOUT
                quiet = not timed_out and getattr(e, "errno", None) in _QUIET_ERRNOS
                if self.log is not None and (count > 1 or not quiet):
                    self.log.warning(f"problem talking to server {self.name}: {os_reason(e)}")
                if count < self.try_limit:
                    time.sleep(self.retry_delay)
                continue
            conn.requests += 1
            conn.used = time.monotonic()
            self._give_back(conn)
            return action
        return None

    def _read_reply(self, conn: _Conn) -> str:
        action = None
        while True:
            line = conn.readline()
            if not line.endswith(b"\n"):
                raise PolicyError("Application error")
            text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
            if not text:
                break
            # Other attributes are ignored, as Postfix 3.7 does.
            name, eq, value = text.partition("=")
            if eq and name == "action":
                action = value
        if action is None:
            if self.log is not None:
                self.log.warning(f"missing attribute action in input from {self.name}")
            raise PolicyError("Application error")
        return action

    def _take(self) -> _Conn:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if now - conn.used < self.max_idle and now - conn.born < self.max_ttl:
                    return conn
                conn.close()
        try:
            return self._connect(now)
        except OSError as e:
            if self.log is not None:
                self.log.warning(f"connect to {self.name}: {os_reason(e)}")
            raise

    def _give_back(self, conn: _Conn) -> None:
        if self.request_limit > 0 and conn.requests >= self.request_limit:
            conn.close()
            return
        if time.monotonic() - conn.born >= self.max_ttl:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def _connect(self, now: float) -> _Conn:
        kind, _, where = self.server.partition(":")
        if kind == "inet":
            host, _, port = where.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        elif kind == "unix":
            path = where if where.startswith("/") else os.path.join(self.queue_directory, where)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
        else:
            raise PolicyError(f"unsupported transport type: {kind}")
        sock.settimeout(self.timeout)
        return _Conn(sock, now, now)

    def close(self) -> None:
        with self._lock:
            _close_all(self._idle)


def _close_all(conns: list[_Conn]) -> None:
    while conns:
        conns.pop().close()


def setting_word(word: str) -> tuple[str, str]:
    name, _, value = word.partition("=")
    return name.strip(), value.strip()


def time_seconds(value: str) -> float:
    """A time value: a number with an optional unit (s, m, h, d, w; seconds without)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    unit = value[-1:] if value[-1:] in units else "s"
    return float(value.removesuffix(unit) if value[-1:] in units else value) * units[unit]


def os_reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "Connection timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


__all__ = ["PolicyClient", "os_reason", "setting_word", "time_seconds"]
