"""pipe(8): deliver to an external command named in master.cf.

    maildrop unix - n n - - pipe
      flags=DRhu user=vmail argv=/usr/local/bin/maildrop -d ${recipient}

Attributes: flags=, user=name[:group], argv= (the rest of the line), size=, eol=,
directory=, null_sender= (MAILER-DAEMON unless set; chroot= is refused). Flags: B (blank
line at end), D (Delivered-To:), F (From_ line), O (X-Original-To:), R (Return-Path:),
X (final delivery), h (fold ${nexthop}/${domain}), q (quote local parts), u (fold
${user}/${mailbox}), "." (dot-stuff), ">" (>From quoting).
An argv element with ${recipient} (or another per-recipient macro) is repeated for each
recipient. The exit status maps through sysexits.h: 0 sent, 75/71 deferred, the other
sysexits codes bounced with their DSN, anything else "Command died with status N".

The command runs as user= (its uid, and its primary gid or the named group as the only
group, as Postfix's set_ugid), which needs root: master runs a pipe service whose unpriv
column is "n" as a privileged agent process (oxipost.delivery.service), and a qmgr that
runs as root runs the command itself. An unprivileged process cannot switch and runs the
command as itself (a qmgr run alone by a user, as in tests).

Diagnostics: the attribute errors Postfix's pipe(8) dies of (msg_fatal) — a missing user=
or argv=, user= naming root, mail_owner or an unknown user, an unknown flag or attribute —
raise AgentFatal with its text: an agent process logs "fatal: ..." and exits, and qmgr
defers the mail with "4.3.0 unknown mail transport error", as Postfix's qmgr does when
its pipe dies (a qmgr running the command itself logs the text and defers). Flag D or O
with more than one recipient defers with "4.3.5 mail system configuration error" and a
warning, as in Postfix. A time limit (command_time_limit / <transport>_time_limit) kills the
command and bounces (5.3.0, as Postfix's pipe_command.c); command output is appended to the
reason as Postfix does. A directory=
the command's user cannot change to defers ("4.3.0 temporary failure", and Postfix's
"fatal: cannot change directory to ..." line, which its pipe's child logs).

The command's environment is export_environment with PATH reset, nothing else; its working
directory directory=, else the queue directory.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oxipost.delivery import AgentFatal, command
from oxipost.delivery.address import lf_lines, quote_local, split_address
from oxipost.delivery.command import chdir_error, chdir_failed, queue_cwd
from oxipost.envelope import Outcome, Recipient
from oxipost.environ import command_environment

if TYPE_CHECKING:
    from oxipost.delivery import DeliveryRequest

log = logging.getLogger("oxipost.pipe")

_MACRO = re.compile(r"\$\{([a-z_]+)\}|\$([a-z_]+)")
_PER_RECIPIENT = {"recipient", "original_recipient", "user", "extension", "mailbox", "domain"}
_FLAGS = frozenset("BDFORX.>hqu")
_ATTRIBUTES = ("flags", "user", "directory", "chroot", "eol", "null_sender", "size")


@dataclass(frozen=True, slots=True)
class Attributes:
    """A pipe service's command attributes, checked as Postfix's get_service_attr does."""

    argv: list[str]
    user: str
    uid: int
    gid: int
    flags: str = ""
    directory: str = ""
    eol: bytes = b"\n"
    null_sender: str = "MAILER-DAEMON"
    size: int = 0


def parse_args(args: list[str], mail_owner: str) -> Attributes:
    """master.cf pipe arguments → its Attributes; AgentFatal with Postfix's text for what
    its pipe(8) refuses (the names are case-insensitive, as there)."""
    values: dict[str, str] = {}
    argv: list[str] = []
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        key = key.lower()
        if key == "argv" and eq:
            argv = [value, *args[i + 1 :]] if value else list(args[i + 1 :])
            break
        if not eq or key not in _ATTRIBUTES:
            raise AgentFatal(f"unknown attribute name: {arg}")
        values[key] = value
    for flag in values.get("flags", ""):
        if flag not in _FLAGS:
            raise AgentFatal(f"unknown flag: {flag} (ignored)")
    if "user" not in values:
        raise AgentFatal("missing user= command-line attribute")
    if not argv:
        raise AgentFatal("missing argv= command-line attribute")
    if "chroot" in values:
        raise AgentFatal("chroot= command-line attribute: not supported by oxipost")
    user, _, group = values["user"].partition(":")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise AgentFatal(f"get_service_attr: unknown username: {user}") from None
    uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise AgentFatal(f"get_service_attr: unknown group: {group}") from None
    try:
        owner: pwd.struct_passwd | None = pwd.getpwnam(mail_owner)
    except KeyError:
        owner = None  # master and qmgr refuse to run without one
    if uid == 0:
        raise AgentFatal("user= command-line attribute specifies root privileges")
    if owner is not None and uid == owner.pw_uid:
        raise AgentFatal(f"user= command-line attribute specifies mail system owner {mail_owner}")
    if gid == 0:
        raise AgentFatal("user= command-line attribute specifies privileged group id 0")
    if owner is not None and gid == owner.pw_gid:
        raise AgentFatal(
            f"user= command-line attribute specifies mail system owner {mail_owner} group id {gid}"
        )
    size = values.get("size", "0")
    if not size.isdigit():
        raise AgentFatal(f"get_service_attr: bad size= value: {size}")
    return Attributes(
        argv,
        user,
        uid,
        gid,
        flags=values.get("flags", ""),
        directory=values.get("directory", ""),
        eol=_unescape(values.get("eol", "\\n")),
        null_sender=values.get("null_sender", "MAILER-DAEMON"),
        size=int(size),
    )


def _config_error(n: int) -> list[Outcome]:
    return [Outcome("4.3.5", "mail system configuration error")] * n


def _macros(req: DeliveryRequest, rcpt: Recipient | None, flags: str) -> dict[str, str]:
    env = req.envelope
    delim = req.cfg.get("recipient_delimiter")
    q = "q" in flags
    sender = env.sender
    nexthop = req.nexthop.lower() if "h" in flags else req.nexthop
    m = {
        "sender": quote_local(sender) if q and sender else sender,
        "nexthop": nexthop,
        "queue_id": req.queue_id,
        "size": str(len(req.content)),
        "client_address": env.client_addr,
        "client_hostname": env.client_name,
        "client_port": str(env.client_port) if env.client_port else "",
        "client_helo": env.helo_name,
        "client_protocol": env.protocol,
        "sasl_method": env.sasl_method,
        "sasl_username": env.sasl_username,
        "sasl_sender": env.sasl_sender,
    }
    if rcpt is not None:
        parts = split_address(rcpt.address, delim)
        user = parts.user.lower() if "u" in flags else parts.user
        mailbox = parts.localpart.lower() if "u" in flags else parts.localpart
        domain = parts.domain.lower() if "h" in flags else parts.domain
        m.update(
            recipient=quote_local(rcpt.address) if q else rcpt.address,
            original_recipient=rcpt.original or rcpt.address,
            user=user,
            mailbox=mailbox,
            extension=parts.extension,
            domain=domain,
        )
    return m


def _expand(word: str, macros: dict[str, str]) -> str:
    return _MACRO.sub(lambda m: macros.get(m.group(1) or m.group(2), m.group(0)), word)


def build_argv(req: DeliveryRequest, argv: list[str], flags: str) -> list[str]:
    """Expand macros; a per-recipient element repeats once per recipient."""
    out: list[str] = []
    base = _macros(req, None, flags)
    for word in argv:
        names = {m.group(1) or m.group(2) for m in _MACRO.finditer(word)}
        if names & _PER_RECIPIENT:
            for rcpt in req.recipients:
                out.append(_expand(word, _macros(req, rcpt, flags)))
        else:
            out.append(_expand(word, base))
    return out


def build_input(req: DeliveryRequest, flags: str, eol: bytes) -> bytes:
    env = req.envelope
    head: list[str] = []
    if "F" in flags:
        head.append(f"From {env.sender or 'MAILER-DAEMON'}  {time.ctime()}")
    if "R" in flags:
        head.append(f"Return-Path: <{env.sender}>")
    if "O" in flags and req.recipients:
        r = req.recipients[0]
        head.append(f"X-Original-To: {r.original or r.address}")
    if "D" in flags and req.recipients:
        head.append(f"Delivered-To: {req.recipients[0].address}")
    body = lf_lines(req.content)
    if "." in flags or ">" in flags:
        lines = body.split(b"\n")
        for i, line in enumerate(lines):
            if "." in flags and line.startswith(b"."):
                lines[i] = b"." + line
            elif ">" in flags and line.startswith(b"From "):
                lines[i] = b">" + line
        body = b"\n".join(lines)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    if "B" in flags:
        body += b"\n"
    data = "".join(h + "\n" for h in head).encode("utf-8", "surrogateescape") + body
    return data if eol == b"\n" else data.replace(b"\n", eol)


def _unescape(value: str) -> bytes:
    return value.encode().decode("unicode_escape").encode("latin-1")


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    n = len(req.recipients)
    attrs = parse_args(req.cfg.service(req.transport).command_args, req.cfg.get("mail_owner"))
    argv, flags = attrs.argv, attrs.flags
    for flag in "DO":
        if flag in flags and n > 1:
            log.warning(
                "pipe flag `%s' requires %s_destination_recipient_limit = 1", flag, req.transport
            )
            return _config_error(n)
    if attrs.size and len(req.content) > attrs.size:
        return [Outcome("5.2.3", "message too large")] * n
    if req.envelope.trace_only:
        # A probe: what would run (argv[0]), and nothing runs (pipe.c).
        return [Outcome("2.0.0", f"delivers to command: {argv[0]}")] * n
    env = req.envelope
    if not env.sender and attrs.null_sender:
        env = type(env)(**{**{s: getattr(env, s) for s in env.__slots__}})
        env.sender = attrs.null_sender
        req = type(req)(
            req.queue_id, req.transport, req.nexthop, env, req.recipients, req.content, req.cfg
        )
    cmd = build_argv(req, argv, flags)
    data = build_input(req, flags, attrs.eol)
    limit_name = f"{req.transport}_time_limit"
    try:
        limit = req.cfg.get_time(limit_name)
    except KeyError:
        limit = req.cfg.get_time("command_time_limit")
    # Switching to user= needs root (see the module docstring).
    ids = (attrs.uid, attrs.gid) if os.geteuid() == 0 else None
    # The environment is export_environment and PATH alone (pipe.c sets no variable).
    environ = command_environment(req.cfg)
    cwd = queue_cwd(req.cfg)
    if attrs.directory:
        cwd = os.path.join(cwd or os.getcwd(), attrs.directory)
        failed = chdir_error(cwd, ids)
        if failed is not None:
            return [chdir_failed(log, attrs.directory, (attrs.uid, attrs.gid), failed)] * n
    try:
        rc, output = await command.run(cmd, data, limit, environ, cwd, ids)
    except OSError as e:
        return [Outcome("5.3.0", f'Command died with status 127: "{cmd[0]}": {e}')] * n
    return [command.finished(rc, cmd[0], output, f"delivered via {req.transport} service")] * n
