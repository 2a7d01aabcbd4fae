"""cleanup_milter - apply the Milter applications' end-of-message modifications

MilterEditor(cfg, env, content, queue_id) holds a message as cleanup made it (smtpd's
Received: header first) and takes the modifications oxipost.milter reads from each
application, as Postfix's cleanup_milter.c edits its queue file, so that the next
application sees the message as edited:
- add_header appends a header; ins_header puts it at a 1-based position of the message
  as delivered (our own Received: header counts); upd_header and del_header find the
  INDEX-th header of that name in the message as received (our Received: header does not
  count), and upd_header of a header that is not there appends it;
- add_rcpt appends a recipient, rewritten, canonical mapped and virtual aliased as any
  envelope recipient, with its NOTIFY= and ORCPT= (SMFIR_ADDRCPT_PAR); del_rcpt drops the
  recipients whose original address it names;
- chg_from replaces the sender, rewritten and canonical mapped, and with RET= and ENVID=
  the client's;
- repl_body replaces the body.
result() answers the edited envelope and content.

non_smtpd_milters(conf, cfg, cleaned, queue_id) is the same for mail that did not come by
SMTP (pickup): the events Postfix's cleanup makes up for it (CONNECT from
localhost[127.0.0.1], HELO localhost, MAIL and each RCPT without angle brackets, DATA),
then the message.

Diagnostics: another ESMTP parameter or a bad one is warned of as Postfix's cleanup warns
("QID: Bad NOTIFY parameter from Milter or header/body_checks: "NOTIFY=X"", "QID: ignoring
ESMTP argument from Milter or header/body_checks: "X=1"", "Ignoring bad ESMTP parameter
"SIZE=5" in SMFI_CHGFROM request") and left out. milter_log() is cleanup's line for an
application's decision ("milter-reject: STAGE from NAME[ADDR]: X.Y.Z text; from=<..>
to=<..> proto=.. helo=<..>", milter-discard, milter-hold); a refused recipient of local
mail is "milter configuration error: can't reject recipient in non-smtpd(8) submission"
and the message waits, as in Postfix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from oxipost.cleanup.addr import process_recipients, process_sender
from oxipost.cleanup.header import Walker
from oxipost.cleanup.message import split_header
from oxipost.cleanup.state import Cleaned, CleanupState
from oxipost.delivery.dsn import xtext_decode
from oxipost.envelope import Envelope, Recipient
from oxipost.milter import MilterConf, Milters
from oxipost.rewrite.resolve import unquote_822_local

_NOTIFY_WORDS = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


def _internal(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    return unquote_822_local(addr)


def _slot(slots: list[tuple[Recipient, bool]], live: int) -> int:
    """Where a canceled recipient that came after `live` live ones goes among `slots`."""
    seen = 0
    for i, (_, canceled) in enumerate(slots):
        if not canceled:
            if seen == live:
                return i
            seen += 1
    return len(slots)


def _lines(text: str) -> str:
    # Sendmail sends a folded header with newlines; the wire may carry CR LF.
    return text.replace("\r\n", "\n")


class MilterEditor:
    """The message the applications edit (Postfix's cleanup state with its queue file)."""

    def __init__(self, cfg: Any, env: Envelope, content: bytes, queue_id: str) -> None:
        self.state = CleanupState(cfg, env, queue_id, act_prefix="milter-header-")
        # The action lines name the sender and the last recipient, as cleanup's do here.
        self.state.sender = env.sender
        self.state.recip = env.recipients[-1].address if env.recipients else ""
        self.checks = _MilterHeaderChecks(self.state) if cfg.get("milter_header_checks") else None
        self.env = env
        raw_headers, body = split_header(content)
        text = b"".join(raw_headers).decode("utf-8", "surrogateescape")
        self._headers: list[str] = []
        for line in text.split("\r\n"):
            if not line:
                continue
            if line[:1] in (" ", "\t") and self._headers:
                self._headers[-1] += "\n" + line
            else:
                self._headers.append(line)
        self.separator = body.startswith(b"\r\n")
        self._body = body[2:] if self.separator else body
        self.sender = env.sender
        self.ret = env.ret
        self.envid = env.envid
        # The queue file's recipient records in order, each with whether it was canceled:
        # Postfix's DELRCPT marks a record so in place, ADDRCPT appends one.
        self._slots = [(r, False) for r in env.recipients]
        for at, r in env.canceled:
            self._slots.insert(_slot(self._slots, at), (r, True))
        self.changed = False

    @property
    def recipients(self) -> list[Recipient]:
        return [r for r, canceled in self._slots if not canceled]

    # What the applications see ---------------------------------------------------------

    def headers(self) -> list[str]:
        return self._headers

    def body(self) -> bytes:
        return self._body

    # Modifications -----------------------------------------------------------------------

    def _checked(self, name: str, space: str, value: str) -> str | None:
        """A header an application gives, after milter_header_checks (None: removed)."""
        text = f"{name}:{space}{_lines(value)}"
        self.changed = True
        if self.checks is None:
            return text
        found = self.checks.lookup("milter_header_checks", text)
        if found is None:
            return text
        # Postfix offers no PREPEND in milter_header_checks (postconf(5)): none here either.
        result = self.checks.act("header", text, found, "milter_header_checks")
        return result[-1] if result else None

    def add_header(self, name: str, space: str, value: str) -> str | None:
        text = self._checked(name, space, value)
        if text is not None:
            self._headers.append(text)
        return None

    def ins_header(self, index: int, name: str, space: str, value: str) -> str | None:
        text = self._checked(name, space, value)
        if text is not None:
            self._headers.insert(index - 1, text)
        return None

    def _find(self, index: int, name: str) -> int | None:
        """Where the INDEX-th header NAME is, our own Received: header not counted."""
        want = name.lower()
        seen = 0
        for i, header in enumerate(self._headers):
            if i == 0:
                continue
            if header.partition(":")[0].rstrip(" \t").lower() == want:
                seen += 1
                if seen == index:
                    return i
        return None

    def upd_header(self, index: int, name: str, space: str, value: str) -> str | None:
        at = self._find(index, name)
        if at is None:
            return self.add_header(name, space, value)
        text = self._checked(name, space, value)
        if text is None:
            del self._headers[at]
        else:
            self._headers[at] = text
        return None

    def del_header(self, index: int, name: str) -> str | None:
        at = self._find(index, name)
        if at is not None:
            del self._headers[at]
            self.changed = True
        return None

    def add_rcpt(self, rcpt: str, params: str) -> str | None:
        addr = _internal(rcpt)
        new = Recipient(addr, original=addr)
        if params:
            new.notify, new.orcpt = self._rcpt_params(params)
        added = process_recipients(self.state, [new])
        self._slots += [(r, False) for r in added]
        self.changed = True
        return None

    def _rcpt_params(self, params: str) -> tuple[frozenset[str], str]:
        """SMFIR_ADDRCPT_PAR's ESMTP parameters as Postfix's cleanup_add_rcpt_par takes
        them: NOTIFY= and ORCPT= (once each), a bad or repeated one and any other
        parameter warned of and left out."""
        notify: frozenset[str] = frozenset()
        orcpt = ""
        for arg in params.split():
            key, _, value = arg.partition("=")
            key = key.upper() + "="
            if key == "NOTIFY=":
                words = None if notify else self._notify_words(value)
                if not words:
                    self.state.warn(
                        f'Bad NOTIFY parameter from Milter or header/body_checks: "{arg[:100]}"'
                    )
                else:
                    notify = words
            elif key == "ORCPT=":
                kind, sep, coded = value.partition(";")
                address = xtext_decode(coded) if sep and kind else None
                if orcpt or address is None:
                    self.state.warn(
                        f'Bad ORCPT parameter from Milter or header/body_checks: "{arg[:100]}"'
                    )
                else:
                    orcpt = f"{kind};{address}"
            else:
                self.state.warn(
                    f'ignoring ESMTP argument from Milter or header/body_checks: "{arg[:100]}"'
                )
        return notify, orcpt

    def _notify_words(self, value: str) -> frozenset[str] | None:
        """A NOTIFY= value as Postfix's dsn_notify_mask reads it: words split at commas
        and white space, any case; None for an unknown word (warned of), none at all, or
        NEVER with another."""
        words = set()
        for word in re.split(r"[,\s]+", value.strip(", \t\r\n")):
            if word.upper() not in _NOTIFY_WORDS:
                if word:
                    self._warn_bare(f'unknown DSN NOTIFY command value "{word}" in "{value}"')
                return None
            words.add(word.upper())
        if "NEVER" in words and len(words) > 1:
            return None
        return frozenset(words)

    def _warn_bare(self, text: str) -> None:
        # A warning Postfix logs without the queue ID (as a table's warnings are).
        self.state.notes.append(("table warning", text))

    def del_rcpt(self, rcpt: str) -> str | None:
        addr = _internal(rcpt)
        self._slots = [
            (r, canceled or (r.original or r.address) == addr) for r, canceled in self._slots
        ]
        self.changed = True
        return None

    def chg_from(self, sender: str, params: str) -> str | None:
        self.sender = process_sender(self.state, _internal(sender))
        for arg in params.split():
            # As Postfix's cleanup_chg_from: RET= and ENVID= replace the client's, each
            # one that is bad or of another kind is warned of and left out.
            key, _, value = arg.partition("=")
            key = key.upper() + "="
            envid = xtext_decode(value) if key == "ENVID=" else None
            if key == "RET=" and value.upper() in ("FULL", "HDRS"):
                self.ret = value.upper()
            elif envid and all(32 <= ord(c) <= 126 for c in envid):
                self.envid = envid
            else:
                self._warn_bare(f'Ignoring bad ESMTP parameter "{arg}" in SMFI_CHGFROM request')
        self.changed = True
        return None

    def repl_body(self, body: bytes) -> str | None:
        # As Postfix takes it: lines split at LF, a CR before it dropped, each kept with
        # CR LF (a last line without one too).
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        self._body = b"".join(line.removesuffix(b"\r") + b"\r\n" for line in lines)
        self.separator = True
        self.changed = True
        return None

    # The result ------------------------------------------------------------------------

    def result(self) -> tuple[Envelope, bytes]:
        """The envelope and content after the modifications."""
        head = "".join(h.replace("\n", "\r\n") + "\r\n" for h in self._headers)
        content = head.encode("utf-8", "surrogateescape")
        if self.separator:
            content += b"\r\n"
        content += self._body
        live: list[Recipient] = []
        canceled: list[tuple[int, Recipient]] = []
        for r, gone in self._slots:
            if gone:
                canceled.append((len(live), r))
            else:
                live.append(r)
        env = dataclasses.replace(
            self.env,
            sender=self.sender,
            recipients=live,
            canceled=canceled,
            ret=self.ret,
            envid=self.envid,
        )
        return env, content


class _MilterHeaderChecks(Walker):
    """milter_header_checks, with header_checks' actions and log lines."""

    def enabled(self, param: str) -> bool:
        return True


def milter_log(env: Envelope, action: str, text: str, stage: str = "END-OF-MESSAGE") -> str:
    """cleanup's line for an application's end-of-message decision (without the queue ID):
    "milter-reject: END-OF-MESSAGE from NAME[ADDR]: TEXT; from=<..> to=<..> proto=..
    helo=<..>"."""
    line = f"{action}: {stage} from {env.client_name}[{env.client_addr}]: {text};"
    line += f" from=<{env.sender}>"
    if env.recipients:
        line += f" to=<{env.recipients[-1].address}>"
    if env.protocol:
        line += f" proto={env.protocol}"
    if env.helo_name:
        line += f" helo=<{env.helo_name}>"
    return line


async def _non_smtpd(
    conf: MilterConf, cfg: Any, cleaned: Cleaned, queue_id: str
) -> tuple[str | None, str, str, MilterEditor]:
    """The events Postfix's cleanup makes up for mail that did not come by SMTP (a
    client localhost[127.0.0.1], HELO localhost, MAIL, RCPT each, DATA), then the message:
    (the first decision, the stage it came at, the recipient a RCPT refusal is about, the
    edited message)."""
    env = cleaned.envelope
    editor = MilterEditor(cfg, env, cleaned.content, queue_id)
    current = {"rcpt": ""}

    def macro(name: str) -> str | None:
        values = {
            "i": queue_id,
            "j": cfg.get("myhostname"),
            "_": "localhost [127.0.0.1]",
            "v": cfg.get("milter_macro_v"),
            "{daemon_name}": cfg.get("milter_macro_daemon_name"),
            "{daemon_addr}": "127.0.0.1",
            "{client_addr}": "127.0.0.1",
            "{client_name}": "localhost",
            "{mail_addr}": env.sender,
            "{rcpt_addr}": current["rcpt"] or None,
        }
        return values.get(name)

    milters = Milters(conf, macro, _Notes(cleaned))
    resp = await milters.connect_event("localhost", "127.0.0.1", 0)
    stage = "CONNECT"
    if resp is None:
        stage = "EHLO"
        resp = await milters.helo_event("localhost")
    if resp is None:
        stage = "MAIL"
        # Without the angle brackets smtpd gives them.
        resp = await milters.mail_event([env.sender])
    for rcpt in env.recipients:
        if resp is not None:
            break
        stage = "RCPT"
        current["rcpt"] = rcpt.address
        resp = await milters.rcpt_event([rcpt.address])
    refused = current["rcpt"] if stage == "RCPT" else ""
    if resp is None:
        stage = "DATA"
        resp = await milters.data_event()
    if resp is None:
        stage = "END-OF-MESSAGE"
        resp = await milters.message(editor, hidden=1)
    milters.abort()
    await milters.quit()
    return resp, stage, refused, editor


class _Notes:
    """A milter client's warnings as cleanup notes of the message."""

    def __init__(self, cleaned: Cleaned) -> None:
        self.cleaned = cleaned

    def info(self, text: str) -> None:
        self.cleaned.notes.append(("info", text))

    def warning(self, text: str) -> None:
        self.cleaned.notes.append(("warning", text))


def non_smtpd_milters(conf: MilterConf, cfg: Any, cleaned: Cleaned, queue_id: str) -> Cleaned:
    """A message that did not come by SMTP (pickup) through non_smtpd_milters: cleaned
    again with their modifications and decision (a refusal is the reply, for a bounce)."""
    resp, stage, refused, editor = asyncio.run(_non_smtpd(conf, cfg, cleaned, queue_id))
    env, content = editor.result() if editor.changed else (cleaned.envelope, cleaned.content)
    out = Cleaned(env, content, discard=cleaned.discard, notes=cleaned.notes)
    checked = editor.state
    out.notes += checked.notes
    if checked.reply is not None and (resp is None or resp[0] in "HD"):
        return Cleaned(cleaned.envelope, cleaned.content, checked.reply, notes=out.notes)
    if checked.hold:
        env.attrs.setdefault("hold", "milter_header_checks")
    out.discard = out.discard or checked.discard
    if resp is None:
        return out
    # As cleanup logs it: no to=<> before the recipients, the refused one at RCPT.
    rcpts = cleaned.envelope.recipients
    if stage == "RCPT":
        rcpts = [Recipient(refused)]
    elif stage != "DATA" and stage != "END-OF-MESSAGE":
        rcpts = []
    logged = dataclasses.replace(
        cleaned.envelope, client_name="localhost", client_addr="127.0.0.1", recipients=rcpts
    )
    if resp[0] == "H":
        env.attrs["hold"] = "milter triggers HOLD action"
        line = milter_log(logged, "milter-hold", "milter triggers HOLD action", stage)
    elif resp[0] == "D":
        out.discard = True
        line = milter_log(logged, "milter-discard", "milter triggers DISCARD action", stage)
    else:
        reply = "421 4.7.0 Server closing connection" if resp[0] == "S" else resp
        line = milter_log(logged, "milter-reject", reply[4:], stage)
        if stage == "RCPT":
            # Postfix cannot refuse one recipient of local mail: the message waits.
            reply = "451 4.3.5 Server configuration error"
            cleaned.notes[:0] = [
                (
                    "warning",
                    "milter configuration error: can't reject recipient in non-smtpd(8) submission",
                ),
                ("warning", "message not accepted, try again later"),
            ]
        out = Cleaned(cleaned.envelope, cleaned.content, reply, notes=cleaned.notes)
    # Logged as cleanup meets the stage: the envelope's before the message's lines.
    out.notes.insert(len(out.notes) if stage in ("DATA", "END-OF-MESSAGE") else 0, ("info", line))
    return out


__all__ = ["MilterEditor", "milter_log", "non_smtpd_milters"]
