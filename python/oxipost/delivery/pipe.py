"""pipe(8): deliver to an external command named in master.cf.

    maildrop unix - n n - - pipe
      flags=DRhu user=vmail argv=/usr/local/bin/maildrop -d ${recipient}

Attributes: flags=, user=name[:group], argv= (the rest of the line), size=, eol=,
directory=, null_sender=. Flags: B (blank line at end), D (Delivered-To:), F (From_ line),
O (X-Original-To:), R (Return-Path:), X (final delivery), h (fold ${nexthop}/${domain}),
q (quote local parts), u (fold ${user}/${mailbox}), "." (dot-stuff), ">" (>From quoting).
An argv element with ${recipient} (or another per-recipient macro) is repeated for each
recipient. The exit status maps through sysexits.h: 0 sent, 75/71 deferred, the other
sysexits codes bounced with their DSN, anything else "Command died with status N".

Diagnostics: a missing argv= or user=root defers the recipients with "4.3.5 mail system
configuration error"; a time limit (command_time_limit / <transport>_time_limit) kills
the command and defers; command output is appended to the reason as Postfix does.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import time
from typing import TYPE_CHECKING

from oxipost.delivery.address import lf_lines, quote_local, split_address
from oxipost.delivery.dsn import SYSEXITS
from oxipost.envelope import Outcome, Recipient

if TYPE_CHECKING:
    from oxipost.delivery import DeliveryRequest

_MACRO = re.compile(r"\$\{([a-z_]+)\}|\$([a-z_]+)")
_PER_RECIPIENT = {"recipient", "original_recipient", "user", "extension", "mailbox", "domain"}
_OUTPUT_LIMIT = 2048


def parse_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """master.cf pipe arguments → (attributes, argv)."""
    attrs: dict[str, str] = {}
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if not eq:
            raise ValueError(f"unknown attribute name: {arg}")
        if key == "argv":
            return attrs, [value, *args[i + 1 :]] if value else list(args[i + 1 :])
        attrs[key] = value
    return attrs, []


def _config_error(n: int, why: str) -> list[Outcome]:
    return [Outcome("4.3.5", f"mail system configuration error: {why}")] * n


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
        "sasl_sender": "",
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
    data = "".join(h + "\n" for h in head).encode() + body
    return data if eol == b"\n" else data.replace(b"\n", eol)


def _unescape(value: str) -> bytes:
    return value.encode().decode("unicode_escape").encode("latin-1")


def outcome_for(
    status: int | None, signal: int | None, cmd: str, output: bytes, service: str
) -> Outcome:
    """The reason Postfix's pipe(8) gives for a finished command (pipe_command.c)."""
    text_out = " ".join(output.decode("utf-8", "replace").split())[:_OUTPUT_LIMIT]
    suffix = f". Command output: {text_out}" if text_out else ""
    if signal is not None:
        return Outcome("4.3.0", f'Command died with signal {signal}: "{cmd}"{suffix}')
    if status == 0:
        return Outcome("2.0.0", f"delivered via {service} service" + suffix)
    assert status is not None
    if status in SYSEXITS:
        dsn, text = SYSEXITS[status]
        return Outcome(dsn, text + suffix)
    return Outcome("5.3.0", f'Command died with status {status}: "{cmd}"{suffix}')


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    n = len(req.recipients)
    try:
        attrs, argv = parse_args(req.cfg.service(req.transport).args)
    except (KeyError, ValueError) as e:
        return _config_error(n, str(e))
    if not argv:
        return _config_error(n, "missing argv= command-line attribute")
    flags = attrs.get("flags", "")
    user = attrs.get("user", "")
    ids: tuple[int, int] | None = None
    if user:
        name, _, group = user.partition(":")
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return _config_error(n, f"user= command-line attribute: unknown user: {name}")
        uid, gid = pw.pw_uid, pw.pw_gid
        if group:
            import grp

            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                return _config_error(n, f"user= command-line attribute: unknown group: {group}")
        if uid == 0 or gid == 0:
            return _config_error(n, "user= command-line attribute specifies root privileges")
        ids = (uid, gid)
    if "size" in attrs and len(req.content) > int(attrs["size"]):
        return [Outcome("5.2.3", "message too large")] * n
    env = req.envelope
    if not env.sender and "null_sender" in attrs:
        env = type(env)(**{**{s: getattr(env, s) for s in env.__slots__}})
        env.sender = attrs["null_sender"]
        req = type(req)(
            req.queue_id, req.transport, req.nexthop, env, req.recipients, req.content, req.cfg
        )
    command = build_argv(req, argv, flags)
    data = build_input(req, flags, _unescape(attrs.get("eol", "\\n")))
    limit_name = f"{req.transport}_time_limit"
    try:
        limit = req.cfg.get_time(limit_name)
    except KeyError:
        limit = req.cfg.get_time("command_time_limit")
    kwargs: dict[str, object] = {}
    if ids is not None and os.geteuid() == 0:
        kwargs.update(user=ids[0], group=ids[1], extra_groups=[])
    cwd = attrs.get("directory") or None
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": user or ""},
            **kwargs,  # type: ignore[arg-type]
        )
    except OSError as e:
        return [Outcome("5.3.0", f'Command died with status 127: "{command[0]}": {e}')] * n
    try:
        output, _ = await asyncio.wait_for(proc.communicate(data), timeout=limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return [Outcome("4.3.0", f'Command time limit exceeded: "{command[0]}"')] * n
    except (BrokenPipeError, ConnectionResetError):
        output = b""
        await proc.wait()
    rc = proc.returncode
    assert rc is not None
    if rc < 0:
        result = outcome_for(None, -rc, command[0], output, req.transport)
    else:
        result = outcome_for(rc, None, command[0], output, req.transport)
    return [result] * n
