"""bounce(8): delivery status notifications (RFC 3464) in Postfix's wording.

`notices(kind, cfg, queue_id, envelope, content, reports)` builds the messages Postfix's
bounce daemon would send for one queue file: `kind` is "failure" (bounce), "delay"
(delay_warning_time), "success" (DSN NOTIFY=SUCCESS) or "verify" (the trace service's
"Mail Delivery Status Report" of a sendmail -bv probe: every recipient, whatever its DSN
options, Action deliverable or undeliverable, to the sender alone); `reports` holds one
Report per recipient. It returns (Envelope, content) pairs for qmgr to enqueue:
- to the sender, a multipart/report with the template text (bounce_template_file's, else
  the built-in one: oxipost.bounce.template), a message/delivery-status
  part and the original message (message/rfc822; text/rfc822-headers for RET=HDRS or
  above bounce_size_limit), with the null sender;
- a postmaster copy (headers only) when notify_classes has "bounce" (or "delay");
- when the sender is <> (a bounce bounced): a double bounce from double_bounce_sender to
  2bounce_notice_recipient if notify_classes has "bounce" or "2bounce", else nothing;
- when the sender is the double-bounce address: nothing, ever (no triple bounces).
Recipients with DSN NOTIFY=NEVER, or without FAILURE/DELAY/SUCCESS for the kind, are left
out (the default notifies on failure and delay). Nothing is ever sent to <>. A failure or
delay notice to the sender that is left with no recipient is still returned, its headers
and template text alone and `cancelled(envelope)` true: Postfix's bounce(8) opens it
through cleanup (a queue ID, cleanup's message-id line) before it finds no recipient to
report and drops it unsent; the caller runs it through cleanup and queues nothing.

`queue_notice(cfg, queue, envelope, content)` queues one of them as Postfix's post_mail
does: under a queue ID of its own, with post_mail_init's "Received: by host (Postfix) id
QID" header, through cleanup as Postfix-generated mail, whose Message-Id carries that ID.

`transcript(cfg, subject, lead, history, tail)` is the postmaster notice of Postfix's
smtp_chat_notify() and smtpd_chat_notify() (notify_classes protocol, policy...): from
double_bounce_sender to error_notice_recipient, the session's "In:"/"Out:" lines folded
at 78 columns (continuations indented by 4) behind one space each; `post_notice` queues it
from an event loop.

Diagnostics: a template's warnings go to `warn` once per configuration, as Postfix's
bounce daemon logs them when it first uses the template; a template error that is fatal
to it (an undefined $name, a template file that cannot be read) is TemplateError.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from oxipost.bounce.template import TemplateError, Templates
from oxipost.cleanup.message import cleanup_message
from oxipost.cleanup.state import Cleaned
from oxipost.delivery.address import log_form
from oxipost.envelope import Envelope, Outcome, Recipient
from oxipost.maildate import mail_date
from oxipost.printable import printable

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.qmgr.queue import Queue

__all__ = [
    "Report",
    "TemplateError",
    "cancelled",
    "double_bounce",
    "notices",
    "post_notice",
    "transcript",
]


class QueueLike(Protocol):
    def new_id(self) -> str: ...

    async def enqueue(self, envelope: Envelope, content: bytes, qid: str = "") -> str: ...


@dataclass(slots=True, frozen=True)
class Report:
    recipient: Recipient
    outcome: Outcome
    # The next hop as Postfix's Remote-MTA ("dns; mx.example.com"), "" if none.
    remote_mta: str = ""
    # Diagnostic-Code type and text ("smtp; 550 5.1.1 ..."), else X-Postfix with the text.
    diagnostic: str = ""
    # The DSN Action when not the notice's own: "expanded" for an alias (RFC 3464 2.3.3).
    action: str = ""


# Each kind's DSN Action and the NOTIFY= keyword that asks for it.
_ACTIONS = {
    "failure": ("failed", "FAILURE"),
    "delay": ("delayed", "DELAY"),
    "success": ("delivered", "SUCCESS"),
    "verify": ("deliverable", ""),
}

# The templates of the last configuration asked for: judged (and warned of) once, as
# Postfix's bounce daemon judges each when it first needs it.
_loaded: list[tuple[Config, Templates]] = []


def templates(cfg: Config, warn: Callable[[str], None]) -> Templates:
    """cfg's bounce templates (bounce_template_file's, else the built-in ones), read once
    per configuration; a template file that cannot be read is TemplateError."""
    if not _loaded or _loaded[0][0] is not cfg:
        _loaded[:] = [(cfg, Templates(cfg, warn=warn))]
    return _loaded[0][1]


def _wants(r: Recipient, what: str) -> bool:
    notify = {n.upper() for n in r.notify}
    if "NEVER" in notify:
        return False
    if not notify:
        return what in ("FAILURE", "DELAY")
    return what in notify


def _headers_of(content: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = content.find(sep)
        if i >= 0:
            return content[: i + len(sep) // 2]
    return content


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "replace")


# Postfix's bounce_print_wrap(): lines kept to 79 columns, continuations indented by 4.
_WRAP_LENGTH = 79
_WRAP_INDENT = 4
_BLANK = re.compile(r"[ \t]")


def line_wrap(text: str, length: int = _WRAP_LENGTH, indent: int = _WRAP_INDENT) -> list[str]:
    """text folded as Postfix's line_wrap() folds it: a line breaks before the word that
    would end past length (a longer word is not broken), the lines after the first are
    indented and shorter by indent, the blanks at a break and trailing blanks go."""
    out: list[str] = []
    pad, width = (-indent, length + indent) if indent < 0 else (0, length)
    start = 0
    word: int | None = 0
    while word is not None:
        m = _BLANK.search(text, word)
        next_space = m.start() if m else len(text)
        if word > start and next_space - start > width:
            out.append(" " * pad + text[start:word].rstrip())
            while word < len(text) and text[word].isspace():
                word += 1
            if start == 0:
                pad, width = pad + indent, width - indent
            start = word
        word = next_space + 1 if m else None
    out.append(" " * pad + text[start:].rstrip())
    return out


# The smtp/lmtp client's text for a remote reply: "host H[addr] said: REPLY (in reply to
# X command)" (Postfix's smtp_rcpt.c and friends).
_REMOTE_SAID = re.compile(
    r"host ([^\s\[]+)\[[^\]]*\](?::\d+)? said: (.*) \(in reply to [^()]*\)", re.S
)


def remote_diagnostic(text: str) -> str:
    """The Diagnostic-Code of an smtp/lmtp client's text: the server's reply from its "host
    H said: REPLY (in reply to X command)", else the text as it stands (a reply the client
    reports as it came: a relayed recipient's, a probe's accepted RCPT)."""
    m = _REMOTE_SAID.fullmatch(text)
    return f"smtp; {m.group(2) if m else text}"


def _remote(r: Report) -> tuple[str, str]:
    """Remote-MTA and Diagnostic-Code of one recipient. Those the caller did not give come,
    for a remote server's reply, from the agent's text as Postfix's bounce writes them
    ("dns; mx.example.com", "smtp; 550 5.1.1 ..."); otherwise X-Postfix and the text."""
    m = _REMOTE_SAID.fullmatch(r.outcome.text)
    remote_mta = r.remote_mta or (f"dns; {m.group(1)}" if m else "")
    diagnostic = r.diagnostic or (f"smtp; {m.group(2)}" if m else f"X-Postfix; {r.outcome.text}")
    return remote_mta, diagnostic


def _address_type(utf8_types: bool, address: str) -> str:
    """The DSN address type: "utf-8" for a non-ASCII address of an SMTPUTF8 message."""
    return "utf-8" if utf8_types and not address.isascii() else "rfc822"


def _expanded_from(r: Recipient) -> str:
    """ " (expanded from <original>)" after a recipient that an alias, .forward or virtual
    alias made of another address, as Postfix's bounce_recipient_log writes it."""
    if r.original and r.original.lower() != r.address.lower():
        return f" (expanded from <{log_form(r.original, True)}>)"
    return ""


def _build(
    kind: str,
    cfg: Config,
    queue_id: str,
    env: Envelope,
    content: bytes,
    reports: list[Report],
    to: str,
    postmaster: bool,
    warn: Callable[[str], None],
) -> bytes:
    action = _ACTIONS[kind][0]
    tp = templates(cfg, warn).get(kind)
    host = cfg.get("myhostname")
    now = time.time()
    boundary = f"{queue_id}.{int(now)}/{host}"
    # A postmaster copy has no template text (not expanded, nor warned of).
    text = "" if postmaster else "".join(f"{line}\n" for line in templates(cfg, warn).expand(kind))
    # The original's encoding as declared (BODY=), none when undeclared. The built-in
    # (us-ascii) template's charset is utf-8 (8bit text) where SMTPUTF8 is supported or
    # the original is 8bit, another template's is its Charset:. Compared with Postfix 3.7:
    # the header says the encoding whenever there is one (8bit for a template with 8-bit
    # text too); the text part and the returned message only when SMTPUTF8 or the
    # original make it 8bit.
    declared = {"8BITMIME": "8bit", "7BIT": "7bit"}.get(env.body_type.upper())
    utf8 = cfg.get_bool("smtputf8_enable") or declared == "8bit"
    charset = tp.charset
    if charset.lower() == "us-ascii":
        charset = "utf-8" if utf8 else "us-ascii"
    encoding = "8bit" if utf8 else declared
    top = "8bit" if tp.encoding == "8bit" else encoding
    top_cte = [f"Content-Transfer-Encoding: {top}"] if top else []
    text_cte = ["Content-Transfer-Encoding: 8bit"] if utf8 else []
    orig_cte = "Content-Transfer-Encoding: 8bit\n" if encoding == "8bit" else ""
    lines: list[str] = []
    for r in reports:
        # bounce_append_service keeps the addresses quoted (quote_822_local), whatever
        # info_log_address_format says: "a@b"@x, not the internal a@b@x.
        why = f"<{log_form(r.recipient.address, True)}>{_expanded_from(r.recipient)}: "
        why += r.outcome.text
        lines += ["", *line_wrap(why)]
    head = [
        f"Date: {mail_date(now)}",
        # As the template has it: cleanup qualifies and rewrites its address.
        f"From: {tp.sender}",
        f"Subject: {tp.postmaster_subject if postmaster and tp.postmaster_subject else tp.subject}",
        f"To: {to}",
        # RFC 3834: a reply to the sender, a report of its own to the postmaster.
        f"Auto-Submitted: {'auto-generated' if postmaster else 'auto-replied'}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        *top_cte,
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={charset}",
        *text_cte,
        "",
    ]
    if not reports:
        # What bounce(8) had written of a notice when it found no recipient to report.
        return _crlf("\n".join(head) + "\n" + text)
    body = "\n".join(head) + "\n" + text + "\n".join(lines) + "\n\n"
    arrival = mail_date(env.arrival_time)
    # bounce_mail_alloc(): the null sender is named mail_addr_mail_daemon().
    sender = env.sender or _qualify(cfg, "MAILER-DAEMON")
    # A message sent with SMTPUTF8 gets the RFC 6533 types: message/global-delivery-status
    # (8bit when the notice is), message/global(-headers), and utf-8 for a UTF-8 address.
    utf8_types = env.smtputf8
    dsn = [
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: message/{'global-' if utf8_types else ''}delivery-status",
        *(["Content-Transfer-Encoding: 8bit"] if utf8_types and encoding == "8bit" else []),
        "",
        f"Reporting-MTA: dns; {host}",
        *([f"Original-Envelope-Id: {env.envid}"] if env.envid else []),
        f"X-Postfix-Queue-ID: {queue_id}",
        f"X-Postfix-Sender: {_address_type(utf8_types, sender)}; {sender}",
        f"Arrival-Date: {arrival}",
    ]
    for r in reports:
        address = log_form(r.recipient.address, True)
        dsn += ["", f"Final-Recipient: {_address_type(utf8_types, address)}; {address}"]
        if r.recipient.orcpt:
            dsn.append(f"Original-Recipient: {r.recipient.orcpt}")
        elif r.recipient.original:
            dsn.append(f"Original-Recipient: rfc822;{r.recipient.original}")
        dsn += [f"Action: {r.action or action}", f"Status: {r.outcome.status}"]
        remote_mta, diagnostic = _remote(r)
        if remote_mta:
            dsn += line_wrap(f"Remote-MTA: {remote_mta}")
        dsn += line_wrap(f"Diagnostic-Code: {diagnostic}")
        if kind == "delay":
            until = env.arrival_time + cfg.get_time("maximal_queue_lifetime")
            dsn.append(f"Will-Retry-Until: {mail_date(until)}")
    body += "\n".join(dsn) + "\n\n"
    limit = cfg.get_int("bounce_size_limit")
    # A delay warning returns the headers only (bounce_warn_service.c), as do postmaster
    # copies (not a double bounce: the whole bounce goes to the postmaster, as
    # bounce_notify_service.c sends it), RET=HDRS and a message larger than
    # bounce_size_limit (bounce_original()).
    headers_only = (
        (postmaster and env.sender != "")
        or env.ret == "HDRS"
        or kind in ("success", "delay", "verify")
        or (limit > 0 and len(content) > limit)
    )
    original = _headers_of(content) if headers_only else content
    if utf8_types:
        ctype = "message/global-headers" if headers_only else "message/global"
    else:
        ctype = "text/rfc822-headers" if headers_only else "message/rfc822"
    desc = "Message Headers" if headers_only else "Message"
    if kind not in ("success", "verify"):
        desc = "Undelivered " + desc
    part = (
        f"--{boundary}\nContent-Description: {desc}\nContent-Type: {ctype}\n"
        f"{orig_cte}\n"
        # cleanup removes Return-Path: headers; bounce_original() puts the sender's first.
        f"Return-Path: <{sender}>\n"
    )
    out = _crlf(body + part)
    out += original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + _crlf(f"\n--{boundary}--\n")


def _cleaned_notice(
    cfg: Config, queue: QueueLike, env: Envelope, content: bytes, mail_class: str
) -> tuple[str, Cleaned]:
    qid = queue.new_id()
    host, mail_name = cfg.get("myhostname"), cfg.get("mail_name")
    date = mail_date()
    received = f"Received: by {host} ({mail_name})\r\n\tid {qid}; {date}\r\n"
    # Address mappings apply (the sender may be a virtual alias), content checks with
    # internal_mail_filter_classes naming the class.
    cleaned = cleanup_message(
        env, content, received, cfg, qid, internal=True, mail_class=mail_class
    )
    return qid, cleaned


def queue_notice(cfg: Config, queue: Queue, env: Envelope, content: bytes) -> tuple[str, Cleaned]:
    """Queue one notice; (its queue ID, cleanup's answer). Not queued when cleanup refused
    it (Cleaned.reply) or it is cancelled; a queue write error is raised."""
    qid, cleaned = _cleaned_notice(cfg, queue, env, content, "bounce")
    if cleaned.reply is None and not cancelled(env):
        queue.enqueue_sync(cleaned.envelope, cleaned.content, qid)
    return qid, cleaned


def transcript(
    cfg: Config, subject: str, lead: list[str], history: list[str], tail: list[str]
) -> tuple[Envelope, bytes]:
    """The postmaster's copy of a session (Postfix's smtp_chat_notify/smtpd_chat_notify):
    `lead` lines before "Transcript of session follows.", `tail` after the lines."""
    to = cfg.get("error_notice_recipient")
    # Dated first, as a bounce notice (post_mail's order).
    head = [f"Date: {mail_date()}"]
    if cfg.get("header_from_format").strip().lower() == "obsolete":
        head += ["From: MAILER-DAEMON (Mail Delivery System)", f"To: {to} (Postmaster)"]
    else:
        head += ["From: Mail Delivery System <MAILER-DAEMON>", f"To: Postmaster <{to}>"]
    head.append(f"Subject: {cfg.get('mail_name')} {subject}")
    # One space before each line of the peer's text, as Postfix's print_line puts it.
    lines = [f" {part}" for line in history for part in line_wrap(printable(line), 78, 4)]
    body = [*head, "", *lead, "Transcript of session follows.", "", *lines, *tail]
    env = Envelope(
        sender=double_bounce(cfg),
        recipients=[Recipient(to)],
        arrival_time=time.time(),
    )
    return env, _crlf("".join(f"{line}\n" for line in body))


async def post_notice(
    cfg: Config, queue: QueueLike, env: Envelope, content: bytes, log: Any
) -> None:
    """Queue a transcript notice as post_mail does, cleanup's lines to `log`; a notice that
    cannot be queued is a warning ("postmaster notify: REASON"), never the session's
    trouble."""
    try:
        qid, cleaned = _cleaned_notice(cfg, queue, env, content, "notify")
        if cleaned.reply is None:
            await queue.enqueue(cleaned.envelope, cleaned.content, qid)
    except Exception as e:
        log.warning(f"postmaster notify: {e}")
        return
    cleaned.log_notes(log, qid)


def _notice_env(sender: str, to: str, kind: str, cancel: bool = False) -> Envelope:
    return Envelope(
        sender=sender,
        recipients=[Recipient(to)],
        arrival_time=time.time(),
        attrs={"notice": kind, **({"cancel": "yes"} if cancel else {})},
    )


def cancelled(env: Envelope) -> bool:
    """Whether this notice from notices() is one bounce(8) drops unsent (no recipient
    asked for it): through cleanup, never queued nor logged as sent."""
    return env.attrs.get("cancel") == "yes"


def _qualify(cfg: Config, addr: str) -> str:
    return addr if "@" in addr else f"{addr}@{cfg.get('myorigin')}"


def double_bounce(cfg: Config) -> str:
    """The sender of the postmaster's notices (mail_addr_double_bounce)."""
    return _qualify(cfg, cfg.get("double_bounce_sender"))


def unsent_trace(cfg: Config, env: Envelope) -> str | None:
    """Why a trace or success report (kind "verify" or "success") goes to no one, as
    Postfix's bounce_trace_service says it: "single-bounce" for the null sender,
    "double-bounce" for the double-bounce address; None when it goes to the sender."""
    if not env.sender:
        return "single-bounce"
    if env.sender.lower() == double_bounce(cfg).lower():
        return "double-bounce"
    return None


def notices(
    kind: str,
    cfg: Config,
    queue_id: str,
    env: Envelope,
    content: bytes,
    reports: list[Report],
    warn: Callable[[str], None] = lambda _text: None,
    to: str = "",
) -> list[tuple[Envelope, bytes]]:
    """The notices to enqueue for these reports (possibly none); warn is told bounce(8)'s
    warnings (a template's time value that converts to zero). The sender's notice goes
    to `to` when given: a VERP message's, its sender with the recipient in it."""
    if kind not in _ACTIONS:
        raise ValueError(f"unknown notice kind: {kind}")
    what = _ACTIONS[kind][1]
    double_bounce_addr = double_bounce(cfg)
    classes = set(cfg.get_list("notify_classes"))
    out: list[tuple[Envelope, bytes]] = []
    if env.sender.lower() == double_bounce_addr.lower():
        return out  # an undeliverable postmaster notification: discarded
    if kind == "verify":
        # The report the sender asked for, and no one else's business.
        if env.sender and reports:
            msg = _build(
                kind, cfg, queue_id, env, content, reports, env.sender, postmaster=False, warn=warn
            )
            out.append((_notice_env("", env.sender, kind), msg))
        return out
    if not env.sender:
        # A bounce that failed: maybe a double bounce to the postmaster, never to <>.
        wanted = classes & ({"bounce", "2bounce"} if kind == "failure" else {"delay"})
        if kind == "success" or not wanted or not reports:
            return out
        param = "2bounce_notice_recipient" if kind == "failure" else "delay_notice_recipient"
        to = cfg.get(param)
        msg = _build(kind, cfg, queue_id, env, content, reports, to, postmaster=True, warn=warn)
        return [(_notice_env(double_bounce_addr, to, kind), msg)]
    chosen = [r for r in reports if _wants(r.recipient, what)]
    # bounce_notify_service.c and bounce_warn_service.c open the sender's notice before
    # they read the log for the recipients that want it.
    if chosen or (reports and kind in ("failure", "delay")):
        to = to or env.sender
        msg = _build(kind, cfg, queue_id, env, content, chosen, to, postmaster=False, warn=warn)
        out.append((_notice_env("", to, kind, cancel=not chosen), msg))
    pm_class = {"failure": "bounce", "delay": "delay"}.get(kind)
    if pm_class and pm_class in classes and reports:
        param = "bounce_notice_recipient" if kind == "failure" else "delay_notice_recipient"
        to = cfg.get(param)
        msg = _build(kind, cfg, queue_id, env, content, reports, to, postmaster=True, warn=warn)
        out.append((_notice_env(double_bounce_addr, to, kind), msg))
    return out
