"""smtpd - the SMTP server session, with Postfix's replies and rules

One Session per connection (listener.Connection). The command loop, DATA/BDAT readers and
reply texts follow src/smtpd/smtpd.c rather than aiosmtpd's protocol class, whose DATA
reader, line limits and reply texts differ from Postfix's in ways clients can observe
(aiosmtpd remains the package's SMTP dependency for its testing helpers).

What it enforces, as Postfix 3.9 does:
  - only <CR><LF>.<CR><LF> ends DATA; bare <LF> is normalised (smtpd_forbid_bare_newline =
    normalize) or refuses the message ("reject") for clients outside the exclusions, for
    whom only the <CR> of a line's <CR><LF> goes, as in Postfix 3.7.11 (smtp_line_end);
  - BDAT content read as Postfix 3.7's smtpd reads it, chunk by chunk (ChunkReader): a
    chunk is refused when it would take what was queued past message_size_limit, and with
    "reject" a bare <LF> refuses its chunk or, in the LAST one, the message, not the session;
  - pipelining: input pending after a command that must end a group other than QUIT (or
    after any command before EHLO) ends the session with "554 5.5.0 Error: SMTP protocol
    synchronization", logged with that input;
  - commands longer than line_length_limit are cut there and run as cut, the rest of the
    line skipped, with Postfix 3.7's "request longer than" warning; message size is counted
    as DATA arrives and an oversize message is read to its end without being kept;
  - the error counters (soft/hard limits), smtpd_timeout, per-client connection limits;
  - 250 for a message only after the queue committed it.

Diagnostics: session events are logged as Postfix logs them ("connect from", "lost
connection after DATA from", "NOQUEUE: reject: RCPT from ...", "disconnect from").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from oxipost import tls
from oxipost.anvil.client import AnvilClient
from oxipost.bounce import post_notice, transcript
from oxipost.cleanup.header import local_client
from oxipost.cleanup.message import size_checked
from oxipost.cleanup.milter import MilterEditor, milter_log
from oxipost.delivery.address import quote_local
from oxipost.delivery.dsn import orcpt_decode, xtext_decode
from oxipost.envelope import Envelope, Recipient, notify_ok
from oxipost.flow import FlowGate
from oxipost.is_header import header_length
from oxipost.maildate import mail_date
from oxipost.maps import TableError, open_table
from oxipost.maps.search import maps_find_warned
from oxipost.milter import MilterConf, milter_conf
from oxipost.printable import escape, printable
from oxipost.qmgr.control import flush_site_ok
from oxipost.rewrite.resolve import split_address, split_internal, unquote_822_local
from oxipost.smtpd import replies as R
from oxipost.smtpd.check import (
    NAME_NOT_FOUND,
    NAME_OK,
    NAME_TEMPORARY,
    Checker,
    ClientState,
    Reply,
    match_namadr,
    validate,
)
from oxipost.smtpd.listener import Connection, Listener
from oxipost.smtpd.milter import SHUTDOWN, SessionMilters
from oxipost.smtpd.xclient import (
    XCLIENT_ATTRS,
    XFORWARD_ATTRS,
    Forwarded,
    Identity,
    XError,
    apply_xclient,
    apply_xforward,
    neuter,
)
from oxipost.valid import valid_hostname, valid_mailhost_literal
from oxipost.verp import verp_delims_verify

CRLF = b"\r\n"
# The notify_classes a session's transcript goes to the postmaster for (smtpd_chat_notify);
# the session keeps its "In:"/"Out:" lines only when notify_classes names one of these.
PROTOCOL_ERROR, POLICY_ERROR = 1, 2
_ERROR_CLASSES = {"protocol": PROTOCOL_ERROR, "policy": POLICY_ERROR}
_BARE_LF = re.compile(rb"(?<!\r)\n")
# The characters Postfix's smtpd neuters in a HELO name (NEUTER_CHARACTERS).
_NEUTERED = re.compile(r'[ <>()\\";@]')
_DATA_CHUNK = 65536
# Commands after which a client must wait for our reply (RFC 2920 section 3.1).
# STARTTLS is left out: what follows it in plaintext is discarded, not answered (CVE-2011-0411).
_GROUP_END = {"EHLO", "HELO", "DATA", "NOOP", "VRFY", "QUIT", "AUTH", "ETRN", "EXPN"}
# The commands smtpd_junk_command_limit counts (Postfix's SMTPD_CMD_FLAG_LIMIT).
_JUNK = {"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"}
# The access(5) actions smtpd hands to cleanup, as the envelope attributes cleanup reads:
# HOLD and DISCARD, the BCC recipients, FILTER's transport:nexthop (over content_filter)
# and REDIRECT's target (qmgr sends the mail there, as for a header_checks REDIRECT).
_ACTION_ATTRS = (
    ("HOLD", "hold"),
    ("DISCARD", "discard"),
    ("BCC", "bcc"),
    ("FILTER", "filter"),
    ("REDIRECT", "redirect_to"),
)
# Postfix's ehlo_mask_table: the order "discarding EHLO keywords: ..." names them in.
_EHLO_MASK_ORDER = (
    "8bitmime",
    "auth",
    "etrn",
    "pipelining",
    "size",
    "verp",
    "vrfy",
    "xclient",
    "xforward",
    "starttls",
    "enhancedstatuscodes",
    "dsn",
    "smtputf8",
    "chunking",
)
# As str_ehlo_mask spells them: its table names SMTPUTF8's bit "EHLO_MASK_SMTPUTF8".
_EHLO_MASK_NAMES = {"smtputf8": "EHLO_MASK_SMTPUTF8"}
# The EHLO keyword whose mask name is not itself: "verp" discards XVERP.
_EHLO_MASK_KEYWORDS = {"xverp": "verp"}
_ESMTP_PARAMS_MAIL = {"SIZE", "BODY", "RET", "ENVID", "AUTH", "SMTPUTF8"}


# What Postfix's smtpd calls the session's stage once a message's end was answered.
AFTER_EOM = "END-OF-MESSAGE"


class QueueLike(Protocol):
    def new_id(self) -> str: ...

    async def enqueue(self, envelope: Envelope, content: bytes, qid: str = "") -> str: ...

    def free_space_ok(self, size: int) -> bool: ...


class Notifier(Protocol):
    """Passes requests to qmgr (wakeup, flush-site) without holding up the session."""

    def __call__(self, req: dict[str, object]) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ClientNames:
    """What smtpd_peername_lookup found: Postfix's client_name (confirmed by name->address)
    and reverse_client_name (the address->name lookup alone), and how each lookup ended."""

    name: str = "unknown"
    reverse_name: str = "unknown"
    name_status: str = NAME_NOT_FOUND
    reverse_name_status: str = NAME_NOT_FOUND


# h_errno of gethostbyaddr's "try again": getnameinfo turns it into EAI_AGAIN.
_H_TRY_AGAIN = 2


def name_lookup_status(e: Exception) -> str:
    """How a failed name lookup ended, as Postfix's TEMP_AI_ERROR reads it: EAI_AGAIN,
    EAI_MEMORY and EAI_SYSTEM (which Python raises as a plain OSError with the errno) are
    temporary, as is gethostbyaddr's TRY_AGAIN; other errors, and a name that does not
    decode, mean not found."""
    if isinstance(e, socket.gaierror):
        temporary = e.errno in (socket.EAI_AGAIN, socket.EAI_MEMORY)
        return NAME_TEMPORARY if temporary else NAME_NOT_FOUND
    if isinstance(e, socket.herror):
        return NAME_TEMPORARY if e.errno == _H_TRY_AGAIN else NAME_NOT_FOUND
    return NAME_TEMPORARY if isinstance(e, OSError) else NAME_NOT_FOUND


class Disconnect(Exception):
    """The session ends (client gone, or we closed it)."""


class Authenticator(Protocol):
    async def authenticate(
        self, session: Session, mechanism: str, initial: str | None
    ) -> str | None: ...


@dataclass
class Transaction:
    sender: str
    size: int = 0
    body: str = ""
    ret: str = ""
    envid: str = ""
    smtputf8: bool = False
    verp_delims: str = ""
    recipients: list[Recipient] = field(default_factory=list)
    rcpt_count: int = 0


class SmtpdServer:
    """Everything the sessions of one process share: config, checks, queue, counters."""

    def __init__(
        self,
        cfg: Any,
        queue: QueueLike,
        log: Any = None,
        tls_context: ssl.SSLContext | None = None,
        authenticator: Authenticator | None = None,
        cleanup: Callable[..., Any] | None = None,
        notify: Notifier | None = None,
    ) -> None:
        validate(cfg)
        self.cfg = cfg
        self.queue = queue
        self.log = log if log is not None else _NullLog()
        self.checker = Checker(cfg, self.log)
        self.tls_context = tls_context
        self.authenticator = authenticator
        self.cleanup = cleanup
        self.notify = notify
        self.hostname = cfg.get("myhostname")
        self.banner = cfg.get("smtpd_banner")
        self.size_limit = cfg.get_int("message_size_limit")
        self.log_external = cfg.get("info_log_address_format") == "external"
        self.line_limit = max(cfg.get_int("line_length_limit"), 512)
        # DATA is read in blocks that start where smtp_get's pieces of line_limit bytes
        # start, so that smtp_line() finds the last piece of a line within its last block.
        self.data_chunk = max(_DATA_CHUNK - _DATA_CHUNK % self.line_limit, self.line_limit)
        self.timeout = cfg.get_time("smtpd_timeout")
        self.soft_errors = cfg.get_int("smtpd_soft_error_limit")
        self.hard_errors = int(cfg.get("smtpd_hard_error_limit"))
        self.error_sleep = cfg.get_time("smtpd_error_sleep_time")
        self.rcpt_limit = cfg.get_int("smtpd_recipient_limit")
        self.junk_limit = cfg.get_int("smtpd_junk_command_limit")
        # smtpd_client_*_limit, counted by anvil(8) across every smtpd process. As Postfix,
        # smtpd talks to anvil only when one of them is on.
        self.conn_limit = cfg.get_int("smtpd_client_connection_count_limit")
        self.conn_rate_limit = cfg.get_int("smtpd_client_connection_rate_limit")
        self.mail_rate_limit = cfg.get_int("smtpd_client_message_rate_limit")
        self.rcpt_rate_limit = cfg.get_int("smtpd_client_recipient_rate_limit")
        self.tls_rate_limit = cfg.get_int("smtpd_client_new_tls_session_rate_limit")
        self.auth_rate_limit = cfg.get_int("smtpd_client_auth_rate_limit")
        limits = [self.conn_limit, self.conn_rate_limit, self.mail_rate_limit]
        limits += [self.rcpt_rate_limit, self.tls_rate_limit, self.auth_rate_limit]
        self.anvil = AnvilClient(cfg, self.log) if any(n > 0 for n in limits) else None
        self.service = cfg.get("service_name")
        self.wrapper = cfg.get_bool("smtpd_tls_wrappermode")
        self.forbid_unauth_pipelining = cfg.get_bool("smtpd_forbid_unauth_pipelining")
        self.peername_lookup = cfg.get_bool("smtpd_peername_lookup")
        protocols = cfg.get_list("inet_protocols")
        # XCLIENT and XFORWARD take an IPv6 address only when Postfix could talk IPv6.
        self.ipv6 = "all" in protocols or "ipv6" in protocols
        self._names: dict[str, tuple[float, ClientNames]] = {}
        self.sessions: set[asyncio.Task[None]] = set()
        # This worker's share of master.cf maxproc; 0 = no limit.
        self.max_sessions = 0
        # in_flow_delay (set by the smtpd service under master): a token per message, taken
        # where Postfix's cleanup takes it, when the queue file would be opened.
        self.flow: FlowGate | None = None
        # Where Postfix opens the queue file: MAIL, or the first accepted RCPT.
        self.open_at_mail = not cfg.get_bool("smtpd_delay_open_until_valid_rcpt")
        sec = cfg.get("smtpd_tls_security_level").strip().lower()
        if not sec:
            if cfg.get_bool("smtpd_enforce_tls"):
                sec = "encrypt"
            elif cfg.get_bool("smtpd_use_tls"):
                sec = "may"
        self.tls_level = sec if tls_context is not None or sec == "encrypt" else ""
        forbid = cfg.get("smtpd_forbid_bare_newline").strip().lower()
        self.bare_lf = {"yes": "normalize", "no": "off"}.get(forbid, forbid)
        # smtpd_milters: None when there are none, and then a session never looks again;
        # smtpd_milter_maps may choose others per client.
        self.milter_conf: MilterConf | None = milter_conf(cfg, "smtpd_milters")
        self.milter_maps = cfg.get_list("smtpd_milter_maps")
        # The EHLO keywords not announced (lower case); smtpd_discard_ehlo_keyword_address_maps
        # may name others for a client's address, in place of these.
        self.ehlo_discard = cfg.get_keywords("smtpd_discard_ehlo_keywords")
        self.ehlo_discard_maps = cfg.get_list("smtpd_discard_ehlo_keyword_address_maps")
        self.milters_on = self.milter_conf is not None or bool(self.milter_maps)
        self.notify_mask = 0
        for name in cfg.get_list("notify_classes"):
            self.notify_mask |= _ERROR_CLASSES.get(name, 0)

    async def client_names(self, peer: Any) -> ClientNames:
        """The client's names as Postfix's smtpd_peername_lookup finds them: the
        address->name lookup (getnameinfo, so /etc/hosts counts as for Postfix), then the
        name->address lookup that must lead back to the client's address. A result is kept
        for NAME_CACHE_TIME (a burst of connections from one client costs one lookup, the
        resolver would cache it too), unless a lookup failed for now: the next connection
        asks again."""
        addr = str(peer[0])
        loop = asyncio.get_running_loop()
        now = loop.time()
        cached = self._names.get(addr)
        if cached is not None and cached[0] > now:
            return cached[1]
        names = await self._look_up_names(peer, addr)
        if NAME_TEMPORARY not in (names.name_status, names.reverse_name_status):
            if len(self._names) >= NAME_CACHE_SIZE:
                self._names.clear()
            self._names[addr] = (now + NAME_CACHE_TIME, names)
        return names

    async def _look_up_names(self, peer: Any, addr: str) -> ClientNames:
        loop = asyncio.get_running_loop()
        try:
            # gethostbyaddr is what getnameinfo(NI_NAMEREQD) asks the resolver, but Python
            # 3.11.2's socket.getnameinfo (Debian's) holds the GIL while the resolver waits:
            # on asyncio's loop, whose getnameinfo runs it in a thread, one slow lookup would
            # stop every session of the process.
            host, _, _ = await loop.run_in_executor(None, socket.gethostbyaddr, addr)
        except (OSError, UnicodeError) as e:
            status = name_lookup_status(e)
            return ClientNames(name_status=status, reverse_name_status=status)
        if not valid_hostname(host):
            return ClientNames()
        try:
            infos = await loop.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as e:
            return ClientNames("unknown", host, name_lookup_status(e), NAME_OK)
        if any(_same_address(str(info[4][0]), addr) for info in infos):
            return ClientNames(host, host, NAME_OK, NAME_OK)
        return ClientNames("unknown", host, NAME_NOT_FOUND, NAME_OK)

    async def serve(self, sock: socket.socket) -> Listener:
        """Start accepting on an already bound and listening socket, at most max_sessions
        at a time (the others wait in the listen queue, as under Postfix's master)."""
        ssl_ctx = self.tls_context if self.wrapper else None
        listener = Listener(sock, self._accept, self.max_sessions, ssl_ctx, _DATA_CHUNK)
        listener.start()
        return listener

    async def close(self) -> None:
        """End what is left once the listener is closed: the sessions still running, then
        the requests to qmgr in flight (a task left pending when its loop closes is
        destroyed with a warning)."""
        if self.anvil is not None:
            # The sessions cut short are not reported one by one: anvil drops them all.
            await self.anvil.close()
        for task in list(self.sessions):
            task.cancel()
        await asyncio.gather(*self.sessions, return_exceptions=True)
        if self.notify is not None:
            await self.notify.close()

    async def _accept(self, conn: Connection) -> None:
        session = Session(self, conn)
        task = conn.task
        if task is not None:
            self.sessions.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self.sessions.discard(task)


class _NullLog:
    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass


class Session:
    # The transaction a policy request's instance attribute was made for, that instance,
    # and the next one's sequence number (Postfix's state->seqno, from 0 in each session).
    _instance: tuple[Any, str, int] = (None, "", 0)

    def __init__(self, server: SmtpdServer, conn: Connection) -> None:
        self.srv = server
        self.cfg = server.cfg
        self.conn = conn
        # The connection's own buffer: what arrives is appended to it, the session
        # consumes it in place.
        self.buf = conn.buf
        peer: Any = conn.get_extra_info("peername") or ("unknown", 0)
        self.addr = str(peer[0])
        self.port = int(peer[1]) if len(peer) > 1 else 0
        self.peer = peer
        local: Any = conn.get_extra_info("sockname") or ("", 0)
        self.server_addr, self.server_port = str(local[0]), int(local[1])
        self.state = ClientState(addr=self.addr, log_external=self.srv.log_external)
        self.tx: Transaction | None = None
        # Postfix's state->msg_size: MAIL's SIZE= is kept even when that MAIL fails, and
        # judged again at the next MAIL without SIZE= until mail_reset().
        self.msg_size = 0
        self.errors = 0
        self.junk = 0
        self.tls_active = server.wrapper
        self.helo_kind = ""  # "", "HELO" or "EHLO"
        self.last_cmd = "CONNECT"
        # The bytes of DATA read so far, for a lost connection's or a timeout's line.
        self.data_size = 0
        self.bdat: ChunkReader | None = None
        self.bdat_failed = False
        self.sasl_method = ""
        # MAIL FROM's AUTH= (Postfix's state->sasl_sender), None when not given. Cleared
        # where Postfix's mail_reset() runs (RSET, HELO/EHLO, STARTTLS, the end of a message,
        # a MAIL refused by its restrictions) and nowhere else: a MAIL refused for a later
        # parameter keeps it, and the next MAIL's AUTH= is then "multiple AUTH= options".
        self.sasl_sender: str | None = None
        # smtpd_client_restrictions' reply when refused at connect (smtpd_delay_reject=no):
        # the session answers every command but QUIT with "access denied" (Postfix's
        # state->access_denied).
        self.access_denied: str | None = None
        self.tls_level = server.tls_level
        # Whether this client may use XCLIENT (judged again for the identity it sets, so
        # that it cannot override its own access control) and XFORWARD, None when a table
        # of the list could not be read; what XFORWARD said for the transaction.
        self.xclient_allowed: bool | None = False
        # Postfix's ehlo_discard_mask: the EHLO keywords this client is not offered, and
        # not allowed to use where Postfix refuses them (DSN's parameters).
        self.ehlo_discard = server.ehlo_discard
        # smtpd_discard_ehlo_keyword_address_maps could not be read for this client.
        self.ehlo_discard_unknown = False
        # The server's anvil client while this client is counted (run decides).
        self.anvil = server.anvil
        self.xforward_allowed: bool | None = False
        self.forwarded: Forwarded | None = None
        # The command ran without a reply of its own: XCLIENT's success is a new greeting,
        # which Postfix's statistics do not count as the command's success.
        self.uncounted = False
        self._task: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading_since: float | None = None
        self._timed_out = False
        # Per command: [succeeded, tried], for the statistics on the "disconnect" line.
        self.cmd_counts: dict[str, list[int]] = {}
        self.last_code = 0
        self.bare_lf_mode = server.bare_lf
        self.milters: SessionMilters | None = None
        # The postmaster's transcript (notify_classes protocol or policy): the lines, the
        # error classes seen, why the session ended early (Postfix's state->reason).
        self.history: list[str] | None = [] if server.notify_mask else None
        self.error_mask = 0
        self.abort_reason = ""
        if self.bare_lf_mode in ("normalize", "reject") and self._bare_lf_excluded():
            self.bare_lf_mode = "off"

    # I/O -------------------------------------------------------------------------------

    def _bare_lf_excluded(self) -> bool:
        return bool(self._client_listed("smtpd_forbid_bare_newline_exclusions"))

    async def _fill(self) -> None:
        # smtpd_timeout: one timer per session, moved only when it fires, while a read just
        # notes when it began. A timer per read (asyncio.timeout) is scheduled and cancelled
        # for every command, which cost more than the read itself.
        loop = self.conn.loop
        self._reading_since = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(self.srv.timeout, self._check_idle)
        try:
            more = await self.conn.more()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._timed_out or task is None:
                raise
            task.uncancel()
            await self.reply(R.TIMEOUT.format(host=self.srv.hostname), count=False)
            self.srv.log.info(f"timeout after {self._stage()} from {self.state.namaddr}")
            self.abort_reason = "timeout"
            raise Disconnect from None
        except (ConnectionError, ssl.SSLError, OSError):
            raise Disconnect from None
        finally:
            self._reading_since = None
        if not more:
            # A client that hangs up once its message was answered is not logged as lost.
            if self.last_cmd != AFTER_EOM:
                self.srv.log.info(
                    f"lost connection after {self._stage()} from {self.state.namaddr}"
                )
            self.abort_reason = "lost connection"
            raise Disconnect

    def _stage(self) -> str:
        """Where the session was, for a timeout or a lost connection: in DATA with the
        bytes of the whole lines read so far, as Postfix's smtpd counts them."""
        if self.last_cmd == "DATA":
            return f"DATA ({self.data_size} bytes)"
        return self.last_cmd

    def _check_idle(self) -> None:
        self._idle_timer = None
        since = self._reading_since
        if since is None:
            return  # not waiting for the client: the next read arms the timer again
        loop = self.conn.loop
        left = since + self.srv.timeout - loop.time()
        if left > 0:
            self._idle_timer = loop.call_later(left, self._check_idle)
        elif self._task is not None:
            self._timed_out = True
            self._task.cancel()

    async def read_piece(
        self, limit: int, bound: int = 0, detect: bool = False
    ) -> tuple[bytes, bytes]:
        """The next line up to `limit` bytes: (content, terminator) where terminator is CRLF,
        LF, or b"" when the line goes on (longer than limit). The <CR>s before the <LF> go
        as smtp_get() drops them reading pieces of `bound` bytes (default: `limit`), or
        with `detect` (smtpd_forbid_bare_newline on) only the <CR> of a <CR><LF>."""
        while True:
            idx = self.buf.find(b"\n", 0, limit + 1)
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 1]
                if not line.endswith(b"\r"):
                    return line, b"\n"
                if line.endswith(b"\r\r"):
                    return bytes(smtp_line_end(line, bound or limit, detect)[0]), CRLF
                return line[:-1], CRLF
            if len(self.buf) > limit:
                # A <CR> at the end stays with the piece, as in smtp_get: the byte after it
                # is no <LF> (the search above reached it).
                piece = bytes(self.buf[:limit])
                del self.buf[:limit]
                return piece, b""
            await self._fill()

    async def reply(self, text: str, count: bool = True, error_class: int | None = None) -> None:
        """Send a reply; `error_class`: the notify classes it is an error of (0: none),
        when not the ones its code says (a restriction's refusal is a policy error
        whatever its code, "access denied" no error of any class)."""
        self.last_code = int(text[:3]) if text[:3].isdigit() else 0
        if self.history is not None:
            self.history += [f"Out: {line}" for line in text.split("\r\n")]
            code = self.last_code
            # Postfix's smtpd marks its syntax and sequence errors (500-503, 555).
            if error_class is None:
                error_class = PROTOCOL_ERROR if 500 <= code <= 503 or code == 555 else 0
            self.error_mask |= error_class
        if count and text[:1] in ("4", "5"):
            self.errors += 1
            if self.errors > self.srv.soft_errors and self.srv.error_sleep > 0:
                await asyncio.sleep(self.srv.error_sleep)
        try:
            self.conn.write(text.encode("utf-8", "surrogateescape") + CRLF)
            transport = self.conn.out
            assert transport is not None
            if transport.get_write_buffer_size():
                async with asyncio.timeout(self.srv.timeout):
                    await self.conn.drain()
            elif transport.is_closing():
                # All sent already, so drain could only report the lost connection.
                raise Disconnect
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            raise Disconnect from None

    async def reply_lines(self, lines: list[str]) -> None:
        text = "\r\n".join(
            f"{line[:3]}-{line[4:]}" if i < len(lines) - 1 else line for i, line in enumerate(lines)
        )
        await self.reply(text, count=False)

    def pending(self) -> bool:
        return bool(self.buf)

    # The session -----------------------------------------------------------------------

    async def run(self) -> None:
        self._task = self.conn.task
        log = self.srv.log
        if self.srv.peername_lookup and self.addr != "unknown":
            names = await self.srv.client_names(self.peer)
            st = self.state
            st.name, st.name_status = names.name, names.name_status
            st.reverse_name, st.reverse_name_status = names.reverse_name, names.reverse_name_status
        log.info(f"connect from {self.state.namaddr}")
        if self.srv.ehlo_discard_maps:
            self._ehlo_discard_for_client()
        if self.tls_active:  # wrapper mode (smtps): the handshake came with the connection
            self._log_tls()
        self.xclient_allowed = self._client_listed("smtpd_authorized_xclient_hosts")
        self.xforward_allowed = self._client_listed("smtpd_authorized_xforward_hosts")
        # As Postfix, XCLIENT's clients (their sessions stand for many clients) and
        # smtpd_client_event_limit_exceptions never talk to anvil.
        if self.anvil is not None and (self.xclient_allowed or self._event_limit_exempt()):
            self.anvil = None
        anvil, addr = self.anvil, self.addr
        try:
            try:
                if anvil is None or not await self._refused_at_connect(anvil):
                    if not self.srv.milters_on or not await self._milter_connect():
                        await self._greet()
                    # Refused at connect with 421 or 521 (smtpd_delay_reject = no): Postfix
                    # hangs up after the reply, as after any 421 or 521.
                    if self.last_code not in (421, 521):
                        await self.loop()
            finally:
                if anvil is not None:
                    await anvil.disconnect(addr)
        except Disconnect:
            pass
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            if self.milters is not None:
                # Postfix's end of session: mail_reset() (an ABORT), then QUIT.
                self.milters.abort()
                await self.milters.quit()
            if self.error_mask & self.srv.notify_mask:
                await self._chat_notify()
            log.info(f"disconnect from {self.state.namaddr}{self.command_stats()}")
            with contextlib.suppress(Exception):
                self.conn.close()

    async def _chat_notify(self) -> None:
        """smtpd_chat_notify(): the session's transcript to error_notice_recipient."""
        assert self.history is not None
        tail = [""]
        if self.abort_reason:
            tail.append(f"Session aborted, reason: {self.abort_reason}")
        tail += ["", "For other details, see the local mail logfile"]
        subject = f"SMTP server: errors from {self.state.namaddr}"
        env, content = transcript(self.cfg, subject, [], self.history, tail)
        await post_notice(self.cfg, self.srv.queue, env, content, self.srv.log)
        if self.srv.notify is not None:
            self.srv.notify({"op": "wakeup"})

    async def _milter_connect(self) -> bool:
        """smtpd_milters' CONNECT; whether it greeted the client: a milter's 5XX is
        Postfix's "554 HOST ESMTP not accepting connections" greeting, its 421 the
        greeting and the end. The session goes on: the milter refuses MAIL the same way."""
        conf = self.srv.milter_conf
        if self.srv.milter_maps:
            conf = self._mapped_milters(conf)
        if conf is None:
            return False
        self.milters = SessionMilters(self, conf)
        resp = await self.milters.connect_event(self.state.name, self.addr, self.port)
        reply = self.milters.verdict(resp) if resp is not None else None
        if reply is not None and reply.startswith("421"):
            await self.reply(reply, count=False)
            raise Disconnect
        if reply is not None and reply.startswith("5"):
            await self.reply(f"554 {self.srv.hostname} ESMTP not accepting connections", False)
            return True
        return False

    def _mapped_milters(self, conf: MilterConf | None) -> MilterConf | None:
        """smtpd_milter_maps' milters for this client's address: its result in place of
        smtpd_milters, none for DISABLE, smtpd_milters when no table has the address."""
        for spec in self.srv.milter_maps:
            try:
                found = open_table(spec, self.cfg).lookup(self.addr)
            except TableError as e:
                self.srv.log.warning(f"{spec}: table lookup problem for {self.addr}: {e}")
                return conf
            if found is not None:
                if found.strip().upper() == "DISABLE":
                    return None
                return milter_conf(self.cfg, "smtpd_milters", found)
        return conf

    def _ehlo_discard_for_client(self) -> None:
        """smtpd_discard_ehlo_keyword_address_maps' keywords for the client's address, as
        Postfix's smtpd_proto() looks them up at connect: in place of
        smtpd_discard_ehlo_keywords when a table has the address. A table that cannot be
        read leaves them unknown (EHLO then ends the session), after maps_find's warnings."""
        try:
            found = maps_find_warned(
                self.srv.ehlo_discard_maps,
                [self.addr],
                lambda spec: open_table(spec, self.cfg),
                self.srv.log.warning,
            )
        except (TableError, OSError):
            self.ehlo_discard_unknown = True
            return
        if found is not None:
            # name_mask_opt's words: split at commas and white space only (a "{" stays
            # part of its word, which then names no keyword).
            self.ehlo_discard = frozenset(w.lower() for w in re.split(r"[\s,]+", found[0]) if w)

    async def _greet(self) -> None:
        """The greeting, at connect and after XCLIENT: smtpd_client_restrictions' reject
        when smtpd_delay_reject = no refuses the client (every command but QUIT is then
        refused), else 220 with the banner."""
        reply = await self._check(self.srv.checker.at_client)
        if reply is None:
            await self.reply(f"220 {self.srv.banner}", count=False)
        else:
            self.access_denied = str(reply)
            await self._reject(reply)

    async def _check(
        self, check: Callable[..., Reply | None], *args: Any, size: int | None = None
    ) -> Reply | None:
        """A Checker entry point's answer for this session; where it may ask a policy
        server, with what Postfix's policy request tells beyond the ClientState (the
        message `size` where the transaction does not hold it: SIZE= at MAIL, what was
        received at the end of data)."""
        self.state.rcpt_count = self.tx.rcpt_count if self.tx else 0
        self.state.encrypted = self.tls_active
        if self.srv.checker.threaded:
            self.state.policy_attrs = self._policy_attrs(size)
        return await self.srv.checker.run(check, self.state, *args)

    def _policy_attrs(self, size: int | None) -> dict[str, str]:
        tx = self.tx
        after_rcpt = tx is not None and self.state.where in ("DATA", "END-OF-MESSAGE")
        attrs = {
            "client_port": str(self.port),
            "server_address": self.server_addr,
            "server_port": str(self.server_port),
            # As Postfix's: counted once the recipients are all known.
            "recipient_count": str(tx.rcpt_count if tx and after_rcpt else 0),
            "recipient": self._only_recipient(tx) if tx and after_rcpt else "",
            "size": str(size if size is not None else tx.size if tx else 0),
            "sasl_method": self.sasl_method,
            "sasl_sender": self.sasl_sender or "",
            "encryption_keysize": "0",
        }
        if tx is not None:
            # Postfix's state->instance, new for each MAIL: pid, arrival time, sequence.
            if self._instance[0] is not tx:
                now = time.time()
                seq = self._instance[2]
                self._instance = (
                    tx,
                    f"{os.getpid():x}.{int(now):x}.{int(now % 1 * 1e6):x}.{seq:x}",
                    seq + 1,
                )
            attrs["instance"] = self._instance[1]
        obj: Any = self.conn.get_extra_info("ssl_object")
        cipher = obj.cipher() if obj is not None else None
        if cipher:
            attrs.update(
                encryption_protocol=cipher[1],
                encryption_cipher=cipher[0],
                encryption_keysize=str(cipher[2]),
            )
        return attrs

    def _client_listed(self, param: str) -> bool | None:
        """Whether the client, by name or address, is in the list `param`; None (not
        listed, to a caller that needs no more) when a table in it cannot be read, which
        the table has logged."""
        try:
            return match_namadr(self.cfg, param, self.state.name, self.addr)
        except Exception:
            return None

    def _event_limit_exempt(self) -> bool:
        return bool(self._client_listed("smtpd_client_event_limit_exceptions"))

    async def _refused_at_connect(self, anvil: AnvilClient) -> bool:
        """Register the connection with anvil; True when it is over the connection count
        or rate limit and has been refused. In wrapper mode the new TLS session rate comes
        first, as Postfix applies it before anvil hears of the connection."""
        if self.tls_active and (
            await self._tls_refused("TLS service") or await self._new_tls_over()
        ):
            return True
        counts = await anvil.connect(self.addr)
        if counts is None:
            return False
        srv = self.srv
        if 0 < srv.conn_limit < counts[0]:
            what, n = "Connection concurrency", counts[0]
        elif 0 < srv.conn_rate_limit < counts[1]:
            what, n = "Connection rate", counts[1]
        else:
            return False
        self._limit_warning(what, n)
        await self.reply(R.TOO_MANY_CONNECTIONS.format(host=srv.hostname, addr=self.addr), False)
        return True

    async def _over_rate(self, event: str, limit: int, what: str, reply: str) -> bool:
        """Count an event (message, recipient, newtls, auth) with anvil when its limit is
        on and the client is counted (callers test self.anvil first: no coroutine for the
        others); True when it is over the limit and refused with reply (a template of addr,
        host and namaddr)."""
        if self.anvil is None or limit <= 0:
            return False
        rate = await self.anvil.rate(event, self.addr)
        if rate is None or rate <= limit:
            return False
        self._limit_warning(what, rate)
        st = self.state
        await self.reply(reply.format(addr=self.addr, host=self.srv.hostname, namaddr=st.namaddr))
        return True

    async def _tls_refused(self, what: str) -> bool:
        """Whether the client is already over smtpd_client_new_tls_session_rate_limit, as
        anvil says without counting (only a handshake that makes a new session counts);
        Postfix then refuses the TLS request (STARTTLS, or wrapper mode's handshake: ours
        is the listener's and done, so the client sees the close after it)."""
        limit = self.srv.tls_rate_limit
        if self.anvil is None or limit <= 0:
            return False
        rate = await self.anvil.rate("newtls_status", self.addr)
        if rate is None or rate <= limit:
            return False
        namaddr, service = self.state.namaddr, self.srv.service
        self.srv.log.warning(f"Refusing {what} request from {namaddr} for service {service}")
        return True

    async def _new_tls_over(self) -> bool:
        """Count a handshake that made a new TLS session (not a resumed one); True when
        that is over the limit: the client has been told (421) and the session ends."""
        obj: Any = self.conn.get_extra_info("ssl_object")
        if obj is not None and obj.session_reused:
            return False
        limit = self.srv.tls_rate_limit
        return await self._over_rate("newtls", limit, "New TLS session rate", R.TOO_MANY_TLS)

    def _illegal_syntax(self, text: str, strict: bool, where: str) -> None:
        path = illegal_syntax(text, strict)
        if path is not None:
            self.srv.log.warning(
                f"Illegal address syntax from {self.state.namaddr} in {where} command: {path}"
            )

    def _bad_address(self, text: str) -> None:
        """extract_addr's warning for an address that parses but is refused (no valid
        domain for trivial-rewrite, none for RFC 821), naming the path as given."""
        words = smtpd_tokens(text)
        shown = printable(words[0], "?", self._smtputf8()) if words else ""
        self.srv.log.warning(
            f"Illegal address syntax from {self.state.namaddr} in {self.state.where} command: "
            f"{shown}"
        )

    def _limit_warning(self, what: str, n: int) -> None:
        self.srv.log.warning(
            f"{what} limit exceeded: {n} from {self.state.namaddr} for service {self.srv.service}"
        )

    async def loop(self) -> None:
        while True:
            if self.errors >= self.srv.hard_errors:
                await self.reply(R.TOO_MANY_ERRORS.format(host=self.srv.hostname), count=False)
                self.srv.log.info(
                    f"too many errors after {self.last_cmd} from {self.state.namaddr}"
                )
                self.abort_reason = "too many errors"
                return
            raw, term = await self.read_piece(self.srv.line_limit)
            if not term:
                # As Postfix's smtpd_chat_query: an over-long command is cut at
                # line_length_limit, the rest of its line skipped, and run as cut.
                self.srv.log.warning(
                    f"{self.state.namaddr}: request longer than {self.srv.line_limit}: "
                    f"{printable(raw.decode('utf-8', 'surrogateescape'))[:30]}..."
                )
                while not term:
                    _, term = await self.read_piece(self.srv.line_limit)
            if term == b"\n" and self.bare_lf_mode == "reject":
                code = self.cfg.get_int("smtpd_forbid_bare_newline_reject_code")
                await self.reply(R.BARE_LF.format(code=code, host=self.srv.hostname), count=False)
                self.srv.log.info(f"disconnect: bare <LF> received from {self.state.namaddr}")
                return
            if await self.command(raw) is False:
                return

    async def command(self, raw: bytes) -> bool:
        if self.history is not None:
            # Bytes that are no UTF-8 kept as such: printable() makes each a "?".
            self.history.append(f"In:  {raw.decode('utf-8', 'surrogateescape')}")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            if self._smtputf8():
                await self.reply(R.BAD_UTF8)
                return True
            # Postfix checks UTF-8 only with SMTPUTF8 on: else the bytes go on as given.
            line = raw.decode("utf-8", "surrogateescape")
        if not line.strip():
            await self.reply(R.BAD_SYNTAX)
            return True
        verb, _, arg = line.strip().partition(" ")
        verb_u = verb.upper()
        arg = arg.strip()
        handler = getattr(self, f"cmd_{verb_u.lower()}", None) if verb_u.isalpha() else None
        if handler is None or verb_u not in _COMMANDS:
            self._count("UNKNOWN", False)
            if self._forbidden(verb):
                await self.reply(R.BREAK_RULES, count=False)
                # Postfix shows the command escape()d, then its first 100 characters.
                shown = escape(raw)[:100]
                self.srv.log.warning(f"non-SMTP command from {self.state.namaddr}: {shown}")
                return False
            self.last_cmd = "UNKNOWN"
            denied = self._denied()
            await self.reply(denied or R.CMD_UNKNOWN, error_class=0 if denied else None)
            return True
        self.last_cmd = verb_u
        denied = self._denied() if verb_u != "QUIT" else None
        if denied is not None:
            self.cmd_counts.setdefault(verb_u, [0, 0])[1] += 1
            await self.reply(denied, error_class=0)
            return True
        self.state.where = verb_u
        if (
            self.tls_level == "encrypt"
            and not self.tls_active
            and verb_u not in ("EHLO", "HELO", "STARTTLS", "NOOP", "QUIT")
        ):
            await self.reply(R.TLS_REQUIRED)
            return True
        if verb_u in _JUNK:
            # Past smtpd_junk_command_limit each one counts as an error, so that a client
            # cannot keep a session open for ever (Postfix's SMTPD_CMD_FLAG_LIMIT).
            if self.junk > self.srv.junk_limit:
                self.errors += 1
            self.junk += 1
        # Counted as tried before it runs (a session lost inside it still counts), as
        # succeeded when its last reply was not an error.
        counts = self.cmd_counts.setdefault(verb_u, [0, 0])
        counts[1] += 1
        # The common case (no input waiting) decided here: a coroutine per command costs.
        if (
            self.srv.forbid_unauth_pipelining
            and self.pending()
            and (self.state.protocol != "ESMTP" or (verb_u in _GROUP_END and verb_u != "QUIT"))
        ):
            await self._improper_pipelining(verb_u)
            return False
        self.uncounted = False
        result: bool | None = await handler(arg)
        if self.last_code < 400 and not self.uncounted:
            counts[0] += 1
        # Postfix's smtpd hangs up after any 421 or 521 reply it sent (an access(5)
        # "521 ..." included): the client is told the session is over.
        if self.last_code in (421, 521):
            return False
        return result is not False

    async def _improper_pipelining(self, verb_u: str) -> None:
        """smtpd_forbid_unauth_pipelining: input pending where the client must wait for
        the reply (until EHLO nothing was announced: after every command; a HELO after it
        keeps ESMTP) is refused with 554 5.5.0, which ends the session."""
        # With the input that came too early, as C shows it.
        self.srv.log.info(
            f"improper command pipelining after {verb_u} from {self.state.namaddr}: "
            f"{escape(bytes(self.buf))}"
        )
        await self.reply(R.SYNC_ERROR, count=False)

    def _denied(self) -> str | None:
        if self.access_denied is None:
            return None
        # A 421 (a milter's, in Postfix) is repeated as it is.
        if self.access_denied.startswith("421"):
            return self.access_denied
        return R.ACCESS_DENIED.format(namaddr=self.state.namaddr)

    def _count(self, verb: str, ok: bool) -> None:
        counts = self.cmd_counts.setdefault(verb, [0, 0])
        counts[0] += ok
        counts[1] += 1

    def command_stats(self) -> str:
        """Postfix's " ehlo=1 mail=1 rcpt=0/1 ... commands=N[/M]" for the disconnect line:
        per command in its command table's order, succeeded[/tried]."""
        out = []
        ok_all = tried_all = 0
        for verb in _STATS_ORDER:
            counts = self.cmd_counts.get(verb)
            if counts:
                ok, tried = counts
                out.append(f" {verb.lower()}={ok}" + (f"/{tried}" if ok != tried else ""))
                ok_all += ok
                tried_all += tried
        # Postfix writes "commands=0/0" for a session without any.
        whole = ok_all != tried_all or not tried_all
        out.append(f" commands={ok_all}" + (f"/{tried_all}" if whole else ""))
        return "".join(out)

    def _forbidden(self, verb: str) -> bool:
        if header_length(verb):
            # A header-like "command" ("Subject:", "From:x"): someone fed us message
            # content (Postfix's is_header of the first word).
            return True
        for item in self.cfg.get_list("smtpd_forbidden_commands"):
            if item.startswith("regexp:{{") or item.startswith("pcre:{{"):
                pattern = item.split("{{", 1)[1].rsplit("}}", 1)[0].strip()
                m = re.match(r"/(.*)/\S*\s*(.*)", pattern)
                if m and re.search(m.group(1), verb, re.IGNORECASE):
                    return True
            elif item.upper() == verb.upper():
                return True
        return False

    # Commands --------------------------------------------------------------------------

    async def cmd_helo(self, arg: str) -> None:
        if not arg:
            await self.reply(R.HELO_SYNTAX)
            return
        if not await self._helo_checked(arg, "HELO"):
            return
        if self.milters is not None:
            await self._milter_helo()
        # As Postfix's helo_cmd: HELO after EHLO does not downgrade ESMTP.
        if self.state.protocol != "ESMTP":
            self.state.protocol = "SMTP"
        await self.reply(f"250 {self.srv.hostname}")

    async def cmd_ehlo(self, arg: str) -> None:
        if not arg:
            await self.reply(R.EHLO_SYNTAX)
            return
        if not await self._helo_checked(arg, "EHLO"):
            return
        milter_refused = self.milters is not None and await self._milter_helo()
        if self.ehlo_discard_unknown:
            # Postfix's ehlo_cmd cannot tell which keywords to leave out.
            await self._local_data_error(
                "EHLO", f"don't know what EHLO features to announce to {self.state.namaddr}"
            )
            return
        if milter_refused:
            # As Postfix after a milter refused the EHLO with 5XX: no extension but
            # enhanced status codes.
            self.state.protocol = "ESMTP"
            await self.reply_lines([f"250 {self.srv.hostname}", "250 ENHANCEDSTATUSCODES"])
            return
        self.state.protocol = "ESMTP"
        discard = self.ehlo_discard
        # As Postfix's ehlo_cmd, before it looks at any client list: not with
        # silent-discard, nor (its quirk) when ENHANCEDSTATUSCODES is among them.
        if discard and "silent-discard" not in discard and "enhancedstatuscodes" not in discard:
            named = [_EHLO_MASK_NAMES.get(k, k.upper()) for k in _EHLO_MASK_ORDER if k in discard]
            if named:
                self.srv.log.info(f"discarding EHLO keywords: {' '.join(named)}")
        lines = [f"250 {self.srv.hostname}", "250 PIPELINING"]
        if self.srv.size_limit:
            lines.append(f"250 SIZE {self.srv.size_limit}")
        else:
            lines.append("250 SIZE")
        if not self.cfg.get_bool("disable_vrfy_command"):
            lines.append("250 VRFY")
        lines.append("250 ETRN")
        if self.tls_level in ("may", "encrypt") and not self.tls_active and self.srv.tls_context:
            lines.append("250 STARTTLS")
        # As Postfix's ehlo_cmd: a keyword not discarded whose client list could not be
        # read ends the session, the first of them in the reply's order.
        auth = "auth" not in discard and self._auth_offered()
        # smtpd_sasl_exceptions_networks: clients not offered AUTH, which they may use all
        # the same.
        exempt = auth and self._client_listed("smtpd_sasl_exceptions_networks")
        verp = "verp" not in discard and self._client_listed("smtpd_authorized_verp_clients")
        for keyword, listed in (
            ("AUTH", exempt),
            ("XVERP", verp),
            ("XCLIENT", "xclient" not in discard and self.xclient_allowed),
            ("XFORWARD", "xforward" not in discard and self.xforward_allowed),
        ):
            if listed is None:
                await self._local_data_error(
                    "EHLO",
                    f"don't know if EHLO feature {keyword} should be announced to"
                    f" {self.state.namaddr}",
                )
                return
        if auth and not exempt:
            lines.append("250 AUTH PLAIN LOGIN")
        if verp:
            lines.append("250 XVERP")
        if self.xclient_allowed:
            lines.append(f"250 XCLIENT {XCLIENT_ATTRS}")
        if self.xforward_allowed:
            lines.append(f"250 XFORWARD {XFORWARD_ATTRS}")
        lines += ["250 ENHANCEDSTATUSCODES", "250 8BITMIME", "250 DSN"]
        if self._smtputf8():
            lines.append("250 SMTPUTF8")
        lines.append("250 CHUNKING")
        if discard:
            lines = [
                ln
                for ln in lines
                if _EHLO_MASK_KEYWORDS.get(k := ln[4:].split(" ")[0].lower(), k) not in discard
                or ln is lines[0]
            ]
        await self.reply_lines(lines)

    async def _milter_helo(self) -> bool:
        """smtpd_milters' HELO: whether a milter refused it with 5XX. Only a 421 ends the
        session; a refusal is logged and the milter gives it again at MAIL."""
        assert self.milters is not None
        resp = await self.milters.helo_event(self.state.helo)
        if resp is None:
            return False
        reply = self.milters.verdict(resp)
        if reply is not None and reply.startswith("421"):
            await self.reply(reply)
            raise Disconnect
        return reply is not None and reply.startswith("5")

    def _dsn_discarded(self) -> bool:
        """DSN is among the discarded EHLO keywords: Postfix's ehlo_discard_mask then
        refuses the DSN parameters too, whether or not the client sent EHLO."""
        return "dsn" in self.ehlo_discard

    def _smtputf8(self) -> bool:
        return self.cfg.get_bool("smtputf8_enable")

    def _smtputf8_offered(self) -> bool:
        """MAIL FROM's SMTPUTF8 is taken: smtputf8_enable, and the keyword not discarded."""
        return self._smtputf8() and "smtputf8" not in self.ehlo_discard

    def _auth_offered(self) -> bool:
        if not self.cfg.get_bool("smtpd_sasl_auth_enable") or self.srv.authenticator is None:
            return False
        if self.cfg.get_bool("smtpd_tls_auth_only") and not self.tls_active:
            return False
        return True

    async def _local_data_error(self, command: str, warning: str) -> None:
        """Postfix's SMTP_ERR_DATA, for a command it cannot judge because a table could
        not be read: the warning, the reject line and a 421, which ends the session."""
        self.srv.log.warning(warning)
        reply = f"421 4.3.0 {self.srv.hostname} Server local data error"
        qid = self.state.queue_id or "NOQUEUE"
        self.srv.log.info(f"{qid}: reject: {command} from {self.state.namaddr}: {reply}")
        await self.reply(reply)

    async def _helo_checked(self, name: str, kind: str) -> bool:
        """HELO's or EHLO's name taken, unless smtpd_helo_restrictions (run now when
        smtpd_delay_reject = no) refuse it: as in Postfix's helo_cmd the restrictions and
        the reject line see the new name, and a refused one leaves the session as it was
        (the earlier name, the transaction)."""
        given = name
        if not (name.isascii() and name.isprintable()) or _NEUTERED.search(name):
            # As Postfix's helo_cmd: printable() (without SMTPUTF8 every 8-bit byte is a
            # '?'), then neuter(): what the logs, restrictions and headers see later.
            name = neuter(printable(name, utf8=self._smtputf8()))
        if not self.srv.checker.delay_reject:
            # Judged now, helo_cmd hands the restrictions the name as the client gave it.
            earlier, self.state.helo = self.state.helo, given
            reply = await self._check(self.srv.checker.at_helo)
            if reply is not None:
                await self._reject(reply)
                self.state.helo = earlier
                return False
        self.state.helo = name
        self.helo_kind = kind
        self.state.esmtp = kind == "EHLO"
        self._mail_reset()
        return True

    @property
    def envelope_milters(self) -> SessionMilters | None:
        """The milters to tell of the transaction's MAIL, RCPT and DATA: none once it is to
        be discarded (a milter's or an access table's DISCARD), as Postfix's
        MILTER_SKIP_FLAGS."""
        return None if "DISCARD" in self.state.actions else self.milters

    async def _reject(
        self, reply: Reply, recipient: str = "", milter_rcpt: list[str] | None = None
    ) -> None:
        """Log and send a restriction's refusal; a refused RCPT's arguments (milter_rcpt)
        go to the milters that ask for refused recipients (SMFIP_RCPT_REJ) between the
        two, as in Postfix's rcpt_cmd, and what they answer is not used."""
        self.srv.log.info(self.state.whatsup("reject", str(reply), recipient))
        if self.state.compat_notice:
            self.srv.log.info(self.state.compat_notice)
            self.state.compat_notice = ""
        milters = self.envelope_milters
        if milter_rcpt is not None and milters is not None:
            await milters.rejected_rcpt(str(reply), recipient, milter_rcpt)
        await self.reply(str(reply), error_class=POLICY_ERROR)

    def _compat_non_ascii(self, role: str, addr: str) -> None:
        """An 8-bit address taken only because smtputf8_enable keeps its older default
        (no): Postfix logs that it was."""
        if "smtputf8_enable" in self.srv.checker.compat and not addr.isascii():
            self.srv.log.info(
                "using backwards-compatible default setting smtputf8_enable=no to accept"
                f' non-ASCII {role} address "{addr}" from {self.state.namaddr}'
            )

    async def _milter_refused(self, resp: str, recipient: str = "") -> bool:
        """A milter's answer to MAIL, RCPT or DATA: whether it refused the command (the
        reply sent; a 421 ends the session)."""
        assert self.milters is not None
        reply = self.milters.verdict(resp, recipient)
        if reply is None:
            return False
        await self.reply(reply)
        if reply.startswith("421"):
            raise Disconnect
        return True

    def _only_recipient(self, tx: Transaction) -> str:
        # As Postfix at DATA: a restriction there applies to all recipients alike, and
        # naming one of several would mislead.
        return tx.recipients[0].address if tx.rcpt_count == 1 else ""

    async def _open_queue_file(self) -> None:
        """What Postfix's smtpd does on opening the queue file: take an in_flow_delay token
        (cleanup's), take the queue ID and log the "client=" line under it."""
        if self.srv.flow is not None:
            await self.srv.flow.take()
        self.state.queue_id = self.srv.queue.new_id()
        self.srv.log.info(f"{self.state.queue_id}: {self._client_attrs(self.sasl_sender)}")

    def _mail_reset(self) -> None:
        """Postfix's mail_reset(): the transaction ends, with MAIL's AUTH= and the queue ID
        (a queue file opened and not finished is dropped without a word, as there)."""
        self.tx = None
        self.msg_size = 0
        self.sasl_sender = None
        self.state.sender = None
        self.state.queue_id = ""
        self.bdat = None
        self.bdat_failed = False
        self.forwarded = None
        if self.milters is not None:
            self.milters.abort()
        # The access(5) actions (HOLD, BCC, ...) go with the transaction, as Postfix's
        # saved_flags and saved_bcc.
        if self.state.actions:
            self.state.actions = {}

    async def cmd_mail(self, arg: str) -> None:
        if self.cfg.get_bool("smtpd_helo_required") and not self.helo_kind:
            await self.reply(R.NEED_HELO)
            return
        if self.tx is not None:
            await self.reply(R.NESTED_MAIL)
            return
        if self.bdat is not None:
            await self.reply(R.MAIL_AFTER_BDAT)
            return
        if arg[:5].upper() != "FROM:":
            await self.reply(R.MAIL_SYNTAX)
            return
        if self.anvil is not None and await self._over_rate(
            "message", self.srv.mail_rate_limit, "Message delivery request rate", R.TOO_MUCH_MAIL
        ):
            return
        strict = self.cfg.get_bool("strict_rfc821_envelopes")
        parsed = parse_path(arg[5:], strict)
        if parsed is None:
            self._illegal_syntax(arg[5:], strict, "MAIL")
            await self.reply(R.BAD_SENDER)
            return
        given, params = parsed
        addr = internal_form(given)
        if strict and addr.startswith("@"):
            self._bad_address(arg[5:])  # extract_addr: no local part for RFC 821
            await self.reply(R.BAD_SENDER)
            return
        if addr.startswith("-") and not self.cfg.get_bool("allow_min_user"):
            await self.reply(R.BAD_SENDER)
            return
        # As Postfix 3.7's mail_cmd: SMTPUTF8 is looked for first, as it decides which
        # domains are valid, and the address is judged before any other parameter.
        smtputf8 = bool(params) and any(p.upper() == "SMTPUTF8" for p in params)
        smtputf8 = smtputf8 and self._smtputf8_offered()
        if not domain_ok(addr, smtputf8):
            self._bad_address(arg[5:])
            await self.reply(R.BAD_SENDER)
            return
        tx = Transaction(sender=addr)
        for param in params:
            key, eq, value = param.partition("=")
            key = key.upper()
            # Postfix's mail_cmd takes XVERP from smtpd_authorized_verp_clients whether or
            # not EHLO announced it (smtpd_discard_ehlo_keywords); from another client it
            # is an option like any unknown one.
            if key == "XVERP" and self._client_listed("smtpd_authorized_verp_clients"):
                if not eq:
                    tx.verp_delims = self.cfg.get("default_verp_delimiters")
                elif verp_delims_verify(self.cfg, value) is None:
                    tx.verp_delims = value
                else:
                    allowed = self.cfg.get("verp_delimiter_filter")
                    await self.reply(R.BAD_XVERP.format(filter=allowed))
                    return
                continue
            # Postfix matches "SIZE=", "AUTH=", ... and a bare "SMTPUTF8": any other form
            # of the name is a parameter it does not know.
            if key not in _ESMTP_PARAMS_MAIL or bool(eq) == (key == "SMTPUTF8"):
                await self.reply(R.UNSUPPORTED_OPTION.format(opt=param))
                return
            if key == "SIZE":
                if not value.isdigit():
                    await self.reply(R.BAD_SIZE)
                    return
                if len(value) > 18:
                    await self.reply(R.SIZE_OVERFLOW)
                    return
                self.msg_size = int(value)
            elif key == "BODY":
                if value.upper() not in ("7BIT", "8BITMIME"):
                    await self.reply(R.BAD_BODY.format(value=value))
                    return
                tx.body = value.upper()
            elif key in ("RET", "ENVID") and self._dsn_discarded():
                await self.reply(R.DSN_DISABLED)
                return
            elif key == "RET":
                if tx.ret or value.upper() not in ("FULL", "HDRS"):
                    await self.reply(R.BAD_RET)
                    return
                tx.ret = value.upper()
            elif key == "ENVID":
                # Kept decoded, as Postfix's queue file has it; printable ASCII only.
                envid = xtext_decode(value)
                if tx.envid or not envid or not all(32 <= ord(c) <= 126 for c in envid):
                    await self.reply(R.BAD_ENVID)
                    return
                tx.envid = envid
            elif key == "SMTPUTF8":
                if not self._smtputf8_offered():
                    await self.reply(R.SMTPUTF8_DISABLED)
                    return
                tx.smtputf8 = True
            elif key == "AUTH":
                # RFC 4954 section 5, as Postfix 3.7's smtpd_sasl_mail_opt(): taken whether
                # or not SASL is on or the client authenticated, stored as given (xtext
                # not decoded, control characters as '?'); <> is no sender.
                if self.sasl_sender is not None:
                    await self.reply(R.AUTH_MULTIPLE)
                    return
                if value != "<>":
                    self.sasl_sender = printable(value)
        if self.srv.checker.compat:
            self._compat_non_ascii("sender", addr)
        tx.size = self.msg_size
        if self.srv.size_limit and tx.size > self.srv.size_limit:
            # smtpd_check_size, after all parameters, logged with the sender.
            self.state.sender = addr
            self.srv.log.info(self.state.whatsup("reject", R.SIZE_EXCEEDS))
            self.state.sender = None
            await self.reply(R.SIZE_EXCEEDS, error_class=POLICY_ERROR)
            return
        if tx.verp_delims and not addr:
            # Not counted a protocol error: Postfix's mail_cmd leaves error_mask alone.
            await self.reply(R.XVERP_NULL_SENDER, error_class=0)
            return
        try:
            space_ok = self.srv.queue.free_space_ok(tx.size)
        except Exception:
            space_ok = True
        if not space_ok:
            await self.reply(R.NO_SPACE)
            return
        self.state.sender = addr
        reply = await self._check(self.srv.checker.at_mail, size=tx.size)
        if reply is not None:
            await self._reject(reply)
            self._mail_reset()
            return
        if (milters := self.envelope_milters) is not None:
            resp = await milters.mail_event([f"<{given}>", *params])
            if resp is not None and await self._milter_refused(resp):
                self._mail_reset()
                return
        self.tx = tx
        if self.srv.open_at_mail:
            await self._open_queue_file()
        await self.reply(R.OK_MAIL)

    async def cmd_rcpt(self, arg: str) -> None:
        if self.tx is None:
            await self.reply(R.NEED_MAIL)
            return
        if self.bdat is not None:
            await self.reply(R.RCPT_AFTER_BDAT)
            return
        if arg[:3].upper() != "TO:":
            await self.reply(R.RCPT_SYNTAX)
            return
        if self.anvil is not None and await self._over_rate(
            "recipient", self.srv.rcpt_rate_limit, "Recipient address rate", R.TOO_MANY_RCPTS_FROM
        ):
            return
        strict = self.cfg.get_bool("strict_rfc821_envelopes")
        parsed = parse_path(arg[3:], strict)
        if parsed is None or not parsed[0]:
            if parsed is None:
                self._illegal_syntax(arg[3:], strict, "RCPT")
            await self.reply(R.BAD_RECIPIENT)
            return
        given, params = parsed
        addr = internal_form(given)
        if strict and addr.startswith("@"):
            self._bad_address(arg[3:])
            await self.reply(R.BAD_RECIPIENT)
            return
        if addr.startswith("-") and not self.cfg.get_bool("allow_min_user"):
            await self.reply(R.BAD_RECIPIENT)
            return
        if not domain_ok(addr, self.tx.smtputf8):
            self._bad_address(arg[3:])
            await self.reply(R.BAD_RECIPIENT)
            return
        rcpt = Recipient(address=addr, original=addr)
        for param in params:
            key, eq, value = param.partition("=")
            key = key.upper()
            if key in ("NOTIFY", "ORCPT") and eq and self._dsn_discarded():
                await self.reply(R.DSN_DISABLED)
                return
            if key == "NOTIFY" and eq:
                words = {w.upper() for w in value.split(",")}
                if not value or rcpt.notify or not notify_ok(words):
                    await self.reply(R.BAD_NOTIFY)
                    return
                rcpt.notify = frozenset(words)
            elif key == "ORCPT" and eq:
                orcpt = orcpt_decode(value)
                if rcpt.orcpt or orcpt is None:
                    await self.reply(R.BAD_ORCPT)
                    return
                rcpt.orcpt = orcpt
            else:
                await self.reply(R.UNSUPPORTED_OPTION.format(opt=param))
                return
        if self.tx.rcpt_count >= self.srv.rcpt_limit:
            await self.reply(R.TOO_MANY_RCPTS)
            return
        if self.srv.checker.compat:
            self._compat_non_ascii("recipient", addr)
        reply = await self._check(self.srv.checker.at_rcpt, addr)
        if reply is not None:
            told = [f"<{given}>", *params] if self.milters is not None else None
            await self._reject(reply, addr, told)
            return
        if (milters := self.envelope_milters) is not None:
            milters.rcpt = addr
            resp = await milters.rcpt_event([f"<{given}>", *params])
            milters.rcpt = ""
            if resp is not None and await self._milter_refused(resp, addr):
                return
        if not self.state.queue_id:
            await self._open_queue_file()
        if not rcpt.orcpt:
            # RFC 3461 5.2.1, as Postfix's rcpt_cmd: the address as the client gave it, which
            # a DSN reports as Original-Recipient and the smtp client passes on.
            rcpt.orcpt = f"rfc822;{given}"
        self.tx.rcpt_count += 1
        self.tx.recipients.append(rcpt)
        await self.reply(R.OK_RCPT)

    async def cmd_data(self, arg: str) -> None:
        # Postfix checks the transaction state before the syntax.
        if self.bdat is not None:
            await self.reply(R.DATA_AFTER_BDAT)
            return
        if self.tx is None:
            await self.reply(R.NEED_RCPT)
            return
        if not self.tx.recipients:
            await self.reply(R.NO_VALID_RCPT)
            return
        if arg:
            await self.reply(R.DATA_SYNTAX)
            return
        self.state.pipelined = self.pending()
        reply = await self._check(self.srv.checker.at_data)
        if reply is not None:
            await self._reject(reply, self._only_recipient(self.tx))
            return
        if (milters := self.envelope_milters) is not None:
            resp = await milters.data_event()
            # Logged with Postfix's state->recipient, the first one.
            first = self.tx.recipients[0].address
            if resp is not None and await self._milter_refused(resp, first):
                return
        await self.reply(R.START_DATA)
        content, too_big, bare_lf = await self.read_data()
        if bare_lf and self.bare_lf_mode == "reject":
            # Postfix 3.7.11 refuses the message, not the session (a 521 ends it, as any).
            refusal = self._bare_lf_refusal("END-OF-MESSAGE")
            self._mail_reset()
            await self.reply(refusal)
            return
        await self._finish_message(content, too_big)

    def _bare_lf_refusal(self, where: str) -> str:
        """smtpd_forbid_bare_newline = reject's refusal of content that had a bare <LF>,
        logged as Postfix's "reject: WHERE from ...: bare <LF> received"."""
        self.state.where = where
        assert self.tx is not None
        recipient = self._only_recipient(self.tx)
        self.srv.log.info(self.state.whatsup("reject", "bare <LF> received", recipient))
        code = self.cfg.get_int("smtpd_forbid_bare_newline_reject_code")
        return R.BARE_LF.format(code=code, host=self.srv.hostname)

    async def read_data(self) -> tuple[bytearray, bool, bool]:
        """Read DATA to <CR><LF>.<CR><LF>: (content dot-unstuffed with CRLF line ends,
        too big?, bare LF seen?). An oversize message is read to its end but not kept."""
        out = bytearray()
        size = 0
        too_big = False
        bare_lf = False
        bol = True
        prev_crlf = True
        limit = self.srv.size_limit
        bound = self.srv.line_limit
        self.last_cmd = "DATA"
        bulk = True
        while True:
            if bulk and bol and prev_crlf and self.buf:
                # The common case in bulk: every whole line already buffered. From the first
                # bare <LF> on, line by line (rare: looking for the next one each time
                # could cost a scan of the buffer per line).
                whole, at_end, bare = self._crlf_lines()
                bulk = not bare
                if whole or at_end:
                    chunk = bytes(self.buf[:whole])
                    del self.buf[: whole + 3 if at_end else whole]
                    if chunk[:1] == b".":
                        chunk = chunk[1:]
                    chunk = chunk.replace(b"\r\n.", b"\r\n")
                    size += len(chunk)
                    if len(chunk) >= bound:
                        # smtp_get's pieces of a long line each count a <CR><LF> more.
                        size += 2 * sum(len(ln) // bound for ln in chunk.split(CRLF))
                    if limit and size > limit:
                        if not too_big:
                            too_big = True
                            out = bytearray()
                    else:
                        out += chunk
                    if at_end:
                        return out, too_big, bare_lf
                    continue
            self.data_size = size
            piece, term = await self.read_piece(
                self.srv.data_chunk, bound, self.bare_lf_mode != "off"
            )
            if bol and prev_crlf and term == CRLF and piece == b".":
                return out, too_big, bare_lf
            if bol and piece.startswith(b"."):
                piece = piece[1:]
            if term == b"\n":
                bare_lf = True
            size += len(piece) + 2
            if limit and size > limit:
                if not too_big:
                    too_big = True
                    out = bytearray()
            else:
                out += piece
                if term:
                    # Normalise a bare LF line end (smtpd_forbid_bare_newline=normalize).
                    out += CRLF
            if term:
                bol = True
                prev_crlf = term == CRLF or self.bare_lf_mode == "off"
            else:
                bol = False

    def _crlf_lines(self) -> tuple[int, bool, bool]:
        """At the start of a DATA line: (length of the whole <CR><LF> lines at the head of
        the buffer with no bare <LF> among them, whether the end-of-data line follows them,
        whether a line to be read line by line follows them: one with a bare <LF>, or with
        <CR>s before its <CR><LF>, which smtp_get drops (".<CR><CR><LF>" ends the data) or,
        with bare-newline detection on, all but one of (it does not).
        Dot-unstuffing such lines is one replace of <CR><LF>. by <CR><LF> (and of a
        leading dot)."""
        buf = self.buf
        if buf.startswith(b".\r\n"):
            return 0, True, False
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            whole = end + 2
        else:
            last = buf.rfind(b"\r\n")
            whole = last + 2 if last >= 0 else 0
        cut = buf.find(b"\r\r\n", 0, whole)
        # Counting is fast (memchr); the regex runs only when there is a bare <LF> to find.
        if buf.count(b"\n", 0, whole) != buf.count(b"\r\n", 0, whole):
            bare = _BARE_LF.search(buf, 0, whole)
            assert bare is not None
            cut = bare.start() if cut < 0 else min(cut, bare.start())
        if cut >= 0:
            last = buf.rfind(b"\r\n", 0, cut)
            return (last + 2 if last >= 0 else 0), False, True
        return whole, end >= 0, False

    async def _finish_message(self, content: bytes | bytearray, too_big: bool) -> None:
        tx = self.tx
        assert tx is not None
        try:
            await self._queue_message(tx, content, too_big)
        finally:
            self._mail_reset()
            # Postfix's state->where after the message's reply, queued or refused.
            self.last_cmd = AFTER_EOM

    def _too_big(self) -> None:
        self.srv.log.warning(f"{self.state.queue_id}: queue file size limit exceeded")

    async def _queue_message(
        self, tx: Transaction, content: bytes | bytearray, too_big: bool
    ) -> None:
        qid = self.state.queue_id
        if too_big:
            self._too_big()
            await self.reply(R.TOO_BIG)
            return
        self.state.where = "END-OF-MESSAGE"
        reply = await self._check(self.srv.checker.at_end_of_data, size=len(content))
        if reply is not None:
            await self._reject(reply, self._only_recipient(tx))
            return
        env = Envelope(
            sender=tx.sender,
            recipients=tx.recipients,
            arrival_time=time.time(),
            envid=tx.envid,
            ret=tx.ret,
            body_type=tx.body,
            smtputf8=tx.smtputf8,
            verp_delims=tx.verp_delims,
            client_name=self.state.name,
            client_addr=self.addr,
            client_port=self.port,
            reverse_name=self.state.reverse_name,
            server_addr=self.server_addr,
            server_port=self.server_port,
            helo_name=self.state.helo,
            # The protocol as HELO/EHLO (or XCLIENT) set it, without the S and A the
            # Received: header adds: what Postfix's queue file keeps, the delivery agents
            # pass on (XFORWARD PROTO, CLIENT_PROTOCOL) and postcat shows.
            protocol=self.state.protocol,
            sasl_method=self.sasl_method,
            sasl_username=self.state.sasl_username,
            sasl_sender=self.sasl_sender or "",
        )
        actions = self.state.actions
        for action, attr in _ACTION_ATTRS:
            if action in actions:
                env.attrs[attr] = actions[action]
        data = bytes(content)
        # The Received: header names the client that talked to us, the queue file the one
        # XFORWARD named (Postfix's log_client_* attributes, which qmgr and the delivery
        # agents see); access(5) PREPEND headers go above it, as Postfix's smtpd writes
        # them first.
        received = self.received_header(env, qid)
        if "PREPEND" in actions:
            received = "".join(f"{h}\r\n" for h in actions["PREPEND"].split("\n")) + received
        if self.forwarded is not None:
            env = self._forwarded_envelope(env, self.forwarded, qid)
        cleaned = None
        if self.srv.cleanup is not None:
            cleaned = size_checked(
                self.srv.cleanup(env, data, received, self.cfg, qid), qid, self.cfg
            )
            if cleaned.reply is not None:
                cleaned.log_notes(self.srv.log, qid)
                # A content refusal is a policy error (CLEANUP_STAT_CONT); a write error
                # (451 4.3.0), too many hops (554 5.4.0) or too big (552 5.3.4) is not one.
                by_content = cleaned.reply[:9] not in ("451 4.3.0", "554 5.4.0", "552 5.3.4")
                await self.reply(cleaned.reply, error_class=POLICY_ERROR if by_content else 0)
                return
            env, data = cleaned.envelope, cleaned.content
        else:
            data = received.encode("utf-8", "surrogateescape") + data
        discard = cleaned is not None and cleaned.discard
        if self.milters is not None and not discard:
            milter_reply = await self._milter_message(env, data, qid, cleaned)
            if milter_reply is None:
                return
            env, data, discard = milter_reply
        if not discard:
            # Accepted and thrown away (cleanup's DISCARD) is not queued; its ID stays.
            try:
                await self.srv.queue.enqueue(env, data, qid)
            except Exception as e:
                self.srv.log.warning(f"queue file write error: {e}")
                await self.reply(R.QUEUE_WRITE_ERROR)
                return
            if self.srv.flow is not None and "hold" in env.attrs:
                self.srv.flow.give_back()
        if cleaned is not None:
            cleaned.log_notes(self.srv.log, qid)
        if self.bdat is not None:
            await self.reply(R.BDAT_QUEUED.format(size=self.bdat.size, qid=qid))
        else:
            await self.reply(R.QUEUED.format(qid=qid))
        if discard:
            return
        if self.srv.notify is not None:
            self.srv.notify({"op": "wakeup"})

    async def _milter_message(
        self, env: Envelope, data: bytes, qid: str, cleaned: Any
    ) -> tuple[Envelope, bytes, bool] | None:
        """The message through smtpd_milters, as Postfix's cleanup sends it: the envelope
        and content to queue, their modifications applied, or None once refused (logged
        and answered here), and whether it is to be thrown away."""
        assert self.milters is not None
        editor = MilterEditor(self.cfg, env, data, qid)
        resp = await self.milters.message(editor, hidden=1)
        new_env, new_data = editor.result() if editor.changed else (env, data)
        notes = cleaned.notes if cleaned is not None else []
        # What milter_header_checks decided of the headers the applications gave.
        checked = editor.state
        notes += checked.notes
        if checked.reply is not None and (resp is None or resp[0] in "HD"):
            if cleaned is not None:
                cleaned.log_notes(self.srv.log, qid)
            await self.reply(checked.reply)
            return None
        if checked.hold:
            new_env.attrs.setdefault("hold", "milter_header_checks")
        if resp is None:
            return new_env, new_data, checked.discard
        if resp[0] == "H":
            line = milter_log(env, "milter-hold", "milter triggers HOLD action")
            new_env.attrs["hold"] = "milter triggers HOLD action"
        elif resp[0] == "D":
            notes.append(
                ("info", milter_log(env, "milter-discard", "milter triggers DISCARD action"))
            )
            return new_env, new_data, True
        else:
            reply = SHUTDOWN if resp[0] == "S" else resp
            notes.append(("info", milter_log(env, "milter-reject", reply[4:])))
            if cleaned is not None:
                cleaned.log_notes(self.srv.log, qid)
            await self.reply(reply)
            return None
        notes.append(("info", line))
        return new_env, new_data, False

    def _forwarded_envelope(self, env: Envelope, fwd: Forwarded, qid: str) -> Envelope:
        """The envelope with XFORWARD's attributes: its client (when one of NAME, ADDR,
        PORT, PROTO or HELO was given), its IDENT (else the queue ID) as log_ident, and
        its SOURCE (else what local_header_rewrite_clients says of the client that talked
        to us) as rewrite_context, and how cleanup logs the client (log_message_origin,
        log_protocol_name), as Postfix's smtpd writes them."""
        attrs = dict(env.attrs)
        attrs["rewrite_context"] = fwd.source or (
            "local" if local_client(env, self.cfg) else "remote"
        )
        attrs["log_ident"] = fwd.ident or qid
        if not fwd.client:
            return dataclasses.replace(env, attrs=attrs)
        # How cleanup names the client in its log lines: the protocol as given (LMTP, ...)
        # and a name without "[address]" when there is none.
        attrs["log_message_origin"] = fwd.namaddr
        attrs["log_protocol_name"] = fwd.protocol
        # The client that talked to us, which the envelope's client no longer is: Postfix
        # keeps both (client_* beside log_client_*), as postcat shows.
        attrs["client_name"], attrs["client_address"] = env.client_name, env.client_addr
        attrs["client_port"], attrs["helo_name"] = str(env.client_port), env.helo_name
        attrs["protocol_name"] = env.protocol
        return dataclasses.replace(
            env,
            client_name=fwd.name,
            client_addr=fwd.addr,
            client_port=int(fwd.port) if fwd.port.isdigit() else 0,
            helo_name=fwd.helo,
            protocol=fwd.protocol,
            attrs=attrs,
        )

    def _client_attrs(self, sasl_sender: str | None) -> str:
        """The "client=" log line's text, with the SASL attributes the message has, as
        Postfix's smtpd_sasl_mail_log()."""
        text = f"client={self.state.namaddr}"
        if self.sasl_method:
            text += f", sasl_method={self.sasl_method}"
        if self.state.sasl_username:
            text += f", sasl_username={printable(self.state.sasl_username)}"
        if sasl_sender is not None:
            text += f", sasl_sender={sasl_sender}"
        fwd = self.forwarded
        if fwd is not None and fwd.ident:
            text += f", orig_queue_id={fwd.ident}"
        if fwd is not None and fwd.client:
            text += f", orig_client={fwd.namaddr}"
        return text

    def protocol(self) -> str:
        proto = "ESMTP" if self.state.esmtp else "SMTP"
        if self.tls_active:
            proto += "S"
        if self.state.sasl_username:
            proto += "A"
        return proto

    def received_header(self, env: Envelope, queue_id: str) -> str:
        """Postfix's Received: header (smtpd.c), with control characters shown as '?'."""
        helo = printable(env.helo_name) or "unknown"
        # The address as RFC 5321 writes an address literal (Postfix's rfc_addr).
        addr = f"IPv6:{env.client_addr}" if ":" in env.client_addr else env.client_addr
        lines = [f"Received: from {helo} ({printable(env.client_name)} [{addr}])"]
        if self.tls_active and self.cfg.get_bool("smtpd_tls_received_header"):
            summary = self._tls_summary()
            if summary:
                lines.append(f"\t(using {summary})")
                # No client certificate is asked for (smtpd_tls_ask_ccert is not supported).
                lines.append("\t(No client certificate requested)")
        if env.sasl_username and self.cfg.get_bool("smtpd_sasl_authenticated_header"):
            lines.append(f"\t(Authenticated sender: {printable(env.sasl_username)})")
        # RFC 6531's names for a message sent with SMTPUTF8: UTF8SMTP, UTF8SMTPS, UTF8SMTPA...
        proto = self.protocol()
        proto = f"UTF8{proto[1:]}" if env.smtputf8 else proto
        by = f"\tby {self.srv.hostname} ({self.cfg.get('mail_name')}) with {proto} id {queue_id}"
        if len(env.recipients) == 1:
            lines.append(by)
            # As Postfix's quote_822_local: "a b"@example.com, not a b@example.com.
            rcpt = quote_local(env.recipients[0].address)
            if not rcpt.isprintable():
                # Postfix writes the 8-bit bytes of an address as given (taken with
                # smtputf8_enable = no: surrogate escapes here).
                rcpt = "".join(c if "\udc80" <= c <= "\udcff" else printable(c) for c in rcpt)
            lines.append(f"\tfor <{rcpt}>; {mail_date()}")
        else:
            lines.append(f"{by};")
            lines.append(f"\t{mail_date()}")
        return "\r\n".join(lines) + "\r\n"

    async def cmd_bdat(self, arg: str) -> bool:
        if "chunking" in self.ehlo_discard:
            # Postfix's bdat_cmd: 521, and the session ends as for a syntax error.
            await self.reply(R.BDAT_NOT_IMPLEMENTED)
            return False
        words = arg.split()
        if (
            not words
            or len(words) > 2
            or not words[0].isdigit()
            or (len(words) == 2 and words[1].upper() != "LAST")
        ):
            # Unlike other syntax errors this ends the session: the client's next bytes
            # may be a chunk, not a command (RFC 3030 4.2, Postfix's 521).
            await self.reply(R.BDAT_SYNTAX)
            return False
        count = int(words[0])
        last = len(words) == 2
        # Once a chunk failed, the rest of the message is read and thrown away, until its
        # LAST chunk or RSET; meanwhile MAIL, RCPT and DATA are out of sequence.
        failure: str | None = None
        if self.bdat is None:
            self.bdat = ChunkReader(self.srv.line_limit, self.bare_lf_mode != "off")
            if self.tx is None:
                failure = R.NEED_RCPT
            elif not self.tx.recipients:
                failure = R.NO_VALID_RCPT
            elif (milters := self.envelope_milters) is not None:
                # The first chunk starts the content: smtpd_milters' DATA, as for DATA.
                resp = await milters.data_event()
                if resp is not None:
                    failure = milters.verdict(resp, self.tx.recipients[0].address)
        elif self.bdat_failed:
            failure = R.BDAT_DISCARDED.format(count=count)
        # Postfix weighs the chunk against what it queued so far (its act_size), which
        # leaves out a line the chunks have not ended yet.
        if failure is None and self.srv.size_limit and self.srv.size_limit - self.bdat.size < count:
            self.srv.log.warning(
                f"{self.state.queue_id or 'NOQUEUE'}: BDAT request from {self.state.namaddr}"
                " exceeds message size limit"
            )
            failure = R.BDAT_TOO_BIG
        chunk = bytearray()
        remaining = count
        while remaining:
            if not self.buf:
                await self._fill()
            take = min(remaining, len(self.buf))
            if failure is None:
                chunk += self.buf[:take]
            del self.buf[:take]
            remaining -= take
        if failure is None and self.bdat.feed(chunk, last) and self.bare_lf_mode == "reject":
            # Postfix 3.7 refuses the message, not the session: the chunk whose lines
            # ended in a bare <LF>, or the message at its end.
            failure = self._bare_lf_refusal("END-OF-MESSAGE" if last else "BDAT content")
        if failure is not None:
            self.bdat_failed = True
            if last:
                self._mail_reset()
            await self.reply(failure)
            return True
        if not last:
            await self.reply(f"250 2.0.0 Ok: {count} bytes")
            return True
        await self._finish_message(self.bdat.content, False)
        return True

    async def cmd_rset(self, arg: str) -> None:
        if arg:
            await self.reply(R.RSET_SYNTAX)
            return
        self._mail_reset()
        await self.reply(R.OK)

    async def cmd_noop(self, arg: str) -> None:
        await self.reply(R.OK)

    async def cmd_quit(self, arg: str) -> bool:
        await self.reply(R.BYE, count=False)
        return False

    async def cmd_vrfy(self, arg: str) -> None:
        if self.cfg.get_bool("disable_vrfy_command"):
            await self.reply(R.VRFY_DISABLED)
            return
        if not arg:
            # Postfix names SMTPUTF8 in the syntax only where it takes it.
            await self.reply(R.VRFY_SYNTAX if self._smtputf8() else R.VRFY_SYNTAX_ASCII)
            return
        # Postfix joins the words and wants one address of them (an optional SMTPUTF8 aside),
        # and answers with the argument as given.
        words = arg.split()
        smtputf8 = len(words) > 1 and words[-1].upper() == "SMTPUTF8"
        if smtputf8:
            arg = arg.rstrip()[: -len("SMTPUTF8")].rstrip()
        parsed = parse_path(arg, False)
        if parsed is None or not parsed[0] or parsed[1]:
            await self.reply(R.BAD_RECIPIENT)
            return
        if not domain_ok(parsed[0], smtputf8):
            self._bad_address(arg)
            await self.reply(R.BAD_RECIPIENT)
            return
        # As Postfix's vrfy_cmd: the whole smtpd_check_rcpt, the restrictions that
        # smtpd_delay_reject left pending included, and its refusal logged as RCPT's.
        addr = internal_form(parsed[0])
        reply = await self._check(self.srv.checker.at_rcpt, addr)
        if reply is not None:
            await self._reject(reply, addr)
            return
        await self.reply(R.VRFY_OK.format(addr=arg))

    async def cmd_etrn(self, arg: str) -> None:
        if self.cfg.get_bool("smtpd_helo_required") and not self.helo_kind:
            await self.reply(R.ETRN_NEED_HELO)
            return
        if self.tx is not None:
            await self.reply(R.ETRN_IN_TX)
            return
        if not arg or len(arg.split()) > 1:
            await self.reply(R.ETRN_SYNTAX)
            return
        # One leading "@" or "#" is allowed (RFC 1985); the rest must be a host name or,
        # as Postfix's extension, an address literal.
        domain = arg[1:] if arg[0] in "@#" else arg
        if not (valid_hostname(domain) or valid_mailhost_literal(domain)):
            await self.reply(R.ETRN_BAD)
            return
        # smtpd_check_etrn: the pending client and HELO restrictions, then
        # smtpd_etrn_restrictions, before the flush service is asked.
        reply = await self._check(self.srv.checker.at_etrn, domain)
        if reply is not None:
            await self._reject(reply)
            return
        try:
            allowed = flush_site_ok(self.cfg, domain, self.srv.log.info)
        except TableError:
            # flush_send_site's FLUSH_STAT_FAIL, after the table's own warnings.
            self.srv.log.warning("unable to talk to fast flush service")
            await self.reply(R.ETRN_FAILED)
            return
        if not allowed:
            # etrn_cmd's warning for the flush service's FLUSH_STAT_DENY.
            self.srv.log.warning(f"reject: ETRN {domain[:100]}... from {self.state.namaddr}")
            await self.reply(R.ETRN_UNAVAILABLE.format(domain=domain))
            return
        if self.srv.notify is not None:
            self.srv.notify({"op": "flush-site", "site": domain})
        await self.reply(R.ETRN_OK)

    async def cmd_starttls(self, arg: str) -> None:
        if arg:
            await self.reply(R.STARTTLS_SYNTAX)
            return
        if self.tls_active:
            await self.reply(R.TLS_ACTIVE)
            return
        if self.srv.tls_context is None or not self.tls_level:
            await self.reply(R.NOT_IMPLEMENTED)
            return
        if self.anvil is not None and await self._tls_refused("STARTTLS"):
            await self.reply(R.TLS_RATE_REFUSED.format(namaddr=self.state.namaddr))
            return
        await self.reply(R.STARTTLS_READY)
        # Everything the client pipelined in plaintext after STARTTLS is discarded
        # (CVE-2011-0411): it must not be run as if it came over TLS (start_tls drops it).
        try:
            await asyncio.wait_for(
                self.conn.start_tls(self.srv.tls_context),
                self.cfg.get_time("smtpd_starttls_timeout"),
            )
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
            self.srv.log.warning(f"TLS handshake failed for {self.state.namaddr}: {e}")
            raise Disconnect from None
        self.tls_active = True
        self._log_tls()
        if self.anvil is not None and await self._new_tls_over():
            raise Disconnect
        self.helo_kind = ""
        self.state.helo = ""
        self.state.esmtp = False
        self._mail_reset()

    def _tls_summary(self) -> str:
        return tls.summary(self.conn.get_extra_info("ssl_object"))

    def _log_tls(self) -> None:
        if self.cfg.get_int("smtpd_tls_loglevel") >= 1:
            # "Anonymous": no client certificate (none is asked for).
            self.srv.log.info(
                f"Anonymous TLS connection established from {self.state.namaddr}: "
                f"{self._tls_summary()}"
            )

    async def cmd_auth(self, arg: str) -> None:
        # Postfix's smtpd_sasl_auth_cmd asks for HELO (when required) before it looks at
        # whether AUTH is on at all.
        if self.cfg.get_bool("smtpd_helo_required") and not self.helo_kind:
            await self.reply(R.NEED_HELO)
            return
        if not self._auth_offered():
            await self.reply(R.AUTH_NOT_ENABLED)
            return
        if not self.helo_kind:
            await self.reply(R.NEED_HELO)
            return
        if self.state.sasl_username:
            await self.reply(R.AUTH_ALREADY)
            return
        if self.tx is not None:
            await self.reply(R.IN_TX)
            return
        # Split on spaces only: a TAB inside a response is bad base64, not a separator.
        words = [w for w in arg.split(" ") if w]
        if not words or len(words) > 2:
            await self.reply(R.AUTH_SYNTAX)
            return
        if self.anvil is not None and await self._over_rate(
            "auth", self.srv.auth_rate_limit, "AUTH command rate", R.AUTH_RATE
        ):
            return
        mech = words[0].upper()
        initial = words[1] if len(words) == 2 else None
        if mech not in ("PLAIN", "LOGIN"):
            await self.reply(R.AUTH_MECH)
            return
        assert self.srv.authenticator is not None
        result = await self.srv.authenticator.authenticate(self, mech, initial)
        if result is None:
            return  # the authenticator has replied
        self.state.sasl_username = result
        self.sasl_method = mech
        await self.reply(R.AUTH_OK)

    async def sasl_challenge(self, challenge: str) -> str | None:
        """Send a 334 challenge and read the response line; None after the client's '*'."""
        await self.reply(f"334 {challenge}", count=False)
        limit = self.cfg.get_int("smtpd_sasl_response_limit")
        piece, term = await self.read_piece(limit)
        if not term:
            while not term:
                _, term = await self.read_piece(limit)
            raise SaslError(R.AUTH_RESPONSE_LIMIT)
        text = piece.decode("ascii", "replace")
        if text == "*":
            raise SaslError(R.AUTH_ABORTED)
        return text

    async def cmd_expn(self, arg: str) -> None:
        await self.reply(R.CMD_UNKNOWN)

    async def _x_words(self, verb: str, arg: str, allowed: bool | None) -> list[str] | None:
        """XCLIENT's and XFORWARD's attribute=value words, once the command may run here
        (outside a transaction, with words, from an authorized client: Postfix's order)."""
        words = smtpd_tokens(arg)
        if self.tx is not None:
            await self.reply(R.IN_TX)
        elif not words:
            await self.reply(R.X_SYNTAX.format(cmd=verb))
        elif allowed is None:
            await self._local_data_error(
                verb, f"don't know if command {verb} should be allowed from {self.state.namaddr}"
            )
        elif not allowed:
            await self.reply(R.XCLIENT_DENIED)
        else:
            return words
        return None

    async def cmd_xclient(self, arg: str) -> None:
        """XCLIENT_README: the client's identity is replaced and the session starts over
        (a new greeting; HELO, PROTO and LOGIN are forgotten unless given), so that the
        restrictions judge the new client as if it had connected."""
        words = await self._x_words("XCLIENT", arg, self.xclient_allowed)
        if words is None:
            return
        st = self.state
        current = Identity(
            name=st.name,
            name_status=st.name_status,
            reverse_name=st.reverse_name,
            reverse_name_status=st.reverse_name_status,
            addr=self.addr,
            port=str(self.port),
            helo=st.helo,
            protocol=st.protocol,
        )
        try:
            new = apply_xclient(current, words, self.srv.ipv6)
        except XError as e:
            await self.reply(str(e))
            return
        st.name, st.name_status = new.name, new.name_status
        st.reverse_name, st.reverse_name_status = new.reverse_name, new.reverse_name_status
        self.addr = st.addr = new.addr
        self.port = int(new.port) if new.port.isdigit() else 0
        # The new client may use XCLIENT only if it could have itself.
        self.xclient_allowed = self._client_listed("smtpd_authorized_xclient_hosts")
        self._mail_reset()
        st.helo = new.helo if new.got_helo else ""
        st.protocol = new.protocol if new.got_proto else "SMTP"
        st.esmtp = st.protocol == "ESMTP"
        self.helo_kind = ("EHLO" if st.esmtp else "HELO") if st.helo else ""
        if new.got_login:
            st.sasl_username, self.sasl_method = new.login, "XCLIENT"
        else:
            st.sasl_username, self.sasl_method = "", ""
        self.uncounted = True
        if self.srv.milters_on:
            # As Postfix's xclient_cmd: the milters' session with the old client ends and
            # one with the new client starts, chosen by smtpd_milter_maps for it; a
            # milter's 5XX at its CONNECT is the 554 greeting.
            if self.milters is not None:
                await self.milters.quit()
                self.milters = None
            if await self._milter_connect():
                return
        await self._greet()

    async def cmd_xforward(self, arg: str) -> None:
        """XFORWARD_README: the up-stream client's attributes, for the log and the queue
        file of the next message (forgotten at its end, at RSET, HELO or EHLO)."""
        words = await self._x_words("XFORWARD", arg, self.xforward_allowed)
        if words is None:
            return
        try:
            self.forwarded = apply_xforward(self.forwarded, words, self.srv.ipv6)
        except XError as e:
            await self.reply(str(e))
            return
        await self.reply(R.OK)


class SaslError(Exception):
    """An AUTH exchange ended with this reply."""


# Postfix's smtpd command table order, which its disconnect statistics follow; commands
# outside the table count as "unknown".
_STATS_ORDER = (
    "HELO",
    "EHLO",
    "XCLIENT",
    "XFORWARD",
    "STARTTLS",
    "AUTH",
    "MAIL",
    "RCPT",
    "DATA",
    "BDAT",
    "RSET",
    "NOOP",
    "VRFY",
    "ETRN",
    "QUIT",
    "UNKNOWN",
)
_COMMANDS = frozenset(_STATS_ORDER) - {"UNKNOWN"}

# Client name lookups kept per address (seconds, entries).
NAME_CACHE_TIME = 10.0
NAME_CACHE_SIZE = 4096


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


def internal_form(addr: str) -> str:
    """Postfix's internal address form: a source route is dropped and a quoted local part
    loses its quotes (replies, logs and the queue file show it so)."""
    if addr.startswith("@") and ":" in addr:
        addr = addr.split(":", 1)[1]
    if '"' not in addr and "\\" not in addr:
        return addr
    return unquote_822_local(addr)


def parse_path(text: str, strict: bool) -> tuple[str, list[str]] | None:
    """Postfix's extract_addr for MAIL FROM/RCPT TO: (address, ESMTP params), or None for
    bad syntax. `<>` is the null address; a source route is kept for trivial-rewrite."""
    parsed = _parse_path(text, strict)
    if parsed is None and text.lstrip(" ").startswith("<"):
        return _bracketed_again(text, strict)
    return parsed


def _bracketed_again(text: str, strict: bool) -> tuple[str, list[str]] | None:
    """extract_addr takes one pair of brackets off a word that starts with "<" and ends
    with ">", and tok822 then ignores a "<" or ">" of its own around the address: so
    <<a@b.c>> and <a@b.c>> are a@b.c (and <<>> the null address), a third pair is not."""
    text = text.lstrip(" ")
    words = smtpd_tokens(text)
    word = words[0] if words else ""
    if len(word) < 3 or word[-1] != ">":
        return None
    inner = word[1:-1]
    if inner.startswith("<"):
        parsed = _parse_path(inner, strict)
        if parsed is None or parsed[1]:
            return None
        addr = parsed[0]
    elif inner.endswith(">"):
        addr = inner[:-1]
        if ">" in addr or not _address_ok(addr):
            return None
    else:
        return None
    return addr, words[1:]


def _parse_path(text: str, strict: bool) -> tuple[str, list[str]] | None:
    text = text.lstrip(" ")
    if text.startswith("<") and '"' not in text and "\\" not in text:
        # No quoting: the path ends at the first ">" unless a "<" nests before it.
        end = text.find(">")
        if end > 0 and text.count("<", 0, end) == 1:
            return _path_and_params(text, end, strict)
    if text.startswith("<"):
        depth = 0
        in_quote = False
        end = -1
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\\":  # smtpd_token: a backslash escapes the next character anywhere
                i += 2
                continue
            if ch == '"':
                in_quote = not in_quote
            elif not in_quote and ch == "<":
                depth += 1
            elif not in_quote and ch == ">":
                depth -= 1
                if depth == 0:
                    end = i
                    break
            i += 1
        if end < 0:
            return None
        return _path_and_params(text, end, strict)
    else:
        if strict:
            return None
        words = smtpd_tokens(text)
        if not words:
            return None
        addr, params = _uncommented(words[0], strict), words[1:]
    if not _address_ok(addr):
        return None
    return addr, params


def illegal_syntax(text: str, strict: bool) -> str | None:
    """The path of a MAIL FROM or RCPT TO argument that parse_path() refused, when Postfix's
    extract_addr warns "Illegal address syntax" of it: it holds several addresses (white
    space, a comma or semicolon, a comment or a domain literal between the words of one,
    outside quotes), or strict_rfc821_envelopes wants the <> it lacks."""
    words = smtpd_tokens(text)
    if not words:
        return None
    path = words[0]
    if not path.startswith("<"):
        return path if strict else None
    end = path.find(">")
    if end < 0 or '"' in path or "\\" in path:
        return None  # unclosed, or quoted: not judged here
    if end < len(path) - 1:
        # Words after the path: another address, but for comments, which tok822 drops.
        return None if not strict and _COMMENTS.fullmatch(path, end + 1) else path
    inner = path[1:-1]
    route = _ROUTE.match(inner)
    inner = inner[route.end() :] if route else inner
    if _COMMENT_SPLITS.search(inner) or (strict and "(" in inner):
        return path  # a comment is no part of an RFC 821 path
    inner = _COMMENT.sub("", inner)
    if _WORD_SPLITS.search(inner) or "[" in inner.rpartition("@")[0]:
        return path
    return None


def _uncommented(addr: str, strict: bool) -> str:
    """The address without the comments tok822 drops (see _COMMENT_SPLITS), but for
    strict_rfc821_envelopes, which refuses them."""
    if "(" not in addr or strict or '"' in addr or "\\" in addr or _COMMENT_SPLITS.search(addr):
        return addr
    return _COMMENT.sub("", addr)


def _path_and_params(text: str, end: int, strict: bool) -> tuple[str, list[str]] | None:
    """parse_path for `text` whose <path> ends at `end`."""
    addr = _uncommented(text[1:end], strict)
    blank = " " in addr or not addr.isprintable()  # ISSPACE but for a space is a control
    if blank and not _BLANK_BETWEEN_WORDS.search(addr) and '"' not in addr:
        # tok822 drops white space between the tokens of one address: "< a @b. c >" is
        # a@b.c (strict_rfc821_envelopes or not); between two words it is two addresses.
        addr = _SPACE.sub("", addr)
    rest = text[end + 1 :]
    if rest.startswith("(") and not strict:
        comments = _COMMENTS.match(rest)
        rest = rest[comments.end() :] if comments else rest
    if rest and not rest.startswith(" "):
        return None
    if not _address_ok(addr):
        return None
    return addr, smtpd_tokens(rest)


# Postfix's ISSPACE (ASCII isspace), which smtpd_token() splits at.
_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_TOKEN_QUOTING = re.compile(r'[<"\\]')


def smtp_line(line: bytes, bound: int) -> bytes:
    """A line as Postfix's smtp_get() leaves it, given without its <LF>: read in pieces of
    `bound` bytes, the <CR>s that end its last piece dropped. A piece of `bound` bytes that
    ends in <CR> before the <LF> is the last (smtp_get repairs a <CR><LF> cut in two); a
    <CR> that ends an earlier piece stays."""
    start = len(line) - len(line) % bound
    if start == len(line) and line.endswith(b"\r"):
        start -= bound
    return line[:start] + line[start:].rstrip(b"\r")


def smtp_line_end(
    line: bytes | bytearray, bound: int, detect: bool
) -> tuple[bytes | bytearray, bool]:
    """A line read by Postfix 3.7.11's smtp_get() up to its <LF>, given without it, as it
    leaves it, and whether that <LF> was bare. With smtpd_forbid_bare_newline on (`detect`)
    only the <CR> of a <CR><LF> goes and the others are queued (stray ones, which cleanup
    makes spaces); else the <CR>s that end the line go as smtp_line() drops them (`bound`
    0: the line is one piece) and no <LF> counts as bare."""
    if detect:
        return (line[:-1], False) if line.endswith(b"\r") else (line, True)
    return (smtp_line(bytes(line), bound) if bound else line.rstrip(b"\r")), False


class ChunkReader:
    """BDAT's content as Postfix's smtpd queues it, chunk by chunk: read with smtp_get
    calls of at most `bound` new bytes (line_length_limit) that stop at an <LF> (the end of
    a line, queued with <CR><LF>), after `bound` bytes (a piece of a longer line, queued as
    it is, but one ending in <CR> before the <LF> or the chunk's end) or at the chunk's end
    (the line goes on in the next chunk; the last chunk's is queued as a line). A line's
    <CR>s before its <LF> are dropped, all of them, or with smtpd_forbid_bare_newline on
    (`detect`) only one, a line without one ending in a bare <LF>. `size` is Postfix's
    act_size: each piece and line queued counted with a <CR><LF>."""

    def __init__(self, bound: int, detect: bool) -> None:
        self.bound = bound
        self.detect = detect
        self.content = bytearray()
        self.size = 0
        self._line = bytearray()

    def feed(self, chunk: bytes | bytearray, last: bool) -> bool:
        """Read a chunk; whether a line of it ended in a bare <LF> (with `detect`)."""
        # The common case: <CR><LF> lines shorter than a piece, nothing to drop.
        if (
            not self._line
            and chunk.endswith(CRLF)
            and chunk.count(b"\n") == chunk.count(CRLF)
            and b"\r\r\n" not in chunk
            and max(map(len, chunk.split(b"\n"))) < self.bound
        ):
            self.content += chunk
            self.size += len(chunk)
            return False
        bare = False
        line, pos, n, bound = self._line, 0, len(chunk), self.bound
        while pos < n:
            lf = chunk.find(b"\n", pos, pos + bound)
            if lf >= 0:
                line += chunk[pos:lf]
                pos = lf + 1
            else:
                end = min(pos + bound, n)
                line += chunk[pos:end]
                whole, pos = end - pos == bound, end
                if not whole or (line.endswith(b"\r") and pos == n):
                    break  # the chunk's end (smtp_get's look for an <LF> after a <CR> too)
                if not line.endswith(b"\r") or chunk[pos] != ord("\n"):
                    self._queue(line, b"")
                    line = bytearray()
                    continue
                pos += 1  # smtp_get's repair of a <CR><LF> cut at the piece's end
            kept, bare_here = smtp_line_end(line, 0, self.detect)
            bare = bare or bare_here
            self._queue(kept, CRLF)
            line = bytearray()
        if last and line:
            self._queue(line, CRLF)
            line = bytearray()
        self._line = line
        return bare

    def _queue(self, piece: bytes | bytearray, end: bytes) -> None:
        self.content += piece
        self.content += end
        self.size += len(piece) + 2


def smtpd_tokens(text: str) -> list[str]:
    """Postfix's smtpd_token(): the words of text, split at white space except inside
    "..." and <...> (brackets nest, quotes inside them) and after a backslash; quotes,
    brackets and backslashes stay in the word. AUTH=<x y@example.org> is one word. An
    unclosed quote or bracket runs to the end."""
    if _TOKEN_QUOTING.search(text) is None:
        return [w for w in _SPACE.split(text) if w]
    words: list[str] = []
    word: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c in " \t\n\v\f\r":
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(c)
        if c == "\\":
            word.append(text[i : i + 1])
            i += 1
        elif c in '<"':
            # smtp_quoted(): the closing characters wanted, innermost last.
            wanted = [">" if c == "<" else '"']
            while i < n and wanted:
                c = text[i]
                i += 1
                word.append(c)
                if c == "\\":
                    word.append(text[i : i + 1])
                    i += 1
                elif c == wanted[-1]:
                    wanted.pop()
                elif c == '"':
                    wanted.append('"')
                elif c == "<" and wanted[-1] == ">":
                    wanted.append(">")
    if word:
        words.append("".join(word))
    return words


# What an address outside quotes may not contain (Postfix's extract_addr): other control
# characters are part of a word for its tokenizer, and the address is taken (quoted when
# it is logged).
_UNQUOTED_BAD = re.compile(r"[ <>(),;\\\t\n\r\x00]")
# White space with a word (or a quoted string, a domain literal) on either side.
_BLANK_BETWEEN_WORDS = re.compile(r"[^\s@.:,<>]\s+[^\s@.:,<>]")
# What splits an address outside quotes into several (tok822): extract_addr's "naddr > 1".
# A comment between two words does; tok822 drops any other ((c)ab@x is ab@x).
_COMMENT_SPLITS = re.compile(r"[^.@(]\([^)]*\)[^.@]")
_COMMENT = re.compile(r"\([^()]*\)")
_COMMENTS = re.compile(r"(?:\([^()]*\))+")
_WORD_SPLITS = re.compile(r"[ \t\r\n,;]")
# A source route's list of domains ("@a,@b:"), whose commas belong to it.
_ROUTE = re.compile(r"@[^:]*:")


def _address_ok(addr: str) -> bool:
    if addr == "":
        return True
    if '"' not in addr and "\\" not in addr:
        route = _ROUTE.match(addr)
        if _UNQUOTED_BAD.search(addr, route.end() if route else 0):
            return False
        if "[" in addr.rpartition("@")[0]:
            return False  # a domain literal in the local part: one address more
        return _domain_ok(addr)
    in_quote = False
    escaped = False
    for ch in addr:
        if escaped:
            # A quoted pair, in quotes or out (tok822): any character but a control one.
            escaped = False
            if ord(ch) < 32:
                return False
            continue
        if ch == "\\":
            escaped = True
            continue
        if ch == '"':
            in_quote = not in_quote
            continue
        if not in_quote and (
            (ch in " <>()[],;\\" and ch not in "[]") or ord(ch) < 32 or ch == "\x7f"
        ):
            return False
        if ord(ch) < 32:
            return False
    if in_quote:
        return False
    return _domain_ok(addr)


def domain_ok(addr: str, smtputf8: bool) -> bool:
    """What trivial-rewrite says of the address's domain (RESOLVE_FLAG_ERROR), which
    Postfix's smtpd answers with "Bad ... address syntax": an address literal must hold an
    address; a name (trailing dots aside) must be a valid host name, in UTF-8 only when the
    transaction declared SMTPUTF8. No domain is fine: myorigin is appended."""
    route = _ROUTE.match(addr)
    _local, domain = split_internal(addr[route.end() :] if route else addr)
    if not domain:
        return True
    # A relay sees few domains, many times each.
    known = _DOMAIN_OK.get((domain, smtputf8))
    if known is None:
        if len(_DOMAIN_OK) >= 4096:
            _DOMAIN_OK.clear()
        known = _DOMAIN_OK[(domain, smtputf8)] = _domain_valid(domain, smtputf8)
    return known


_DOMAIN_OK: dict[tuple[str, bool], bool] = {}


def _domain_valid(domain: str, smtputf8: bool) -> bool:
    if domain.startswith("["):
        return valid_mailhost_literal(domain)
    domain = domain.rstrip(".")
    if not domain.isascii():
        if not smtputf8:
            return False
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return valid_hostname(domain)


def _domain_ok(addr: str) -> bool:
    route_stripped = addr.split(":", 1)[1] if addr.startswith("@") and ":" in addr else addr
    if route_stripped.endswith("@"):
        return False
    _local, domain = split_address(route_stripped)
    if "@" in route_stripped and not domain.strip():
        return False
    # Postfix accepts a missing local part (<@a>); the restrictions judge it.
    return not (domain != domain.strip() or (domain and " " in domain))
