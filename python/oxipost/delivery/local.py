"""local(8): deliver to local users, aliases, .forward files, files and commands.

For each recipient (the domain is local; qmgr only sends those here):
1. A Delivered-To: header already holding the recipient → 5.4.6 mail forwarding loop.
2. alias_maps (key user+ext, then user): each item of the value is an address (put in
   standard form and resolved as qmgr would: one that resolves to this transport is
   delivered here and now, from step 1, as Postfix's resolve.c does; the others, and the
   members of an owner- alias or an :include: file, are resubmitted as one new message
   through the queue), "/file" (appended, mbox; a trailing "/" means Maildir; "~/file"
   under the home of the account whose rights the expansion has), "|command"
   (run by /bin/sh with the message on stdin, exit status through sysexits.h), or
   ":include:/path" (more items from a file, recursion bounded). The items are the
   addresses tok822_parse() finds, as in a message header: "Name" <a> is a, a group
   "g: a, b;" is a and b, a (comment) is dropped. "\\user" is the address
   user, as Postfix's parser reads it (recipient.c's "no alias or .forward" case never
   fires); an alias that lists its own name means the user of that name, and a .forward
   that lists its own user that user's mailbox (alias.c's exp_from, dotforward.c's
   filter), logged under the address the item resolves to. With owner_request_special,
   an "owner-<alias>" entry makes owner-<alias>@$myorigin (its expansion with
   expand_owner_alias) the sender of the expansion, and the recipient loses its original
   address and DSN ORCPT (alias.c).
   Commands and files of an alias have the rights, HOME and SHELL of the table's owner (the
   file as opened), default_privs and no HOME or SHELL for a root-owned table; an :include:
   file not owned by root, listed where the rights are root's, gives its owner's rights to
   what it lists (include.c).
3. ~/.forward per forward_path (owned by the user): items as for aliases, run as the user;
   the recipient owns the expansion, so another local user it lists is resubmitted too
   (dotforward.c), the user itself delivered to its mailbox.
4. mailbox_transport_maps (keyed by the user), else mailbox_transport, whether or not the
   user has a passwd entry: the recipient is passed to that transport's agent (Postfix's
   deliver_pass(): "QID: passing <rcpt> to transport=NAME", then the agent's own line,
   e.g. postfix/lmtp with relay=host[private/dovecot-lmtp]; "transport:nexthop", else this
   request's nexthop).
5. For a user without a passwd entry (unknown.c): fallback_transport_maps, else
   fallback_transport (passed on as in 4), else luser_relay, its $user, $local,
   $extension, $domain, $recipient... expanded (not main.cf's $names) and delivered as an
   alias member is, else postmaster and MAILER-DAEMON are discarded ("warning: required
   alias not found: NAME"), else the bounce below.
6. The mailbox: mailbox_command_maps (keyed by the user), else mailbox_command, else
   home_mailbox ending in "/" ($HOME/Maildir/), else a mail_spool_directory ending in
   "/" (a Maildir per user, even with home_mailbox = Mailbox, as mailbox.c), else an
   mbox ($HOME/home_mailbox, else mail_spool_directory/user), locked per
   mailbox_delivery_lock, capped by mailbox_size_limit (5.2.2). Return-Path,
   X-Original-To and Delivered-To come first.
Commands and files are permitted per allow_mail_to_commands / allow_mail_to_files by
source (alias, forward, include): otherwise "5.7.1 mail to command is restricted" /
"5.7.1 mail to file is restricted"; an executable file → "5.7.1 file is executable"
(catalogue 48). Where the rights would be root's, a command or file has default_privs'
uid and gid instead (each one that is zero); nothing runs as root.
A command runs through local_command_shell when set, else directly when it has no shell
magic, else by /bin/sh -c; in command_execution_directory ($user, $home, ... expanded per
delivery), else the queue directory; with export_environment, PATH, and local(8)'s HOME
and SHELL (of the account whose rights it has: none for an alias), LOGNAME, USER, SENDER,
RECIPIENT, LOCAL, DOMAIN, EXTENSION, ORIGINAL_RECIPIENT and the CLIENT_* and SASL_*
attributes the message has, censored with command_expansion_filter.

What was done for each address of an expansion comes back as the recipient's
Outcome.entries (to=<address>, orig_to=<the queue's original recipient>, one log line
each, none for the alias), the resubmission as a "forwarded as QID" entry for the
recipient; a deferral anywhere defers the recipient whole and sends nothing on, so that
every member is tried again (Postfix's local.c). Delivered-To: names the queue recipient
however deep the expansion (frozen_delivered_to). A forwarded copy starts with forward.c's
"Received: by $myhostname ($mail_name) id NEWQID; DATE" and the Delivered-To: in lower
case, and cleanup logs its message-id line under the new queue ID.

Diagnostics: no such user and no alias → 5.1.1 unknown user: "user"; unreadable tables →
deferred (4.3.0); an alias whose value lists nothing → 4.3.0 alias database unavailable
and "warning: no recipient in alias lookup result for NAME"; a transport to pass to
without an agent → 4.3.0 mail transport unavailable (relay=none); an alias table owned
by a uid without a passwd entry → 4.3.0 "cannot find alias database owner"; an
:include: file with a relative path, that cannot be found, read, is not a regular file
or is world writable → 5.3.5 mail system configuration error and a warning naming it
(4.3.5 for an owner without a passwd entry); include nesting beyond 20 levels → 5.4.6
mail forwarding loop; aliases nested beyond 20 levels (two that list each other, or 25
luser_relay expansions each naming a new unknown user) → 5.4.6 alias database loop for
NAME and a warning; a luser_relay naming an unknown user is relayed once for that local
part, then bounced as it (5.1.1 unknown user);
a command_execution_directory the command's user cannot enter → 4.3.0 temporary failure
and Postfix's "fatal: cannot change directory to ..." line.
Deviation: a recipient with no passwd entry (and none of step 5's fallbacks) gets a
mailbox under mail_spool_directory instead of a bounce when not running as root (written
as the running user), or, as root, when a table of local_recipient_maps other than
alias_maps names it (the embedded default's conf/local_users; written as default_privs,
never root).
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import shutil
import stat
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from oxipost import tok822
from oxipost.cleanup.message import cleanup_message
from oxipost.config import split_list
from oxipost.config.expand import Expander, ExpandError
from oxipost.delivery import AgentFatal, DeliveryRequest, TransportUnavailable, command
from oxipost.delivery import deliver as deliver_agent
from oxipost.delivery.address import split_address
from oxipost.delivery.command import (
    chdir_error,
    chdir_failed,
    lookup_error,
    queue_cwd,
    read_error,
)
from oxipost.delivery.mailstore import (
    LookupFailed,
    lock_options,
    lookup_tables,
    loop_outcome,
    maildir,
    mbox,
    prefix_headers,
    would_deliver,
)
from oxipost.envelope import Entry, Outcome, Recipient
from oxipost.environ import DEFAULT_PATH, command_environment
from oxipost.maildate import mail_date
from oxipost.maps import Table, TableError, open_table
from oxipost.maps.search import alias_keys, maps_find_warned, split_extension
from oxipost.qmgr import control
from oxipost.rewrite.resolve import resolve
from oxipost.rewrite.rewrite import rewrite_address

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.qmgr.queue import Queue

log = logging.getLogger("oxipost.local")
# Forwarded mail's cleanup lines are postfix/cleanup's, as from Postfix's cleanup(8).
cleanup_log = logging.getLogger("oxipost.cleanup")
MAX_INCLUDE_DEPTH = 20
# How deep aliases and .forward files may nest in one delivery (recipient.c's and alias.c's
# limit on state.level, which counts local(8)'s own nested calls: LEVEL_MEMBER per alias or
# .forward member, LEVEL_LUSER per luser_relay, as its call chains for them are long).
MAX_RECIPIENT_LEVEL = 100
LEVEL_MEMBER = 5
LEVEL_LUSER = 4
# deliver_file's mbox_open: a device is written as it is, a dotlock may fail.
_FILE_LOCKS = {"char_devices": True, "dotlock_may_fail": True}
# What Postfix's deliver_pass() defers with when the other agent cannot be had.
UNAVAILABLE = Outcome("4.3.0", "mail transport unavailable")

# Where resubmitted mail (alias/.forward addresses) is queued: opened on first use.
_queue: Queue | None = None


@dataclass
class Trace:
    """What local(8) did for one queue recipient: an entry per address it delivered to,
    bounced or deferred itself, and the addresses it forwards (Postfix's forward.c
    collects them per Delivered-To and sender into one new message each)."""

    entries: list[Entry] = field(default_factory=list)
    forwards: dict[tuple[str, str], list[Recipient]] = field(default_factory=dict)
    # resolve.c's duplicate filter: "recipient LEVEL ADDRESS" delivered once.
    seen: set[tuple[int, str]] = field(default_factory=set)
    # dotforward.c's "forward PATH" filter: a .forward file being expanded (False) or
    # done (True). One met again while it is expanded is its user listing itself: the
    # mailbox; one met again once done has been delivered already.
    dotforwards: dict[str, bool] = field(default_factory=dict)
    # unknown.c's "deliver_unknown LOCAL" filter: a local part given to luser_relay once,
    # being relayed (False) or done (True). Met again while relayed (a luser_relay naming
    # no user), it is bounced as unknown; met again once done, it has been delivered.
    lusers: dict[str, bool] = field(default_factory=dict)
    # include.c's "include UID PATH" filter: an :include: file is expanded once with
    # the same rights (root's for a root-owned alias table, where the file's owner's
    # come later), however many aliases list it.
    includes: set[tuple[int, str]] = field(default_factory=set)
    # file.c's "file UID PATH" filter: a /file written once with the same rights.
    files: set[tuple[int, str]] = field(default_factory=set)
    # command.c's "command USER:UID COMMAND" filter: a |command run once for the same
    # user with the same rights, once its policy allows it (an alias met again, through
    # luser_relay say, runs its commands no more).
    commands: set[tuple[str, int, str]] = field(default_factory=set)
    # mailbox.c's "mailbox LOCAL" filter: a user's mailbox delivered once, however many
    # addresses of the expansion reach it.
    mailboxes: set[str] = field(default_factory=set)
    expanded: bool = False


@dataclass
class Ctx:
    req: DeliveryRequest
    rcpt: Recipient
    sender: str
    source: str  # alias, forward or include: what allow_mail_to_* is checked against
    ids: tuple[int, int] | None
    trace: Trace = field(default_factory=Trace)
    # The Delivered-To: address: the queue recipient's, however deep the expansion
    # (Postfix's frozen_delivered_to).
    delivered: str = ""
    depth: int = 0
    # deliver_recipient()'s recursion level (resolve.c, recipient.c).
    level: int = 0
    # Who owns the expansion: the owner-<alias> address that became the sender, or the
    # recipient whose .forward it is; an alias without an owner- of its own keeps it, as
    # Postfix 3.7's alias.c. Its members are forwarded (recipient.c).
    owner: str = ""
    # The alias (or .forward's local part) being expanded: an alias that lists its own name
    # means the user of that name, not the alias again (alias.c's exp_from).
    exp_from: str = ""
    # Postfix's USER_ATTR: the account whose rights a command or file delivery has (ids),
    # and its HOME, SHELL, $home and $shell: the recipient's for its .forward and mailbox,
    # an alias table's owner, an :include: file's owner. ids None (or a root uid) for a
    # root-owned alias table, where local(8) has no user (RESET_USER_ATTR), exports no HOME
    # or SHELL, and runs commands as default_privs.
    home: str | None = None
    shell: str | None = None

    def __post_init__(self) -> None:
        self.delivered = self.delivered or self.rcpt.address


def _split_items(value: str) -> list[tok822.Tok]:
    """The addresses of an aliases(5) value or of a line of a .forward or :include: file,
    as Postfix's deliver_token_string() takes them: what tok822_parse() makes of the text
    in a message header. A phrase's "Name" <a> or a route address <a> is a; a group
    "name: a, b;" is a and b; words with only white space or a (comment) between them are
    addresses of their own ("a b" is two, an unquoted "|cmd arg" the command "|cmd" and
    the address "arg"); white space next to a special is dropped ("a @ b" is a@b); the
    backslash of a quoted pair goes ("\\user" is user); "<>" lists nothing, a quoted
    empty string ("") the null address."""
    out = []
    tok = tok822.parse(value)
    while tok is not None:
        if tok.type == tok822.ADDR:
            out.append(tok)
        tok = tok.next
    return out


def _stream_lines(text: str) -> list[list[tok822.Tok]]:
    """deliver_token_stream(): the addresses of each line of a .forward or :include:
    file, but for a line that starts with "#" (one with blanks before its "#" is words)."""
    return [_split_items(ln) for ln in text.splitlines() if not ln.startswith("#")]


def _allowed(cfg: Config, param: str, source: str) -> bool:
    return source in cfg.get_list(param)


def _listed_without_account(cfg: Config, address: str, user: str) -> bool:
    """A recipient named in local_recipient_maps by a table of its own (not $alias_maps)
    but without a passwd entry: the embedded default's conf/local_users. Its mailbox goes
    under mail_spool_directory, written as default_privs when running as root (see the
    deviation above); Postfix's local(8) would bounce it."""
    aliases = set(cfg.get_list("alias_maps"))
    for spec in cfg.get_list("local_recipient_maps"):
        if spec in aliases or not spec.startswith(("texthash:", "hash:", "cdb:", "inline:")):
            continue
        try:
            table = open_table(spec, cfg)
            if any(table.lookup(key) is not None for key in (address.lower(), user)):
                return True
        except TableError:
            continue
    return False


def _default_privs(cfg: Config) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(cfg.get("default_privs"))
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _rights(ctx: Ctx) -> tuple[int, int] | None:
    """The ids a command or file delivery has: ctx's, a zero uid or gid replaced by
    default_privs' (command.c, file.c). None when default_privs has no passwd entry."""
    uid, gid = ctx.ids or (0, 0)
    if uid and gid:
        return uid, gid
    default = _default_privs(ctx.req.cfg)
    if default is None:
        return None
    return uid or default[0], gid or default[1]


def _prefix(ctx: Ctx) -> bytes:
    """Return-Path (the sender, an owner- alias's when it replaced it), X-Original-To and
    Delivered-To, as mail_copy() writes them with local(8)'s attributes."""
    return prefix_headers(ctx.sender, ctx.delivered, ctx.rcpt.original)


def _open_queue(cfg: Config) -> Queue:
    global _queue
    if _queue is None:
        from oxipost.qmgr.queue import Queue

        _queue = Queue.open(cfg, writer="local")
    return _queue


def _indirect(ctx: Ctx) -> Outcome:
    """Postfix's deliver_indirect(): the recipient joins the message forwarded for its
    Delivered-To and sender, with the original recipient and ORCPT of what it came from
    (none after an owner- alias; cleanup makes each address its own then). A probe
    forwards nothing: it reports where the message would go."""
    if ctx.req.envelope.trace_only:
        return _record(ctx, Outcome("2.0.0", f"forwards to {ctx.rcpt.address}"))
    group = ctx.trace.forwards.setdefault((ctx.delivered, ctx.sender), [])
    group.append(ctx.rcpt)
    return Outcome("2.0.0", "")


async def _forward(
    req: DeliveryRequest, delivered: str, sender: str, rcpts: list[Recipient]
) -> Outcome:
    """Resubmit the message with a new envelope (Postfix's forward.c), under a queue ID of
    its own that its Received: header names; cleanup logs its lines for it."""
    cfg = req.cfg
    # The sender of a VERP message is its recipient's already: Postfix's forward.c
    # queues no VERP delimiters with the copy.
    env = replace(
        req.envelope,
        sender=sender,
        recipients=rcpts,
        arrival_time=time.time(),
        attrs=dict(req.envelope.attrs),
        verp_delims="",
    )
    try:
        queue = _open_queue(cfg)
        qid = queue.new_id()
    except Exception as e:
        log.warning("%s: cannot resubmit for %s: %s", req.queue_id, delivered, e)
        return Outcome("4.3.0", "mail system configuration error")
    # forward_send()'s own headers: Delivered-To (lower case) makes a loop through this
    # alias visible the next time round.
    received = (
        f"Received: by {cfg.get('myhostname')} ({cfg.get('mail_name')})\r\n"
        f"\tid {qid}; {mail_date(env.arrival_time)}\r\nDelivered-To: {delivered.lower()}\r\n"
    )
    # Forwarded mail goes through cleanup as internal mail: address mappings, no checks.
    cleaned = cleanup_message(env, req.content, received, cfg, queue_id=qid, internal=True)
    if cleaned.reply is not None:
        cleaned.log_notes(cleanup_log, req.queue_id)
        _code, _, text = cleaned.reply.partition(" ")
        status, _, text = text.partition(" ")
        return Outcome(status, text)
    try:
        qid = await queue.enqueue(cleaned.envelope, cleaned.content, qid)
        cleaned.log_notes(cleanup_log, qid)
    except Exception as e:
        log.warning("%s: cannot resubmit for %s: %s", req.queue_id, delivered, e)
        return Outcome("4.3.0", "mail system configuration error")
    await control.wakeup(req.cfg)
    return Outcome("2.0.0", f"forwarded as {qid}")


def _censor(value: str, allowed: str) -> str:
    """value with each byte outside allowed made "_", as Postfix censors what it exports
    (a UTF-8 character outside ASCII becomes one "_" per byte)."""
    ok = allowed.encode()
    return "".join(chr(b) if b in ok else "_" for b in value.encode("utf-8", "surrogateescape"))


def _attributes(ctx: Ctx) -> dict[str, str]:
    """The recipient attributes local(8) names in the environment and in $name expansions
    (recipient.c: the local part and domain folded to lower case, the extension split off
    at the first delimiter); a name without a value is left out."""
    address = ctx.rcpt.address
    local, at, domain = address.lower().rpartition("@")
    if not at:
        local = address.lower()
    user, extension = split_extension(local, ctx.req.cfg.get("recipient_delimiter"))
    attrs = {"user": user, "local": local, "mailbox": local, "recipient": address}
    if at:
        attrs["domain"] = domain
    if extension is not None and "/" not in extension:
        attrs["extension"] = extension
        attrs["recipient_delimiter"] = local[len(user)]
    if ctx.home is not None:
        attrs["home"] = ctx.home
    if ctx.shell is not None:
        attrs["shell"] = ctx.shell
    return attrs


def _command_env(ctx: Ctx, attrs: dict[str, str]) -> dict[str, str]:
    """export_environment, PATH, and the message context local(8) exports (command.c),
    each value censored with command_expansion_filter."""
    env = ctx.req.envelope
    rcpt = ctx.rcpt
    names = {
        "HOME": attrs.get("home"),
        "LOGNAME": attrs["user"],
        "USER": attrs["user"],
        "SENDER": ctx.sender,
        "RECIPIENT": rcpt.address,
        "LOCAL": attrs["local"],
        "SHELL": attrs.get("shell"),
        "DOMAIN": attrs.get("domain"),
        "EXTENSION": attrs.get("extension"),
        "ORIGINAL_RECIPIENT": rcpt.original or None,
        # Client attributes only where the message has them (EXPORT_REQUEST).
        "CLIENT_HOSTNAME": env.client_name or None,
        "CLIENT_ADDRESS": env.client_addr or None,
        "CLIENT_HELO": env.helo_name or None,
        "CLIENT_PROTOCOL": env.protocol or None,
        "SASL_METHOD": env.sasl_method or None,
        "SASL_USERNAME": env.sasl_username or None,
        "SASL_SENDER": env.sasl_sender or None,
    }
    allowed = ctx.req.cfg.get("command_expansion_filter")
    out = command_environment(ctx.req.cfg)
    out.update((k, _censor(v, allowed)) for k, v in names.items() if v is not None)
    return out


def _local_expand(raw: str, attrs: dict[str, str], allowed: str | None) -> tuple[str, list[str]]:
    """Postfix's local_expand(): raw with local(8)'s $user, $home, $shell, $recipient,
    $extension, $domain, $local and $recipient_delimiter (attrs), each value censored with
    allowed (None: as it is, luser_relay's) and taken as it is (not expanded again); not
    main.cf-expanded, so any other name has no value. Returns (result, the names used
    without a value); raises ExpandError for a value that cannot be parsed."""

    def lookup(name: str) -> str | None:
        value = attrs.get(name)
        if value is None:
            return None
        return (value if allowed is None else _censor(value, allowed)).replace("$", "$$")

    expander = Expander(lookup)
    return expander.expand(raw), expander.used_undefined


def _execution_directory(ctx: Ctx, attrs: dict[str, str]) -> str | None:
    """command_execution_directory, censored with execution_directory_expansion_filter;
    "" when unset. None when the value cannot be expanded."""
    cfg = ctx.req.cfg
    raw = cfg.raw("command_execution_directory") or ""
    try:
        return _local_expand(raw, attrs, cfg.get("execution_directory_expansion_filter"))[0]
    except ExpandError:
        return None


# The characters of a command that needs no shell (Postfix's exec_command), and blanks.
_NO_SHELL = frozenset(
    "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ \t"
)


def _command_argv(command_line: str, shell: str) -> list[str]:
    """How Postfix's pipe_command() runs a local(8) command: by local_command_shell when
    set (its words, then the command as one argument); else directly, split at blanks,
    when it has no shell magic and its program is found; else by /bin/sh -c."""
    if shell.strip():
        return [*shell.split(), command_line]
    words = command_line.split()
    if words and set(command_line) <= _NO_SHELL:
        # execvp failing with ENOENT on a bare name: perhaps a shell built-in.
        if "/" in words[0] or shutil.which(words[0], path=DEFAULT_PATH):
            return words
    return ["/bin/sh", "-c", command_line]


async def _command(ctx: Ctx, command_line: str) -> Outcome:
    cfg = ctx.req.cfg
    if ctx.req.envelope.trace_only:
        # A probe runs nothing: it says what would run (command.c).
        return Outcome("2.0.0", f"delivers to command: {command_line}")
    ids = _rights(ctx)
    if os.geteuid() == 0:
        if ids is None or ids[0] == 0:
            return Outcome("4.3.5", "mail system configuration error")
    else:
        ids = None  # runs as this process's user: only root can switch
    attrs = _attributes(ctx)
    directory = _execution_directory(ctx, attrs)
    if directory is None:
        log.warning(
            "bad parameter value syntax for command_execution_directory: %s",
            cfg.raw("command_execution_directory"),
        )
        return Outcome("4.3.5", "mail system configuration error")
    cwd = queue_cwd(cfg)
    if directory:
        cwd = os.path.join(cwd or os.getcwd(), directory)
        failed = chdir_error(cwd, ids)
        if failed is not None:
            return chdir_failed(log, directory, ids, failed)
    # command.c's copy: the mbox From_ line first (no >From quoting, no blank line after).
    from_ = f"From {ctx.sender or 'MAILER-DAEMON'}  {time.asctime()}\n"
    data = from_.encode("utf-8", "surrogateescape") + (_prefix(ctx) + ctx.req.content).replace(
        b"\r\n", b"\n"
    )
    argv = _command_argv(command_line, cfg.get("local_command_shell"))
    limit = cfg.get_time("command_time_limit")
    try:
        rc, out = await command.run(argv, data, limit, _command_env(ctx, attrs), cwd, ids)
    except OSError as e:
        # Postfix's child dies of it ("execvp PATH: ERROR", exit EX_TEMPFAIL): deferred.
        text = f"local: fatal: execvp {argv[0]}: {e.strerror} "  # its newline, as a space
        return Outcome("4.3.0", f"temporary failure. Command output: {text}")
    return command.finished(rc, command_line, out, f"delivered to command: {command_line}")


async def _file(ctx: Ctx, path: str) -> Outcome:
    cfg = ctx.req.cfg
    if ctx.req.envelope.trace_only:
        # A probe appends nothing, nor looks at the file (file.c).
        return Outcome("2.0.0", f"delivers to file: {path}")
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return Outcome("5.7.1", "file is executable")
    except OSError:
        pass
    ids = _rights(ctx)
    prefix = _prefix(ctx)
    if path.endswith("/"):
        # file.c hands a name ending in "/" to deliver_maildir(): its words, not a file's.
        return await maildir(path, prefix, ctx.req.content, ids, cfg)
    # A device (/dev/null) takes the message as it is, and a dotlock that cannot be made
    # beside a file is a warning, as Postfix's deliver_file lets them.
    locks = {**_FILE_LOCKS, **lock_options(cfg, "mailbox_delivery_lock")}
    missing = _missing_directory(path)
    if missing is not None:
        # file.c creates no directory (the mailbox writer would): its dotlock and then
        # the file itself fail on the name.
        how, why = missing
        if locks.get("dotlock"):
            log.warning("unable to create lock file %s.lock: %s", path, why)
        return Outcome("5.2.0", f"cannot append message to file {path}: {how}: {why}")
    out = await mbox(path, ctx.sender, prefix, ctx.req.content, locks, ids, cfg, log.warning)
    if out.delivered:
        return Outcome("2.0.0", f"delivered to file: {path}")
    return Outcome(out.status, f"cannot append message to file {path}: {out.text}")


def _missing_directory(path: str) -> tuple[str, str] | None:
    """Why path's directory cannot hold it, as safe_open() says it (its lstat() finding no
    name: the create fails on the missing directory; a parent not a directory: the open
    fails) and its strerror; None when the directory is there."""
    try:
        os.lstat(path)
        return None
    except FileNotFoundError:
        try:
            if stat.S_ISDIR(os.stat(os.path.dirname(path) or "/").st_mode):
                return None
        except FileNotFoundError:
            return "cannot create file exclusively", os.strerror(errno.ENOENT)
        except OSError:
            pass
        return None
    except NotADirectoryError:
        return "cannot open file", os.strerror(errno.ENOTDIR)
    except OSError:
        return None


def _home_path(ctx: Ctx, item: str) -> str | Outcome:
    """deliver_token_home(): ~/path under the home of the account whose rights the
    expansion has (a .forward's user, an :include: file's owner); ~user is refused, and so
    is ~/path where there is no such account (a root-owned alias table)."""
    if item[1:2] != "/":
        log.warning("bad home directory syntax for: %s", item)
    elif ctx.home is None:
        log.warning("unknown home directory for: %s", item)
    else:
        return item[1:] if ctx.home == "/" else ctx.home + item[1:]
    return Outcome("5.3.5", "mail system configuration error")


def _record(ctx: Ctx, out: Outcome, traced: bool = True) -> Outcome:
    """out, kept as what happened to the recipient at hand (Postfix's sent(),
    bounce_append() or defer_append() with its msg_attr); traced False: not a delivery
    of its own for a success notice (the forwarding of what an expansion sent on)."""
    rcpt = ctx.rcpt
    success = traced and out.delivered and "SUCCESS" in rcpt.notify
    ctx.trace.entries.append(
        Entry(
            rcpt.address,
            rcpt.original,
            out.status,
            out.text,
            out.agent,
            out.relay,
            out.diagnostic,
            success,
        )
    )
    return out


def _worst(results: list[Outcome]) -> Outcome | None:
    """The first deferral, else the first bounce, else the first result."""
    for r in results:
        if r.status.startswith("4"):
            return r
    for r in results:
        if r.permanent:
            return r
    return results[0] if results else None


async def _expand(ctx: Ctx, items: list[tok822.Tok]) -> Outcome:
    """Deliver each item; the recipient's outcome is the first deferral, else the first
    bounce, else success (as Postfix ORs the per-item results). What the expansion sends
    on loses NOTIFY=SUCCESS (NEVER when that was all): the expansion reports it."""
    ctx.trace.expanded = True
    notify = ctx.rcpt.notify - {"SUCCESS"}
    if ctx.rcpt.notify == {"SUCCESS"}:
        notify = frozenset({"NEVER"})
    ctx = replace(ctx, rcpt=replace(ctx.rcpt, notify=notify))
    results: list[Outcome] = []
    cfg = ctx.req.cfg
    for addr in items:
        # deliver_token(): what an address is, by its internal form; the policy is the
        # item's (token.c), not the delivery's: mailbox_command runs whatever
        # allow_mail_to_commands says.
        item = tok822.internalize(addr.head)
        if item.startswith("~"):
            home = _home_path(ctx, item)
            if isinstance(home, Outcome):
                results.append(_record(ctx, home))
                continue
            item = home
        if item.startswith("|"):
            if _allowed(cfg, "allow_mail_to_commands", ctx.source):
                user = split_address(ctx.rcpt.address, cfg.get("recipient_delimiter")).user
                run = (user.lower(), ctx.ids[0] if ctx.ids else 0, item[1:])
                if run in ctx.trace.commands:
                    continue  # run already for this user: nothing to log
                ctx.trace.commands.add(run)
                out = await _command(ctx, item[1:])
            else:
                out = Outcome("5.7.1", "mail to command is restricted")
            results.append(_record(ctx, out))
        elif item.startswith("/"):
            key = (ctx.ids[0] if ctx.ids else 0, item)
            if key in ctx.trace.files:
                continue  # written already, before its policy is judged: nothing to log
            ctx.trace.files.add(key)
            if _allowed(cfg, "allow_mail_to_files", ctx.source):
                out = await _file(ctx, item)
            else:
                out = Outcome("5.7.1", "mail to file is restricted")
            results.append(_record(ctx, out))
        elif item.lower().startswith(":include:"):
            results.append(await _include(ctx, item[9:].strip()))
        else:
            # The address in external form, as deliver_resolve_tree() has it rewritten.
            results.append(await _member(ctx, tok822.externalize(addr.head)))
    return _worst(results) or Outcome("2.0.0", "alias expands to nothing")


async def _member(ctx: Ctx, item: str, calls: int = LEVEL_MEMBER) -> Outcome:
    """resolve.c: an address of an expansion, in standard form, resolved as qmgr would;
    delivered here when it resolves to this very transport, else forwarded. calls: how
    much deeper Postfix's state.level is there."""
    cfg = ctx.req.cfg
    # In internal form, as Postfix's tok822_internalize leaves an alias's member: "a b"@x
    # is a b@x to rewrite and resolve, and "" the null address. trivial-rewrite looks for
    # '@', '!' and '%' among the tokens: ones in quotes only ("a@b") leave the address
    # without a domain, and it gets @$myorigin ("a@b"@$myorigin).
    toks = tok822.scan(item)
    head = toks[0] if toks else None
    internal = tok822.internalize(head)
    address = rewrite_address(cfg, internal, domainless=tok822.operators_quoted(head, internal))
    try:
        resolved = resolve(address, cfg)
    except Exception as e:
        log.warning("address resolver failure for %s: %s", address, e)
        return _record(ctx, Outcome("4.3.0", "address resolver failure"))
    rcpt = replace(ctx.rcpt, address=resolved.recipient)
    member = replace(ctx, rcpt=rcpt, level=ctx.level + calls)
    if resolved.transport == ctx.req.transport:
        return await _recipient(member)
    return _indirect(member)


def _switches(ids: tuple[int, int] | None) -> tuple[int, int] | None:
    """ids when this process would take them to open a file (root, for another user);
    else None, the process's own rights."""
    if ids is None or ids[0] == 0 or os.geteuid() != 0:
        return None
    return ids


async def _include(ctx: Ctx, path: str) -> Outcome:
    """include.c: the file looked up and opened with ctx's rights, and where those are
    root's (a root-owned alias table, root's .forward) its owner's rights, HOME and SHELL
    for what it lists, unless that is root too."""
    if ctx.depth >= MAX_INCLUDE_DEPTH:
        return _record(ctx, Outcome("5.4.6", f"mail forwarding loop for {ctx.rcpt.address}"))
    key = (ctx.ids[0] if ctx.ids else 0, path)
    if key in ctx.trace.includes:
        return Outcome("2.0.0", "")  # expanded already: nothing to log
    ctx.trace.includes.add(key)
    config_error = Outcome("5.3.5", "mail system configuration error")
    if not path.startswith("/"):
        log.warning(":include:%s uses a relative path", path)
        return _record(ctx, config_error)
    failed = lookup_error(path, _switches(ctx.ids))
    if failed is not None:
        log.warning("unable to lookup :include: file %s: %s", path, failed.strerror)
        return _record(ctx, config_error)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        log.warning(":include: file %s is not a regular file", path)
        return _record(ctx, config_error)
    if st.st_mode & stat.S_IWOTH:
        log.warning(":include: file %s is world writable", path)
        return _record(ctx, config_error)
    # An expansion without an owner takes the recipient for one (include.c): the local
    # members of the aliases the file lists are forwarded too, not delivered here.
    sub = replace(ctx, source="include", depth=ctx.depth + 1, owner=ctx.owner or ctx.rcpt.address)
    if ctx.ids is None or ctx.ids[0] == 0:
        try:
            owner = pwd.getpwuid(st.st_uid)
        except KeyError:
            log.warning("cannot find username for uid %d", st.st_uid)
            log.warning("%s: cannot find :include: file owner username", path)
            return _record(ctx, Outcome("4.3.5", "mail system configuration error"))
        if owner.pw_uid != 0:
            sub = _with_account(sub, owner)
    failed = read_error(path, _switches(sub.ids))
    try:
        if failed is not None:
            raise failed
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        log.warning("cannot open include file %s: %s", path, e.strerror)
        return _record(ctx, config_error)
    return await _expand_lines(sub, _stream_lines(text))


async def _expand_lines(ctx: Ctx, lines: list[list[tok822.Tok]]) -> Outcome:
    """deliver_token_stream(): each line's addresses in turn; a line that defers ends the
    file, the lines after it left for the recipient's next delivery, with the rest."""
    lines = [items for items in lines if items]
    if not lines:
        return await _expand(ctx, [])
    results = []
    for items in lines:
        out = await _expand(ctx, items)
        results.append(out)
        if out.status.startswith("4"):
            break
    return _worst(results) or results[0]


def _with_account(ctx: Ctx, pw: pwd.struct_passwd) -> Ctx:
    """ctx with pw's rights, HOME and SHELL (Postfix's SET_USER_ATTR)."""
    return replace(ctx, ids=(pw.pw_uid, pw.pw_gid), home=pw.pw_dir, shell=pw.pw_shell)


async def _dotforward(ctx: Ctx, user: str, pw: pwd.struct_passwd) -> Outcome | None:
    """dotforward.c: the first forward_path file found, owned by the user or root, with
    anything in it; None without one."""
    attrs = _attributes(_with_account(ctx, pw))
    local = ctx.rcpt.address.rpartition("@")[0].lower()
    for fwd in _forward_files(ctx.req.cfg, attrs):
        try:
            st = os.stat(fwd)
            with open(fwd, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if st.st_uid not in (pw.pw_uid, 0):
            log.warning("file %s has bad owner uid %d", fwd, st.st_uid)
            continue
        lines = _stream_lines(text)
        if any(lines):
            done = ctx.trace.dotforwards.get(fwd)
            if done is not None:
                return Outcome("2.0.0", "") if done else None
            ctx.trace.dotforwards[fwd] = False
            # The recipient owns what its .forward lists: another local user there is
            # forwarded, as a new message, not delivered here (dotforward.c's owner).
            sub = replace(_with_account(ctx, pw), source="forward", owner=user, exp_from=local)
            out = await _expand_lines(sub, lines)
            ctx.trace.dotforwards[fwd] = True
            return out
    return None


def _forward_files(cfg: Config, attrs: dict[str, str]) -> list[str]:
    """forward_path's files for a recipient with local(8)'s attributes attrs, censored with
    forward_expansion_filter. As Postfix's dotforward.c, a path that uses a name without a
    value ("${recipient_delimiter}${extension}" for an address without an extension) or
    that cannot be parsed is skipped."""
    allowed = cfg.get("forward_expansion_filter")
    paths = []
    for item in split_list(cfg.raw("forward_path") or ""):
        try:
            path, undefined = _local_expand(item, attrs, allowed)
        except ExpandError:
            continue
        if not undefined:
            paths.append(path)
    return paths


async def _pass(ctx: Ctx, service: str) -> Outcome:
    """Postfix's deliver_pass(): the recipient handed to the agent of another transport
    ("transport" or "transport:nexthop", this request's nexthop when it names none), whose
    outcome and log line (postfix/lmtp[pid]: ... relay=...) it becomes. A transport without
    an agent defers it at once, logged here with relay=none (Postfix's local(8) retries
    the connection for some 100 seconds, then dies and qmgr defers the mail)."""
    req = ctx.req
    transport, _, nexthop = service.partition(":")
    if not transport:
        raise AgentFatal(f'missing transport name in "{service}"')
    log.info("%s: passing <%s> to transport=%s", req.queue_id, ctx.rcpt.address, transport)
    try:
        req.cfg.service(transport)
    except KeyError:
        log.warning("connect #1 to subsystem private/%s: No such file or directory", transport)
        return _record(ctx, replace(UNAVAILABLE, relay="none"))
    # The base configuration: the target applies its own master.cf -o overrides, not ours.
    passed = DeliveryRequest(
        req.queue_id,
        transport,
        nexthop or req.nexthop,
        req.envelope,
        [ctx.rcpt],
        req.content,
        req.cfg.base,
    )
    try:
        (out,) = await deliver_agent(passed)
    except TransportUnavailable as e:
        log.warning("connect #1 to subsystem private/%s: %s", transport, e)
        out = UNAVAILABLE
    except AgentFatal as e:
        # The target agent's process would die of it, and deliver_pass() read no reply.
        log.warning("%s: %s", transport, e)
        out = Outcome("4.3.0", "unknown mail transport error")
    if out == UNAVAILABLE or out.text == "unknown mail transport error":
        return _record(ctx, replace(out, relay="none"))
    return _record(ctx, replace(out, agent=out.agent or transport))


async def _delegate(ctx: Ctx, user: str, maps: str, param: str) -> Outcome | None:
    """The user's transport in the `maps` tables, else `param`'s (mailbox_transport or
    fallback_transport), passed the recipient; None when neither names one."""
    cfg = ctx.req.cfg
    try:
        service = lookup_tables(cfg, maps, [user], log.warning, no_regsub=True)
    except LookupFailed:
        return _record(ctx, Outcome("4.3.0", "table lookup failure"))
    service = service or cfg.get(param)
    if not service:
        return None
    return await _pass(ctx, service)


async def _unknown(ctx: Ctx, user: str) -> Outcome | None:
    """unknown.c, for a user without a passwd entry: fallback_transport_maps, then
    fallback_transport, then luser_relay (expanded with local(8)'s attributes, not
    main.cf's, and delivered as an alias member would be); None when none is set."""
    cfg = ctx.req.cfg
    passed = await _delegate(ctx, user, "fallback_transport_maps", "fallback_transport")
    if passed is not None:
        return passed
    relay = cfg.raw("luser_relay") or ""
    local = split_address(ctx.rcpt.address, "").localpart.lower()
    if not relay.strip():
        return None
    if local in ctx.trace.lusers:
        return Outcome("2.0.0", "") if ctx.trace.lusers[local] else None
    ctx.trace.lusers[local] = False
    try:
        address, _undefined = _local_expand(relay, _attributes(ctx), None)
    except ExpandError:
        log.warning("bad parameter value syntax for luser_relay: %s", relay)
        return _record(ctx, Outcome("4.3.5", "mail system configuration error"))
    ctx.trace.expanded = True
    out = await _member(ctx, address.strip(), LEVEL_LUSER)
    ctx.trace.lusers[local] = True
    return out


def _no_such_user(ctx: Ctx, user: str) -> Outcome:
    """The end of unknown.c: the reserved names are discarded with a warning, as mail to
    them must never bounce; anyone else bounces."""
    if user in ("mailer-daemon", "postmaster"):
        log.warning("required alias not found: %s", user)
        return _record(ctx, Outcome("2.0.0", "discarded"))
    return _record(ctx, Outcome("5.1.1", f'unknown user: "{user}"'))


async def _mailbox(ctx: Ctx, user: str) -> Outcome:
    """The user's .forward, else mailbox_transport_maps
    or mailbox_transport (whether or not the user has a passwd entry), else for a user
    without one unknown.c's fallbacks, else the user's own mailbox."""
    req, cfg = ctx.req, ctx.req.cfg
    try:
        pw: pwd.struct_passwd | None = pwd.getpwnam(user)
    except KeyError:
        pw = None
    if pw is not None:
        forwarded = await _dotforward(ctx, user, pw)
        if forwarded is not None:
            return forwarded
        local = split_address(ctx.rcpt.address, "").localpart.lower()
        if local in ctx.trace.mailboxes:
            return Outcome("2.0.0", "")  # delivered already: nothing to log
        ctx.trace.mailboxes.add(local)
    passed = await _delegate(ctx, user, "mailbox_transport_maps", "mailbox_transport")
    if passed is not None:
        return passed
    ids: tuple[int, int] | None = None
    home = ""
    if pw is None:
        fallback = await _unknown(ctx, user)
        if fallback is not None:
            return fallback
        if os.geteuid() == 0:
            if not _listed_without_account(cfg, ctx.rcpt.address, user):
                return _no_such_user(ctx, user)
            ids = _default_privs(cfg)
            if ids is None:
                return _record(ctx, Outcome("4.3.0", "mail system configuration error"))
    else:
        ids = (pw.pw_uid, pw.pw_gid) if pw.pw_uid != 0 else _default_privs(cfg)
        home = pw.pw_dir
    if pw is not None:
        try:
            command = lookup_tables(cfg, "mailbox_command_maps", [user], log.warning, paranoid=True)
        except LookupFailed:
            return _record(ctx, Outcome("4.3.0", "table lookup failure"))
        # Not main.cf-expanded (postconf(5)): its $names are the shell's, e.g. "$EXTENSION".
        command = command or cfg.raw("mailbox_command")
        if command:
            return _record(ctx, await _command(_with_account(ctx, pw), command))
    prefix = _prefix(ctx)
    # mailbox.c's order: a home Maildir, else a spool Maildir, and only then an mbox, in
    # home_mailbox when set: "Mailbox" with a mail_spool_directory that ends in "/" is
    # the spool's Maildir.
    home_mailbox = cfg.get("home_mailbox") if home else ""
    if home_mailbox.endswith("/"):
        path = os.path.join(home, home_mailbox)
    elif cfg.get("mail_spool_directory").endswith("/"):
        path = os.path.join(cfg.path("mail_spool_directory"), user) + "/"
    elif home_mailbox:
        path = os.path.join(home, home_mailbox)
    else:
        path = os.path.join(cfg.path("mail_spool_directory"), user)
    if req.envelope.trace_only:
        return _record(ctx, would_deliver(path))
    limit = cfg.get_int("mailbox_size_limit")
    size = len(prefix) + len(req.content)
    if path.endswith("/"):
        if limit and size > limit:
            return _record(
                ctx,
                Outcome("5.2.2", "maildir delivery failed: error writing message: File too large"),
            )
        return _record(ctx, await maildir(path, prefix, req.content, ids, cfg))
    try:
        current = os.path.getsize(path)
    except OSError:
        current = 0
    if limit and current + size > limit:
        # Postfix's local(8) runs under a file size limit of mailbox_size_limit: EFBIG.
        out = Outcome("5.2.2", "error writing message: File too large")
    else:
        out = await mbox(
            path,
            ctx.sender,
            prefix,
            req.content,
            lock_options(cfg, "mailbox_delivery_lock"),
            ids,
            cfg,
        )
    if not out.delivered:
        return _record(
            ctx, Outcome(out.status, f"cannot update mailbox {path} for user {user}. {out.text}")
        )
    return _record(ctx, out)


def _find_alias(cfg: Config, keys: list[str]) -> tuple[str, str, str, Table] | None:
    """(value, key, spec, table) of the first alias_maps entry: each key in every table
    before the next key, as recipient.c asks deliver_alias() for the full local part,
    then for it without its extension. The tables are opened as Postfix's alias_maps,
    DICT_FLAG_PARANOID. Raises LookupFailed after Postfix's warnings."""
    try:
        return maps_find_warned(
            cfg.get_list("alias_maps"),
            keys,
            lambda spec: open_table(spec, cfg, paranoid=True),
            log.warning,
            # alias.c asks each table itself, in words of its own.
            lambda spec, key: f"{spec}: lookup of '{key}' failed",
        )
    except (TableError, OSError) as e:
        raise LookupFailed(f"alias_maps: {e}") from e


def _alias_rights(ctx: Ctx, spec: str, table: Table) -> Outcome | None:
    """ctx given the rights of the alias table's owner (alias.c); an Outcome when they
    cannot be had."""
    if table.owner is None:
        log.warning("deliver_alias: no owner UID for alias database %s", spec)
        return Outcome("4.3.0", "mail system configuration error")
    if table.owner == 0:
        ctx.ids = ctx.home = ctx.shell = None
        return None
    try:
        pw = pwd.getpwuid(table.owner)
    except KeyError:
        log.warning("cannot find alias database owner for %s", spec)
        return Outcome("4.3.0", "cannot find alias database owner")
    ctx.ids, ctx.home, ctx.shell = (pw.pw_uid, pw.pw_gid), pw.pw_dir, pw.pw_shell
    return None


async def _recipient(ctx: Ctx) -> Outcome:
    """Postfix's deliver_recipient(): the queue recipient, and each address of an expansion
    that resolves to this transport, in turn: its alias, else forwarded when an owner-
    alias or an :include: file listed it, else its .forward or mailbox."""
    req, cfg, rcpt = ctx.req, ctx.req.cfg, ctx.rcpt
    if ctx.level > MAX_RECIPIENT_LEVEL:
        log.warning("recipient nesting limit exceeded for %s", rcpt.address)
        return _record(ctx, Outcome("5.4.6", "recipient nesting limit exceeded"))
    if (ctx.level, rcpt.address.lower()) in ctx.trace.seen:
        return Outcome("2.0.0", "")  # delivered already at this level: nothing to log
    ctx.trace.seen.add((ctx.level, rcpt.address.lower()))
    looped = loop_outcome(req.content, rcpt.address)
    if looped is not None:
        return _record(ctx, looped)
    parts = split_address(rcpt.address, cfg.get("recipient_delimiter"))
    user = parts.user.lower()
    keys = alias_keys(rcpt.address, cfg.get("recipient_delimiter"))
    if ctx.level >= MAX_RECIPIENT_LEVEL:
        # Aliases that list each other, or a luser_relay that names new unknown users:
        # nothing else stops it in one delivery (alias.c, before its lookup).
        log.warning("alias database loop for %s", keys[0])
        return _record(ctx, Outcome("5.4.6", f"alias database loop for {keys[0]}"))
    try:
        found = _find_alias(cfg, [k for k in keys if k != ctx.exp_from])
        owner = None
        if found is not None and cfg.get_bool("owner_request_special"):
            owner = lookup_tables(
                cfg, "alias_maps", [f"owner-{found[1]}"], log.warning, paranoid=True
            )
    except LookupFailed:
        return _record(ctx, Outcome("4.3.0", "alias database unavailable"))
    if found is None:
        # The member of a mailing list, or of an :include: file, gets a message of its
        # own (recipient.c), so that each has its own status in a queue file.
        if ctx.owner and ctx.owner.lower() != user:
            return _indirect(ctx)
        if ctx.source == "include" and ctx.level:
            return _indirect(ctx)
        return await _mailbox(ctx, user)
    value, name, spec, table = found
    ctx = replace(ctx, source="alias", exp_from=name)
    refused = _alias_rights(ctx, spec, table)
    if refused is not None:
        return _record(ctx, refused)
    if owner is not None:
        # Errors of the expansion go to the list owner, not the original sender, and
        # what is sent on no longer names the original recipient (alias.c: a mailing
        # list's mail must not carry the poster's ORCPT).
        sender = owner if cfg.get_bool("expand_owner_alias") else f"owner-{name}"
        ctx.sender = ctx.owner = rewrite_address(cfg, sender)
        ctx.rcpt = replace(rcpt, original="", orcpt="")
    items = _split_items(value)
    if not items:
        # An alias of nothing (a value of commas, say) is a broken table, not a delivery.
        log.warning("no recipient in alias lookup result for %s", name)
        return _record(ctx, Outcome("4.3.0", "alias database unavailable"))
    return await _expand(ctx, items)


async def deliver_one(req: DeliveryRequest, rcpt: Recipient) -> Outcome:
    """One queue recipient (Postfix's local.c deliver_message() for it). Without an
    alias or .forward, its outcome; else the outcome of it as a whole with an entry for
    each address delivered, bounced or deferred here, and one "forwarded as" entry for
    it per message forwarded to the others. A deferral anywhere defers the recipient and
    cancels the forwarding: every member is tried again later, as in Postfix."""
    trace = Trace()
    ctx = Ctx(req, rcpt, req.envelope.sender, "alias", None, trace)
    out = await _recipient(ctx)
    if not trace.expanded:
        return out
    results = [Outcome(e.status, e.text) for e in trace.entries]
    if not any(r.status.startswith("4") for r in results):
        for (delivered, sender), rcpts in trace.forwards.items():
            forwarded = await _forward(req, delivered, sender, rcpts)
            results.append(_record(ctx, forwarded, traced=False))
            if not forwarded.delivered:
                break
    worst = _worst(results) or Outcome("2.0.0", "alias expands to nothing")
    # The entries say who logs each line: the recipient as a whole has no agent of its own.
    return replace(worst, entries=tuple(trace.entries), agent="", relay="")


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    return [await deliver_one(req, r) for r in req.recipients]
