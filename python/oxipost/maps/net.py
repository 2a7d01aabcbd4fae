"""Network client tables: tcp_table(5) and socketmap_table(5), as Postfix 3.7's dict_tcp
and dict_sockmap.

`tcp:host:port` sends `get SP key NL`, the key %XX-encoded (%, white space and every byte
that is not printable ASCII), and reads one line of at most 4096 bytes: `200 value`
(%XX-decoded), `500 text` (not found) or `400 text` (a temporary error, no warning). One
connection per table, kept open between lookups and dropped after any error; a lookup
that cannot connect or read a whole reply tries again each second, 10 times in all.

`socketmap:inet:host:port:name` and `socketmap:unix:pathname:name` send the netstring
`name key` and read one netstring reply of at most 100000 bytes: `OK data`, `NOTFOUND `,
or `TEMP`, `TIMEOUT`, `PERM` with a reason. Tables of one server share its connection,
which is closed after 10 s idle or 100 s in all (Postfix's auto_clnt); a server that
closes it is asked again once on a new one.

Every read, write and connect has Postfix's 100 s time limit. Keys are not case folded
(these are pattern tables: an address search gives them the whole address only).

Diagnostics, Postfix's words: "connect to TCP map H:P: REASON", "read TCP map reply from
H:P: unexpected EOF (REASON)", "... text longer than 4096", "... malformed reply: TEXT",
"... bad status code: TEXT"; "connect to SERVER: REASON", "table socketmap:NAME lookup
error: REASON", "socketmap:NAME socketmap server temporary|timeout|permanent|unknown
error: REASON". A failed lookup raises TableError "table TYPE:NAME: query error: %m",
where %m is what Postfix's errno holds by then (see `_errno`), or a TableConfigError
without ": %m" after a PERM reply (Postfix's DICT_ERR_CONFIG). Tables opened for
security-sensitive data (Postfix's DICT_FLAG_NO_UNAUTH) are refused: see `refuse`.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

from oxipost.maps import (
    TableConfigError,
    TableError,
    raw_key,
    utf8_checked,
    utf8_refused,
    warn,
)
from oxipost.printable import printable

NET_TABLE_TYPES = ("tcp", "socketmap")

# dict_tcp.c and dict_sockmap.c's limits.
TIMEOUT = 100.0
TCP_MAXTRY = 10
TCP_MAXLEN = 4096
SOCKMAP_MAX_REPLY = 100000
SOCKMAP_MAX_IDLE = 10.0
SOCKMAP_MAX_TTL = 100.0

# Postfix's %m names the errno of the last system call that failed, or that a connect
# with a time limit left behind (EINPROGRESS): a lookup's "query error" says it. Process
# wide, as errno is.
_errno = 0


def _m() -> str:
    # Postfix's %m for errno 0.
    return os.strerror(_errno) if _errno else "Application error"


def _set_errno(e: OSError | int) -> None:
    global _errno
    _errno = e if isinstance(e, int) else (e.errno or 0)


def _shown(data: bytes, replacement: str, limit: int) -> str:
    """A reply in a warning: Postfix's printable() (ASCII only, as in postmap) of its
    first `limit` bytes."""
    return printable(data[:limit].decode("utf-8", "surrogateescape"), replacement, utf8=False)


def hex_quote(key: str) -> bytes:
    """Postfix's hex_quote(): %, white space and non-printable bytes as %XX."""
    out = bytearray()
    for b in raw_key(key):
        if b != 0x25 and 0x20 < b < 0x7F:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def hex_unquote(data: bytes) -> bytes | None:
    """Postfix's hex_unquote(): None for a % not followed by two hex digits."""
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x25:
            pair = data[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in pair):
                return None
            b = int(pair, 16)
            i += 2
        out.append(b)
        i += 1
    return bytes(out)


def _host_port(endpoint: str) -> tuple[str, str]:
    """Postfix's host_port() for a client endpoint `host:port` or `[host]:port`; fatal
    text as TableError."""
    host, colon, port = endpoint.rpartition(":")
    if not colon:
        host, port = "localhost", endpoint
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if port[:1].isdigit() and not port.isdigit():
        raise TableError(f"{endpoint}: garbage after numerical service")
    return host, port


def _connect_inet(endpoint: str) -> socket.socket:
    """inet_connect() with a time limit: the socket, or OSError after its warning."""
    host, port = _host_port(endpoint)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        warn(f"host or service {endpoint} not found: {e.strerror}")
        raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL)) from None
    failure: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(addr)
        except TimeoutError:
            sock.close()
            failure = OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            continue
        except OSError as e:
            sock.close()
            failure = e
            continue
        # A connect with a time limit is non-blocking: errno keeps EINPROGRESS.
        _set_errno(errno.EINPROGRESS)
        return sock
    assert failure is not None
    raise failure


def _recv(sock: socket.socket, size: int) -> bytes:
    """One read; b"" at the end, OSError (ETIMEDOUT after the time limit) otherwise."""
    try:
        return sock.recv(size)
    except TimeoutError:
        raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None


# ------------------------------------------------------------------------ tcp_table(5)


class TcpTable:
    """tcp:host:port."""

    owner: int | None = 0
    fixed = False
    utf8_name: str | None = None

    def __init__(self, spec: str, endpoint: str) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self._sock: socket.socket | None = None
        self._buf = b""
        # A daemon's worker threads share the one connection, a reply at a time.
        self._lock = threading.Lock()

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, b""

    def _line(self) -> tuple[bytes, bool]:
        """vstring_get_nonl_bound(4096): the line without its newline, and whether it
        ended with one (False: end of input or the limit came first)."""
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n", 0, TCP_MAXLEN)
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
                return line, True
            if len(self._buf) >= TCP_MAXLEN:
                line, self._buf = self._buf[:TCP_MAXLEN], self._buf[TCP_MAXLEN:]
                return line, False
            try:
                data = _recv(self._sock, 65536)
            except OSError as e:
                _set_errno(e)
                data = b""
            if not data:
                line, self._buf = self._buf, b""
                return line, False
            self._buf += data

    def _exchange(self, key: str) -> bytes | None:
        """One request and its reply line, or None after the warning."""
        if self._sock is None:
            try:
                self._sock = _connect_inet(self.endpoint)
            except OSError as e:
                _set_errno(e)
                warn(f"connect to TCP map {self.endpoint}: {_m()}")
                return None
        try:
            self._sock.sendall(b"get " + hex_quote(key) + b"\n")
        except OSError as e:
            # Postfix's buffered write fails unseen; its read then finds the end.
            _set_errno(e)
        line, complete = self._line()
        if complete:
            return line
        if line:
            warn(f"read TCP map reply from {self.endpoint}: text longer than {TCP_MAXLEN}")
        else:
            warn(f"read TCP map reply from {self.endpoint}: unexpected EOF ({_m()})")
        self._disconnect()
        return None

    def lookup(self, key: str) -> str | None:
        if utf8_refused(self, key):
            return None
        with self._lock:
            value = self._lookup(key)
        return utf8_checked(self, key, value)

    def _lookup(self, key: str) -> str | None:
        tries = 0
        while True:
            line = self._exchange(key)
            if line is not None:
                break
            tries += 1
            if tries >= TCP_MAXTRY:
                raise self._error()
            time.sleep(1)
        # The reply is a C string: it ends at a null byte.
        line = line.split(b"\0", 1)[0]
        raw = None
        if len(line) >= 4 and line[:3].isdigit() and line[3:4] in b" \t\v\f\r":
            raw = hex_unquote(line[4:])
        if raw is None:
            shown = _shown(line, "_", 100)
            warn(f"read TCP map reply from {self.endpoint}: malformed reply: {shown}")
            self._disconnect()
            raise self._error()
        status = line[:1]
        if status == b"5":
            return None
        if status == b"2":
            return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if status != b"4":
            shown = _shown(line, "_", 100)
            warn(f"read TCP map reply from {self.endpoint}: bad status code: {shown}")
        self._disconnect()
        raise self._error()

    def _error(self) -> TableError:
        return TableError(f"table {self.spec}: query error: {_m()}")


# ------------------------------------------------------------------------ socketmap_table(5)


class _NetstringError(Exception):
    """netstring_except(): the text is netstring_strerror()'s."""


_NS_EOF = "unexpected disconnect"
_NS_TIME = "time limit exceeded"
_NS_FORMAT = "input format error"
_NS_SIZE = "input exceeds size limit"


class _SocketmapServer:
    """auto_clnt: one connection to a socketmap server, shared by its tables."""

    def __init__(self, server: str) -> None:
        kind, _, endpoint = server.partition(":")
        if not endpoint:
            raise TableError(f'need service transport:endpoint instead of "{server}"')
        if kind not in ("inet", "unix"):
            raise TableError(f"invalid transport name: {kind} in service: {server}")
        if kind == "inet":
            _host_port(endpoint)
        self.kind, self.endpoint = kind, endpoint
        self.sock: socket.socket | None = None
        self.buf = b""
        self.opened = self.used = 0.0
        self.lock = threading.Lock()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def access(self) -> socket.socket | None:
        """The connection, a new one when there is none or it has idled or lived too
        long; None after auto_clnt's warning."""
        now = time.monotonic()
        if self.sock is not None and (
            now - self.used >= SOCKMAP_MAX_IDLE or now - self.opened >= SOCKMAP_MAX_TTL
        ):
            self.close()
        if self.sock is None:
            try:
                if self.kind == "inet":
                    self.sock = _connect_inet(self.endpoint)
                else:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(TIMEOUT)
                    try:
                        sock.connect(self.endpoint)
                    except OSError:
                        sock.close()
                        raise
                    self.sock = sock
            except OSError as e:
                _set_errno(e)
                warn(f"connect to {self.endpoint}: {_m()}")
                return None
            self.opened = now
        self.used = now
        return self.sock

    def _read(self, size: int, eof: str) -> bytes:
        assert self.sock is not None
        while len(self.buf) < size:
            try:
                data = _recv(self.sock, 65536)
            except OSError as e:
                _set_errno(e)
                raise _NetstringError(_NS_TIME if e.errno == errno.ETIMEDOUT else eof) from None
            if not data:
                raise _NetstringError(eof)
            self.buf += data
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def exchange(self, request: bytes) -> bytes:
        """netstring_put() the request, netstring_get() the reply; _NetstringError."""
        assert self.sock is not None
        try:
            self.sock.sendall(b"%d:%s," % (len(request), request))
        except TimeoutError:
            _set_errno(errno.ETIMEDOUT)
            raise _NetstringError(_NS_TIME) from None
        except OSError as e:
            _set_errno(e)
            raise _NetstringError(_NS_EOF) from None
        length = 0
        while True:
            ch = self._read(1, _NS_EOF)
            if ch == b":":
                break
            if not ch.isdigit():
                raise _NetstringError(_NS_FORMAT)
            length = length * 10 + int(ch)
            if length > SOCKMAP_MAX_REPLY:
                raise _NetstringError(_NS_SIZE)
        data = self._read(length, _NS_EOF)
        # The terminator: any failure to read a comma is a format error.
        try:
            comma = self._read(1, _NS_FORMAT)
        except _NetstringError:
            raise _NetstringError(_NS_FORMAT) from None
        if comma != b",":
            raise _NetstringError(_NS_FORMAT)
        return data


_servers: dict[str, _SocketmapServer] = {}
_servers_lock = threading.Lock()

_ERROR_CLASSES = {b"TEMP": "temporary", b"TIMEOUT": "timeout", b"PERM": "permanent"}


class SocketmapTable:
    """socketmap:inet:host:port:name and socketmap:unix:pathname:name."""

    owner: int | None = 0
    fixed = False
    utf8_name: str | None = None

    def __init__(self, spec: str, name: str) -> None:
        server, colon, self.mapname = name.rpartition(":")
        if not colon or not server:
            raise TableError("socketmap requires server:socketmap argument")
        self.spec = spec
        with _servers_lock:
            shared = _servers.get(server)
            if shared is None:
                shared = _servers[server] = _SocketmapServer(server)
        self.server = shared

    def lookup(self, key: str) -> str | None:
        if utf8_refused(self, key):
            return None
        with self.server.lock:
            reply = self._ask(key)
        # Replies are C strings: each ends at a null byte.
        reply = reply.split(b"\0", 1)[0]
        word, space, payload = reply.partition(b" ")
        if word == b"OK":
            # "OK" without a space has no data: not found, as Postfix reads it.
            value = payload.decode("utf-8", "surrogateescape") if space else None
            return utf8_checked(self, key, value)
        if word == b"NOTFOUND":
            return None
        error_class = _ERROR_CLASSES.get(word, "unknown")
        reason = payload.lstrip(b" \t\n\v\f\r")
        shown = ": " + _shown(reason, "?", 200) if reason else ""
        warn(f"{self.spec} socketmap server {error_class} error{shown}")
        if word == b"PERM":
            # DICT_ERR_CONFIG: Postfix's postmap says no %m for it.
            raise TableConfigError(f"table {self.spec}: query error", self.spec, key)
        raise TableError(f"table {self.spec}: query error: {_m()}")

    def _ask(self, key: str) -> bytes:
        request = self.mapname.encode() + b" " + raw_key(key)
        failures = 0
        while True:
            if self.server.access() is None:
                warn(f"table {self.spec} lookup error: {_m()}")
                raise TableError(f"table {self.spec}: query error: {_m()}")
            try:
                return self.server.exchange(request)
            except _NetstringError as e:
                self.server.close()
                # A server that restarted closed the connection: once more on a new one.
                if failures == 0 and str(e) == _NS_EOF and _errno != errno.ETIMEDOUT:
                    failures += 1
                    continue
                warn(f"table {self.spec} lookup error: {e}")
                raise TableError(f"table {self.spec}: query error: {_m()}") from None


# ------------------------------------------------------------------------ opening


def refuse(spec: str, kind: str) -> TableError:
    """Why a tcp: or socketmap: table may not hold security-sensitive data (Postfix's
    DICT_FLAG_NO_UNAUTH, which local(8)'s alias_maps and mailbox_command_maps and
    virtual(8)'s maps pass): each type's own words."""
    words = "security-sensitive" if kind == "socketmap" else "security sensitive"
    return TableError(f"{spec} map is not allowed for {words} data")


def open_net_table(spec: str, kind: str, name: str, paranoid: bool) -> TcpTable | SocketmapTable:
    """The tcp: or socketmap: table `spec`; TableError when it may not be used."""
    if paranoid:
        raise refuse(spec, kind)
    if kind == "tcp":
        return TcpTable(spec, name)
    return SocketmapTable(spec, name)
