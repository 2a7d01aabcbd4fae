"""milter - the Sendmail 8 Milter client (MILTER_README; Postfix's src/milter/milter8.c)

Milters(conf, ...) speaks for one SMTP session to every application smtpd_milters (or
non_smtpd_milters) names, in order, each as inet:host:port or unix:/path (local:/path the
same), or Postfix 3.0's "{ endpoint, name=value ... }" with settings of its own
(connect_timeout, command_timeout, content_timeout, default_action, protocol). Each
application gets a connection of its own per session (libmilter closes it when the
client goes), SMFIC_OPTNEG with milter_protocol's version and events and every action
Postfix allows, then the session's events with the milter_*_macros before each: CONNECT,
HELO, MAIL, RCPT, DATA, the message (HEADER per header, EOH, BODY in chunks of 65535 bytes,
EOB), ABORT at the end of a transaction that was not finished, QUIT at the end. The first
application that answers anything but CONTINUE decides the event, as in Postfix.

Replies come back in Postfix's internal form: None (go on), "4XX X.Y.Z text" / "5XX ..."
(REJECT and TEMPFAIL as "550 5.7.1 Command rejected" and "451 4.7.1 Service unavailable -
try again later", REPLYCODE as given with %% undone), "D" (DISCARD), "S" (SHUTDOWN: 421),
"H..." (QUARANTINE: hold). At the end of the message, the modifications (ADDHEADER,
INSHEADER, CHGHEADER, ADDRCPT, ADDRCPT_PAR, DELRCPT, CHGFROM, REPLBODY) are handed to an
Editor, which applies each one before the next application sees the message, as Postfix's
cleanup edits its queue file.

Diagnostics, as milter8.c logs them: "connect to Milter service NAME: REASON", "milter NAME:
can't read SMFIC_X reply packet header: REASON", "milter NAME: unexpected filter response
... after event ...", "milter NAME: malformed reply: ...", ...; an application that failed
answers milter_default_action for the rest of the session (tempfail: "451 4.7.1 Service
unavailable - try again later", reject: "550 5.5.0 Service unavailable", accept: nothing,
quarantine: hold).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from oxipost.config import split_list
from oxipost.smtpd.policy import os_reason, setting_word, time_seconds

# Commands, MTA to filter.
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"
_SMFIC_NAMES = {
    SMFIC_ABORT: "SMFIC_ABORT",
    SMFIC_BODY: "SMFIC_BODY",
    SMFIC_CONNECT: "SMFIC_CONNECT",
    SMFIC_MACRO: "SMFIC_MACRO",
    SMFIC_BODYEOB: "SMFIC_BODYEOB",
    SMFIC_HELO: "SMFIC_HELO",
    SMFIC_HEADER: "SMFIC_HEADER",
    SMFIC_MAIL: "SMFIC_MAIL",
    SMFIC_EOH: "SMFIC_EOH",
    SMFIC_OPTNEG: "SMFIC_OPTNEG",
    SMFIC_QUIT: "SMFIC_QUIT",
    SMFIC_RCPT: "SMFIC_RCPT",
    SMFIC_DATA: "SMFIC_DATA",
    SMFIC_UNKNOWN: "SMFIC_UNKNOWN",
}

# Responses, filter to MTA.
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CONN_FAIL = b"f"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_REJECT = b"r"
SMFIR_TEMPFAIL = b"t"
SMFIR_SHUTDOWN = b"4"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_REPLYCODE = b"y"
SMFIR_QUARANTINE = b"q"
SMFIR_SKIP = b"s"
SMFIR_CHGFROM = b"e"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SETSYMLIST = b"l"
_SMFIR_NAMES = {
    SMFIR_ADDRCPT: "SMFIR_ADDRCPT",
    SMFIR_DELRCPT: "SMFIR_DELRCPT",
    SMFIR_ACCEPT: "SMFIR_ACCEPT",
    SMFIR_REPLBODY: "SMFIR_REPLBODY",
    SMFIR_CONTINUE: "SMFIR_CONTINUE",
    SMFIR_DISCARD: "SMFIR_DISCARD",
    SMFIR_CONN_FAIL: "SMFIR_CONN_FAIL",
    SMFIR_CHGHEADER: "SMFIR_CHGHEADER",
    SMFIR_PROGRESS: "SMFIR_PROGRESS",
    SMFIR_REJECT: "SMFIR_REJECT",
    SMFIR_TEMPFAIL: "SMFIR_TEMPFAIL",
    SMFIR_SHUTDOWN: "SMFIR_SHUTDOWN",
    SMFIR_ADDHEADER: "SMFIR_ADDHEADER",
    SMFIR_INSHEADER: "SMFIR_INSHEADER",
    SMFIR_REPLYCODE: "SMFIR_REPLYCODE",
    SMFIR_QUARANTINE: "SMFIR_QUARANTINE",
    SMFIR_SKIP: "SMFIR_SKIP",
    SMFIR_CHGFROM: "SMFIR_CHGFROM",
    SMFIR_ADDRCPT_PAR: "SMFIR_ADDRCPT_PAR",
    SMFIR_SETSYMLIST: "SMFIR_SETSYMLIST",
}

# Protocol flags: events the filter does not want, replies it will not send.
SMFIP_NOCONNECT = 1 << 0
SMFIP_NOHELO = 1 << 1
SMFIP_NOMAIL = 1 << 2
SMFIP_NORCPT = 1 << 3
SMFIP_NOBODY = 1 << 4
SMFIP_NOHDRS = 1 << 5
SMFIP_NOEOH = 1 << 6
SMFIP_NR_HDR = 1 << 7
SMFIP_NOUNKNOWN = 1 << 8
SMFIP_NODATA = 1 << 9
SMFIP_SKIP = 1 << 10
SMFIP_RCPT_REJ = 1 << 11
SMFIP_NR_CONN = 1 << 12
SMFIP_NR_HELO = 1 << 13
SMFIP_NR_MAIL = 1 << 14
SMFIP_NR_RCPT = 1 << 15
SMFIP_NR_DATA = 1 << 16
SMFIP_NR_UNKN = 1 << 17
SMFIP_NR_EOH = 1 << 18
SMFIP_NR_BODY = 1 << 19
SMFIP_HDR_LEADSPC = 1 << 20
_NOREPLY_MASK = (
    SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_RCPT
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_HDR
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY
)
_V2_MASK = (
    SMFIP_NOCONNECT
    | SMFIP_NOHELO
    | SMFIP_NOMAIL
    | SMFIP_NORCPT
    | SMFIP_NOBODY
    | SMFIP_NOHDRS
    | SMFIP_NOEOH
)
_NOSEND_MASK = _V2_MASK | SMFIP_NOUNKNOWN | SMFIP_NODATA
_V3_MASK = _V2_MASK | SMFIP_NOUNKNOWN
_V4_MASK = _V3_MASK | SMFIP_NODATA
_V6_MASK = _V4_MASK | SMFIP_SKIP | SMFIP_RCPT_REJ | _NOREPLY_MASK | SMFIP_HDR_LEADSPC
# milter_protocol's words: the events each announces, in reverse version order (an
# application of an older version than ours gets the next lower one's events).
_EVENT_MASKS = {"6": _V6_MASK, "4": _V4_MASK, "3": _V3_MASK, "2": _V2_MASK}
_NO_HEADER_REPLY = "no_header_reply"

# Actions: what Postfix lets an application do at the end of the message.
SMFIF_ADDHDRS = 1 << 0
SMFIF_CHGBODY = 1 << 1
SMFIF_ADDRCPT = 1 << 2
SMFIF_DELRCPT = 1 << 3
SMFIF_CHGHDRS = 1 << 4
SMFIF_QUARANTINE = 1 << 5
SMFIF_CHGFROM = 1 << 6
SMFIF_ADDRCPT_PAR = 1 << 7
SMFIF_SETSYMLIST = 1 << 8
MY_ACTIONS = (
    SMFIF_ADDHDRS
    | SMFIF_ADDRCPT
    | SMFIF_DELRCPT
    | SMFIF_CHGHDRS
    | SMFIF_CHGBODY
    | SMFIF_QUARANTINE
    | SMFIF_CHGFROM
    | SMFIF_ADDRCPT_PAR
    | SMFIF_SETSYMLIST
)

# The macro classes of OPTNEG's macro lists (SMFIM_*), as our macro class names.
_SMFIM = ["connect", "helo", "mail", "rcpt", "data", "eod", "eoh"]
MACRO_CLASSES = ("connect", "helo", "mail", "rcpt", "data", "eoh", "eod", "unknown_command")
_MACRO_PARAMS = {
    "connect": "milter_connect_macros",
    "helo": "milter_helo_macros",
    "mail": "milter_mail_macros",
    "rcpt": "milter_rcpt_macros",
    "data": "milter_data_macros",
    "eoh": "milter_end_of_header_macros",
    "eod": "milter_end_of_data_macros",
    "unknown_command": "milter_unknown_command_macros",
}

CHUNK_SIZE = 65535
# Postfix refuses a packet longer than this (XXX_MAX_DATA).
MAX_DATA = 0x7FFFFFFF // 2

REJECT = "550 5.7.1 Command rejected"
TEMPFAIL = "451 4.7.1 Service unavailable - try again later"
CONF_ERROR = "451 4.3.5 Server configuration problem - try again later"

# Milter states (milter8.c's MILTER8_STAT_*).
ERROR, CLOSED, READY, ENVELOPE, MESSAGE, ACCEPT_CON, ACCEPT_MSG, REJECT_CON = range(1, 9)

FAMILY_INET = b"4"
FAMILY_INET6 = b"6"
FAMILY_UNIX = b"L"
FAMILY_UNKNOWN = b"U"


class Editor(Protocol):
    """Where the end-of-message modifications go (Postfix's cleanup). Each method answers
    None, or a reply that ends the message (an edit that failed)."""

    def add_header(self, name: str, space: str, value: str) -> str | None: ...
    def ins_header(self, index: int, name: str, space: str, value: str) -> str | None: ...
    def upd_header(self, index: int, name: str, space: str, value: str) -> str | None: ...
    def del_header(self, index: int, name: str) -> str | None: ...
    def add_rcpt(self, rcpt: str, params: str) -> str | None: ...
    def del_rcpt(self, rcpt: str) -> str | None: ...
    def chg_from(self, sender: str, params: str) -> str | None: ...
    def repl_body(self, body: bytes) -> str | None: ...
    def headers(self) -> list[str]: ...
    def body(self) -> bytes: ...


@dataclass(frozen=True)
class MilterSettings:
    """One application: its endpoint and the settings it runs with."""

    name: str
    conn_timeout: float
    cmd_timeout: float
    msg_timeout: float
    protocol: str
    default_action: str


@dataclass(frozen=True)
class MilterConf:
    """What a list of milters (smtpd_milters, non_smtpd_milters) needs from main.cf."""

    milters: tuple[MilterSettings, ...]
    macros: dict[str, list[str]]
    macro_defaults: dict[str, str]


def milter_conf(cfg: Any, param: str, value: str | None = None) -> MilterConf | None:
    """The milters `param` names (or `value`, a table's result in its place) with their
    settings; None when it names none (then no session pays anything for milters)."""
    names = split_list(cfg.get(param) if value is None else value)
    if not names:
        return None
    milters = []
    for item in names:
        words = split_list(item.strip().removeprefix("{").removesuffix("}"))
        own = dict(setting_word(word) for word in words[1:])

        def setting(name: str, param: str, own: dict[str, str] = own) -> str:
            return own.get(name) or cfg.get(param)

        milters.append(
            MilterSettings(
                name=words[0] if words else "",
                conn_timeout=time_seconds(setting("connect_timeout", "milter_connect_timeout")),
                cmd_timeout=time_seconds(setting("command_timeout", "milter_command_timeout")),
                msg_timeout=time_seconds(setting("content_timeout", "milter_content_timeout")),
                protocol=setting("protocol", "milter_protocol"),
                default_action=setting("default_action", "milter_default_action"),
            )
        )
    macros = {kind: split_list(cfg.get(param)) for kind, param in _MACRO_PARAMS.items()}
    defaults = dict(setting_word(w) for w in split_list(cfg.get("milter_macro_defaults")))
    return MilterConf(tuple(milters), macros, defaults)


class _Error(Exception):
    """A failed exchange with an application, already logged."""


def _cstrings(*items: str) -> bytes:
    return b"".join(s.encode("utf-8", "surrogateescape") + b"\0" for s in items)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Milter8:
    """One application for one session (milter8.c's MILTER8)."""

    def __init__(self, settings: MilterSettings, log: Any) -> None:
        self.s = settings
        self.name = settings.name
        self.log = log
        self.state = CLOSED
        self.def_reply: str | None = None
        self.skip_event: bytes = b""
        self.version = 0
        self.rq_mask = 0
        self.ev_mask = 0
        self.np_mask = 0
        self.macros: dict[str, list[str]] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.timeout = settings.cmd_timeout

    # Errors -----------------------------------------------------------------------------

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def _conf_error(self) -> _Error:
        self._close()
        action = self.s.default_action.strip().lower()
        if action == "accept":
            self.def_reply = None
        elif action == "quarantine":
            self.def_reply = "Hdefault_action"
        else:
            self.def_reply = CONF_ERROR
        self.state = ERROR
        return _Error()

    def _comm_error(self) -> _Error:
        self._close()
        action = self.s.default_action.strip().lower()
        if action == "accept":
            self.def_reply = None
        elif action == "reject":
            self.def_reply = "550 5.5.0 Service unavailable"
        elif action == "tempfail":
            self.def_reply = TEMPFAIL
        elif action == "quarantine":
            self.def_reply = "Hdefault_action"
        else:
            self.log.warning(
                f"milter {self.name}: unrecognized default action: {self.s.default_action}"
            )
            self.def_reply = CONF_ERROR
        self.state = ERROR
        return _Error()

    # The wire ---------------------------------------------------------------------------

    def _write(self, cmd: bytes, data: bytes = b"") -> None:
        assert self.writer is not None
        self.writer.write(struct.pack(">I", len(data) + 1) + cmd + data)

    async def _flush(self) -> None:
        assert self.writer is not None
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as e:
            self.log.warning(f"milter {self.name}: error writing command: {os_reason(e)}")
            raise self._comm_error() from None

    async def _read(self, event: bytes) -> tuple[bytes, bytes]:
        """One response: (command code, its data)."""
        assert self.reader is not None
        try:
            head = await asyncio.wait_for(self.reader.readexactly(4), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            why = os_reason(e) if not isinstance(e, asyncio.IncompleteReadError) else "Success"
            self.log.warning(
                f"milter {self.name}: can't read {_SMFIC_NAMES.get(event, '(unknown MTA event)')}"
                f" reply packet header: {why}"
            )
            raise self._comm_error() from None
        (length,) = struct.unpack(">I", head)
        if length < 1:
            self.log.warning(f"milter {self.name}: bad packet length: {length}")
            raise self._comm_error()
        if length > MAX_DATA:
            self.log.warning(
                f"milter {self.name}: unreasonable packet length: {length} > {MAX_DATA}"
            )
            raise self._comm_error()
        try:
            packet = await asyncio.wait_for(self.reader.readexactly(length), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            why = os_reason(e) if not isinstance(e, asyncio.IncompleteReadError) else "Success"
            self.log.warning(f"milter {self.name}: EOF while reading command code: {why}")
            raise self._comm_error() from None
        return packet[:1], packet[1:]

    def _strings(self, data: bytes, count: int, optional: int = 0) -> list[str]:
        """`count` NUL-terminated strings (the last `optional` of them may be missing)."""
        parts = data.split(b"\0")
        if parts[-1] != b"" or not count - optional <= len(parts) - 1 <= count:
            self.log.warning(f"milter {self.name}: missing string null termimator")
            raise self._comm_error()
        return [_text(p) for p in parts[:-1]]

    # Connect and negotiate -------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and negotiate (milter8_connect); on failure the state is ERROR."""
        try:
            await self._connect()
        except _Error:
            pass

    async def _connect(self) -> None:
        my_version = 0
        my_events = 0
        for word in split_list(self.s.protocol):
            mask = _EVENT_MASKS.get(word, SMFIP_NR_HDR if word == _NO_HEADER_REPLY else -1)
            if mask == -1 or (word in _EVENT_MASKS and my_version):
                self.log.warning(f"milter {self.name}: bad protocol information: {word}")
                raise self._conf_error()
            if word in _EVENT_MASKS:
                my_version = int(word)
            my_events |= mask
        if not my_events or not my_version:
            self.log.warning(f"milter {self.name}: no protocol version information")
            raise self._conf_error()
        self.np_mask = _NOSEND_MASK & ~my_events
        transport, _, endpoint = self.name.partition(":")
        if not endpoint or not transport:
            self.log.warning(f'Milter service needs transport:endpoint instead of "{self.name}"')
            raise self._conf_error()
        try:
            if transport == "inet":
                host, _, port = endpoint.rpartition(":")
                host = host.removeprefix("[").removesuffix("]")
                if not port.isdigit():
                    port = str(socket.getservbyname(port, "tcp"))
                conn = asyncio.open_connection(host or "localhost", int(port))
            elif transport in ("unix", "local"):
                conn = asyncio.open_unix_connection(endpoint)
            else:
                self.log.warning(
                    f"invalid transport name: {transport} in Milter service: {self.name}"
                )
                raise self._conf_error()
            self.reader, self.writer = await asyncio.wait_for(conn, self.s.conn_timeout)
        except (OSError, TimeoutError) as e:
            # asyncio words a refused connection its own way; Postfix says strerror().
            errno = getattr(e, "errno", None)
            why = os.strerror(errno) if errno else os_reason(e)
            self.log.warning(f"connect to Milter service {self.name}: {why}")
            raise self._comm_error() from None
        self.timeout = self.s.cmd_timeout
        self._write(SMFIC_OPTNEG, struct.pack(">III", my_version, MY_ACTIONS, my_events))
        try:
            await self._flush()
            cmd, data = await self._read(SMFIC_OPTNEG)
        except _Error:
            self.log.warning(f"milter {self.name}: read error in initial handshake")
            raise
        if cmd != SMFIC_OPTNEG:
            self.log.warning(
                f'milter {self.name}: unexpected reply "{_text(cmd)}" in initial handshake'
            )
            raise self._comm_error()
        if len(data) < 12:
            self.log.warning(f"milter {self.name}: input packet too short for network long")
            self.log.warning(f"milter {self.name}: read error in initial handshake")
            raise self._comm_error()
        self.version, self.rq_mask, self.ev_mask = struct.unpack(">III", data[:12])
        if self.version > my_version:
            self.log.warning(
                f"milter {self.name}: protocol version {self.version} conflict"
                f" with MTA protocol version {my_version}"
            )
            raise self._comm_error()
        if self.rq_mask & MY_ACTIONS != self.rq_mask:
            self.log.warning(
                f"milter {self.name}: request mask 0x{self.rq_mask:x} conflict"
                f" with MTA request mask 0x{MY_ACTIONS:x}"
            )
            raise self._comm_error()
        if self.version < my_version:
            for vers, mask in _EVENT_MASKS.items():
                if int(vers) <= self.version:
                    self.np_mask |= _NOSEND_MASK & ~mask
                    break
            else:
                self.log.warning(f"milter {self.name}: unexpected protocol version {self.version}")
        self.state = READY
        self.def_reply = None
        self.skip_event = b""
        rest = data[12:]
        if rest:
            # Secondary negotiation: the application's own macro lists.
            self.macros = {}
            while rest:
                if len(rest) < 5 or b"\0" not in rest[4:]:
                    self.log.warning(f"milter {self.name}: missing string null termimator")
                    raise self._comm_error()
                (kind,) = struct.unpack(">I", rest[:4])
                end = rest.index(b"\0", 4)
                names = _text(rest[4:end])
                rest = rest[end + 1 :]
                if kind >= len(_SMFIM):
                    self.log.warning(f"milter {self.name}: ignoring unknown macro type {kind}")
                else:
                    self.macros[_SMFIM[kind]] = split_list(names)

    # Events ----------------------------------------------------------------------------

    async def event(
        self,
        event: bytes,
        skip_flag: int,
        no_reply: bool,
        macros: Sequence[tuple[str, str]] | None,
        data: bytes = b"",
        editor: Editor | None = None,
    ) -> str | None:
        """Send one event with its macros and read the reply or replies (milter8_event)."""
        if self.writer is None or self.def_reply is not None:
            return self.def_reply
        if skip_flag & self.np_mask:
            return self.def_reply
        if self.skip_event:
            if event == self.skip_event:
                return self.def_reply
            self.skip_event = b""
        try:
            if macros is not None:
                self._write(SMFIC_MACRO, event + _cstrings(*(x for kv in macros for x in kv)))
            if skip_flag & self.ev_mask:
                await self._flush()
                return self.def_reply
            self._write(event, data)
            await self._flush()
            if no_reply:
                return self.def_reply
            return await self._replies(event, editor)
        except _Error:
            return self.def_reply

    async def _replies(self, event: bytes, editor: Editor | None) -> str | None:
        connect_event = event in (SMFIC_CONNECT, SMFIC_HELO)
        edit_resp: str | None = None
        new_body: bytearray | None = None
        body_locked = False
        retval: str | None = None
        while True:
            cmd, data = await self._read(event)
            if new_body is not None and cmd != SMFIR_REPLBODY:
                # A body replacement ends at the first other request.
                if edit_resp is None and editor is not None:
                    edit_resp = editor.repl_body(bytes(new_body))
                new_body = None
                body_locked = True
            if (
                cmd
                in (
                    SMFIR_PROGRESS,
                    SMFIR_CONTINUE,
                    SMFIR_ACCEPT,
                    SMFIR_DISCARD,
                    SMFIR_REJECT,
                    SMFIR_TEMPFAIL,
                    SMFIR_SHUTDOWN,
                    SMFIR_SKIP,
                )
                and data
            ):
                self.log.warning(
                    f"milter {self.name}: reply {_SMFIR_NAMES[cmd]} was followed by"
                    f" {len(data)} data bytes"
                )
                raise self._comm_error()
            if cmd == SMFIR_PROGRESS:
                continue
            if cmd == SMFIR_CONTINUE:
                retval = self.def_reply
                break
            if cmd == SMFIR_ACCEPT:
                if connect_event:
                    self._close()
                    self.state = ACCEPT_CON
                else:
                    self.state = ACCEPT_MSG
                retval = self.def_reply
                break
            if cmd == SMFIR_DISCARD:
                if connect_event:
                    self.log.warning(
                        f"milter {self.name}: DISCARD action is not allowed for connect or helo"
                    )
                    retval = self.def_reply
                else:
                    self.state = ACCEPT_MSG
                    retval = "D"
                break
            if cmd in (SMFIR_REJECT, SMFIR_TEMPFAIL, SMFIR_REPLYCODE):
                if cmd == SMFIR_REPLYCODE:
                    reply = self._replycode(data)
                else:
                    reply = REJECT if cmd == SMFIR_REJECT else TEMPFAIL
                if connect_event:
                    self._close()
                    self.state = REJECT_CON
                    self.def_reply = reply
                retval = reply
                break
            if cmd == SMFIR_SHUTDOWN:
                self._close()
                self.state = REJECT_CON
                retval = self.def_reply = "S"
                break
            if cmd == SMFIR_QUARANTINE:
                # Not a decision: the reason holds the message, the replies go on.
                reason = data[:-1] if data.endswith(b"\0") else data
                self.def_reply = "H" + _text(reason[:100])
                continue
            if cmd == SMFIR_SKIP:
                self.skip_event = event
                retval = self.def_reply
                break
            if event == SMFIC_BODYEOB and editor is not None:
                if cmd == SMFIR_REPLBODY:
                    if body_locked:
                        self.log.warning(
                            f"milter {self.name}: body replacement requests can't currently"
                            " be mixed with other requests"
                        )
                        raise self._conf_error()
                    if new_body is None:
                        new_body = bytearray()
                    new_body += data
                    continue
                resp = self._edit(cmd, data, editor)
                if edit_resp is None:
                    edit_resp = resp
                continue
            self.log.warning(
                f"milter {self.name}: unexpected filter response"
                f" {_SMFIR_NAMES.get(cmd, '(unknown filter reply)')}"
                f" after event {_SMFIC_NAMES.get(event, '(unknown MTA event)')}"
            )
            raise self._comm_error()
        if edit_resp is not None and (retval is None or retval[0] not in "DS4"):
            retval = edit_resp
        return retval

    def _replycode(self, data: bytes) -> str:
        text = _text(data.rstrip(b"\0"))
        if (
            text[:1] not in ("4", "5")
            or not text[1:3].isdigit()
            or text[3:4] not in (" ", "-")
            or (text[4:5].isdigit() and text[4:5] != text[:1])
        ):
            self.log.warning(f"milter {self.name}: malformed reply: {text}")
            raise self._conf_error()
        if "%" in text:
            # Sendmail uses the reply as a format: %% is one %, a single % goes.
            out = []
            i = 0
            while i < len(text):
                ch = text[i]
                i += 1
                if ch == "%":
                    if i >= len(text):
                        break
                    ch = text[i]
                    i += 1
                out.append(ch)
            text = "".join(out)
        return text

    def _edit(self, cmd: bytes, data: bytes, editor: Editor) -> str | None:
        space = "" if self.ev_mask & SMFIP_HDR_LEADSPC else " "
        if cmd in (SMFIR_CHGHEADER, SMFIR_INSHEADER):
            if len(data) < 4:
                self.log.warning(f"milter {self.name}: input packet too short for network long")
                raise self._comm_error()
            (index,) = struct.unpack(">i", data[:4])
            name, value = self._strings(data[4:], 2)
            if cmd == SMFIR_INSHEADER:
                if index + 1 < 1:
                    self.log.warning(f"milter {self.name}: bad insert header index: {index}")
                    raise self._conf_error()
                return editor.ins_header(index + 1, name, space, value)
            index = index or 1
            if index < 1:
                self.log.warning(f"milter {self.name}: bad change header index: {index}")
                raise self._conf_error()
            if not name:
                self.log.warning(f"milter {self.name}: null change header name")
                raise self._conf_error()
            if value:
                return editor.upd_header(index, name, space, value)
            return editor.del_header(index, name)
        if cmd == SMFIR_ADDHEADER:
            name, value = self._strings(data, 2)
            return editor.add_header(name, space, value)
        if cmd in (SMFIR_CHGFROM, SMFIR_ADDRCPT_PAR):
            addr, *params = self._strings(data, 2, optional=1)
            if cmd == SMFIR_CHGFROM:
                return editor.chg_from(addr, params[0] if params else "")
            return editor.add_rcpt(addr, params[0] if params else "")
        if cmd == SMFIR_ADDRCPT:
            return editor.add_rcpt(self._strings(data, 1)[0], "")
        if cmd == SMFIR_DELRCPT:
            return editor.del_rcpt(self._strings(data, 1)[0])
        self.log.warning(
            f"milter {self.name}: unexpected filter response"
            f" {_SMFIR_NAMES.get(cmd, '(unknown filter reply)')} after event SMFIC_BODYEOB"
        )
        raise self._comm_error()

    async def message(
        self,
        headers: list[str],
        body: bytes,
        eoh_macros: Sequence[tuple[str, str]] | None,
        eod_macros: Sequence[tuple[str, str]] | None,
        editor: Editor,
    ) -> str | None:
        """The message (milter8_message): each header as name and value, EOH, the body in
        chunks, EOB with its modifications. `headers` in internal form (continuation lines
        joined by newlines) without what the milter must not see."""
        if self.state != ENVELOPE:
            return self.def_reply
        self.state = MESSAGE
        self.timeout = self.s.msg_timeout
        resp: str | None = None
        try:
            if not self.ev_mask & SMFIP_NOHDRS:
                no_reply = bool(self.ev_mask & SMFIP_NR_HDR)
                for header in headers:
                    name, _, value = header.partition(":")
                    name = name.rstrip(" \t")
                    if not self.ev_mask & SMFIP_HDR_LEADSPC and value.startswith(" "):
                        value = value[1:]
                    resp = await self.event(
                        SMFIC_HEADER,
                        SMFIP_NOHDRS,
                        no_reply,
                        eoh_macros,
                        _cstrings(name, value),
                    )
                    if self._message_done(resp):
                        return resp
            if not self.ev_mask & SMFIP_NOEOH:
                no_reply = bool(self.ev_mask & SMFIP_NR_EOH)
                resp = await self.event(SMFIC_EOH, SMFIP_NOEOH, no_reply, eoh_macros)
                if self._message_done(resp):
                    return resp
            if not self.ev_mask & SMFIP_NOBODY:
                no_reply = bool(self.ev_mask & SMFIP_NR_BODY)
                for start in range(0, len(body), CHUNK_SIZE):
                    chunk = body[start : start + CHUNK_SIZE]
                    resp = await self.event(SMFIC_BODY, SMFIP_NOBODY, no_reply, eod_macros, chunk)
                    if self._message_done(resp):
                        return resp
            return await self.event(SMFIC_BODYEOB, 0, False, eod_macros, editor=editor)
        finally:
            self.timeout = self.s.cmd_timeout
            if self.state in (MESSAGE, ACCEPT_MSG):
                self.state = ENVELOPE

    def _message_done(self, resp: str | None) -> bool:
        return self.state != MESSAGE or resp is not None

    def abort(self) -> None:
        """The transaction ends (milter8_abort): the packet goes out with the next event,
        or at QUIT."""
        if self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG) and self.writer is not None:
            self._write(SMFIC_ABORT)
            self.state = ENVELOPE

    async def quit(self) -> None:
        """The client went (milter8_disc_event)."""
        if self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG) and self.writer is not None:
            self._write(SMFIC_QUIT)
            try:
                await self._flush()
            except _Error:
                pass
        self._close()
        self.state = CLOSED
        self.def_reply = None


class Milters:
    """The session's applications, asked in order (Postfix's milter.c). `lookup` gives a
    macro's value (None when it has none)."""

    def __init__(self, conf: MilterConf, lookup: Callable[[str], str | None], log: Any) -> None:
        self.conf = conf
        self.lookup = lookup
        self.list = [Milter8(s, log) for s in conf.milters]

    def _macros(self, milter: Milter8, kind: str) -> list[tuple[str, str]] | None:
        names = milter.macros.get(kind) if milter.macros is not None else None
        if names is None:
            names = self.conf.macros.get(kind, [])
        out = []
        for name in names:
            value = self.lookup(name)
            if value is None:
                value = self.conf.macro_defaults.get(name)
            if value is not None:
                out.append((name, value))
        return out or None

    async def connect_event(self, client_name: str, addr: str, port: int) -> str | None:
        """CONNECT, after connecting each application (libmilter wants a connection per
        SMTP session)."""
        resp = None
        for m in self.list:
            if resp is not None:
                break
            await m.connect()
            if m.state == ERROR:
                resp = m.def_reply
                continue
            m.state = ENVELOPE
            # Postfix's "unknown" client name is Sendmail's "[address]".
            name = client_name if client_name != "unknown" or addr == "unknown" else f"[{addr}]"
            if addr == "unknown":
                data = _cstrings(name) + FAMILY_UNKNOWN
            else:
                family = FAMILY_INET6 if ":" in addr else FAMILY_INET
                data = _cstrings(name) + family + struct.pack(">H", port) + _cstrings(addr)
            no_reply = bool(m.ev_mask & SMFIP_NR_CONN)
            resp = await m.event(
                SMFIC_CONNECT, SMFIP_NOCONNECT, no_reply, self._macros(m, "connect"), data
            )
        return resp

    async def _each(
        self,
        states: tuple[int, ...],
        event: bytes,
        skip: int,
        nr: int,
        kind: str,
        data: bytes,
        want: int = 0,
    ) -> str | None:
        for m in self.list:
            if want and not m.ev_mask & want:
                continue
            if m.state not in states:
                if m.def_reply is not None:
                    return m.def_reply
                continue
            resp = await m.event(event, skip, bool(m.ev_mask & nr), self._macros(m, kind), data)
            if resp is not None:
                return resp
        return None

    async def helo_event(self, helo: str) -> str | None:
        return await self._each(
            (ENVELOPE, ACCEPT_MSG), SMFIC_HELO, SMFIP_NOHELO, SMFIP_NR_HELO, "helo", _cstrings(helo)
        )

    async def mail_event(self, args: list[str]) -> str | None:
        data = _cstrings(*args)
        return await self._each((ENVELOPE,), SMFIC_MAIL, SMFIP_NOMAIL, SMFIP_NR_MAIL, "mail", data)

    async def rcpt_event(self, args: list[str], rejected: bool = False) -> str | None:
        """RCPT; for a recipient the MTA `rejected`, only to the applications that asked
        for those (SMFIP_RCPT_REJ), as Postfix's milter_rcpt_event with
        MILTER_FLAG_WANT_RCPT_REJ."""
        data = _cstrings(*args)
        want = SMFIP_RCPT_REJ if rejected else 0
        return await self._each(
            (ENVELOPE,), SMFIC_RCPT, SMFIP_NORCPT, SMFIP_NR_RCPT, "rcpt", data, want
        )

    async def data_event(self) -> str | None:
        return await self._each((ENVELOPE,), SMFIC_DATA, SMFIP_NODATA, SMFIP_NR_DATA, "data", b"")

    async def message(self, editor: Editor, hidden: int) -> str | None:
        """The message to each application in turn, each seeing the edits of those before
        it; the first `hidden` headers (smtpd's Received:) are not shown."""
        for m in self.list:
            if m.state != ENVELOPE:
                if m.def_reply is not None:
                    return m.def_reply
                continue
            resp = await m.message(
                editor.headers()[hidden:],
                editor.body(),
                self._macros(m, "eoh"),
                self._macros(m, "eod"),
                editor,
            )
            if resp is not None:
                return resp
        return None

    def abort(self) -> None:
        for m in self.list:
            m.abort()

    async def quit(self) -> None:
        for m in self.list:
            await m.quit()


__all__ = ["Editor", "MilterConf", "Milters", "milter_conf"]
