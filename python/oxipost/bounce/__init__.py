"""bounce(8): delivery status notifications (RFC 3464) in Postfix's wording.

`notices(kind, cfg, queue_id, envelope, content, reports)` builds the messages Postfix's
bounce daemon would send for one queue file: `kind` is "failure" (bounce), "delay"
(delay_warning_time) or "success" (DSN NOTIFY=SUCCESS); `reports` holds one Report per
recipient. It returns (Envelope, content) pairs for qmgr to enqueue:
- to the sender, a multipart/report with the template text, a message/delivery-status
  part and the original message (message/rfc822; text/rfc822-headers for RET=HDRS or
  above bounce_size_limit), with the null sender;
- a postmaster copy (headers only) when notify_classes has "bounce" (or "delay");
- when the sender is <> (a bounce bounced): a double bounce from double_bounce_sender to
  2bounce_notice_recipient if notify_classes has "bounce" or "2bounce", else nothing;
- when the sender is the double-bounce address: nothing, ever (no triple bounces).
Recipients with DSN NOTIFY=NEVER, or without FAILURE/DELAY/SUCCESS for the kind, are left
out (the default notifies on failure and delay). Nothing is ever sent to <>.

`queue_notice(cfg, queue, envelope, content)` queues one of them as Postfix's post_mail
does: under a queue ID of its own, with post_mail_init's "Received: by host (Postfix) id
QID" header, through cleanup as Postfix-generated mail, whose Message-Id carries that ID.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oxipost.cleanup import Cleaned, cleanup_message
from oxipost.envelope import Envelope, Outcome, Recipient
from oxipost.maildate import mail_date

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.qmgr.queue import Queue

__all__ = ["Report", "notices"]


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


_TEMPLATES = {
    "failure": (
        "Undelivered Mail Returned to Sender",
        "Postmaster Copy: Undelivered Mail",
        """\
This is the mail system at host {host}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
""",
        "failed",
        "FAILURE",
    ),
    "delay": (
        "Delayed Mail (still being retried)",
        "Postmaster Warning: Delayed Mail",
        """\
This is the mail system at host {host}.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than {delay_hours} hour(s).
It will be retried until it is {lifetime_days} day(s) old.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
""",
        "delayed",
        "DELAY",
    ),
    "success": (
        "Successful Mail Delivery Report",
        "Successful Mail Delivery Report",
        """\
This is the mail system at host {host}.

Your message was successfully delivered to the destination(s)
listed below. If the message was delivered to mailbox you will
receive no further notifications. Otherwise you may still receive
notifications of mail delivery errors from other systems.

                   The mail system
""",
        "delivered",
        "SUCCESS",
    ),
}


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


# The smtp/lmtp client's text for a remote reply: "host H[addr] said: REPLY (in reply to
# X command)" (Postfix's smtp_rcpt.c and friends).
_REMOTE_SAID = re.compile(
    r"host ([^\s\[]+)\[[^\]]*\](?::\d+)? said: (.*) \(in reply to [^()]*\)", re.S
)


def _remote(r: Report) -> tuple[str, str]:
    """Remote-MTA and Diagnostic-Code of one recipient. Those the caller did not give come,
    for a remote server's reply, from the agent's text as Postfix's bounce writes them
    ("dns; mx.example.com", "smtp; 550 5.1.1 ..."); otherwise X-Postfix and the text."""
    m = _REMOTE_SAID.fullmatch(r.outcome.text)
    remote_mta = r.remote_mta or (f"dns; {m.group(1)}" if m else "")
    diagnostic = r.diagnostic or (f"smtp; {m.group(2)}" if m else f"X-Postfix; {r.outcome.text}")
    return remote_mta, diagnostic


def _expanded_from(r: Recipient) -> str:
    """ " (expanded from <original>)" after a recipient that an alias, .forward or virtual
    alias made of another address, as Postfix's bounce_recipient_log writes it."""
    if r.original and r.original.lower() != r.address.lower():
        return f" (expanded from <{r.original}>)"
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
) -> bytes:
    subject, pm_subject, template, action, _ = _TEMPLATES[kind]
    host = cfg.get("myhostname")
    now = time.time()
    boundary = f"{queue_id}.{int(now)}/{host}"
    text = template.format(
        host=host,
        delay_hours=_hours(cfg, "delay_warning_time"),
        lifetime_days=_days(cfg, "maximal_queue_lifetime"),
    )
    lines = [
        f"<{r.recipient.address}>{_expanded_from(r.recipient)}: {r.outcome.text}" for r in reports
    ]
    head = [
        f"Date: {mail_date(now)}",
        _from(cfg, f"MAILER-DAEMON@{host}", "Mail Delivery System"),
        f"Subject: {pm_subject if postmaster else subject}",
        f"To: {to}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ]
    body = "\n".join(head) + "\n" + text + "\n" + "\n".join(lines) + "\n\n"
    arrival = mail_date(env.arrival_time)
    dsn = [
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {host}",
        f"X-Postfix-Queue-ID: {queue_id}",
        f"X-Postfix-Sender: rfc822; {env.sender}",
    ]
    if env.envid:
        dsn.insert(4, f"Original-Envelope-Id: {env.envid}")
    dsn.append(f"Arrival-Date: {arrival}")
    for r in reports:
        dsn += ["", f"Final-Recipient: rfc822; {r.recipient.address}"]
        if r.recipient.orcpt:
            dsn.append(f"Original-Recipient: {r.recipient.orcpt}")
        elif r.recipient.original:
            dsn.append(f"Original-Recipient: rfc822;{r.recipient.original}")
        dsn += [f"Action: {r.action or action}", f"Status: {r.outcome.status}"]
        remote_mta, diagnostic = _remote(r)
        if remote_mta:
            dsn.append(f"Remote-MTA: {remote_mta}")
        dsn.append(f"Diagnostic-Code: {diagnostic}")
        if kind == "delay":
            until = env.arrival_time + cfg.get_time("maximal_queue_lifetime")
            dsn.append(f"Will-Retry-Until: {mail_date(until)}")
    body += "\n".join(dsn) + "\n\n"
    limit = cfg.get_int("bounce_size_limit")
    headers_only = postmaster or env.ret == "HDRS" or kind == "success" or len(content) > limit
    original = _headers_of(content) if headers_only else content
    ctype = "text/rfc822-headers" if headers_only else "message/rfc822"
    desc = "Undelivered Message Headers" if headers_only else "Undelivered Message"
    if kind != "failure":
        desc = "Message Headers" if headers_only else "Message"
    part = f"--{boundary}\nContent-Description: {desc}\nContent-Type: {ctype}\n"
    if not headers_only:
        part += "Content-Transfer-Encoding: 8bit\n"
    out = _crlf(body + part + "\n")
    out += original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + _crlf(f"\n--{boundary}--\n")


def _hours(cfg: Config, name: str) -> int:
    return max(1, round(cfg.get_time(name) / 3600)) if cfg.get_time(name) else 0


def _days(cfg: Config, name: str) -> int:
    return round(cfg.get_time(name) / 86400)


def _from(cfg: Config, address: str, name: str) -> str:
    # header_from_format: Postfix 3.3's "standard" form, or the "obsolete" one before it.
    if cfg.get("header_from_format").strip().lower() == "obsolete":
        return f"From: {address} ({name})"
    return f"From: {name} <{address}>"


def queue_notice(cfg: Config, queue: Queue, env: Envelope, content: bytes) -> tuple[str, Cleaned]:
    """Queue one notice; (its queue ID, cleanup's answer). Not queued when cleanup refused
    it (Cleaned.reply); a queue write error is raised."""
    qid = queue.new_id()
    host, mail_name = cfg.get("myhostname"), cfg.get("mail_name")
    date = mail_date()
    received = f"Received: by {host} ({mail_name})\r\n\tid {qid}; {date}\r\n"
    # Address mappings apply (the sender may be a virtual alias), content checks do not.
    cleaned = cleanup_message(env, content, received, cfg, qid, internal=True)
    if cleaned.reply is None:
        queue.enqueue_sync(cleaned.envelope, cleaned.content, qid)
    return qid, cleaned


def _notice_env(sender: str, to: str, kind: str) -> Envelope:
    return Envelope(
        sender=sender,
        recipients=[Recipient(to)],
        arrival_time=time.time(),
        attrs={"notice": kind},
    )


def _qualify(cfg: Config, addr: str) -> str:
    return addr if "@" in addr else f"{addr}@{cfg.get('myorigin')}"


def notices(
    kind: str,
    cfg: Config,
    queue_id: str,
    env: Envelope,
    content: bytes,
    reports: list[Report],
) -> list[tuple[Envelope, bytes]]:
    """The notices to enqueue for these reports (possibly none)."""
    if kind not in _TEMPLATES:
        raise ValueError(f"unknown notice kind: {kind}")
    what = _TEMPLATES[kind][4]
    double_bounce = _qualify(cfg, cfg.get("double_bounce_sender"))
    classes = set(cfg.get_list("notify_classes"))
    out: list[tuple[Envelope, bytes]] = []
    if env.sender.lower() == double_bounce.lower():
        return out  # an undeliverable postmaster notification: discarded
    if not env.sender:
        # A bounce that failed: maybe a double bounce to the postmaster, never to <>.
        wanted = classes & ({"bounce", "2bounce"} if kind == "failure" else {"delay"})
        if kind == "success" or not wanted or not reports:
            return out
        param = "2bounce_notice_recipient" if kind == "failure" else "delay_notice_recipient"
        to = cfg.get(param)
        msg = _build(kind, cfg, queue_id, env, content, reports, to, postmaster=True)
        return [(_notice_env(double_bounce, to, kind), msg)]
    chosen = [r for r in reports if _wants(r.recipient, what)]
    if chosen:
        msg = _build(kind, cfg, queue_id, env, content, chosen, env.sender, postmaster=False)
        out.append((_notice_env("", env.sender, kind), msg))
    pm_class = {"failure": "bounce", "delay": "delay"}.get(kind)
    if pm_class and pm_class in classes and reports:
        param = "bounce_notice_recipient" if kind == "failure" else "delay_notice_recipient"
        to = cfg.get(param)
        msg = _build(kind, cfg, queue_id, env, content, reports, to, postmaster=True)
        out.append((_notice_env(double_bounce, to, kind), msg))
    return out
