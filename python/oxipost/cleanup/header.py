"""cleanup_message - header and body processing: content checks and header addresses

Walks the message as Postfix's cleanup does through its MIME state machine: the primary
header, then the body, the headers of each multipart part and of each attached
message/rfc822. Each header goes through the table for its class (header_checks for
primary headers, mime_header_checks for Content-*/MIME-Version and part headers,
nested_header_checks for the headers of attached messages); each body line (the first
body_checks_size_limit bytes of each body segment; a line longer than line_length_limit
in pieces of that length, as Postfix's queue file holds it) through body_checks.
Actions are those of header_checks(5)/body_checks(5): REJECT, DISCARD, HOLD, WARN, INFO,
IGNORE, STRIP, REDIRECT, BCC, PREPEND, REPLACE, FILTER, PASS, DUNNO and OK.

Primary sender headers (From, Sender, Reply-To, Errors-To, ...) and recipient headers (To,
Cc, Bcc, Resent-To, ...) then have their addresses put in standard form (local clients:
@$myorigin / .$mydomain; remote clients: @$remote_header_rewrite_domain, or nothing when
that is empty), canonical-mapped and masqueraded per the header_sender / header_recipient
classes. The headers message_drop_headers names (Bcc:, Content-Length:, Resent-Bcc: and
Return-Path: by default) are removed from every client's mail, as Postfix's cleanup does.

Diagnostics: each action is logged as Postfix's cleanup_act_log does, e.g. "reject: header
Subject: spam from host[1.2.3.4]; from=<a@b> to=<c@d> proto=ESMTP helo=<h>: 5.7.1 text";
an unreadable table logs "header_checks map lookup problem -- message not accepted, try
again later" and refuses with 451 4.3.0.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from oxipost import tok822
from oxipost.cleanup.addr import WRITE_ERROR, canonical
from oxipost.cleanup.state import (
    HDR_FROM,
    HDR_RCPT,
    MIME_8BIT_BODY,
    MIME_8BIT_HEADER,
    MIME_DOMAIN,
    MIME_NESTING,
    TableNotes,
    cleanup_config,
)
from oxipost.delivery.address import log_form, quote_local
from oxipost.envelope import Envelope
from oxipost.maps import Table, TableError, open_table, warn_lookup_error
from oxipost.maps.search import maps_find_warned
from oxipost.printable import truncate
from oxipost.rewrite.rewrite import rewrite_address
from oxipost.smtpd.check import match_networks

if TYPE_CHECKING:
    from oxipost.cleanup.state import CleanupState

# Header classes (Postfix's MIME_HDR_*).
PRIMARY = "primary"
MULTIPART = "multipart"
NESTED = "nested"

_CHECKS = {
    PRIMARY: "header_checks",
    MULTIPART: "mime_header_checks",
    NESTED: "nested_header_checks",
}

# header_opts.c: which headers carry sender or recipient addresses.
SENDER_HEADERS = frozenset(
    {
        "disposition-notification-to",
        "errors-to",
        "from",
        "mail-followup-to",
        "reply-to",
        "resent-from",
        "resent-sender",
        "return-path",
        "return-receipt-to",
        "sender",
    }
)
RECIPIENT_HEADERS = frozenset(
    {"apparently-to", "bcc", "cc", "resent-bcc", "resent-cc", "resent-reply-to", "resent-to", "to"}
)
ADDRESS_HEADERS = SENDER_HEADERS | RECIPIENT_HEADERS
MIME_HEADERS = frozenset(
    {
        "content-description",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    }
)
RESENT_HEADERS = frozenset(
    {
        "resent-bcc",
        "resent-cc",
        "resent-date",
        "resent-from",
        "resent-message-id",
        "resent-reply-to",
        "resent-sender",
        "resent-to",
    }
)

_HEADER = re.compile(r"[!-9;-~]+:")
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)
_DSN = re.compile(r"[45]\.\d{1,3}\.\d{1,3}(?:\s|$)")


def header_name(text: str) -> str:
    return text.split(":", 1)[0].strip().lower()


def dsn_prepend(default: str, text: str) -> str:
    """Postfix's dsn_prepend: keep a leading DSN code in text, else put `default` first."""
    return text if _DSN.match(text) else f"{default} {text}"


# Table access --------------------------------------------------------------------------


def _lookup(state: CleanupState, param: str, text: str) -> str | None:
    """First match of `text` in `param`'s tables; refuses the message on a table error."""
    try:
        for _spec, table in state.tables(param):
            value = table.lookup(text)
            if value is not None:
                return value
    except TableError as e:
        warn_lookup_error(e, text)
        state.warn(f"{param} map lookup problem -- message not accepted, try again later")
        state.refuse(WRITE_ERROR)
        state.filtering = False
    return None


def _log_origin(state: CleanupState) -> str:
    env = state.env
    # As smtpd wrote it for a client XFORWARD named (a name alone without an address).
    origin = env.attrs.get("log_message_origin")
    if origin:
        return origin
    if env.client_addr:
        return f"{env.client_name or 'unknown'}[{env.client_addr}]"
    return "local"


def _log_address(state: CleanupState, address: str) -> str:
    return log_form(address, state.cfg.get("info_log_address_format") == "external")


def _act_log(state: CleanupState, action: str, context: str, content: str, text: str) -> None:
    """cleanup_act_log: one line per action, with the message's context."""
    env = state.env
    # Postfix's "%.200s": the first 200 bytes, whatever characters they cut.
    line = f"{state.act_prefix}{action}: {context} {truncate(content, 200)} from"
    line += f" {_log_origin(state)};"
    line += f" from=<{_log_address(state, state.sender)}>"
    if state.recip:
        line += f" to=<{_log_address(state, state.recip)}>"
    if env.client_addr:
        proto = env.attrs.get("log_protocol_name") or (
            "ESMTP" if "ESMTP" in env.protocol else (env.protocol and "SMTP")
        )
        if proto:
            line += f" proto={proto}"
        if env.helo_name:
            line += f" helo=<{env.helo_name}>"
    # cleanup_milter.c's lines end ": TEXT" even without a text.
    if text or state.act_prefix:
        line += f": {text}"
    state.info(line)


def _cleanup_act(
    state: CleanupState, command: str, context: str, line: str, text: str, param: str
) -> list[str] | None:
    """The actions only cleanup has (they change the message's fate, its recipients or its
    next hop): what takes the place of `line`, None for another command."""
    if command == "REJECT":
        reason = dsn_prepend("5.7.1", text) if text else "5.7.1 message content rejected"
        if reason[0] not in "45":
            state.warn(f"bad DSN action in {text} -- need 4.x.x or 5.x.x")
            reason = "4" + reason[1:]
        state.refuse(("451 " if reason[0] == "4" else "550 ") + reason)
        state.filtering = False
        _act_log(state, "reject", context, line, reason)
        return [line]
    if command == "FILTER":
        if not text:
            state.warn(f"missing FILTER command argument in {param} map")
        elif ":" not in text:
            state.warn(f"bad FILTER command {text} in {param} -- need transport:destination")
        else:
            state.filter = text
            _act_log(state, "filter", context, line, text)
        return [line]
    if command == "PASS":
        _act_log(state, "pass", context, line, text)
        state.filtering = False
        return [line]
    if command == "DISCARD":
        _act_log(state, "discard", context, line, text)
        state.discard = True
        state.filtering = False
        return [line]
    if command == "HOLD":
        if not (state.hold or state.discard):
            _act_log(state, "hold", context, line, text)
            state.hold = True
        return [line]
    if command in ("REDIRECT", "BCC"):
        if "@" not in text:
            what = "REDIRECT target" if command == "REDIRECT" else "BCC address"
            # Postfix's msg_warn() there names no queue ID, as a table's own warnings.
            state.notes.append(
                ("table warning", f'bad {what} "{text}" in {param} map -- need user@domain')
            )
        elif command == "REDIRECT":
            state.redirect = text
            _act_log(state, "redirect", context, line, text)
            state.filtering = False
        else:
            state.bcc.append(text)
            _act_log(state, "bcc", context, line, text)
        return [line]
    return None


# Header addresses ----------------------------------------------------------------------


# An address list in its most common forms: elements of an address with nothing to quote
# (bare or in <...>, after a phrase of atoms and quoted strings), no comments, groups or
# empty elements. Postfix's parse finds each address as it is written there, and the
# header stays as it is when the rewrite changes none (most headers): no parse needed.
_SPECIAL = r"\s()<>@,;:\\\"\[\]"
_PLAIN_ADDRESS = rf"[^{_SPECIAL}]+@[^{_SPECIAL}]+"
_WORD = rf'(?:[^{_SPECIAL}]++|"[^"\\<>@]*+")'
_ELEMENT = rf"\s*+(?:(?:{_WORD}[ \t]*+)*+<{_PLAIN_ADDRESS}>|{_PLAIN_ADDRESS})\s*+"
_SIMPLE_LIST = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*+")
_LISTED = re.compile(rf"<({_PLAIN_ADDRESS})>|({_PLAIN_ADDRESS})")


# What an address's external form must have for trivial-rewrite to read it as something
# else once it joins its tokens: quotes, a quoted pair, a '<' the parse left in it.
_TOKENS_TO_JOIN = re.compile(r'["\\<\[]')


def _rewritten(original: str, rewrite: Callable[..., str]) -> str:
    """An address of a header (external form) as Postfix's rewrite gives it back;
    `rewrite` takes `domainless=True` for an address whose '@' is all in quotes."""
    external = original
    if not external:
        return external
    if external[0] == "@":
        # Postfix's rewrite drops a source route; tok822 gives an address without a
        # local part an empty one, and makes a lone '@' the empty address.
        if external == "@":
            return '""'
        external = external[external.find(":") + 1 :]
    domainless = False
    if _TOKENS_TO_JOIN.search(external):
        # What trivial-rewrite reads: the tokens put together again, unquoted, a blank
        # between two words or before '<'.
        head = tok822.scan_addr(external).head
        internal = tok822.internalize(head)
        domainless = tok822.operators_quoted(head, internal)
    else:
        internal = external
    # A quoted local part that needs no quotes counts as rewritten too.
    rewritten = rewrite(internal, domainless=True) if domainless else rewrite(internal)
    if rewritten == internal == original and original.count("@") == 1 and original[0] != "@":
        return original
    return quote_local(rewritten)


def rewrite_header_value(
    value: str,
    rewrite: Callable[..., str],
    limit: int = 0,
    warn: Callable[[str], None] | None = None,
) -> str | None:
    """`value` with `rewrite` applied to each address (internal form in and out) and, as
    Postfix's cleanup_rewrite_sender/recip do when one changed, rebuilt from its tokens
    (tok822_parse, at most `limit` of them, then tok822_externalize and the folding of
    cleanup_fold_header); None when no address changed, which leaves the header as it
    is. `warn` is told of an element cut to its address."""
    if _SIMPLE_LIST.fullmatch(value):
        seen: dict[str, str] = {}
        for m in _LISTED.finditer(value):
            address = m.group(1) or m.group(2)
            seen[address] = rewrite(address)
        if all(new == old for old, new in seen.items()):
            return None
        # Each address rewritten once: the parse below asks again.
        rewrite = partial(_known, seen, rewrite)
    tree = tok822.parse(value, limit)
    changed = False
    tok = tree
    while tok is not None:
        if tok.type == tok822.ADDR:
            original = tok822.externalize(tok.head)
            new = _rewritten(original, rewrite)
            changed = changed or new != original
            tok.head = tok822.scan_addr(new).head
        tok = tok.next
    if not changed:
        return None
    return tok822.externalize(tree, line=True, trunc=True, warn=warn)


def _known(seen: dict[str, str], rewrite: Callable[[str], str], address: str) -> str:
    found = seen.get(address)
    return rewrite(address) if found is None else found


# A type:table item of local_header_rewrite_clients (not an IPv6 address).
_TABLE = re.compile(r"[a-z][a-z0-9_]*:", re.IGNORECASE)


def local_client(env: Envelope, cfg: Any) -> bool:
    """Whether the client is in local_header_rewrite_clients; local submissions (no
    client address) always are. A message whose smtpd already said (its rewrite_context,
    written with XFORWARD, whose SOURCE may say "local" for a remote client) is as it
    says, as Postfix's cleanup takes smtpd's rewrite_context."""
    context = env.attrs.get("rewrite_context")
    if context:
        return context == "local"
    if not env.client_addr:
        return True
    opts = cleanup_config(cfg)
    for item in opts.local_header_rewrite_clients:
        if item == "permit_inet_interfaces":
            addrs = opts.inet_interfaces
            if "all" in addrs or "loopback-only" in addrs:
                if env.client_addr.startswith("127.") or env.client_addr == "::1":
                    return True
            if env.client_addr in addrs:
                return True
        elif item == "permit_mynetworks":
            if match_networks(cfg, cfg.get_list("mynetworks"), env.client_addr):
                return True
        elif item == "permit_sasl_authenticated" and env.sasl_username:
            return True
        elif _TABLE.match(item):
            # check_address_map type:table or a bare type:table: the client address as
            # the key, any value a match (static:all matches every client).
            try:
                if open_table(item, cfg).lookup(env.client_addr) is not None:
                    return True
            except TableError as e:
                warn_lookup_error(e, env.client_addr)
        else:
            try:
                if ipaddress.ip_address(env.client_addr) in ipaddress.ip_network(
                    item, strict=False
                ):
                    return True
            except ValueError:
                continue
    return False


def state_local(state: CleanupState) -> bool:
    """local_client for the message's client, asked once per message."""
    if state.local is None:
        state.local = local_client(state.env, state.cfg)
    return state.local


def header_rewrite_context(state: CleanupState) -> str | None:
    """ "local", "remote" or None (no header address rewriting at all)."""
    if state_local(state):
        return "local"
    if state.cfg.get("remote_header_rewrite_domain"):
        return "remote"
    return None


def rewrite_header(state: CleanupState, text: str, name: str, context: str) -> str:
    """A primary sender/recipient header (`name` in lower case) with its addresses
    rewritten."""
    kind = HDR_FROM if name in SENDER_HEADERS else HDR_RCPT
    limit = state.opts.header_address_token_limit
    # tok822's warning has no queue ID in Postfix's log either.
    warn = TableNotes(state).warning
    if not state.map_ok or state.opts.canonical_steps(kind) == ((), False):
        rewrite = partial(rewrite_address, state.cfg, context=context)
        return rewrite_header_text(text, rewrite, limit, warn, state.opts.header_size_limit)

    def one(address: str, domainless: bool = False) -> str:
        return canonical(state, rewrite_address(state.cfg, address, context, domainless), kind)

    return rewrite_header_text(text, one, limit, warn, state.opts.header_size_limit)


def rewrite_header_text(
    text: str,
    rewrite: Callable[..., str],
    limit: int = 0,
    warn: Callable[[str], None] | None = None,
    size_limit: int = 0,
) -> str:
    """A whole address header ("Name: value", folded with newlines) with `rewrite` applied
    to each of its addresses: as it is when none changed, else "Name: " and the rebuilt
    value folded as Postfix's cleanup_fold_header does, its first `size_limit` bytes only
    (cleanup's header_size_limit, which a rebuilt header may pass; 0: no limit)."""
    colon = text.index(":")
    new = rewrite_header_value(text[colon + 1 :], rewrite, limit, warn)
    if new is None:
        return text
    rebuilt = f"{text[:colon]}: {new}"
    if size_limit:
        rebuilt = truncate(rebuilt, size_limit)
    return tok822.fold(rebuilt)


# The MIME walk -------------------------------------------------------------------------


def _logical_headers(lines: list[str]) -> list[str]:
    """Folded header lines joined with newlines (continuations keep their indent)."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


class _Entity(NamedTuple):
    """What a header block says of the content after it."""

    ctype: str  # lower case, "text/plain" without a Content-Type
    boundary: str | None  # a multipart's
    encoding: str  # Content-Transfer-Encoding's word, lower case ("7bit" without one)
    header: str  # the Content-Type header ("" without one)


# The encodings whose content is not the 7bit domain (mime_state's encoding table); any
# other word leaves a body 7bit.
_NOT_7BIT = frozenset({"8bit", "binary", "base64", "quoted-printable"})
_TRANSFORMS = frozenset({"base64", "quoted-printable"})
_ENCODINGS = _NOT_7BIT | {"7bit"}
# The encodings whose content is 8-bit: what smtp(8) converts for a server without 8BITMIME.
_EIGHT_BIT = _NOT_7BIT - _TRANSFORMS
# What an 8bit or binary Content-Transfer-Encoding header holds somewhere in a lower-case
# body, folded or not: a body without it has none to find.
_CTE_8BIT = re.compile(rb"content-transfer-encoding:\s*(?:8bit|binary)")


def _encoding_word(text: str) -> str | None:
    """A Content-Transfer-Encoding header's encoding (lower case), None when unknown."""
    word = text.split(":", 1)[1].split(None, 1)
    return word[0].lower() if word and word[0].lower() in _ENCODINGS else None


def quoted_printable(line: str) -> list[str]:
    """One body line converted as mime_state_downgrade() converts it: each byte outside
    printable ASCII (TAB kept) and '=' as =XX, a soft line break ('=' at the end) whenever
    more than 72 characters are out before the next byte, and a space or TAB that ends the
    line as =20 or =09."""
    out: list[str] = []
    pieces: list[str] = []
    length = 0
    for byte in line.encode("utf-8", "surrogateescape"):
        if length > 72:
            out.append("".join(pieces) + "=")
            pieces, length = [], 0
        piece = (
            f"={byte:02X}" if (byte < 32 and byte != 9) or byte == 61 or byte > 126 else chr(byte)
        )
        pieces.append(piece)
        length += len(piece)
    if pieces and pieces[-1] in (" ", "\t"):
        pieces[-1] = f"={ord(pieces[-1]):02X}"
    out.append("".join(pieces))
    return out


def _content_info(headers: list[str]) -> _Entity:
    """The content type, boundary and encoding a header block declares."""
    ctype, boundary, encoding, header = "text/plain", None, "7bit", ""
    for text in headers:
        name = header_name(text)
        if name == "content-type" and not header:
            header = text
            value = text.split(":", 1)[1].replace("\n", " ")
            ctype = value.strip().split(";", 1)[0].strip().lower()
            m = _BOUNDARY.search(value)
            boundary = m.group(1) if m and m.group(1) is not None else m and m.group(2)
        elif name == "content-transfer-encoding":
            encoding = _encoding_word(text) or encoding
    return _Entity(ctype, boundary, encoding, header)


class MimeWalker(ABC):
    """The MIME walk content checks ride on, as Postfix's mime_state(3): the primary
    header, then the body, the headers of each multipart part and of each attached
    message/rfc822, each header checked with its class's table and each body line with
    the body's, the action applied as header_checks(5) says (act). What the tables are,
    how an action is logged and which actions beyond the common ones exist is the
    subclass's: cleanup's checks (Walker) or a delivery agent's restricted ones
    (RestrictedWalker)."""

    # The check parameter of each header class, and that of body lines.
    checks: dict[str, str] = _CHECKS
    body_checks = "body_checks"
    # smtp(8)'s conversion for a server without 8BITMIME (MIME_OPT_DOWNGRADE): each entity
    # declared 8bit or binary is sent quoted-printable (a multipart or message one 7bit),
    # its Content-Transfer-Encoding header replaced by one at the end of its header block.
    downgrade = False

    def __init__(
        self,
        mime: bool,
        body_limit: int,
        configured: Container[str],
        line_limit: int = 0,
        boundary_limit: int = sys.maxsize,
    ) -> None:
        self.mime = mime
        self.body_limit = body_limit
        # mime_boundary_length_limit: a longer multipart boundary is matched by its first
        # that many characters, as mime_state_push() cuts it.
        self.boundary_limit = boundary_limit
        # line_length_limit: the length of the pieces a longer body line is looked at in.
        self.line_limit = line_limit
        # What is left of a line whose last piece the checks removed: the line goes on
        # with what the next line leaves.
        self._carry = ""
        self.given_head: list[str] = []
        self.given_body: list[str] | None = None
        # The check parameters that name a table at all: asked before enabled(), a method
        # call for each header of every message where (as mostly) none does.
        self.configured = configured
        # The names (lower case) of the primary header lines given back so far.
        self.names: set[str] = set()
        # The MIME errors to report (mime_error), each once; mime_nesting_limit.
        self.reports: frozenset[str] = frozenset()
        self.nesting_limit = sys.maxsize
        self._reported: set[str] = set()

    # What a subclass says --------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """Whether the walk ends before the next header (cleanup's, at too many hops)."""
        return False

    @abstractmethod
    def enabled(self, param: str) -> bool:
        """Whether `param`'s tables are looked in now."""

    @abstractmethod
    def lookup(self, param: str, text: str) -> str | None:
        """The first result for `text` in `param`'s tables."""

    @abstractmethod
    def log_action(self, action: str, context: str, content: str, text: str) -> None:
        """One line for an action taken on `content`, a header or body line."""

    @abstractmethod
    def warn(self, text: str) -> None:
        """A warning about a table's entry (a bad action), as the owner logs them."""

    def extend(
        self, command: str, context: str, line: str, text: str, param: str
    ) -> list[str] | None:
        """What an action other than the common ones does, None when there is none
        (Postfix's hbc extend call-back)."""
        return None

    @abstractmethod
    def unknown(self, value: str, param: str) -> None:
        """An action nobody knows."""

    def mime_error(self, error: str, content: str) -> None:
        """A MIME error of `reports` (one of cleanup.state's MIME_*), found in `content`."""
        # Only cleanup asks for reports (a delivery agent's checks report none).
        return None

    def after_checks(self, text: str, name: str, cls: str) -> str | None:
        """A header after its checks, None when it is removed."""
        return text

    # The walk --------------------------------------------------------------------------

    def act(self, context: str, line: str, value: str, param: str) -> list[str]:
        """Apply one table result to `line` (cleanup_act, hbc_action): the lines that take
        its place, the (possibly replaced) line last; none when it is removed."""
        command, _, text = value.strip().partition(" ")
        if "\t" in command:
            command, _, rest = command.partition("\t")
            text = rest + (" " + text if text else "")
        text = text.strip()
        command = command.upper()
        extended = self.extend(command, context, line, text, param)
        if extended is not None:
            return extended
        if command in ("WARN", "INFO"):
            self.log_action("warning" if command == "WARN" else "info", context, line, text)
            return [line]
        if command in ("PREPEND", "REPLACE"):
            if not text:
                self.warn(f"{command} action without text in {param} map")
            elif context == "header" and not _HEADER.match(text):
                self.warn(
                    f'bad {command} header text "{text}" in {param} map -- need "headername: '
                    'headervalue"'
                )
            else:
                self.log_action(command.lower(), context, line, text)
                return [text, line] if command == "PREPEND" else [text]
            return [line]
        if command == "STRIP":
            self.log_action("strip", context, line, text)
            return []
        if command == "IGNORE":
            return []
        if command in ("DUNNO", "OK"):
            return [line]
        self.unknown(value, param)
        return [line]

    def _check_header(self, text: str, cls: str, out: list[str], by_name: bool = True) -> None:
        """Append what becomes of one header to `out`. A MIME header goes to the
        multipart class's table by its name unless not `by_name`."""
        name = header_name(text)
        checked = MULTIPART if by_name and name in MIME_HEADERS else cls
        param = self.checks[checked]
        if param in self.configured and self.enabled(param):
            value = self.lookup(param, text)
            if value is not None:
                result = self.act("header", text, value, param)
                if not result:
                    return
                *prepended, text = result
                name = header_name(text)
                out += prepended
                if cls == PRIMARY:
                    self.names.update(header_name(h) for h in prepended)
        kept = self.after_checks(text, name, checked)
        if kept is not None:
            out.append(kept)
            if cls == PRIMARY:
                self.names.add(name)

    def sent(self, lines: list[str]) -> None:
        """The lines the walk gives back, as it makes them (of a line looked at in
        pieces, what it has so far after each)."""
        # cleanup's walk writes nothing as it goes: the queue file takes what it gives back.
        return None

    def _check_body(self, line: str, budget: list[int]) -> list[str]:
        """What becomes of one body line. A line longer than line_limit bytes is looked at
        in pieces of that length, as Postfix's queue file holds it (one record each, as
        smtpd's smtp_get() and sendmail read it; one of exactly that length is that piece
        and an empty one): each piece matches on its own, what
        REPLACE or the others leave of a piece continues the line, what PREPEND puts
        before a piece ends it, and when the last piece is removed the line goes on with
        what the next line leaves (its earlier pieces were records without a line end)."""
        limit = self.line_limit
        carry = self._carry
        # A line of n characters has at most 4n bytes: most lines need no encoding.
        if (
            not limit
            or len(line) * 4 < limit
            or len(data := line.encode("utf-8", "surrogateescape")) < limit
        ):
            whole = self._check_piece(line, budget)
            if carry and whole:
                whole[0] = carry + whole[0]
                self._carry = ""
            self.sent(whole)
            return whole
        out: list[str] = []
        partial = carry
        result: list[str] = []
        # A line of exactly n pieces ends with an empty one, as smtp_get() reads it.
        for start in range(0, len(data) + 1, limit):
            piece = data[start : start + limit].decode("utf-8", "surrogateescape")
            result = self._check_piece(piece, budget)
            if result:
                done = len(out)
                *prepended, kept = result
                for text in prepended:
                    out.append(partial + text)
                    partial = ""
                partial += kept
                self.sent([*out[done:], partial])
        if result:
            out.append(partial)
            partial = ""
        self._carry = partial
        return out

    def _check_piece(self, line: str, budget: list[int]) -> list[str]:
        """One body line or piece through body_checks (cleanup_body_callback): only in the
        first body_limit bytes of its body part, counting a line end after each piece
        (mime_state's body offset), and never an empty one (maps_find looks up no empty
        key)."""
        param = self.body_checks
        if budget[0] <= 0 or not self.enabled(param):
            return [line]
        # Bytes, as Postfix counts: a line of characters that are not ASCII has more.
        budget[0] -= (
            len(line) if line.isascii() else len(line.encode("utf-8", "surrogateescape"))
        ) + 1
        if not line:
            return [line]
        value = self.lookup(param, line)
        if value is None:
            return [line]
        return self.act("body", line, value, param)

    def headers(self, lines: list[str], cls: str, out: list[str] | None = None) -> list[str]:
        """What becomes of a block of header lines of class `cls`, added to `out`."""
        if out is None:
            out = []
        eight_bit = MIME_8BIT_HEADER in self.reports
        domain = "7bit"
        for text in _logical_headers(lines):
            if self.stopped:
                break
            if eight_bit and not text.isascii():
                self._report(MIME_8BIT_HEADER, text)
            if self.downgrade and header_name(text) == "content-transfer-encoding":
                # As mime_state: held back while the encoding so far is 8-bit.
                word = _encoding_word(text)
                if word is not None:
                    domain = word if word in _EIGHT_BIT else "7bit"
                if domain != "7bit":
                    continue
            self._check_header(text, cls, out)
        return out

    def _header_block(self, lines: list[str], cls: str, out: list[str]) -> _Entity:
        """A whole header block of class `cls` through headers(), added to `out`, and what
        it declares of the content after it; in a downgrade, the encoding its 8-bit
        content now goes in at its end."""
        self.headers(lines, cls, out)
        entity = _content_info(_logical_headers(lines))
        if self.downgrade and entity.encoding in _EIGHT_BIT:
            kind = entity.ctype.partition("/")[0]
            word = "7bit" if kind in ("multipart", "message") else "quoted-printable"
            # mime_state gives the header it writes no header_opts: hbc_header_checks
            # looks it up in the block's own table (smtp_header_checks for the primary
            # header, smtp_nested_header_checks for an attached message's), not in
            # smtp_mime_header_checks as the header it replaces would have been.
            self._check_header(f"Content-Transfer-Encoding: {word}", cls, out, by_name=False)
        return entity

    def _report(self, error: str, content: str) -> None:
        # As mime_state's err_flags: each kind of error once a message.
        if error in self.reports and error not in self._reported:
            self._reported.add(error)
            self.mime_error(error, content)

    def _entered(self, entity: _Entity, stack: list[str]) -> str:
        """A header block ended: the encoding of the content after it, a multipart's
        boundary pushed (none past mime_nesting_limit, which is an error to report) and
        a message/* or multipart/* entity's encoding judged, as mime_state does."""
        ctype, encoding = entity.ctype, entity.encoding
        if ctype.startswith("multipart/"):
            if encoding in _TRANSFORMS:
                self._report(MIME_DOMAIN, encoding)
            if entity.boundary:
                # mime_state's nesting level counts from -1: the limit's first multipart
                # past it is refused and its boundary is not pushed.
                if len(stack) - 1 > self.nesting_limit:
                    self._report(MIME_NESTING, entity.header)
                else:
                    stack.append(entity.boundary[: self.boundary_limit])
            return "7bit"  # the preamble
        if ctype.startswith("message/"):
            partial = ctype in ("message/partial", "message/external-body")
            if encoding in (_NOT_7BIT - _TRANSFORMS if partial else _TRANSFORMS):
                self._report(MIME_DOMAIN, encoding)
        return encoding

    def walk(self, header_lines: list[str], body_lines: list[str]) -> tuple[list[str], list[str]]:
        """(primary header lines, body lines) after checks and rewriting. When a lookup
        raises, what the walk gave back before it is in `given_head` and, once the body
        walk began, `given_body` (a delivery agent has sent it by then)."""
        head = self.given_head
        entity = self._header_block(header_lines, PRIMARY, head)
        self.given_body = []
        if self.stopped:
            return head, []
        body = self._body(body_lines, entity, self.given_body)
        return head, body

    def _body(self, lines: list[str], entity: _Entity, out: list[str]) -> list[str]:
        budget = [self.body_limit]
        # Stack of open multipart boundaries; what the next lines are.
        stack: list[str] = []
        mode = "body"
        pending: list[str] = []
        pending_cls = NESTED
        # The body text's encoding is looked at only to report 8-bit text in a 7bit one.
        seven_bit = MIME_8BIT_BODY in self.reports
        encoding = "7bit"
        if self.mime:
            encoding = self._entered(entity, stack)
            if entity.ctype == "message/rfc822":
                mode = "header"
        for line in lines:
            if mode == "header":
                if line == "":
                    entity = self._header_block(pending, pending_cls, out)
                    out.append("")
                    pending = []
                    budget = [self.body_limit]
                    encoding = self._entered(entity, stack)
                    mode = "body"
                    if entity.ctype == "message/rfc822":
                        mode = "header"
                        pending_cls = NESTED
                    continue
                if _HEADER.match(line) or (line[:1] in (" ", "\t") and pending):
                    pending.append(line)
                    continue
                # Not a header: the header block ended without an empty line. What it
                # declared holds for the text after it, as mime_state has it (a message
                # after it is body text).
                entity = self._header_block(pending, pending_cls, out)
                encoding = self._entered(entity, stack)
                pending = []
                mode = "body"
            if seven_bit and encoding not in _NOT_7BIT and not line.isascii():
                self._report(MIME_8BIT_BODY, line)
            if self.mime and stack and line.startswith("--"):
                # As mime_state: the innermost boundary the line starts with, whatever
                # follows it ("--" after it closes that multipart).
                depth = len(stack) - 1
                while depth >= 0 and not line.startswith(stack[depth], 2):
                    depth -= 1
                if depth >= 0:
                    del stack[depth + 1 :]
                    out.extend(self._check_body(line, budget))
                    encoding = "7bit"
                    if line.startswith("--", 2 + len(stack[depth])):
                        stack.pop()
                        budget = [self.body_limit]
                    else:
                        mode = "header"
                        pending_cls = MULTIPART
                    continue
            if self.downgrade and encoding in _EIGHT_BIT:
                for piece in quoted_printable(line):
                    out.extend(self._check_body(piece, budget))
                continue
            out.extend(self._check_body(line, budget))
        if pending:
            self._header_block(pending, pending_cls, out)
        if self._carry:
            out.append(self._carry)
            self._carry = ""
        return out


class Walker(MimeWalker):
    """cleanup's checks: header_checks, mime_header_checks, nested_header_checks and
    body_checks with every action, logged as cleanup_act_log; then header address
    rewriting."""

    def __init__(self, state: CleanupState) -> None:
        super().__init__(
            not state.cfg.get_bool("disable_mime_input_processing"),
            state.opts.body_checks_size_limit,
            state.opts.content_checks,
            state.opts.line_length_limit,
            state.opts.mime_boundary_length_limit,
        )
        self.state = state
        # The primary header's Received: headers so far, each counted by its name before
        # its header_checks (one they remove or replace too), as Postfix's cleanup does.
        self.hops = 0
        # Whether a Received: header the checks left came at or past hopcount_limit.
        self.too_many_hops = False
        # Whether the walk ends with the header that makes the message one to refuse or
        # discard (too many hops, REJECT, DISCARD).
        self.stop_early = False
        self.ended = False
        # Whether the reply so far is a MIME error's, which a REJECT's reason replaces.
        self.mime_reply = False
        self.context = header_rewrite_context(state)
        if state.filtering:
            self.reports = state.opts.mime_reports
        self.nesting_limit = state.opts.mime_nesting_limit

    def enabled(self, param: str) -> bool:
        return self.state.filtering and param in self.state.opts.content_checks

    @property
    def stopped(self) -> bool:
        return self.stop_early and (self.ended or self.too_many_hops)

    def _check_header(self, text: str, cls: str, out: list[str], by_name: bool = True) -> None:
        if cls == PRIMARY and header_name(text) == "received":
            self.hops += 1
        super()._check_header(text, cls, out, by_name)

    def mime_error(self, error: str, content: str) -> None:
        # cleanup_mime_error_callback: its own line (no proto= or helo=), the first
        # error's reason the reply; the walk goes on (more errors are logged).
        state = self.state
        to = _log_address(state, state.recip) if state.recip else "unknown"
        state.info(
            f"reject: mime-error {error}: {truncate(content, 100)} from {_log_origin(state)};"
            f" from=<{_log_address(state, state.sender)}> to=<{to}>"
        )
        if state.reply is None:
            self.mime_reply = True
        state.refuse(f"550 5.6.0 {error}")

    def _encoding(self, text: str) -> None:
        # cleanup_header_callback, for a header of any class after its checks: the whole
        # value after leading white space (a comment or trailing space makes it no match),
        # 8bit or binary, marks the message 8bit, over a declared BODY=7BIT too.
        value = text.split(":", 1)[1].lstrip().lower()
        if value in _EIGHT_BIT and self.state.opts.detect_8bit_encoding_header:
            self.state.eight_bit = True

    def part_encodings(self, header_lines: list[str], body: bytes) -> None:
        """The walk of a body no check looks at, for its part headers' encodings alone:
        Postfix's cleanup sees each header its MIME processor finds, checked or not. Only
        a multipart or message/* body has any, and only one with an 8bit or binary
        encoding written somewhere is walked."""
        entity = _content_info(_logical_headers(header_lines))
        if not entity.ctype.startswith(("multipart/", "message/")):
            return
        if not _CTE_8BIT.search(body.lower()):
            return
        # The primary header reported what it had; the checks that look further are off.
        self.reports = frozenset()
        lines = body.decode("utf-8", "surrogateescape").split("\r\n")
        self._body(lines[1:] if lines[0] == "" else lines, entity, [])

    def lookup(self, param: str, text: str) -> str | None:
        return _lookup(self.state, param, text)

    def log_action(self, action: str, context: str, content: str, text: str) -> None:
        _act_log(self.state, action, context, content, text)

    def warn(self, text: str) -> None:
        self.state.warn(text)

    def extend(
        self, command: str, context: str, line: str, text: str, param: str
    ) -> list[str] | None:
        if command in ("REJECT", "DISCARD"):
            self.ended = True
        if command == "REJECT" and self.mime_reply:
            self.mime_reply = False
            self.state.reply = None
        return _cleanup_act(self.state, command, context, line, text, param)

    def unknown(self, value: str, param: str) -> None:
        self.state.warn(f"unknown command in {param} map: {value}")

    def after_checks(self, text: str, name: str, cls: str) -> str | None:
        if cls == PRIMARY and name == "received" and self.hops >= self.state.opts.hopcount_limit:
            # Postfix's cleanup warns at each Received: header its header_checks leave (or
            # make, by REPLACE) from the limit's on: an IGNOREd one is counted, not checked.
            self.too_many_hops = True
            self.state.warn("message rejected: hopcount exceeded")
        if cls != PRIMARY or name in MIME_HEADERS:
            if name == "content-transfer-encoding":
                self._encoding(text)
            return text
        if name in self.state.opts.drop_headers:
            # Seen all the same: a Resent-Bcc: alone makes the headers cleanup adds the
            # Resent- ones, as in Postfix (its headers_seen and resent come first).
            self.names.add(name)
            return None
        if name in ("message-id", "resent-message-id"):
            self.state.info(f"{name}={text.split(':', 1)[1].strip()}")
        if self.context and name in ADDRESS_HEADERS and state_ok(self.state):
            text = rewrite_header(self.state, text, name, self.context)
        return text


class ChecksLookupError(Exception):
    """A restricted checks table could not be read; args: the parameter."""


class RestrictedWalker(MimeWalker):
    """The restricted header_checks(5) of a delivery agent (Postfix's
    header_body_checks(3), as smtp(8) uses it for smtp_header_checks,
    smtp_mime_header_checks, smtp_nested_header_checks and smtp_body_checks): only the
    actions that edit the content (REPLACE, PREPEND, STRIP, IGNORE, WARN, INFO, DUNNO, OK);
    any other is "unsupported command in PARAM map: VALUE" and leaves the line as it is.
    Every body line is looked at (body_checks_size_limit is cleanup's); each action is
    given to `logger` (action, "header" or "body", the line, the action's text). `rewrite`
    (smtp_generic_maps) edits what the checks leave of a primary sender or recipient
    header, known by its name before the checks (smtp_header_rewrite's header_info), and
    nothing they prepend. A body line longer than `line_limit` (line_length_limit) bytes
    is looked at in pieces, as cleanup's. What the walk gives back goes to sent() as it
    is made, the order the delivery agent sends it in, between the actions' lines. The
    tables are `specs`' for each parameter, opened by `open_one`; one that cannot be
    opened or read raises ChecksLookupError when a line is first looked up in it, after
    Postfix's warnings through `warn` (maps_find_warned: 'SPEC is unavailable. REASON'
    for one that did not open, then 'SPEC lookup error for "LINE"')."""

    def __init__(
        self,
        checks: dict[str, str],
        body_checks: str,
        specs: dict[str, list[str]],
        open_one: Callable[[str], Table],
        logger: Callable[[str, str, str, str], None],
        warn: Callable[[str], None],
        rewrite: Callable[[str], str] | None = None,
        line_limit: int = 0,
        boundary_limit: int = sys.maxsize,
    ) -> None:
        # MIME processing is on whatever disable_mime_input_processing says, as in
        # Postfix's smtp with checks (mime_state without MIME_OPT_DISABLE_MIME).
        super().__init__(True, sys.maxsize, specs, line_limit, boundary_limit)
        self.checks = checks
        self.body_checks = body_checks
        self.specs = specs
        self.open_one = open_one
        self.logger = logger
        self._warn = warn
        self.rewrite = rewrite

    def _check_header(self, text: str, cls: str, out: list[str], by_name: bool = True) -> None:
        before = len(out)
        super()._check_header(text, cls, out, by_name)
        # A header the checks removed gave back nothing, not even a prepended line: when
        # `out` grew, its last line is what became of this one.
        if (
            self.rewrite is not None
            and cls == PRIMARY
            and len(out) > before
            and header_name(text) in ADDRESS_HEADERS
        ):
            out[-1] = self.rewrite(out[-1])
        self.sent(out[before:])

    def enabled(self, param: str) -> bool:
        return param in self.specs

    def lookup(self, param: str, text: str) -> str | None:
        try:
            found = maps_find_warned(self.specs[param], (text,), self.open_one, self._warn)
        except (TableError, OSError):
            raise ChecksLookupError(param) from None
        return None if found is None else found[0]

    def log_action(self, action: str, context: str, content: str, text: str) -> None:
        self.logger(action, context, content, text)

    def warn(self, text: str) -> None:
        self._warn(text)

    def unknown(self, value: str, param: str) -> None:
        self._warn(f"unsupported command in {param} map: {value}")


def state_ok(state: CleanupState) -> bool:
    """Postfix stops rewriting output once the message is refused (CLEANUP_OUT_OK)."""
    return state.reply is None
