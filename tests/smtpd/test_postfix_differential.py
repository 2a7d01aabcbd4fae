"""The golden SMTP dialogues, played against real Postfix from Debian's package.

The same scripts pass against oxipost (test_protocol.py); here they must pass against
Postfix 3.7 started with `postfix -c DIR start` on its own configuration directory, queue
directory and free port, with the same main.cf. That makes every reply text in the scripts
Postfix's own, not our reading of its source.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from oxipost.printable import printable
from oxipost.smtpd.check import SENDER_LOGIN_CHECKS

from tests.conftest import REPO, free_port, postfix_log_lines, run_ours, shared_dir
from tests.maps.test_net_tables import peer
from tests.smtpd.conftest import NO_FLOW_DELAY, Raw, running_smtpd, write_config
from tests.smtpd.test_protocol import DIALOGUES, GOLDEN_MAIN_CF, run_dialogue
from tests.smtpd.test_xclient import XCLIENT_DIALOGUES, XCLIENT_MAIN_CF, xclient_scripts

pytestmark = pytest.mark.postfix


@contextlib.contextmanager
def running_postfix(main_cf: str, without: tuple[str, ...] = ()) -> Iterator[tuple[int, Path]]:
    """Real Postfix on a free 127.0.0.1 port with this main.cf (after write_config's base),
    no service chrooted and none of the services named in `without` (e.g. qmgr, so that
    mail stays in the incoming queue for postcat); yields (port, config directory)."""
    if os.geteuid() != 0:
        pytest.skip("real Postfix needs root to start (root-owned queue directory)")
    postfix = shutil.which("postfix") or "/usr/sbin/postfix"
    assert os.path.exists(postfix), "postfix is required (scripts/install-debian-deps.sh)"
    if "qmgr" in without and not re.search(r"(?m)^in_flow_delay\s*=", main_cf):
        # Without qmgr nobody puts flow tokens in master's pipe (mail_flow.c): Postfix's
        # cleanup would wait in_flow_delay (1s) before taking each message.
        main_cf += NO_FLOW_DELAY
    # The postfix user must be able to reach the directory: not pytest's 0700 tmp tree.
    with shared_dir("oxipost-postfix-") as d:
        yield from _postfix_in(d, postfix, main_cf, without)


def _postfix_in(
    d: Path, postfix: str, main_cf: str, without: tuple[str, ...]
) -> Iterator[tuple[int, Path]]:
    (d / "spool").mkdir()
    (d / "data").mkdir()
    write_config(str(d), main_cf.replace("{dir}", str(d)))
    text = (
        (d / "main.cf")
        .read_text()
        .replace(
            f"queue_directory = {d}/spool\n",
            f"queue_directory = {d}/spool\ndata_directory = {d}/data\n"
            f"alternate_config_directories = {d}\n",
        )
    )
    (d / "main.cf").write_text(text)
    port = free_port()
    lines = []
    for ln in Path("/etc/postfix/master.cf").read_text().splitlines():
        words = ln.split()
        if ln.startswith("smtp ") and " inet " in ln:
            ln = f"127.0.0.1:{port} inet n - n - - smtpd"
        elif words and not ln[0].isspace() and not ln.startswith("#"):
            if words[0] in without:
                continue
            if len(words) >= 8 and words[4] != "n":
                words[4] = "n"
                ln = " ".join(words)
        lines.append(ln)
    (d / "master.cf").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, MAIL_CONFIG=str(d))
    subprocess.run(
        [postfix, "-c", str(d), "set-permissions"], env=env, capture_output=True, timeout=60
    )
    try:
        out = subprocess.run(
            [postfix, "-c", str(d), "start"], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Postfix did not start listening"
                time.sleep(0.2)
        yield port, d
    finally:
        _stop_postfix(postfix, d, env)


def _stop_postfix(postfix: str, d: Path, env: dict[str, str]) -> None:
    """`postfix stop`; if that hangs (its script logs through postlogd, which a blocked
    postlogd never answers), what its force path does: SIGKILL to master's process group,
    so that no Postfix of a test outlives it."""
    try:
        subprocess.run([postfix, "-c", str(d), "stop"], env=env, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pid = int((d / "spool" / "pid" / "master.pid").read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        raise


@pytest.fixture(scope="module")
def real_postfix() -> Iterator[int]:
    with running_postfix(GOLDEN_MAIN_CF) as (port, _d):
        yield port


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in DIALOGUES.glob("*.smtp")))
def test_golden_dialogue_against_real_postfix(real_postfix: int, script: str) -> None:
    raw = Raw("127.0.0.1", real_postfix, source="127.0.0.2")
    try:
        run_dialogue(raw, DIALOGUES / script, mail_name="Postfix")
    finally:
        raw.close()


def _disconnect_stats(lines: list[str]) -> str:
    line = next(ln for ln in lines if "disconnect from unknown[127.0.0.2]" in ln)
    return line.split("127.0.0.2]", 1)[1]


class Played:
    """One session from 127.0.0.2 playing a dialogue on real Postfix (no qmgr: what it
    queues stays) and on our smtpd, each with the same main.cf: each side's log lines and
    replies (the greeting first). The session is over once the "disconnect from" line
    names `client` (another one after XCLIENT)."""

    def __init__(
        self,
        start_smtpd: Any,
        dialogue: list[str] | list[str | bytes],
        main_cf: str,
        client: str = "unknown[127.0.0.2]",
    ) -> None:
        self.theirs, self.their_replies = _played_on_both(
            start_smtpd, dialogue, main_cf, True, client
        )
        self.ours, self.our_replies = _played_on_both(start_smtpd, dialogue, main_cf, False, client)


def _played_on_both(
    start_smtpd: Any,
    dialogue: list[str] | list[str | bytes],
    main_cf: str,
    postfix: bool,
    client: str,
) -> tuple[list[str], list[str]]:
    def play(port: int) -> list[str]:
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        replies = [raw.reply()]
        try:
            for command in dialogue:
                if isinstance(command, bytes):  # bytes that are not UTF-8, say
                    raw.send(command + b"\r\n")
                    replies.append(raw.reply())
                    continue
                replies.append(raw.cmd(command))
        except ConnectionError:
            replies.append("(closed)")  # the server hung up: the rest is never answered
        finally:
            raw.close()
        return replies

    def until_disconnect(read: Callable[[], list[str]]) -> list[str]:
        deadline = time.monotonic() + 20
        while True:
            lines = read()
            if any(f"disconnect from {client}" in ln for ln in lines):
                return lines
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)

    # maillog_file_prefixes: Postfix refuses a log file outside them (its test directory
    # is under /tmp).
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    if postfix:
        with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
            replies = play(port)

            def maillog() -> list[str]:
                with contextlib.suppress(FileNotFoundError):
                    return (d / "maillog").read_text().splitlines()
                return []

            return until_disconnect(maillog), replies
    # Table warnings to the log, as a daemon's child process sends them.
    srv = start_smtpd(main_cf, daemon_tables=True)
    replies = play(srv.port)
    # ListLog keeps the text as logged; Logger writes it printable(), as Postfix.
    return until_disconnect(lambda: [printable(ln) for ln in srv.log]), replies


@pytest.mark.slow
def test_disconnect_statistics_match_postfix(start_smtpd) -> None:
    """The "disconnect from host[addr] ehlo=1 ... commands=N/M" line log tools (fail2ban's
    postfix filters, pflogsumm) read: the same dialogue, the same statistics."""
    dialogue = [
        "EHLO client.example",
        "NOOP",
        "BOGUS",
        "VRFY",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<x@example.net>",  # relaying denied
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "Subject: stats\r\n\r\nbody\r\n.",
        "RSET",
        "HELP",
        "QUIT",
    ]

    both = Played(start_smtpd, dialogue, "")
    assert _disconnect_stats(both.ours) == _disconnect_stats(both.theirs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "restriction", ["reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname"]
)
def test_unknown_client_hostname_rejected_as_postfix(start_smtpd, restriction: str) -> None:
    """127.0.0.2 has no name (no PTR, not in /etc/hosts); 127.0.0.1 is localhost both
    ways. The replies at RCPT must be Postfix's own, word for word."""
    main_cf = f"smtpd_peername_lookup = yes\nsmtpd_client_restrictions = {restriction}\n"

    def play(port: int, source: str) -> list[str]:
        raw = Raw("127.0.0.1", port, source=source)
        try:
            raw.reply()
            raw.cmd("EHLO client.example")
            raw.cmd("MAIL FROM:<a@example.org>")
            return [raw.cmd("RCPT TO:<postmaster@localhost>"), raw.cmd("QUIT")]
        finally:
            raw.close()

    with running_postfix(main_cf) as (port, _d):
        theirs = [play(port, src) for src in ("127.0.0.2", "127.0.0.1")]
    srv = start_smtpd(main_cf)
    ours = [play(srv.port, src) for src in ("127.0.0.2", "127.0.0.1")]
    assert ours == theirs
    assert theirs[0][0].startswith("450 ") and theirs[1][0].startswith("250 ")


def _namespace_as_postfix(module: str, tmp_path: Path) -> Any:
    """Run `module` as root in a private mount and network namespace; its JSON results for
    each of our servers must equal Postfix's, which are returned."""
    if os.geteuid() != 0:
        pytest.skip("a private mount and network namespace needs root")
    r = subprocess.run(
        ["unshare", "--mount", "--net", sys.executable, "-m", module, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(r.stdout.splitlines()[-1])
    theirs = results.pop("postfix")
    for server, ours in results.items():
        assert ours == theirs, server
    return theirs


@pytest.mark.slow
def test_client_name_lookup_failing_for_now_as_postfix(tmp_path: Path) -> None:
    """A resolver that answers SERVFAIL (EAI_AGAIN), in a namespace of the test's own
    (tests/smtpd/peername_namespace.py): reject_unknown_client_hostname and
    reject_unknown_reverse_client_hostname reply 450 whatever unknown_client_reject_code
    says (550 here, used for the client with no name), the 5xx DSN class follows the code,
    and a temporary failure is not remembered: all word for word as Postfix, on asyncio's
    loop and on uvloop."""
    theirs = _namespace_as_postfix("tests.smtpd.peername_namespace", tmp_path)
    hostname = theirs["reject_unknown_client_hostname"]
    assert hostname["127.0.0.2"].startswith("450 4.7.25 "), hostname
    assert hostname["127.0.0.3"].startswith("450 4.7.25 "), hostname
    assert hostname["127.0.0.4"].startswith("550 5.7.25 "), hostname
    assert hostname["127.0.0.3 recovered"].startswith("250 "), hostname
    reverse = theirs["reject_unknown_reverse_client_hostname"]
    assert reverse["127.0.0.2"].startswith("250 "), reverse
    assert reverse["127.0.0.3"].startswith("450 4.7.1 "), reverse
    assert reverse["127.0.0.4"].startswith("550 5.7.1 "), reverse


@pytest.mark.slow
def test_dns_lists_as_postfix(tmp_path: Path) -> None:
    """reject_rbl_client (with and without a reply filter), rbl_reply_maps (a template with
    macros, and one that is not a reply), reject_rhsbl_helo/_sender/_recipient,
    permit_dnswl_client, a list whose server fails (not listed) and an allow list whose
    server fails (a later reject is deferred), against one DNS server
    in a namespace of the test's own (tests/smtpd/dnsbl_namespace.py): every reply, reject
    log line and warning word for word as Postfix (its maillog_file), on asyncio's loop and
    on uvloop."""
    theirs = _namespace_as_postfix("tests.smtpd.dnsbl_namespace", tmp_path)
    assert theirs["listed with TXT"] == (
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test;"
        " listed, see https://bl.test/?127.0.0.2"
    )
    assert theirs["filtered out, template"].startswith("451 4.7.9 Go away 127.0.0.3"), theirs
    assert theirs["server failure"].startswith("250 "), theirs
    assert theirs["template not a reply"] == "450 4.7.1 Service unavailable"
    assert "warning: rbl response code configuration error: listed" in theirs["log"]
    assert theirs["allow list failing"] == (
        "450 4.7.1 <127.0.0.8>: Client host rejected: Service unavailable"
    )
    assert len(theirs["log"]) == 10, theirs["log"]


def _client_lines(log: list[str]) -> list[tuple[str, str]]:
    """(queue ID, the rest) of each smtpd "ID: client=..." log line, in order."""
    found = (re.search(r"\b([0-9A-F]{10,}): (client=.*)", ln) for ln in log)
    return [(m.group(1), m.group(2)) for m in found if m]


@dataclass
class Queued:
    """A message of a session: its queue ID, its smtpd "client=" line's text and what
    postcat showed of its queue file."""

    qid: str
    client: str
    postcat: subprocess.CompletedProcess


def _queued_on_both(
    start_smtpd: Any, main_cf: str, play: Callable[[Raw, str], object], count: int, *flags: str
) -> tuple[list[Queued], list[Queued]]:
    """(Postfix's, ours): one session from 127.0.0.2, play(raw, mail_name), on real Postfix
    without qmgr (its queue files stay) and on our smtpd with a real queue, and for each
    "client=" line it logged (Postfix's read once there are `count`), the message with
    `postcat -c DIR FLAGS -q ID`."""
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        play(raw, "Postfix")
        raw.close()
        deadline = time.monotonic() + 20
        while len(lines := _client_lines((d / "maillog").read_text().splitlines())) < count:
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
        postcat = ["postcat", "-c", str(d), *flags, "-q"]
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
        theirs = [Queued(qid, text, run([*postcat, qid])) for qid, text in lines]
    srv = start_smtpd(main_cf, real_queue=True)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    play(raw, "oxipost")
    raw.close()
    ours = [
        Queued(qid, text, run_ours("postcat", "-c", srv.config_dir, *flags, "-q", qid))
        for qid, text in _client_lines(srv.log)
    ]
    return theirs, ours


def _script(script: Path) -> Callable[[Raw, str], object]:
    """A play for _queued_on_both: the golden dialogue."""
    return lambda raw, mail_name: run_dialogue(raw, script, mail_name=mail_name)


def _commands(commands: list[str]) -> Callable[[Raw, str], object]:
    """A play for _queued_on_both: the greeting, then each command and its reply."""
    return lambda raw, _mail_name: [raw.reply()] + [raw.cmd(c) for c in commands]


def _sasl_records(postcat: subprocess.CompletedProcess) -> list[str]:
    assert postcat.returncode == 0, postcat.stderr
    return [ln for ln in postcat.stdout.splitlines() if ln.startswith("named_attribute: sasl_")]


@pytest.mark.slow
def test_auth_parameter_with_sasl_as_postfix(start_smtpd, dovecot) -> None:
    """MAIL FROM's AUTH= with SASL on, Dovecot behind both: the replies of
    dialogues/sasl/auth-param.smtp, the "client=... sasl_sender=" log lines and the sasl_*
    attributes of the queue files as postcat shows them, Postfix's and ours the same."""
    path, _log = dovecot
    main_cf = (
        f"{GOLDEN_MAIN_CF}smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
        f"smtpd_sasl_path = {path}\n"
    )
    script = _script(DIALOGUES / "sasl" / "auth-param.smtp")
    theirs, ours = _queued_on_both(start_smtpd, main_cf, script, 3, "-e")
    assert [q.client for q in ours] == [q.client for q in theirs]
    assert theirs[1].client.endswith(', sasl_username=carol, sasl_sender=<c?d "x y"@example.org>')
    their_records = [_sasl_records(q.postcat) for q in theirs]
    assert [_sasl_records(q.postcat) for q in ours] == their_records
    assert their_records[0] == ["named_attribute: sasl_sender=x+2By@example.org"]
    # Where they go among the others (after rewrite_context, before the DSN attributes),
    # and the protocol kept without the A of ESMTPA.
    for mine, their in zip(ours, theirs, strict=True):
        assert "\n".join(_envelope_view(mine)) == "\n".join(_envelope_view(their))


@pytest.mark.slow
def test_dsn_parameters_kept_decoded_as_postfix(start_smtpd) -> None:
    """ENVID= and ORCPT= are kept xtext-decoded, as Postfix's queue file has them: the
    replies of dialogues/dsn-xtext.smtp, and the DSN attributes (envelope_id, ret_flags,
    notify_flags, dsn_orig_rcpt) as postcat shows them, Postfix's and ours the same (the
    smtp client encodes them again)."""
    script = _script(DIALOGUES / "dsn-xtext.smtp")

    def dsn_lines(postcat: subprocess.CompletedProcess) -> list[str]:
        assert postcat.returncode == 0, postcat.stderr
        wanted = ("named_attribute: envelope_id=", "named_attribute: dsn_orig_rcpt=")
        wanted += ("named_attribute: ret_flags=", "named_attribute: notify_flags=")
        return [ln for ln in postcat.stdout.splitlines() if ln.startswith(wanted)]

    (theirs,), (ours,) = _queued_on_both(start_smtpd, GOLDEN_MAIN_CF, script, 1, "-e")
    their_lines = dsn_lines(theirs.postcat)
    assert dsn_lines(ours.postcat) == their_lines
    assert "named_attribute: dsn_orig_rcpt=rfc822;u+x@example.org" in their_lines, their_lines


def _transaction_lines(
    lines: list[str], wanted: str = r": client=|: reject: |size limit exceeded"
) -> list[str]:
    """smtpd's and cleanup's lines about transactions ("client=", rejects, the size limit:
    those matching `wanted`), without the syslog prefix and with each queue ID replaced by
    its order of appearance."""
    ids: dict[str, str] = {}

    def number(m: re.Match[str]) -> str:
        return ids.setdefault(m.group(0), f"QID{len(ids) + 1}")

    out = []
    for ln in lines:
        if not re.search(wanted, ln):
            continue
        text = re.sub(r"^.*?postfix/\w+\[\d+\]: ", "", ln)
        out.append(re.sub(r"\b[0-9A-F]{10,12}\b", number, text))
    return out


@pytest.mark.slow
def test_queue_id_taken_at_first_accepted_rcpt_as_postfix(start_smtpd, tmp_path: Path) -> None:
    """Postfix's smtpd opens the queue file at the first accepted RCPT: its "client=" line
    and every later line of the transaction (a RCPT or DATA refused, cleanup's reject, the
    size limit) carry the queue ID, NOQUEUE only comes before; each reject line names the
    sender and recipient only when it has them (log_whatsup)."""
    (tmp_path / "hc").write_text("/^Subject: bad/ REJECT bad subject\n")
    main_cf = (
        "smtpd_delay_reject = no\n"
        "smtpd_helo_restrictions = check_helo_access inline:{ {bad.helo=REJECT no helo} }\n"
        "smtpd_sender_restrictions = "
        "check_sender_access inline:{ {bad@example.org=REJECT no sender} }\n"
        "smtpd_data_restrictions = "
        "check_sender_access inline:{ {datarej@example.org=REJECT no data} }\n"
        f"header_checks = regexp:{tmp_path}/hc\n"
        "message_size_limit = 3000\n"
    )
    big = "Subject: big\r\n\r\n" + ("x" * 80 + "\r\n") * 60 + "."
    dialogue = [
        "HELO bad.helo",
        "EHLO good.helo",
        "MAIL FROM:<bad@example.org>",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<x@example.net>",  # relaying denied: no queue file yet
        "RCPT TO:<postmaster@localhost>",
        "RCPT TO:<x@example.net>",
        "RSET",
        "MAIL FROM:<datarej@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "RCPT TO:<abuse@localhost>",
        "DATA",
        "RSET",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "Subject: bad\r\n\r\nbody\r\n.",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        big,
        "QUIT",
    ]

    both = Played(start_smtpd, dialogue, main_cf)
    expected = _transaction_lines(both.theirs)
    assert len(expected) == 12, both.theirs
    assert _transaction_lines(both.ours) == expected


@pytest.mark.slow
def test_cleanup_file_size_limit_as_postfix(start_smtpd) -> None:
    """Postfix's cleanup writes with message_size_limit as its file size limit, so a
    message smtpd's own count lets through (its content alone) is still refused when the
    queue file, envelope, smtpd's Received: header and all, would grow past it: "552 5.3.4
    Error: message file too big", cleanup's "queue file size limit exceeded" and "close
    error" warnings, for DATA and BDAT alike. Ours queued it. The sizes keep some 20 bytes
    from the limit either way: Postfix's queue IDs (log_ident, Received:) and its arrival
    time's microseconds vary in length."""

    def message(size: int) -> str:
        head = "Subject: s\r\n\r\n"
        return head + ("x" * 78 + "\r\n") * ((size - len(head)) // 80)

    def bdat(content: str) -> str:
        return f"BDAT {len(content)} LAST\r\n{content[:-2]}"

    envelope = ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>"]
    dialogue = ["EHLO client.example"]
    for size in (1990, 1170, 1250):
        dialogue += [*envelope, "DATA", message(size) + "."]
    dialogue += [*envelope, "RCPT TO:<abuse@localhost>", bdat(message(1090))]
    dialogue += [*envelope, "RCPT TO:<abuse@localhost>", bdat(message(1250))]
    dialogue += [*envelope, bdat(message(1990)), "QUIT"]
    both = Played(start_smtpd, dialogue, "message_size_limit = 2000\n")
    wanted = r": client=|size limit exceeded|close error|disconnect from unknown\[127\.0\.0\.2"
    expected = _transaction_lines(both.theirs, wanted)
    assert expected.count("warning: mail_stream_cleanup: close error") == 4, expected
    queued = functools.partial(re.sub, r"queued as \w+", "queued as QID")
    assert [queued(r) for r in both.our_replies[1:]] == [queued(r) for r in both.their_replies[1:]]
    assert _transaction_lines(both.ours, wanted) == expected


@pytest.mark.slow
def test_client_refused_at_connect_without_delay_reject_as_postfix(start_smtpd) -> None:
    """smtpd_delay_reject = no: a client smtpd_client_restrictions refuses gets the reject
    as its greeting, then "503 5.7.0 Error: access denied" for every command but QUIT
    (RFC 5321 3.1), a CONNECT reject line and every command counted as failed. We let it
    talk and refused only its RCPT."""
    main_cf = (
        "smtpd_delay_reject = no\n"
        "smtpd_client_restrictions = check_client_access inline:{ {127.0.0.2=REJECT no client} }\n"
    )
    dialogue = [
        "EHLO client.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "BOGUS",
        "NOOP",
        "RSET",
        "QUIT",
    ]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[1] == "503 5.7.0 Error: access denied for unknown[127.0.0.2]"
    assert both.our_replies == both.their_replies

    def session(lines: list[str]) -> list[str]:
        return [
            re.sub(r"^.*?postfix/smtpd\[\d+\]: ", "", ln)
            for ln in lines
            if "127.0.0.2]" in ln and ("reject:" in ln or "disconnect" in ln)
        ]

    assert session(both.ours) == session(both.theirs)


def _final_replies(port: int, commands: list[str]) -> list[str]:
    """The last line of each reply to `commands` (after the greeting) from 127.0.0.2."""
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    try:
        raw.reply()
        out = [raw.cmd(command) for command in commands]
        return [line for reply in out for line in reply.splitlines() if " " in line[:4]]
    finally:
        raw.close()


def _same_final_replies(start_smtpd: Any, main_cf: str, commands: list[str]) -> list[str]:
    """_final_replies() from real Postfix, after checking that ours are the same."""
    with running_postfix(main_cf) as (port, _d):
        theirs = _final_replies(port, commands)
    assert _final_replies(start_smtpd(main_cf).port, commands) == theirs
    return theirs


@pytest.mark.slow
def test_pattern_tables_see_the_whole_string_only_as_postfix(start_smtpd, tmp_path: Path) -> None:
    """access(5), virtual(5), relocated(5): "Each pattern is a regular expression that is
    applied to the entire [client hostname, IP address or] address being looked up": rules
    that match only a domain, a parent domain or network, `@domain`, `user@` or the address
    without its extension never fire in a regexp table (Postfix gives it no partial key),
    while a fixed table after it still answers them; relay_domains given as a regexp table
    matches the domain, not its subdomains. Replies word for word as Postfix 3.7's."""
    tables = {
        "relay.re": "/^example\\.com$/ OK\n",
        "client.re": "/^127\\.0\\.0$/ REJECT client network\n/^127$/ REJECT client net\n",
        "helo.re": "/^example\\.com$/ REJECT helo parent\n"
        "/^full\\.helo\\.example$/ REJECT helo full\n",
        "sender.re": "/^example\\.org$/ REJECT sender domain\n/^s@$/ REJECT sender localpart\n"
        "/^bad@example\\.org$/ REJECT sender full\n",
        "rcpt.re": "/^example\\.com$/ REJECT rcpt domain\n/^\\.?com$/ REJECT rcpt parent\n"
        "/^tag@example\\.com$/ REJECT rcpt unextended\n/^who@$/ REJECT rcpt localpart\n"
        "/^full@example\\.com$/ REJECT rcpt full\n",
        "rcpt": "tag@example.net REJECT fixed unextended\nfixed@ REJECT fixed localpart\n"
        "example.org REJECT fixed domain\n",
        "vmailbox.re": "/^@virtual\\.example$/ x\n/^virtual\\.example$/ x\n"
        "/^info@virtual\\.example$/ x\n",
        "relocated.re": "/^@example\\.net$/ domain@elsewhere.example\n"
        "/^moved@example\\.net$/ moved@elsewhere.example\n",
    }
    for name, text in tables.items():
        (tmp_path / name).write_text(text)
    t = tmp_path
    main_cf = (
        "recipient_delimiter = +\n"
        f"relay_domains = regexp:{t}/relay.re, example.net, example.org\n"
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
        f"smtpd_client_restrictions = check_client_access regexp:{t}/client.re\n"
        f"smtpd_helo_restrictions = check_helo_access regexp:{t}/helo.re\n"
        f"smtpd_sender_restrictions = check_sender_access regexp:{t}/sender.re\n"
        f"smtpd_recipient_restrictions = check_recipient_access regexp:{t}/rcpt.re,"
        f" check_recipient_access texthash:{t}/rcpt\n"
        "virtual_mailbox_domains = virtual.example\n"
        f"virtual_mailbox_maps = regexp:{t}/vmailbox.re\n"
        f"relocated_maps = regexp:{t}/relocated.re\n"
    )
    rcpts = [
        "u@example.com",
        "u@sub.example.com",
        "tag+x@example.com",
        "who@example.com",
        "full@example.com",
        "tag+x@example.net",
        "fixed@example.net",
        "u@example.org",
        "moved@example.net",
        "other@example.net",
        "who@virtual.example",
        "info@virtual.example",
    ]

    commands = [
        "EHLO mail.example.com",
        "MAIL FROM:<s@example.org>",
        *[f"RCPT TO:<{r}>" for r in rcpts],
        "RSET",
        "MAIL FROM:<bad@example.org>",
        "RCPT TO:<u@example.com>",
        "EHLO full.helo.example",
        "MAIL FROM:<s@example.org>",
        "RCPT TO:<u@example.com>",
    ]
    theirs = _same_final_replies(start_smtpd, main_cf, commands)
    # Only the full-string rules of the pattern tables fired; the fixed table answered its
    # partial keys.
    rejects = [line for line in theirs if line[0] == "5"]
    assert [line.rsplit(": ", 1)[1] for line in rejects] == [
        "Relay access denied",
        "rcpt full",
        "fixed unextended",
        "fixed localpart",
        "fixed domain",
        "User has moved to moved@elsewhere.example",
        "User unknown in virtual mailbox table",
        "sender full",
        "helo full",
    ], "\n".join(theirs)


@pytest.mark.slow
def test_junk_commands_past_the_limit_count_as_errors_as_postfix(start_smtpd) -> None:
    """Past smtpd_junk_command_limit, each HELO, EHLO, RSET, NOOP, VRFY or ETRN counts as
    an error, until the hard error limit ends the session (MAIL does not reset it)."""
    main_cf = (
        "smtpd_junk_command_limit = 3\nsmtpd_hard_error_limit = 4\nsmtpd_error_sleep_time = 0\n"
    )
    dialogue = ["NOOP", "NOOP", "RSET", "VRFY postmaster@localhost", "EHLO client.example"]
    dialogue += ["HELO client.example", "NOOP", "MAIL FROM:<a@example.org>", "NOOP", "NOOP"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[-1] == "421 4.7.0 mx.example.test Error: too many errors"
    # The greeting names mail_name, which differs on purpose.
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.fixture(scope="module")
def xclient_postfix() -> Iterator[int]:
    with running_postfix(XCLIENT_MAIN_CF) as (port, _d):
        yield port


@pytest.mark.slow
@pytest.mark.parametrize("script", xclient_scripts())
def test_xclient_dialogue_against_real_postfix(xclient_postfix: int, script: str) -> None:
    raw = Raw("127.0.0.1", xclient_postfix, source="127.0.0.2")
    try:
        run_dialogue(raw, XCLIENT_DIALOGUES / script, mail_name="Postfix")
    finally:
        raw.close()


def _session_lines(lines: list[str]) -> list[str]:
    """smtpd's connect, reject, "client=" and disconnect lines, without the syslog prefix
    and with each queue ID replaced by its order of appearance."""
    # Not the connection running_postfix made to see Postfix listening.
    session = [ln for ln in lines if "[127.0.0.1]" not in ln]
    return _transaction_lines(session, r"connect from |: reject: |: client=")


@pytest.mark.slow
def test_xclient_session_as_postfix(start_smtpd) -> None:
    """XCLIENT replaces the client for the rest of the session: no new "connect from"
    line, the restrictions, reject lines, "client=" (LOGIN as sasl_method=XCLIENT) and
    "disconnect from" (where a successful XCLIENT counts as tried only) name the new one,
    which may not use XCLIENT itself."""
    dialogue = [
        "EHLO client.example",
        "XCLIENT NAME=spike.example ADDR=10.0.0.1 PORT=4321 PROTO=esmtp LOGIN=joe+40x",
        "EHLO after.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<x@example.net>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "Subject: one\r\n\r\nbody\r\n.",
        "XCLIENT ADDR=127.0.0.3",
        "QUIT",
    ]
    both = Played(start_smtpd, dialogue, XCLIENT_MAIN_CF, client="spike.example[10.0.0.1]")
    # Queue IDs differ, and so do the greetings' mail_name (on purpose).
    different = re.compile(r"(?<=queued as )[0-9A-F]+|(?<=^220 mx.example.test ESMTP ).*")

    def replies(played: list[str]) -> list[str]:
        return [different.sub("X", reply) for reply in played]

    assert replies(both.our_replies) == replies(both.their_replies)
    expected = _session_lines(both.theirs)
    assert expected[0] == "connect from unknown[127.0.0.2]" and len(expected) == 4, expected
    assert (
        expected[2]
        == "QID1: client=spike.example[10.0.0.1], sasl_method=XCLIENT, sasl_username=joe@x"
    )
    assert _session_lines(both.ours) == expected


@pytest.mark.slow
def test_xclient_client_refused_at_greeting_as_postfix(start_smtpd) -> None:
    """smtpd_delay_reject = no: the client XCLIENT names meets smtpd_client_restrictions
    at the new greeting, logged as a reject of XCLIENT; then every command but QUIT is
    'access denied' to it."""
    main_cf = (
        XCLIENT_MAIN_CF + "smtpd_delay_reject = no\n"
        "smtpd_client_restrictions = check_client_access inline:{ {10.9.9.9=REJECT no client} }\n"
    )
    dialogue = ["EHLO x", "XCLIENT ADDR=10.9.9.9 NAME=bad.example", "EHLO y", "MAIL FROM:<a@b>"]
    dialogue.append("QUIT")
    both = Played(start_smtpd, dialogue, main_cf, client="bad.example[10.9.9.9]")
    assert both.their_replies[2].startswith("554 5.7.1 <bad.example[10.9.9.9]>: Client host ")
    assert both.our_replies[1:] == both.their_replies[1:]
    assert _session_lines(both.ours) == _session_lines(both.theirs)


def _postcat_views(postcat: subprocess.CompletedProcess, qid: str) -> tuple[dict, list[str]]:
    """(the named attributes, the header lines) of one `postcat -e -h` output, the queue
    ID as QID, dates, the Message-Id and mail_name left out."""
    assert postcat.returncode == 0, postcat.stderr
    attrs: dict[str, str] = {}
    header: list[str] = []
    in_header = False
    for line in postcat.stdout.replace(qid, "QID").splitlines():
        if line.startswith("named_attribute: "):
            name, _, value = line[len("named_attribute: ") :].partition("=")
            attrs[name] = value
        elif line.startswith("*** MESSAGE CONTENTS"):
            in_header = True
        elif in_header and (not line or line.startswith("***")):
            in_header = False
        elif in_header:
            line = re.sub(r"; .*", ";", line).replace("(oxipost)", "(Postfix)")
            header.append(re.sub(r"^(Message-Id|Date): .*", r"\1:", line))
    return attrs, header


@pytest.mark.slow
def test_xforward_queue_files_as_postfix(start_smtpd) -> None:
    """XFORWARD's attributes last one transaction (a message, or until RSET): the
    "client=... orig_queue_id=... orig_client=..." lines, the client the queue file
    carries for qmgr and the delivery agents (log_client_*) and the one that talked to
    us (client_*), its log_ident and rewrite_context (SOURCE, which decides whether cleanup adds
    the missing headers), and a Received: header naming the client that talked to us,
    all as Postfix 3.7's (postcat -e -h)."""
    dialogue = [
        "EHLO client.example",
        "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=1234 PROTO=ESMTP"
        " HELO=spike.porcupine.org",
        "XFORWARD IDENT=ABC123 SOURCE=LOCAL",
    ]
    message = ["RCPT TO:<postmaster@localhost>", "DATA", "Subject: s\r\n\r\nbody\r\n."]
    dialogue += ["MAIL FROM:<a@example.org>", "RCPT TO:<x@example.net>", *message]
    dialogue += ["MAIL FROM:<b@example.org>", *message]
    dialogue += ["XFORWARD NAME=only.example", "MAIL FROM:<c@example.org>"]
    dialogue += ["RCPT TO:<postmaster@localhost>", "RSET", "MAIL FROM:<d@example.org>", *message]
    dialogue += [
        "XFORWARD NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE] PROTO=[UNAVAILABLE]"
        " HELO=[UNAVAILABLE] IDENT=[UNAVAILABLE] SOURCE=[UNAVAILABLE]",
        "MAIL FROM:<e@example.org>",
        *message,
        "QUIT",
    ]
    theirs, ours = _queued_on_both(start_smtpd, XCLIENT_MAIN_CF, _commands(dialogue), 5, "-e", "-h")
    assert [q.client for q in ours] == [q.client for q in theirs]
    assert theirs[0].client == (
        "client=unknown[127.0.0.2], orig_queue_id=ABC123,"
        " orig_client=spike.porcupine.org[168.100.189.2]"
    )
    # The message of only.example was dropped at RSET.
    their_files = [_postcat_views(q.postcat, q.qid) for q in theirs if "only" not in q.client]
    our_files = [_postcat_views(q.postcat, q.qid) for q in ours if "only" not in q.client]
    assert len(our_files) == len(their_files) == 4
    for number, ((our_attrs, our_header), (their_attrs, their_header)) in enumerate(
        zip(our_files, their_files, strict=True)
    ):
        for name in ("client_name", "client_address", "helo_name", "protocol_name"):
            for kept in (name, "log_" + name):
                assert our_attrs.get(kept) == their_attrs.get(kept), (number, kept)
        if number in (0, 3):  # the messages after XFORWARD
            for name in ("log_ident", "rewrite_context", "log_message_origin"):
                assert our_attrs.get(name) == their_attrs.get(name), (number, name)
        assert our_header == their_header, number
    assert their_files[0][0]["log_ident"] == "ABC123"
    assert their_files[3][0]["rewrite_context"] == "local"


def _envelope_view(queued: Queued) -> list[str]:
    """postcat -e's records and markers with what differs between two runs made alike: the
    queue ID, the times, the ports, and the sizes and offset of the content (the queue
    IDs in its headers differ in length; the offset is Postfix's file layout's)."""
    assert queued.postcat.returncode == 0, queued.postcat.stderr
    out = []
    for line in queued.postcat.stdout.splitlines():
        if line.startswith("message_size:"):
            fields = line.split()[1:]
            fields[0] = fields[1] = fields[4] = "N"
            line = "message_size: " + " ".join(fields)
        line = re.sub(r"^(message_arrival_time|create_time): .*", r"\1: TIME", line)
        ports = r"^(named_attribute: (log_client_port|client_port|server_port))=\d+"
        line = re.sub(ports, r"\1=PORT", line)
        out.append(line.replace(queued.qid, "QID"))
    return out


@pytest.mark.slow
def test_queue_file_envelope_records_as_postfix(start_smtpd) -> None:
    """The envelope records smtpd has cleanup write, in Postfix 3.7's order and form as
    postcat -e shows them: message_size's six fields (qmgr's options from NOTIFY=, the
    SMTPUTF8 flag), log_ident and rewrite_context, the DSN attributes, BODY='s encoding,
    the client for logging (XFORWARD's when given) and the one that talked to us with
    its reverse name, the server address and port and the address family, and each
    recipient's notify_flags and dsn_orig_rcpt. And the bodies (postcat -b) as smtp_get
    reads lines: every <CR> before a line's <LF> dropped, but one that ends a piece of
    line_length_limit bytes not followed by the <LF> (".<CR><CR><LF>" ends DATA), the same
    for BDAT, where a bare <LF> ends a line too and a last line without one is queued as
    a line."""
    message = ["DATA", "Subject: s\r\n\r\nbody\r\n."]
    long_lines = "x" * 2047 + "\r\r\n" + "y" * 2046 + "\r\r\r\r\nz" + "\r" * 2100 + "\n"
    dialogue = [
        "EHLO client.example",
        "MAIL FROM:<a@example.org> RET=HDRS ENVID=abc SIZE=100",
        "RCPT TO:<postmaster@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.example",
        "RCPT TO:<Postmaster@localhost> NOTIFY=DELAY",
        *message,
        "MAIL FROM:<b@example.org> BODY=8BITMIME SMTPUTF8",
        "RCPT TO:<postmaster@localhost> NOTIFY=NEVER",
        *message,
        "XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=1234 PROTO=ESMTP"
        " HELO=spike.porcupine.org",
        "XFORWARD IDENT=ABC123 SOURCE=LOCAL",
        "MAIL FROM:<c@example.org> BODY=7BIT",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        f"Subject: s\r\r\n\r\nbody\r\r\r\n{long_lines}..\r\r\n.\r",
        "MAIL FROM:<d@example.org>",
        "RCPT TO:<postmaster@localhost>",
    ]
    chunk = f"Subject: b\r\n\r\nab\r\r\ncd\ref\nx\r\r\n{long_lines}last\r".encode()

    def play(raw: Raw, mail_name: str) -> None:
        _commands(dialogue)(raw, mail_name)
        raw.send(b"BDAT %d LAST\r\n%s" % (len(chunk), chunk))
        assert raw.reply().startswith("250 2.0.0 Ok: ")
        raw.cmd("QUIT")

    # Postfix 3.7's default (oxipost's is normalize, which keeps all but one of the <CR>s).
    main_cf = XCLIENT_MAIN_CF + "smtpd_forbid_bare_newline = no\n"
    theirs, ours = _queued_on_both(start_smtpd, main_cf, play, 4, "-e", "-b")
    assert len(ours) == len(theirs) == 4
    their_views = [_envelope_view(q) for q in theirs]
    for mine, view in zip([_envelope_view(q) for q in ours], their_views, strict=True):
        assert "\n".join(mine) == "\n".join(view)
    assert "named_attribute: server_port=PORT" in their_views[0], their_views[0]
    assert "named_attribute: client_name=unknown" in their_views[2], their_views[2]
    # The <CR> kept at the end of a piece is a stray one to cleanup (a space).
    assert "x" * 2047 + " " in their_views[2], their_views[2]
    assert their_views[3][-9:-6] == ["ab", "cd ef", "x"], their_views[3]
    assert their_views[3][-3] == "last ", their_views[3]


@pytest.mark.slow
@pytest.mark.parametrize("bare", ["normalize", "reject"])
def test_data_crs_with_bare_newline_detection_as_postfix(start_smtpd, bare: str) -> None:
    """DATA with smtpd_forbid_bare_newline on (oxipost's default normalize, or reject): as
    in Postfix 3.7.11's smtp_get only the <CR> of a line's <CR><LF> goes, the <CR>s before
    it stay (stray ones, spaces to cleanup), so ".<CR><CR><LF>" is a line of content, not
    the end; ours dropped them all, as with it off."""
    dialogue = [
        "EHLO client.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "Subject: s\r\r\n\r\nab\r\r\ncd\r\r\r\n..\r\r\n.\r\r\nx\r\n.",
        "MAIL FROM:<b@example.org>",
        "QUIT",
    ]
    main_cf = f"smtpd_forbid_bare_newline = {bare}\n"
    (theirs,), (ours,) = _queued_on_both(start_smtpd, main_cf, _commands(dialogue), 1, "-b")
    assert theirs.postcat.stdout.splitlines()[-5:] == ["ab ", "cd  ", ". ", " ", "x"], theirs
    assert ours.postcat.stdout == theirs.postcat.stdout


@pytest.mark.slow
def test_xclient_and_xforward_ipv6_addresses_as_postfix(start_smtpd) -> None:
    """With IPv6 in inet_protocols, XCLIENT and XFORWARD take "IPv6:" addresses: the
    log lines name the bare address, the Received: header the address literal."""
    main_cf = XCLIENT_MAIN_CF + "inet_protocols = all\n"
    dialogue = [
        "XCLIENT ADDR=IPv6:2001:db8::1 NAME=v6.example",
        "EHLO client.example",
        "XFORWARD ADDR=IPv6:2001:db8::2 NAME=up.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<postmaster@localhost>",
        "DATA",
        "Subject: x\r\n\r\nbody\r\n.",
        "QUIT",
    ]

    def received(postcat: subprocess.CompletedProcess) -> str:
        return next(ln for ln in postcat.stdout.splitlines() if ln.startswith("Received: "))

    (theirs,), (ours,) = _queued_on_both(start_smtpd, main_cf, _commands(dialogue), 1, "-h")
    assert ours.client == theirs.client
    assert theirs.client == "client=v6.example[2001:db8::1], orig_client=up.example[2001:db8::2]"
    their_received = received(theirs.postcat)
    assert received(ours.postcat) == their_received
    assert their_received == "Received: from client.example (v6.example [IPv6:2001:db8::1])"


@pytest.mark.slow
def test_xforward_client_in_cleanups_log_as_postfix(start_smtpd, tmp_path: Path) -> None:
    """cleanup's lines about a message name the client XFORWARD gave, as Postfix's
    log_message_origin (the name alone when there is no address) and its protocol as
    given."""
    (tmp_path / "hc").write_text("/^Subject: warn/ WARN look\n")
    main_cf = f"{XCLIENT_MAIN_CF}header_checks = regexp:{tmp_path}/hc\n"
    message = ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "DATA"]
    message.append("Subject: warn\r\n\r\nbody\r\n.")
    dialogue = ["EHLO client.example", "XFORWARD NAME=only.example PROTO=LMTP HELO=h.example"]
    dialogue += [*message, "XFORWARD NAME=up.example ADDR=192.0.2.1 PROTO=ESMTP", *message]
    dialogue += ["XFORWARD IDENT=X1", *message, "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)

    def warnings(lines: list[str]) -> list[str]:
        return [ln.split(": warning: ", 1)[1] for ln in lines if ": warning: header " in ln]

    expected = warnings(both.theirs)
    assert expected[0] == (
        "header Subject: warn from only.example; from=<a@example.org> to=<postmaster@localhost>"
        " proto=LMTP helo=<h.example>: look"
    )
    assert len(expected) == 3 and warnings(both.ours) == expected


@pytest.mark.slow
def test_xclient_hosts_matched_by_name_as_postfix(start_smtpd) -> None:
    """smtpd_authorized_xclient_hosts is a host name and address list, judged again for
    the client XCLIENT names: '.domain' takes the names below it, a bare name itself only
    (parent_domain_matches_subdomains does not name the parameter), a table is asked for
    the name, then the address."""
    main_cf = (
        f"{GOLDEN_MAIN_CF}smtpd_authorized_xclient_hosts = 127.0.0.2, .trusted.example,"
        " exact.example, inline:{ {tabled.example=OK} {10.0.0.9=OK} }\n"
    )
    dialogue = ["XCLIENT NAME=a.trusted.example ADDR=10.0.0.5", "EHLO one.example"]
    dialogue += ["XCLIENT NAME=exact.example ADDR=10.0.0.6", "EHLO two.example"]
    dialogue += ["XCLIENT NAME=tabled.example ADDR=10.0.0.7", "EHLO three.example"]
    dialogue += ["XCLIENT NAME=[UNAVAILABLE] ADDR=10.0.0.9", "EHLO four.example"]
    dialogue += ["XCLIENT NAME=sub.exact.example ADDR=10.0.0.8", "EHLO five.example"]
    dialogue += ["XCLIENT ADDR=127.0.0.2", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf, client="sub.exact.example[10.0.0.8]")
    offered = [("XCLIENT " in reply) for reply in both.their_replies[2:11:2]]
    assert offered == [True, True, True, True, False], both.their_replies
    assert both.their_replies[-2] == "550 5.7.0 Error: insufficient authorization"
    # XCLIENT's greetings name mail_name, which differs on purpose.
    ours = [reply.replace("ESMTP oxipost", "ESMTP Postfix") for reply in both.our_replies]
    assert ours == both.their_replies


@pytest.mark.slow
def test_xclient_name_lookup_status_judged_as_postfix(start_smtpd) -> None:
    """XCLIENT's NAME and REVERSE_NAME stand for the name lookups: [TEMPUNAVAIL] is a
    lookup that failed for now, [UNAVAILABLE] one that found nothing, a name one that
    found it; reject_unknown_client_hostname and reject_unknown_reverse_client_hostname
    judge them as if the client had connected."""
    main_cf = (
        f"{GOLDEN_MAIN_CF}smtpd_authorized_xclient_hosts = 127.0.0.0/8, 10.0.0.0/8\n"
        "smtpd_client_restrictions = reject_unknown_client_hostname,"
        " reject_unknown_reverse_client_hostname\n"
    )
    dialogue = []
    for attrs in (
        "NAME=[TEMPUNAVAIL] ADDR=10.0.0.1",
        "NAME=[UNAVAILABLE] ADDR=10.0.0.2",
        "NAME=good.example REVERSE_NAME=[TEMPUNAVAIL] ADDR=10.0.0.3",
        "NAME=good.example REVERSE_NAME=[UNAVAILABLE] ADDR=10.0.0.4",
        "NAME=good.example ADDR=10.0.0.5",
    ):
        dialogue += [f"XCLIENT {attrs}", "MAIL FROM:<a@example.org>"]
        dialogue += ["RCPT TO:<postmaster@localhost>", "RSET"]
    dialogue.append("QUIT")
    both = Played(start_smtpd, dialogue, main_cf, client="good.example[10.0.0.5]")
    rcpts = both.their_replies[3::4]
    assert [reply[:3] for reply in rcpts] == ["450", "450", "450", "450", "250"], rcpts
    ours = [reply.replace("ESMTP oxipost", "ESMTP Postfix") for reply in both.our_replies]
    assert ours == both.their_replies
    assert _session_lines(both.ours) == _session_lines(both.theirs)


@pytest.mark.slow
def test_message_id_logged_for_every_message_kept_as_postfix(start_smtpd) -> None:
    """cleanup logs "QID: message-id=<...>" from the header, and "message-id=<>" for a
    message without one that it does not give one (a remote client's)."""
    dialogue = []
    for head in ("Subject: none", "Message-ID: <abc@def.example>", "Resent-From: a@b.example"):
        dialogue += ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "DATA"]
        dialogue.append(f"{head}\r\n\r\nbody\r\n.")
    both = Played(start_smtpd, ["EHLO client.example", *dialogue, "QUIT"], "")

    def message_ids(lines: list[str]) -> list[str]:
        return [ln.split("message-id=", 1)[1] for ln in lines if ": message-id=" in ln]

    assert message_ids(both.theirs) == ["<>", "<abc@def.example>", "<>"]
    assert message_ids(both.ours) == message_ids(both.theirs)


@pytest.mark.slow
def test_error_and_retry_transports_refused_at_rcpt_as_postfix(start_smtpd) -> None:
    """check_rcpt_maps: an address that resolves to the error transport is known to be
    undeliverable (550 5.1.1, or its text's DSN code), to the retry transport not now (450
    4.1.1); a bare "error" says "Address is undeliverable". A sender (with
    smtpd_reject_unlisted_sender) gets its status fitted by smtpd_dsn_fix, logged as
    "mapping DSN status 5.1.2 into Sender address status 5.1.8"."""
    main_cf = (
        "smtpd_reject_unlisted_sender = yes\n"
        "relay_domains = no.example later.example plain.example bare.example dsn.example"
        " gone.example\n"
        "transport_maps = inline:{ {no.example=error:no mail here}, "
        "{later.example=retry:try later}, {bare.example=error}, "
        "{dsn.example=error:5.7.1 go away}, {gone.example=error:5.1.2 gone} }\n"
    )
    rcpts = ["no", "later", "plain", "bare", "dsn", "gone"]
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    dialogue += [f"RCPT TO:<x@{d}.example>" for d in rcpts]
    for sender in ("s@gone.example", "s@no.example"):
        dialogue += ["RSET", f"MAIL FROM:<{sender}>", "RCPT TO:<x@plain.example>"]
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
    assert both.their_replies[3] == (
        "550 5.1.1 <x@no.example>: Recipient address rejected: no mail here"
    )
    assert both.our_replies[1:] == both.their_replies[1:]
    wanted = r"mapping DSN|: reject: "
    expected = _transaction_lines(both.theirs, wanted)
    assert "mapping DSN status 5.1.2 into Sender address status 5.1.8" in expected
    assert _transaction_lines(both.ours, wanted) == expected


ACTIONS_CF = (
    "smtpd_recipient_restrictions = check_recipient_access inline:{ {hold@localhost=HOLD}, "
    "{held@localhost=HOLD my reason}, {bcc1@localhost=BCC copy1@localhost}, "
    "{bcc2@localhost=BCC copy2@localhost}, {gone@localhost=521 5.7.1 go away} }, "
    "permit_mynetworks, reject_unauth_destination\n"
)
MESSAGE = ["DATA", "Subject: s\r\n\r\nbody\r\n."]


def _without_queue_ids(replies: list[str]) -> list[str]:
    """The replies after the greeting, "queued as QID" without the ID."""
    return [re.sub(r"queued as \w+", "queued as QID", reply) for reply in replies[1:]]


@pytest.mark.slow
def test_access_hold_logged_once_per_transaction_as_postfix(start_smtpd) -> None:
    """access(5) HOLD: smtpd logs "QID: hold: RCPT from ...: <addr>: Recipient address
    triggers HOLD action" (or the table's text) with log_whatsup's attributes, once per
    transaction (a later HOLD is silent), under NOQUEUE before the queue file is open;
    RSET forgets it."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<postmaster@localhost>", "RCPT TO:<hold@localhost>"]
    dialogue += ["RCPT TO:<held@localhost>", *MESSAGE]
    dialogue += ["MAIL FROM:<b@example.org>", "RCPT TO:<held@localhost>", "RSET"]
    dialogue += ["MAIL FROM:<c@example.org>", "RCPT TO:<postmaster@localhost>", *MESSAGE]
    both = Played(start_smtpd, [*dialogue, "QUIT"], ACTIONS_CF)
    wanted = r": client=|: hold: "
    expected = _transaction_lines(both.theirs, wanted)
    assert expected[:2] == [
        "QID1: client=unknown[127.0.0.2]",
        "QID1: hold: RCPT from unknown[127.0.0.2]: <hold@localhost>: Recipient address"
        " triggers HOLD action; from=<a@example.org> to=<hold@localhost> proto=ESMTP"
        " helo=<client.example>",
    ]
    assert len(expected) == 5, expected
    assert _transaction_lines(both.ours, wanted) == expected
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)


@pytest.mark.slow
def test_access_hold_queues_on_hold_as_postfix(start_smtpd) -> None:
    """The message of a transaction an access(5) HOLD touched is held (Postfix's cleanup
    puts it in the hold queue; ours carries the hold attribute, on which qmgr moves it
    there), with the table's text or without; RSET forgets a HOLD."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<held@localhost>"]
    dialogue += ["RSET", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", *MESSAGE]
    dialogue += ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>"]
    dialogue += ["RCPT TO:<hold@localhost>", *MESSAGE, "QUIT"]
    theirs, ours = _queued_on_both(start_smtpd, ACTIONS_CF, _commands(dialogue), 3)
    # The first queue file went with RSET.
    assert [q.postcat.returncode for q in theirs] == [q.postcat.returncode for q in ours]
    their_queues = [q.postcat.stdout.split()[3].split("/")[0] for q in theirs[1:]]
    assert their_queues == ["incoming", "hold"]
    our_held = ["named_attribute: hold=" in q.postcat.stdout for q in ours[1:]]
    assert our_held == [queue == "hold" for queue in their_queues]


@pytest.mark.slow
def test_access_521_reply_ends_the_session_as_postfix(start_smtpd) -> None:
    """A 521 reply (an access(5) "521 ..." here) ends the session, as any 421/521 Postfix's
    smtpd sends: the reject line, then "disconnect from" with the RCPT counted as failed;
    the command after it is never answered."""
    for rcpts in (["RCPT TO:<postmaster@localhost>"], []):
        dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", *rcpts]
        both = Played(start_smtpd, [*dialogue, "RCPT TO:<gone@localhost>", "NOOP"], ACTIONS_CF)
        assert both.their_replies[-2:] == [
            "521 5.7.1 <gone@localhost>: Recipient address rejected: go away",
            "(closed)",
        ]
        assert both.our_replies[1:] == both.their_replies[1:]
        wanted = r": client=|: reject: |disconnect from unknown\[127.0.0.2\]"
        assert _transaction_lines(both.ours, wanted) == _transaction_lines(both.theirs, wanted)


def _entries(pairs: dict[str, str]) -> str:
    return "inline:{ " + ", ".join(f"{{{k}={v}}}" for k, v in pairs.items()) + " }"


ACCESS_RESULTS_SENDERS = {
    "s1@example.org": "550 5.1.1 no such sender",
    "s2@example.org": "REJECT 5.1.2 bad domain",
    "s3@example.org": "450 5.1.1 later",
    "s4@example.org": "550 5.1.5 valid",
    "s5@example.org": "550 5.7.1 policy",
    "s6@example.org": "DEFER_IF_PERMIT 4.1.1 not now",
}
ACCESS_RESULTS_RECIPIENTS = {
    "r1@localhost": "550 5.1.7 sender syntax",
    "r2@localhost": "550 5.1.9 unknown detail",
    "r3@localhost": "DEFER 4.1.8 later",
    "r4@localhost": "550",
    "r5@localhost": "12345",
    "f1@localhost": "FILTER",
    "f2@localhost": "FILTER nowhere",
    "f3@localhost": "FILTER smtp:[127.0.0.1]:10025",
    "d1@localhost": "REDIRECT",
    "d2@localhost": "REDIRECT nobody",
    "d3@localhost": "REDIRECT other@localhost",
    "b1@localhost": "BCC",
    "b2@localhost": "BCC nobody",
    "p1@localhost": "PREPEND",
    "p2@localhost": "PREPEND not a header",
    "p3@localhost": "PREPEND X-Ok: fine",
    "p4@localhost": "PREPEND X-Bad : fine",
}


@pytest.mark.slow
def test_access_results_fixed_and_checked_as_postfix(start_smtpd) -> None:
    """access(5) results as Postfix 3.7's check_table_result takes them. An address status
    (X.1.Y) is made to fit what is refused (smtpd_dsn_fix: a sender's 5.1.1 is 5.1.7, a
    recipient's 5.1.7 is 5.1.3, a HELO's 5.0.0; "mapping DSN status" logged), its class
    then the reply code's; a code without text and a number are OK; FILTER, REDIRECT,
    BCC and PREPEND without a valid value are skipped with a warning about the entry."""
    main_cf = (
        "local_recipient_maps =\nsmtpd_error_sleep_time = 0\n"
        "smtpd_helo_restrictions = check_helo_access "
        + _entries({"bad.helo.example": "550 5.1.1 helo gone"})
        + "\nsmtpd_sender_restrictions = check_sender_access "
        + _entries(ACCESS_RESULTS_SENDERS)
        + "\nsmtpd_recipient_restrictions = check_recipient_access "
        + _entries(ACCESS_RESULTS_RECIPIENTS)
        + ", permit_mynetworks, reject_unauth_destination\n"
    )
    dialogue = ["EHLO bad.helo.example", "MAIL FROM:<a@example.org>", "RCPT TO:<x@localhost>"]
    dialogue.append("EHLO client.example")
    for sender in ACCESS_RESULTS_SENDERS:
        dialogue += [f"MAIL FROM:<{sender}>", "RCPT TO:<x@localhost>", "RSET"]
    dialogue.append("MAIL FROM:<a@example.org>")
    dialogue += [f"RCPT TO:<{rcpt}>" for rcpt in ACCESS_RESULTS_RECIPIENTS]
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
    wanted = r"mapping DSN|access table|: reject: |: (filter|redirect|bcc): "
    expected = _transaction_lines(both.theirs, wanted)
    assert "mapping DSN status 5.1.1 into Helo command status 5.0.0" in expected
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
def test_discard_ehlo_keyword_maps_that_fail_as_postfix(start_smtpd) -> None:
    """A smtpd_discard_ehlo_keyword_address_maps lookup that fails at connect leaves the
    EHLO keywords unknown: HELO still works, EHLO gets Postfix 3.7's "421 4.3.0 HOST Server
    local data error" after "don't know what EHLO features to announce to CLIENT" and ends
    the session (ours announced every keyword)."""
    main_cf = "smtpd_discard_ehlo_keyword_address_maps = fail:broken\n"
    dialogue = ["HELO a.example", "EHLO client.example", "MAIL FROM:<a@example.org>", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    wanted = r"connect from |fail:broken|EHLO|: reject: "
    # Not the connection running_postfix made to see Postfix listening.
    session = [ln for ln in both.theirs if "127.0.0.1" not in ln]
    expected = _transaction_lines(session, wanted)
    assert expected[-1] == "disconnect from unknown[127.0.0.2] helo=1 ehlo=0/1 commands=1/2"
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("param", "command"),
    [
        ("smtpd_authorized_verp_clients", "MAIL FROM:<a@example.org> XVERP"),
        ("smtpd_authorized_xclient_hosts", "XCLIENT NAME=client.example"),
        ("smtpd_authorized_xforward_hosts", "XFORWARD NAME=client.example"),
    ],
)
def test_authorized_clients_tables_that_fail_as_postfix(
    start_smtpd, param: str, command: str
) -> None:
    """A table in smtpd_authorized_verp_clients, _xclient_hosts or _xforward_hosts that
    cannot be read leaves Postfix 3.7 not knowing whether the client may use the
    feature: EHLO gets "don't know if EHLO feature X should be announced to CLIENT",
    XCLIENT and XFORWARD "don't know if command X should be allowed from CLIENT", each
    then "421 4.3.0 HOST Server local data error", which ends the session (MAIL's XVERP
    is refused as unsupported). Ours took the client for one not listed: EHLO left the
    keyword out and the commands were refused with 550. A keyword that
    smtpd_discard_ehlo_keywords discards is not looked up."""
    main_cf = f"{param} = fail:broken\nsmtpd_error_sleep_time = 0\n"
    wanted = r"connect from |fail:broken|don't know|: reject: |discarding"
    discard = "smtpd_discard_ehlo_keywords = verp, xclient, xforward\n"
    for dialogue, cf in (
        (["EHLO client.example", "QUIT"], main_cf),
        (["HELO client.example", command, "QUIT"], main_cf),
        (["EHLO client.example", "QUIT"], main_cf + discard),
    ):
        both = Played(start_smtpd, dialogue, cf)
        expected = _transaction_lines(_session_from(both.theirs), wanted)
        if cf == main_cf and dialogue[0].startswith("EHLO"):
            assert "421 4.3.0" in expected[-2], expected
        assert _transaction_lines(both.ours, wanted) == expected
        assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
@pytest.mark.parametrize("exceptions", ["127.0.0.2", "fail:broken"])
def test_sasl_exceptions_networks_as_postfix(start_smtpd, dovecot, exceptions: str) -> None:
    """smtpd_sasl_exceptions_networks: a client it lists is not offered AUTH at EHLO and
    may authenticate all the same; a table in it that cannot be read ends the session
    at EHLO with "don't know if EHLO feature AUTH should be announced to CLIENT" and 421,
    as Postfix 3.7's. Ours offered AUTH to every client, and logged "CLIENT:
    sasl_method=PLAIN, sasl_username=carol" after AUTH, a line Postfix's smtpd does not
    write (it names the method and user on the transaction's client= line only)."""
    path, _log = dovecot
    main_cf = (
        f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {path}\n"
        f"smtpd_sasl_exceptions_networks = {exceptions}\nsmtpd_error_sleep_time = 0\n"
    )
    plain = base64.b64encode(b"\0carol\0letmein").decode()
    dialogue = ["EHLO client.example", f"AUTH PLAIN {plain}", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    wanted = r"connect from |fail:broken|don't know|: reject: |sasl_method"
    expected = _transaction_lines(_session_from(both.theirs), wanted)
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]
    if exceptions == "fail:broken":
        assert both.their_replies[1].startswith("421 4.3.0"), both.their_replies
    else:
        assert "AUTH" not in both.their_replies[1] and both.their_replies[2].startswith("235")


@pytest.mark.slow
def test_long_commands_cut_as_postfix(start_smtpd) -> None:
    """A command line of line_length_limit (2048) bytes or more is cut there, the rest of
    the line skipped, and run as cut (a NOOP still 250, a MAIL FROM's cut parameter
    refused as given), after Postfix 3.7's "CLIENT: request longer than 2048: FIRST 30
    BYTES..." warning; ours refused it whole with 500 "command too long"."""
    mail = "MAIL FROM:<a@b.c> "
    dialogue = ["EHLO client.example", "NOOP " + "y" * 5000, "XYZZ" + "y" * 3000]
    dialogue += [mail + "X" * (n - len(mail)) for n in (2046, 2047, 2048, 2049)]
    dialogue += ["HELO " + "h" * 2100, "QUIT"]
    both = Played(start_smtpd, dialogue, "smtpd_error_sleep_time = 0\n")
    wanted = r"request longer|disconnect from unknown\[127\.0\.0\.2"
    expected = _transaction_lines(both.theirs, wanted)
    assert len(expected) == 6, expected
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]


PIPELINED = [
    [b"NOOP\r\nNOOP"],
    [b"QUIT\r\nNOOP"],
    [b"BDAT 5\r\nabcde"],
    [b"MAIL FROM:<a@b.c>\r\nRCPT TO:<root@localhost>"],
    [b"HELO x.example", b"QUIT\r\nNOOP"],
    [b"HELO x.example", b"MAIL FROM:<a@b.c>\r\nRCPT TO:<root@localhost>"],
    [b"EHLO x.example", b"MAIL FROM:<a@b.c>\r\nRCPT TO:<root@localhost>"],
    [b"EHLO x.example", b"QUIT\r\nNOOP"],
    [b"BDAT 5 LAST x\r\nabcde"],
    [b"HELO x.example", b"BDAT x\r\nabc"],
    [b"EHLO x.example", b"HELO x.example", b"MAIL FROM:<a@b.c>\r\nRCPT TO:<root@localhost>"],
    [b"EHLO x.example", b"HELO x.example", b"BDAT 5 LAST x\r\nabcde"],
]


@pytest.mark.slow
def test_unauthorized_pipelining_before_ehlo_as_postfix(tmp_path: Path) -> None:
    """With smtpd_forbid_unauth_pipelining = yes, before EHLO (none yet, or HELO; a HELO
    after EHLO keeps ESMTP) any command with more input behind it, QUIT and BDAT's chunk
    included, is refused with "554 5.5.0 Error: SMTP protocol synchronization" and ends
    the session, counted as tried, as Postfix 3.7's (BDAT's syntax is not judged first);
    after EHLO only a command that ends a group (not QUIT). Ours let a session without
    HELO pipeline anything but a group's end, and QUIT always."""
    main_cf = "smtpd_error_sleep_time = 0\nsmtpd_forbid_unauth_pipelining = yes\n"

    def play(port: int, sends: list[bytes]) -> list[str]:
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        replies = [raw.reply()[:3]]
        try:
            for data in sends:
                raw.send(data + b"\r\n")
                replies.append(raw.reply())
            replies.append(raw.cmd("NOOP"))
        except ConnectionError:
            replies.append("(closed)")
        finally:
            raw.close()
        return replies

    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with (
        running_postfix(main_cf + log_cf) as (port, d),
        running_smtpd(str(tmp_path), main_cf) as srv,
    ):
        theirs = [play(port, sends) for sends in PIPELINED]
        ours = [play(srv.port, sends) for sends in PIPELINED]
        refused = sum("554 5.5.0 Error: SMTP protocol synchronization" in r for r in theirs)
        assert refused == 8, theirs
        assert ours == theirs
        wanted = re.compile(r"improper command pipelining|disconnect from unknown\[127\.0\.0\.2")
        # Each side's lines once every session's are logged (a session the server ended
        # may be over for the client before its "disconnect from" line is written), in
        # sorted order: a session the client left without QUIT may be logged as over after
        # the next one, on either side.
        deadline = time.monotonic() + 10
        while True:
            expected = [_after_prefix(ln) for ln in (d / "maillog").read_text().splitlines()]
            expected = [ln for ln in expected if wanted.search(ln)]
            got = [ln for ln in srv.log if wanted.search(ln)]
            if len(expected) == len(got) == refused + len(PIPELINED):
                break
            assert time.monotonic() < deadline, (expected, got)
            time.sleep(0.05)
        assert sorted(got) == sorted(expected)


def _bdat_replies(port: int, pieces: list[bytes | str], source: str = "127.0.0.2") -> list[str]:
    """One session from `source`: EHLO, MAIL, RCPT, then each piece as a BDAT chunk (the
    last one LAST) or a command; the replies from the first BDAT on, queue IDs as QID."""
    raw = Raw("127.0.0.1", port, source=source)
    try:
        raw.reply()
        for command in ("EHLO x.example", "MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>"):
            raw.cmd(command)
        chunks = [p for p in pieces if isinstance(p, bytes)]
        replies = []
        for piece in pieces:
            if isinstance(piece, str):
                replies.append(raw.cmd(piece))
                continue
            last = " LAST" if piece is chunks[-1] else ""
            raw.send(f"BDAT {len(piece)}{last}\r\n".encode() + piece)
            replies.append(re.sub(r"queued as \w+", "queued as QID", raw.reply()))
        raw.cmd("QUIT")
        return replies
    finally:
        raw.close()


@pytest.mark.slow
@pytest.mark.parametrize("bare", ["no", "normalize"])
def test_bdat_size_reported_as_postfix(tmp_path: Path, bare: str) -> None:
    """The last BDAT's "250 2.0.0 Ok: N bytes queued as QID" counts as Postfix 3.7's
    act_size: each line with a CRLF (a bare LF's too, the CRs before it not), a last line
    without one as if it had it, a line over line_length_limit as pieces of it, each with
    its CRLF (one of line_length_limit bytes that ends in the line's CR is its last),
    lines stitched across chunks, <CR> runs too. Ours reported the bytes received. With
    smtpd_forbid_bare_newline on (oxipost's default) only the <CR> of a line's <CR><LF>
    goes, the others are queued: ours dropped them all, as with it off."""
    chunks = [[b"abcde"], [b"ab\r\ncd"], [b"ab\ncd\n"], [b"ab\r\r\n"], [b"x" * 5000]]
    chunks += [[b"x" * 2048 + b"\r\n"], [b"x" * 2047 + b"\r\n"], [b"ab\r", b"\ncd"]]
    chunks += [[b"a\r\n.\r\n"], [b"ab\r\r", b"\ncd"], [b"ab\r", b"\r\ncd"]]
    chunks += [[b"x" * 2047 + b"\r\r", b"\r\n"]]
    main_cf = f"smtpd_forbid_bare_newline = {bare}\n"
    with running_postfix(main_cf) as (port, _d), running_smtpd(str(tmp_path), main_cf) as srv:
        theirs = [_bdat_replies(port, list(pieces)) for pieces in chunks]
        assert theirs[0] == ["250 2.0.0 Ok: 7 bytes queued as QID"]
        crs = 1 if bare == "no" else 2
        assert theirs[3] == [f"250 2.0.0 Ok: {2 + crs + 1} bytes queued as QID"], theirs
        assert [_bdat_replies(srv.port, list(pieces)) for pieces in chunks] == theirs


@pytest.mark.slow
def test_bdat_size_limit_and_bare_newline_as_postfix(tmp_path: Path) -> None:
    """BDAT against message_size_limit and smtpd_forbid_bare_newline = reject, the replies
    and smtpd's log lines as Postfix 3.7.11's. A chunk is refused ("552 5.3.4 Chunk exceeds
    message size limit", with a warning) when it would take what was queued (act_size:
    <CR>s dropped, pieces of long lines with their CRLF) over the limit; ours counted the
    bytes received. A line ending in a bare <LF> refuses the chunk it ends in ("BDAT
    content", the rest of the message discarded) or the message at its LAST chunk
    ("END-OF-MESSAGE"), the session going on; ours took it."""
    main_cf = (
        "message_size_limit = 10000\nsmtpd_forbid_bare_newline = reject\n"
        "smtpd_forbid_bare_newline_exclusions = 127.0.0.3\n"
        "smtpd_forbid_bare_newline_reject_code = 554\n"
    )
    # From the excluded client, all the <CR>s before an <LF> go.
    crs = b"S: a\r\n\r\n" + (b"x" * 10 + b"\r" * 2000 + b"\n") * 4
    sessions: list[tuple[str, list[bytes | str]]] = [
        ("127.0.0.3", [crs, (b"y" * 998 + b"\r\n") * 2, b"z\r\n"]),
        ("127.0.0.2", [b"x" * 8193, b"y" * 1802, b"z\r\n"]),
        ("127.0.0.2", [b"a\r\n" * 3300, b"b" * 99 + b"\r\n"]),
        ("127.0.0.2", [b"S: a\r\n\r\na\nb\r\n", b"c\r\n", "RSET", "MAIL FROM:<a@b.c>"]),
        ("127.0.0.2", [b"S: a\r\n\r\nab\r\n", b"c\nd\r\n", "MAIL FROM:<a@b.c>"]),
        ("127.0.0.2", [b"S: a\r\n\r\nab", b"\ncd\r\n"]),
        ("127.0.0.2", [b"S: a\r\n\r\nab\r", b"\ncd\r\n"]),
        ("127.0.0.3", [b"S: a\r\n\r\na\nb\r\n", b"c\r\n"]),
    ]
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
        theirs = [_bdat_replies(port, pieces, source) for source, pieces in sessions]
        maillog = d / "maillog"
        their_log = _bdat_log(
            lambda: [t for _p, t in postfix_log_lines(maillog.read_text(), ["smtpd"])],
            len(sessions),
        )
    assert theirs[0][-1] == "250 2.0.0 Ok: 2059 bytes queued as QID", theirs
    assert theirs[1][1] == "552 5.3.4 Chunk exceeds message size limit", theirs
    assert theirs[2][1] == "552 5.3.4 Chunk exceeds message size limit", theirs
    assert theirs[3][:2] == [
        "554 5.5.2 mx.example.test Error: bare <LF> received",
        "551 5.0.0 Discarded 3 bytes after earlier error",
    ]
    assert their_log[0][2] == (
        "QID3: reject: BDAT content from unknown[127.0.0.2]: bare <LF> received;"
        " from=<a@b.c> to=<root@localhost> proto=ESMTP helo=<x.example>"
    )
    with running_smtpd(str(tmp_path), main_cf) as srv:
        assert [_bdat_replies(srv.port, pieces, source) for source, pieces in sessions] == theirs
        assert _bdat_log(lambda: srv.log, len(sessions)) == their_log


def _data_replies(port: int, content: bytes, after: list[str]) -> list[str]:
    """One session from 127.0.0.2: EHLO, MAIL, RCPT, DATA with this content, then the
    commands `after`; the replies from the end of data on, queue IDs as QID, "(closed)"
    once the server has gone."""
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    try:
        raw.reply()
        for command in ("EHLO x.example", "MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>"):
            raw.cmd(command)
        assert raw.cmd("DATA").startswith("354 ")
        raw.send(content)
        replies = [re.sub(r"queued as \w+", "queued as QID", raw.reply())]
        for command in after:
            try:
                replies.append(raw.cmd(command))
            except OSError:
                replies.append("(closed)")
                break
        return replies
    finally:
        raw.close()


@pytest.mark.slow
@pytest.mark.parametrize("code", [550, 521])
def test_data_bare_newline_reject_as_postfix(tmp_path: Path, code: int) -> None:
    """DATA with smtpd_forbid_bare_newline = reject and a bare <LF> in the content, as
    Postfix 3.7.11: "CODE 5.5.2 HOST Error: bare <LF> received" at the end of data,
    logged as "reject: END-OF-MESSAGE", and the session goes on unless the code is 521.
    Ours ended the session whatever the code. Catalogue 16 of RELIABILITY.md."""
    main_cf = (
        f"smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_reject_code = {code}\n"
    )
    content = b"Subject: x\r\n\r\nline\n.\nmore\r\n.\r\n"
    after = ["MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>", "QUIT"]
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
        theirs = _data_replies(port, content, after)
        maillog = d / "maillog"
        their_log = _bdat_log(
            lambda: [t for _p, t in postfix_log_lines(maillog.read_text(), ["smtpd"])], 1
        )
    assert theirs[0] == f"{code} 5.5.2 mx.example.test Error: bare <LF> received", theirs
    with running_smtpd(str(tmp_path), main_cf) as srv:
        assert _data_replies(srv.port, content, after) == theirs
        assert _bdat_log(lambda: srv.log, 1) == their_log


def _bdat_log(lines: Callable[[], list[str]], sessions: int) -> tuple[list[str], list[str]]:
    """Once `sessions` sessions ended: smtpd's warnings and rejects in order, and its
    "disconnect" lines sorted (two Postfix processes may log theirs in either order)."""
    deadline = time.monotonic() + 20
    # Not running_postfix's look whether it listens, from 127.0.0.1.
    wanted = r"disconnect from unknown\[127\.0\.0\.[23]\]"
    while len(ended := _transaction_lines(lines(), wanted)) < sessions:
        assert time.monotonic() < deadline, ended
        time.sleep(0.05)
    return _transaction_lines(lines(), r"warning: |: reject: "), sorted(ended)


@pytest.mark.slow
def test_sender_login_checks_without_sasl_as_postfix(start_smtpd) -> None:
    """Without smtpd_sasl_auth_enable the smtpd_sender_login_maps checks decide nothing:
    each evaluation logs Postfix 3.7's "restriction `NAME' ignored: no SASL support"
    (reject_sender_login_mismatch as its authenticated and unauthenticated halves), at
    RCPT and VRFY alike. Ours refused an owned sender "not logged in"."""
    checks = [*SENDER_LOGIN_CHECKS[1:], SENDER_LOGIN_CHECKS[0]]
    main_cf = (
        "smtpd_sender_login_maps = inline:{{a@b.c=joe}}\n"
        f"smtpd_sender_restrictions = {', '.join(checks)}\n"
    )
    dialogue = ["EHLO c.example", "MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>", "VRFY root"]
    dialogue += ["RSET", "MAIL FROM:<>", "RCPT TO:<root@localhost>", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    wanted = r"ignored: no SASL|: reject: |disconnect from unknown\[127\.0\.0\.2"
    expected = _transaction_lines(both.theirs, wanted)
    assert "warning: restriction `reject_known_sender_login_mismatch' ignored" in str(expected)
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
def test_helo_literal_and_header_like_words_as_postfix(start_smtpd) -> None:
    """reject_non_fqdn_helo_hostname judges an address literal as an address, as Postfix
    3.7's generic_checks (reject_invalid_hostaddr: "501 5.5.2 <[1.2.3]>: Helo command
    rejected: invalid ip address"; ours let any literal pass); a command whose first word
    starts as a header ("From:ETRN", is_header) is message content: 221 "I can break
    rules, too", as for "Subject:" (ours only took a word ending in a colon)."""
    main_cf = "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"
    dialogue = ["EHLO [1.2.3]", "MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>"]
    dialogue += ["EHLO [1.2.3.4]", "MAIL FROM:<a@b.c>", "RCPT TO:<root@localhost>"]
    dialogue += ["From:ETRN @x", "NOOP"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[3].endswith("Helo command rejected: invalid ip address")
    assert both.their_replies[-2:] == [
        "221 2.7.0 Error: I can break rules, too. Goodbye.",
        "(closed)",
    ]
    assert both.our_replies[1:] == both.their_replies[1:]
    wanted = r": reject: |non-SMTP|disconnect from unknown\[127\.0\.0\.2"
    assert _transaction_lines(both.ours, wanted) == _transaction_lines(both.theirs, wanted)


CLIENT_DIALOGUE = ["EHLO x.example", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>"]


def _client_access_as_postfix(start_smtpd: Any, table: str, delay_reject: str) -> Played:
    """A session from 127.0.0.2 on both servers with smtpd_client_restrictions =
    check_client_access TABLE: the same replies, and the same lines about its access
    checks (which must be some); → the session."""
    main_cf = (
        f"smtpd_delay_reject = {delay_reject}\n"
        f"smtpd_client_restrictions = check_client_access {table}\n"
    )
    both = Played(start_smtpd, [*CLIENT_DIALOGUE, "QUIT"], main_cf)
    expected = _access_check_lines(both.theirs, table)
    assert expected, both.theirs
    assert _access_check_lines(both.ours, table) == expected
    assert both.our_replies[1:] == both.their_replies[1:]
    return both


def _session_from(lines: list[str], client: str = "unknown[127.0.0.2]") -> list[str]:
    """The lines from the last "connect from CLIENT" on, but those of Postfix's other smtpd
    processes: one may log its start-up probe from 127.0.0.1 after this session's start,
    and some of the probe's lines name no client (a table's warnings with
    smtpd_delay_reject = no, an unreachable milter's)."""
    opened = re.compile(rf"(^|: )connect from {re.escape(client)}")
    start = max(i for i, ln in enumerate(lines) if opened.search(ln))
    process = re.search(r" postfix/smtpd\[\d+\]: ", lines[start])
    if process is None:  # ours: one process
        return lines[start:]
    return [ln for ln in lines[start:] if " postfix/smtpd[" not in ln or process.group(0) in ln]


def _access_check_lines(lines: list[str], table: str) -> list[str]:
    """The lines of 127.0.0.2's session (_session_from) about its access checks: the
    table's warnings, the reject and action lines."""
    out = []
    for line in _session_from(lines):
        text = line.split("]: ", 1)[1] if "postfix/" in line else line
        if f"warning: {table} " in text or f"access table {table}:" in text:
            out.append(text)
        elif re.search(r"^NOQUEUE: \w+: \w+ from unknown\[127\.0\.0\.2\]", text):
            out.append(text)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "table",
    [
        "hash:/nonexistent/access",
        "texthash:/nonexistent/access",
        "regexp:/nonexistent/access",
        "cidr:/nonexistent/access",
        "inline:{127.0.0.2=REJECT without braces}",
        "fail:broken",
    ],
)
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_access_table_that_fails_as_postfix(start_smtpd, table: str, delay_reject: str) -> None:
    """An access table that cannot be opened (forgot postmap, a typo in an inline table)
    or read answers as Postfix 3.7's: "TABLE is unavailable. REASON" at each lookup (its
    dict_surrogate), 'TABLE lookup error for "unknown"' (the first key: a client without a
    name is looked up as "unknown"), and 451 4.3.5 Server configuration error in the access
    result's words, at RCPT or, with smtpd_delay_reject = no, at connect."""
    both = _client_access_as_postfix(start_smtpd, table, delay_reject)
    assert f'warning: {table} lookup error for "unknown"' in _access_check_lines(both.theirs, table)


def _after_prefix(line: str) -> str:
    return line.split("]: ", 1)[1] if "postfix/" in line else line


def _open_errors(lines: list[str]) -> set[str]:
    """dict_surrogate's "error: REASON" lines, whichever daemon logged them."""
    return {text for text in map(_after_prefix, lines) if text.startswith("error: open ")}


MISSING_TABLES_CF = (
    "smtpd_client_restrictions = check_client_access hash:/nonexistent/access,"
    " check_client_access cdb:/nonexistent/acc2\n"
    "canonical_maps = hash:/nonexistent/canon\n"
    "transport_maps = hash:/nonexistent/transport\n"
    "virtual_alias_maps = cdb:/nonexistent/virt\n"
)


@pytest.mark.slow
def test_tables_that_do_not_open_are_logged_at_start_as_postfix(start_smtpd) -> None:
    """A table that does not open is Postfix 3.7's dict_surrogate: "error: open database
    FILE: REASON" once, as the daemon that uses it opens its tables (smtpd's restrictions
    and recipient tables, cleanup's canonical_maps, trivial-rewrite's transport_maps and
    virtual_alias_domains), naming the file Postfix's table type opens (.db for hash:, .cdb
    for cdb:); then each lookup fails with "TABLE is unavailable. REASON"."""
    dialogue = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "QUIT"]
    both = Played(start_smtpd, dialogue, MISSING_TABLES_CF)
    expected = _open_errors(both.theirs)
    assert "error: open database /nonexistent/access.db: No such file or directory" in expected
    assert len(expected) == 5, both.theirs
    assert _open_errors(both.ours) == expected
    # Ours all open as smtpd starts, before its first client.
    connect = both.ours.index("connect from unknown[127.0.0.2]")
    assert _open_errors(both.ours[:connect]) == expected
    assert both.our_replies[1:] == both.their_replies[1:]
    table = "hash:/nonexistent/access"
    assert _access_check_lines(both.ours, table) == _access_check_lines(both.theirs, table)


def _first_message_lines(lines: list[str]) -> list[str]:
    """The session's lines from its "client=" to the last that names its queue ID (the
    postmaster notice Postfix's cleanup then sends is left out), queue IDs numbered."""
    start = next(i for i, ln in enumerate(lines) if ": client=unknown[127.0.0.2]" in ln)
    qid = re.search(r"\b[0-9A-F]{10,12}\b", lines[start])
    assert qid, lines[start]
    end = max(i for i, ln in enumerate(lines) if qid.group(0) in ln)
    return _transaction_lines(lines[start : end + 1], ".")


@pytest.mark.slow
def test_cleanup_tables_that_do_not_open_defer_as_postfix(start_smtpd) -> None:
    """cleanup's canonical_maps and sender_bcc_maps that did not open: at the message,
    each table's "is unavailable" and maps_find's "lookup error" lines, without a queue
    ID, then cleanup's "QID: PARAM map lookup problem ..." for each (the BCC lookup
    still runs after the sender's canonical lookup failed), and 451 4.3.0 Error: queue
    file write error."""
    main_cf = (
        "smtpd_reject_unlisted_recipient = no\n"
        "canonical_maps = hash:/nonexistent/canon\n"
        "sender_bcc_maps = cdb:/nonexistent/bcc\n"
    )
    dialogue = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>"]
    both = Played(start_smtpd, [*dialogue, *MESSAGE, "QUIT"], main_cf)
    assert both.their_replies[-2] == "451 4.3.0 Error: queue file write error"
    assert both.our_replies[1:] == both.their_replies[1:]
    expected = _first_message_lines(both.theirs)
    assert expected[1:4] == [
        "warning: hash:/nonexistent/canon is unavailable. open database"
        " /nonexistent/canon.db: No such file or directory",
        'warning: hash:/nonexistent/canon lookup error for "a@example.org"',
        "warning: QID1: canonical_maps map lookup problem for a@example.org -- message not"
        " accepted, try again later",
    ]
    assert len(expected) == 7, expected
    assert _first_message_lines(both.ours) == expected
    assert _open_errors(both.ours) == _open_errors(both.theirs)


# Each over SMTP with hopcount_limit = 3, smtpd's own Received: header the first hop.
HOPS_MESSAGES: list[str | bytes] = [
    # The REJECT ends the walk: no hopcount warning, no message-id line.
    "Subject: forbidden\r\nMessage-ID: <m1@x>\r\nReceived: a\r\nReceived: b\r\n",
    # Too many hops ends it before the REJECT.
    "Received: a\r\nReceived: b\r\nReceived: c\r\nSubject: forbidden\r\n",
    # An IGNOREd or STRIPped Received: header is a hop, never the one warned about.
    "Received: drop1\r\nReceived: x\r\nSubject: late\r\n",
    "Received: strip\r\nReceived: x\r\nSubject: late\r\n",
    "Received: drop1\r\nReceived: drop2\r\nSubject: late\r\n",
    # One REPLACE makes is warned about, not counted; one it replaces is counted.
    "Received: drop1\r\nReceived: drop2\r\nX-Make: r\r\nSubject: late\r\n",
    "Received: drop1\r\nX-Make: r\r\nSubject: late\r\n",
    "Received: repl\r\nReceived: x\r\nSubject: late\r\n",
    # A REJECT on the Received: header at the limit: smtpd names the hops.
    "Received: a\r\nReceived: forbidden\r\nSubject: late\r\n",
    # DISCARD ends the walk too: no hop is refused.
    "Subject: discard\r\nMessage-ID: <m2@x>\r\nReceived: a\r\nReceived: b\r\n",
    # A MIME error's reason gives way to a later REJECT's, and to too many hops.
    b"Subject: h\xe9llo\r\nSubject: forbidden\r\n",
    b"Subject: h\xe9llo\r\nReceived: a\r\nReceived: b\r\n",
]


@pytest.mark.slow
def test_hops_counted_around_header_checks_as_postfix(start_smtpd) -> None:
    """cleanup counts each Received: header of smtpd's message by its name before its
    header_checks and warns at one the checks leave from hopcount_limit on; smtpd's reply
    names too many hops before a REJECT's reason, a REJECT's before a MIME error's, and a
    REJECT or DISCARD ends the walk as too many hops do. Ours counted only the Received:
    headers the checks left, went on after a REJECT or DISCARD (a hopcount warning, a
    message-id line, a discarded message refused) and replied with the first reason."""
    main_cf = (
        "hopcount_limit = 3\nheader_checks = regexp:{ {/^(Subject|Received): forbidden/"
        " REJECT not from here}, {/^Received: drop/ IGNORE}, {/^Received: strip/ STRIP s},"
        " {/^Received: repl/ REPLACE X-Was: received}, {/^X-Make: r/ REPLACE Received: made},"
        " {/^Subject: late/ WARN late}, {/^Subject: discard/ DISCARD} }\n"
        "strict_7bit_headers = yes\n"
    )
    dialogue: list[str | bytes] = ["EHLO client.example"]
    for message in HOPS_MESSAGES:
        dialogue += ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "DATA"]
        end = "\r\nbody\r\n."
        dialogue.append(message + end.encode() if isinstance(message, bytes) else message + end)
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    theirs = _transaction_lines(both.theirs, r"\b[0-9A-F]{10,12}: ")
    assert _transaction_lines(both.ours, r"\b[0-9A-F]{10,12}: ") == theirs
    refused = [r for r in both.their_replies if r.startswith("5")]
    hops = ["554 5.4.0 Error: too many hops"] * 6
    assert refused == ["550 5.7.1 not from here", *hops, "550 5.7.1 not from here", hops[0]]
    assert theirs.count("warning: QID1: message rejected: hopcount exceeded") == 0


@pytest.mark.slow
def test_header_checks_table_that_does_not_open_as_postfix(start_smtpd) -> None:
    """header_checks that did not open: the table's warning and maps_find's for the first
    header (our Received: line, its key cut short here, differs in its product name and
    date), cleanup's "QID: header_checks map lookup problem ...", 451 4.3.0."""
    main_cf = "header_checks = regexp:/nonexistent/hc\n"
    dialogue = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>"]
    both = Played(start_smtpd, [*dialogue, *MESSAGE, "QUIT"], main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]

    def cut(lines: list[str]) -> list[str]:
        return [re.sub(r'(lookup error for "Received: from x).*', r"\1...", ln) for ln in lines]

    expected = cut(_first_message_lines(both.theirs))
    assert expected == [
        "QID1: client=unknown[127.0.0.2]",
        "warning: regexp:/nonexistent/hc is unavailable. open /nonexistent/hc: No such file or"
        " directory",
        'warning: regexp:/nonexistent/hc lookup error for "Received: from x...',
        "warning: QID1: header_checks map lookup problem -- message not accepted, try again later",
    ]
    assert cut(_first_message_lines(both.ours)) == expected
    assert _open_errors(both.ours) == _open_errors(both.theirs)


@pytest.mark.slow
def test_canonical_tables_in_recipient_validation_as_postfix(start_smtpd, tmp_path) -> None:
    """check_rcpt_maps takes an address a canonical table knows as known, as one in
    virtual_alias_maps (a local recipient not in local_recipient_maps is accepted), and a
    canonical table that did not open fails the RCPT: its warnings, 451 4.3.0 Temporary
    lookup failure."""
    canonical = tmp_path / "canonical"
    canonical.write_text("known@localhost other@localhost\n")
    dialogue = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<known@localhost>"]
    dialogue += ["RCPT TO:<nobody@localhost>", "QUIT"]
    base = "local_recipient_maps = inline:{other@localhost=x}\n"
    both = Played(start_smtpd, dialogue, base + f"canonical_maps = texthash:{canonical}\n")
    assert both.their_replies[3].startswith("250 ")
    assert both.their_replies[4].startswith("550 5.1.1 <nobody@localhost>")
    assert both.our_replies[1:] == both.their_replies[1:]
    table = "hash:/nonexistent/canon"
    both = Played(start_smtpd, dialogue, base + f"canonical_maps = {table}\n")
    assert both.their_replies[3] == "451 4.3.0 <known@localhost>: Temporary lookup failure"
    assert both.our_replies[1:] == both.their_replies[1:]
    wanted = rf"warning: {table} |: reject: "
    expected = _transaction_lines(both.theirs, wanted)
    assert f'warning: {table} lookup error for "known@localhost"' in expected, both.theirs
    assert _transaction_lines(both.ours, wanted) == expected


@pytest.mark.slow
def test_transport_table_that_does_not_open_as_postfix(start_smtpd) -> None:
    """transport_maps that did not open: trivial-rewrite's lines for the recipient (the
    table's, maps_find's, resolve's "transport_maps lookup failure") and smtpd's 451 4.3.0
    Temporary lookup failure. (Postfix's also asks for "*" as trivial-rewrite starts and
    resolves the sender at MAIL FROM: lines of their own, left out here.)"""
    dialogue = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "QUIT"]
    both = Played(start_smtpd, dialogue, "transport_maps = hash:/nonexistent/transport\n")
    assert both.our_replies[1:] == both.their_replies[1:]
    reason = "open database /nonexistent/transport.db: No such file or directory"
    for_recipient = [
        f"warning: hash:/nonexistent/transport is unavailable. {reason}",
        'warning: hash:/nonexistent/transport lookup error for "postmaster@localhost"',
        "warning: transport_maps lookup failure",
    ]
    for side in (both.theirs, both.ours):
        texts = [_after_prefix(ln) for ln in side]
        at = texts.index(for_recipient[1])
        assert texts[at - 1 : at + 2] == for_recipient, texts
        assert _open_errors(side) == {f"error: {reason}"}


def _socketmap_access(request: bytes) -> bytes | None:
    """A socketmap access table (the peer of the test below): a REJECT, a TEMP, a PERM,
    one that closes, not found for the rest."""
    answers = {
        b"access rejected@example.com": b"OK REJECT go away",
        b"access temp@example.com": b"TEMP database down",
        b"access perm@example.com": b"PERM no such map",
    }
    if request == b"access closed@example.com":
        return None
    data = answers.get(request, b"NOTFOUND ")
    return b"%d:%s," % (len(data), data)


@pytest.mark.slow
def test_socketmap_access_table_as_postfix(start_smtpd) -> None:
    """check_recipient_access socketmap:inet:127.0.0.1:PORT:access, its server a peer on
    loopback: the recipient asked as a whole (a pattern table), a REJECT found, a server
    error's warnings and 451, a server that closes asked once more."""
    with peer("netstring", _socketmap_access) as (_, endpoint):
        table = f"socketmap:inet:{endpoint}:access"
        main_cf = (
            "relay_domains = example.com\n"
            f"smtpd_recipient_restrictions = check_recipient_access {table}\n"
        )
        rcpts = ["rejected", "temp", "perm", "closed", "other"]
        dialogue = [
            "EHLO x.example",
            "MAIL FROM:<a@example.org>",
            *(f"RCPT TO:<{r}@example.com>" for r in rcpts),
            "QUIT",
        ]
        both = Played(start_smtpd, dialogue, main_cf)
        expected = _access_check_lines(both.theirs, table)
        assert 'lookup error for "temp@example.com"' in "\n".join(expected), both.theirs
        assert _access_check_lines(both.ours, table) == expected
        assert both.our_replies[1:] == both.their_replies[1:]
        assert both.their_replies[3].startswith("554 5.7.1 <rejected@example.com>")


@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [
        "relay_domains = example.com\nrelay_recipient_maps = hash:/nonexistent/rcpts\n",
        "virtual_alias_domains = example.com\nvirtual_alias_maps = hash:/nonexistent/rcpts\n",
    ],
)
def test_recipient_table_that_fails_as_postfix(start_smtpd, main_cf: str) -> None:
    """catalogue 14: a recipient table that cannot be opened: 451 4.3.0 Temporary lookup
    failure, never accepted, after the same warnings as Postfix's (the full address is the
    first key)."""
    dialogue = ["EHLO x.example", "MAIL FROM:<a@example.org>", "RCPT TO:<u@example.com>", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    table = "hash:/nonexistent/rcpts"
    expected = _access_check_lines(both.theirs, table)
    assert f'warning: {table} lookup error for "u@example.com"' in expected, expected
    assert _access_check_lines(both.ours, table) == expected
    assert both.their_replies[3] == "451 4.3.0 <u@example.com>: Temporary lookup failure"
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "action",
    [
        "HOLD",
        "DISCARD",
        "BCC copy@localhost",
        "FILTER smtp:[127.0.0.1]:10025",
        "REDIRECT other@localhost",
        "521 5.7.1 go away",
    ],
)
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_client_access_actions_as_postfix(start_smtpd, action: str, delay_reject: str) -> None:
    """access(5) actions in smtpd_client_restrictions: judged at RCPT (smtpd_delay_reject =
    yes) their lines name the recipient as Postfix's; judged at connect, HOLD, DISCARD,
    BCC, FILTER and REDIRECT are skipped with Postfix's can_delegate_action warning (no
    transaction yet), and a 521 ends the session after the greeting's refusal."""
    table = f"inline:{{ {{127.0.0.2={action}}} }}"
    both = _client_access_as_postfix(start_smtpd, table, delay_reject)
    if action.startswith("521") and delay_reject == "no":
        assert both.their_replies[-1] == "(closed)"
        assert both.our_replies[0] == both.their_replies[0]


def _recipient_records(postcat: subprocess.CompletedProcess) -> list[str]:
    assert postcat.returncode == 0, postcat.stderr
    wanted = ("named_attribute: notify_flags=", "named_attribute: dsn_orig_rcpt=")
    wanted += ("original_recipient: ", "recipient: ")
    return [ln for ln in postcat.stdout.splitlines() if ln.startswith(wanted)]


@pytest.mark.slow
def test_access_bcc_actions_all_kept_as_postfix(start_smtpd) -> None:
    """Every access(5) BCC of a transaction is kept (Postfix 3.1 and later), each logged as
    "bcc: RCPT from ...: <addr>: Recipient address triggers BCC copy"; the copies are
    queued in order, duplicates and NOTIFY as Postfix's cleanup writes them (postcat -e);
    RSET forgets them."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<bcc2@localhost>"]
    dialogue += ["RSET", "MAIL FROM:<a@example.org>", "RCPT TO:<bcc1@localhost>"]
    dialogue += ["RCPT TO:<bcc2@localhost>", "RCPT TO:<bcc1@localhost>"]
    dialogue += ["RCPT TO:<bcc1@localhost>", *MESSAGE, "QUIT"]
    both = Played(start_smtpd, dialogue, ACTIONS_CF)
    wanted = r": client=|: bcc: "
    expected = _transaction_lines(both.theirs, wanted)
    assert len(expected) == 7, expected
    assert expected[2] == (
        "NOQUEUE: bcc: RCPT from unknown[127.0.0.2]: <bcc1@localhost>: Recipient address"
        " triggers BCC copy1@localhost; from=<a@example.org> to=<bcc1@localhost>"
        " proto=ESMTP helo=<client.example>"
    ), expected
    assert _transaction_lines(both.ours, wanted) == expected
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    # The first queue file went with RSET.
    theirs, ours = _queued_on_both(start_smtpd, ACTIONS_CF, _commands(dialogue), 2, "-e")
    their_records = _recipient_records(theirs[1].postcat)
    assert [r for r in their_records if r.startswith("recipient: copy")] == [
        "recipient: copy1@localhost",
        "recipient: copy2@localhost",
        "recipient: copy1@localhost",
    ]
    assert _recipient_records(ours[1].postcat) == their_records


@pytest.mark.slow
def test_access_discard_filter_redirect_info_logged_as_postfix(start_smtpd) -> None:
    """access(5) DISCARD, FILTER, REDIRECT and INFO each log their log_whatsup line
    ("discard: ... triggers DISCARD action", "filter: ... triggers FILTER transport:dest",
    "redirect: ... triggers REDIRECT addr", "info: text"); DISCARD also permits, as OK (a
    relay the restrictions after it would refuse is accepted)."""
    main_cf = (
        "smtpd_recipient_restrictions = check_recipient_access inline:{ "
        "{d@localhost=DISCARD}, {f@localhost=FILTER smtp:[127.0.0.1]:10025}, "
        "{r@localhost=REDIRECT other@localhost}, {i@localhost=INFO hello there} }, reject\n"
    )
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    rcpts = ("f@localhost", "r@localhost", "i@localhost", "d@localhost")
    dialogue += [f"RCPT TO:<{r}>" for r in rcpts] + ["QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    wanted = r": client=|: (discard|filter|redirect|info|reject): "
    expected = _transaction_lines(both.theirs, wanted)
    assert len(expected) == 8, expected
    assert both.their_replies[6] == "250 2.1.5 Ok", both.their_replies
    assert _transaction_lines(both.ours, wanted) == expected
    assert both.our_replies[1:] == both.their_replies[1:]


DEFER_IF_CF = (
    "access_map_defer_code = 451\nsmtpd_relay_restrictions =\n"
    # A table's result that begins with an action's name (any case) is that action: the
    # restrictions' own defer, defer_if_permit and defer_if_reject need a class.
    "smtpd_restriction_classes = both_deferrals, try_later\n"
    "both_deferrals = defer_if_reject, defer_if_permit, reject\ntry_later = defer\n"
    "smtpd_recipient_restrictions = check_recipient_access inline:{ "
    "{dip@localhost=DEFER_IF_PERMIT}, {dip@example.com=DEFER_IF_PERMIT 4.7.9 not now}, "
    "{dipr@localhost=DEFER_IF_PERMIT}, {dir@example.com=DEFER_IF_REJECT}, "
    "{dir@localhost=DEFER_IF_REJECT try later}, {dir450@localhost=DEFER_IF_REJECT}, "
    "{both@example.com=both_deferrals}, {dirl@example.com=defer_if_reject later}, "
    "{warn@localhost=warn_if_reject defer_if_permit}, {defer@localhost=try_later}, "
    "{warnerr@localhost=warn_if_reject bogus_restriction} }, "
    "check_recipient_access inline:{ {dir450@localhost=450 4.7.2 busy}, "
    "{dipr@localhost=REJECT no} }, reject_unauth_destination\n"
)


@pytest.mark.slow
def test_defer_if_permit_and_defer_if_reject_as_postfix(start_smtpd) -> None:
    """access(5) DEFER_IF_PERMIT turns the implicit permit at the end of the recipient
    lists into access_map_defer_code with its text (or "Service unavailable"), but not a
    later reject; DEFER_IF_REJECT turns a later 5xx reject (not a 4xx one) into its own
    deferral, and defers nothing accepted; the defer_if_permit and defer_if_reject
    restrictions (450 4.7.0 "... requested") both raised end the list; under
    warn_if_reject defer_if_permit is a reject_warning line, but a server error is no
    warning; defer is 4.3.2 "Try again later". Replies and reject lines word for word as
    Postfix 3.7."""
    rcpts = ["dip@localhost", "dip@example.com", "dipr@localhost", "dir@example.com"]
    rcpts += ["dir@localhost", "dir450@localhost", "both@example.com", "dirl@example.com"]
    rcpts += ["warn@localhost", "warnerr@localhost", "defer@localhost", "other@example.com"]
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    dialogue += [f"RCPT TO:<{r}>" for r in rcpts] + ["QUIT"]
    both = Played(start_smtpd, dialogue, DEFER_IF_CF)
    assert both.their_replies[3:15] == [
        "451 4.7.1 <dip@localhost>: Recipient address rejected: Service unavailable",
        "554 5.7.1 <dip@example.com>: Relay access denied",
        "554 5.7.1 <dipr@localhost>: Recipient address rejected: no",
        "451 4.7.1 <dir@example.com>: Recipient address rejected: Service unavailable",
        "250 2.1.5 Ok",
        "450 4.7.2 <dir450@localhost>: Recipient address rejected: busy",
        "450 4.7.0 <both@example.com>: Recipient address rejected: defer_if_permit requested",
        "451 4.7.1 <dirl@example.com>: Recipient address rejected: later",
        "250 2.1.5 Ok",
        "451 4.3.5 Server configuration error",
        "450 4.3.2 <defer@localhost>: Recipient address rejected: Try again later",
        "554 5.7.1 <other@example.com>: Relay access denied",
    ], both.their_replies
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    wanted = r": (reject|reject_warning): |warning: unknown smtpd"
    expected = _transaction_lines(both.theirs, wanted)
    assert len(expected) == 12, expected
    assert _transaction_lines(both.ours, wanted) == expected


@pytest.mark.slow
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_defer_if_permit_of_an_earlier_stage_as_postfix(start_smtpd, delay_reject: str) -> None:
    """A defer_if_permit raised by the sender or the HELO restrictions defers each
    recipient that the recipient lists would accept (not one they refuse), whether the
    earlier lists run at RCPT (smtpd_delay_reject = yes) or at MAIL and EHLO; a DATA
    restriction defer_if_permit defers DATA."""
    main_cf = (
        f"smtpd_delay_reject = {delay_reject}\n"
        "smtpd_helo_restrictions = check_helo_access inline:{ "
        "{dip.example=DEFER_IF_PERMIT helo later} }\n"
        "smtpd_sender_restrictions = check_sender_access inline:{ "
        "{s@example.org=DEFER_IF_PERMIT} }\n"
        "smtpd_data_restrictions = defer_if_permit\n"
    )
    dialogue = ["EHLO client.example", "MAIL FROM:<s@example.org>", "RCPT TO:<u@localhost>"]
    dialogue += ["RCPT TO:<u@example.com>", "RSET", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<u@localhost>", "DATA", "EHLO dip.example"]
    dialogue += ["MAIL FROM:<a@example.org>", "RCPT TO:<u@localhost>", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[3] == (
        "450 4.7.1 <s@example.org>: Sender address rejected: Service unavailable"
    )
    assert both.their_replies[8] == (
        "450 4.7.0 <DATA>: Data command rejected: defer_if_permit requested"
    )
    assert both.their_replies[11] == "450 4.7.1 <dip.example>: Helo command rejected: helo later"
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    wanted = r": (reject|reject_warning): "
    expected = _transaction_lines(both.theirs, wanted)
    assert len(expected) == 4, expected
    assert _transaction_lines(both.ours, wanted) == expected


@pytest.mark.slow
def test_8bit_commands_without_smtputf8_as_postfix(start_smtpd) -> None:
    """With smtputf8_enable = no Postfix does not check commands for UTF-8: HELO, MAIL,
    RCPT, VRFY and the rest with latin-1 bytes are judged as any other (a local part may
    hold them, a domain may not), the message is queued; with SMTPUTF8 on, the same bytes
    get 500 5.5.2 "Error: bad UTF-8 syntax". Replies and reject lines as Postfix 3.7."""
    dialogue: list[str | bytes] = [
        b"EHLO caf\xe9.example",
        b"NOOP \xff",
        b"MAIL FROM:<caf\xe9@example.org>",
        b"RCPT TO:<u\xe9@localhost>",
        b"RCPT TO:<u@d\xe9.example>",
        b"VRFY caf\xe9",
        b"X\xe9",
        *MESSAGE,
        b"HELO \xe9",
        "QUIT",
    ]
    for smtputf8 in ("no", "yes"):
        main_cf = f"smtputf8_enable = {smtputf8}\n"
        both = Played(start_smtpd, dialogue, main_cf)
        if smtputf8 == "no":
            assert both.their_replies[1].startswith("250-"), both.their_replies
            assert both.their_replies[4] == "250 2.1.5 Ok", both.their_replies
        else:
            assert both.their_replies[1] == "500 5.5.2 Error: bad UTF-8 syntax"
        assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
        assert _transaction_lines(both.ours) == _transaction_lines(both.theirs)
        assert _disconnect_stats(both.ours) == _disconnect_stats(both.theirs)


@pytest.mark.slow
def test_helo_name_kept_printable_and_neutered_as_postfix(start_smtpd) -> None:
    """The HELO name as Postfix's helo_cmd keeps it for the logs and the restrictions:
    printable() (with smtputf8_enable = no every 8-bit byte, UTF-8 or not, is a '?'; with
    it on, UTF-8 stays), then its neutered characters (space <>()\\";@) as '?'."""
    dialogue: list[str | bytes] = []
    helos = (b"caf\xe9.example", b"caf\xc3\xa9.example", b'a<b>(c)@d;e:f"g\\h i', b"x\x01y")
    for helo in helos:
        dialogue += [b"EHLO " + helo, "MAIL FROM:<a@example.org>", "RCPT TO:<u@localhost>"]
    for smtputf8 in ("no", "yes"):
        main_cf = f"smtputf8_enable = {smtputf8}\nsmtpd_recipient_restrictions = reject\n"
        both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
        expected = _transaction_lines(both.theirs)
        assert len(expected) == 4, expected
        if smtputf8 == "no":
            assert expected[1].endswith(" helo=<caf??.example>"), expected
        assert _transaction_lines(both.ours) == expected
        assert both.our_replies[1:] == both.their_replies[1:]


def _rejects_and_warnings(lines: list[str], d: Path) -> list[str]:
    """127.0.0.2's transaction lines (rejects, holds) and the table warnings of its
    session (_session_from), the directory as DIR."""
    wanted = _transaction_lines(_session_from(lines), rf": (reject|hold): |warning: .*{d}")
    return [ln.replace(str(d), "DIR") for ln in wanted]


@pytest.mark.slow
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_access_reply_text_made_printable_as_postfix(start_smtpd, smtputf8: str) -> None:
    """An access(5) text with control characters (or, without SMTPUTF8, 8-bit bytes) is
    sent as Postfix's smtpd_check_reject makes every reply: each byte that is not printable
    ASCII (but for UTF-8 with SMTPUTF8) a space; the reject line logs the same text. A HOLD
    text is logged with '?' for them (Postfix's printable() of each log line)."""
    table = b"c@localhost REJECT a\x01b\x7fc\td\x1be caf\xc3\xa9 end"
    table += b" \xe9x\n" if smtputf8 == "no" else b"\n"  # with SMTPUTF8 texthash skips it
    table += b"d@localhost 550 5.7.1 x\x01y\ng@localhost DEFER_IF_PERMIT a\x02b\n"
    table += b"h@localhost HOLD a\x03b\n"
    rcpts = ["c", "d", "g", "h"]
    dialogue = ["EHLO x.example", "MAIL FROM:<a@example.org>"]
    dialogue += [f"RCPT TO:<{r}@localhost>" for r in rcpts] + ["QUIT"]
    with shared_dir("oxipost-access-") as d:
        (d / "access").write_bytes(table)
        main_cf = (
            f"smtputf8_enable = {smtputf8}\n"
            f"smtpd_recipient_restrictions = check_recipient_access texthash:{d}/access\n"
        )
        both = Played(start_smtpd, dialogue, main_cf)
        expected = _rejects_and_warnings(both.theirs, d)
        assert _rejects_and_warnings(both.ours, d) == expected
    latin1 = "  x" if smtputf8 == "no" else ""
    cafe = "caf   end" if smtputf8 == "no" else "caf\u00e9 end"
    assert both.their_replies[3:6] == [
        f"554 5.7.1 <c@localhost>: Recipient address rejected: a b c d e {cafe}{latin1}",
        "550 5.7.1 <d@localhost>: Recipient address rejected: x y",
        "450 4.7.1 <g@localhost>: Recipient address rejected: a b",
    ], both.their_replies
    assert len(expected) == 4 and "Recipient address a?b;" in expected[3], expected
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
def test_table_result_not_utf8_as_postfix(start_smtpd) -> None:
    """With smtputf8_enable = yes a table's result that is not UTF-8 is a lookup error
    (Postfix's dict_utf8, DICT_ERR_CONFIG): the 'key "K": non-UTF-8 value' and 'lookup
    error for "K"' warnings, then for an access table (hash:, regexp:) "451 4.3.5 <addr>:
    Recipient address rejected: Server configuration error", for a recipient table a bare
    "451 4.3.5 Server configuration error" (not the 4.3.0 of a table that did not open)."""
    dialogue = ["EHLO x.example", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<n@localhost>", "RCPT TO:<o@localhost>", "RCPT TO:<r@localhost>"]
    dialogue += ["RCPT TO:<u@example.com>", "QUIT"]
    with shared_dir("oxipost-utf8-") as d:
        (d / "main.cf").write_text("smtputf8_enable = no\n")  # postmap keeps the bytes
        (d / "access").write_bytes(b"n@localhost REJECT caf\xe9\no@localhost REJECT fine\n")
        (d / "rcpts").write_bytes(b"u@example.com caf\xe9\n")
        (d / "re").write_bytes(b"/^r@localhost$/ REJECT caf\xe9\n")
        for name in ("access", "rcpts"):
            made = subprocess.run(
                ["postmap", "-c", str(d), f"hash:{d}/{name}"], capture_output=True, timeout=60
            )
            assert made.returncode == 0, made.stderr
            made = run_ours("postmap", "-c", str(d), f"hash:{d}/{name}")
            assert made.returncode == 0, made.stderr
        main_cf = (
            "smtputf8_enable = yes\nrelay_domains = example.com\n"
            f"relay_recipient_maps = hash:{d}/rcpts\n"
            f"smtpd_recipient_restrictions = check_recipient_access hash:{d}/access, "
            f"check_recipient_access regexp:{d}/re, permit_mynetworks, "
            "reject_unauth_destination\n"
        )
        both = Played(start_smtpd, dialogue, main_cf)
        expected = _rejects_and_warnings(both.theirs, d)
        assert _rejects_and_warnings(both.ours, d) == expected
    assert expected[:2] == [
        'warning: hash:DIR/access.db: key "n@localhost": non-UTF-8 value "REJECT caf?":'
        " malformed UTF-8 or invalid codepoint",
        'warning: hash:DIR/access.db lookup error for "n@localhost"',
    ], expected
    assert len(expected) == 10, expected
    assert both.their_replies[3:7] == [
        "451 4.3.5 <n@localhost>: Recipient address rejected: Server configuration error",
        "554 5.7.1 <o@localhost>: Recipient address rejected: fine",
        "451 4.3.5 <r@localhost>: Recipient address rejected: Server configuration error",
        "451 4.3.5 Server configuration error",
    ], both.their_replies
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
def test_received_for_clause_quotes_the_local_part_as_postfix(start_smtpd) -> None:
    """The Received: header's "for <address>" (one recipient) quotes a local part that is
    not a dot-atom as Postfix's quote_822_local, while the envelope keeps it unquoted."""
    rcpts = ['"a b"@localhost', '"a.b"@localhost', "a..b@localhost", '".a"@localhost']
    dialogue = ["EHLO x.example"]
    for rcpt in rcpts:
        dialogue += ["MAIL FROM:<s@example.org>", f"RCPT TO:<{rcpt}>", *MESSAGE]
    theirs, ours = _queued_on_both(start_smtpd, "", _commands([*dialogue, "QUIT"]), len(rcpts))

    def received_for(postcat: subprocess.CompletedProcess) -> list[str]:
        assert postcat.returncode == 0, postcat.stderr
        lines = postcat.stdout.splitlines()
        return [ln.split(";")[0] for ln in lines if ln.startswith(("\tfor <", "recipient: "))]

    expected = [received_for(q.postcat) for q in theirs]
    assert expected[0] == ["recipient: a b@localhost", '\tfor <"a b"@localhost>'], expected
    assert [received_for(q.postcat) for q in ours] == expected


@pytest.mark.slow
def test_texthash_line_not_utf8_skipped_by_smtpd_as_postfix(start_smtpd) -> None:
    """With smtputf8_enable = yes smtpd's texthash: access table leaves out a line that is
    not UTF-8, with dict_thash's warning in the log as the table opens: the recipient it
    named passes."""
    dialogue = ["EHLO x.example", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<c@localhost>", "RCPT TO:<d@localhost>", "QUIT"]
    with shared_dir("oxipost-thash-") as d:
        (d / "access").write_bytes(b"c@localhost REJECT caf\xe9\nd@localhost REJECT d\n")
        old = time.time() - 3600  # not "hot": dict_thash would read it again, warning again
        os.utime(d / "access", (old, old))
        main_cf = (
            "smtputf8_enable = yes\n"
            f"smtpd_recipient_restrictions = check_recipient_access texthash:{d}/access\n"
        )
        both = Played(start_smtpd, dialogue, main_cf)
        # Postfix's smtpd processes open their tables as they start (a second one, forked
        # as the first got busy, warns again); ours at the first lookup: the warning once.

        def seen(lines: list[str]) -> list[str]:
            wanted = _transaction_lines(lines, f"warning: .*{d}|: reject: ")
            return list(dict.fromkeys(wanted))

        expected = seen(both.theirs)
        assert seen(both.ours) == expected
    assert expected[0] == (
        f'warning: {d}/access, line 1: non-UTF-8 input "c@localhost REJECT caf?"'
        " -- ignoring this line"
    ), expected
    assert both.their_replies[3:5] == [
        "250 2.1.5 Ok",
        "554 5.7.1 <d@localhost>: Recipient address rejected: d",
    ], both.their_replies
    assert both.our_replies[1:] == both.their_replies[1:]


UNLISTED_SENDER_CF = (
    "local_recipient_maps = inline:{ {u@localhost=1} {ok@localhost=1} }\n"
    "unknown_local_recipient_reject_code = 450\n"
    "virtual_alias_domains = va.example\n"
    "virtual_alias_maps = inline:{ {k@va.example=u@localhost} }\n"
    "virtual_mailbox_domains = vm.example\n"
    "virtual_mailbox_maps = inline:{ {k@vm.example=x} }\n"
    "transport_maps = inline:{ {err.example=error:gone away} {e2.example=error:5.1.2 bad} "
    "{rt.example=retry:later} }\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
@pytest.mark.parametrize("how", ["parameter", "restriction"])
def test_unlisted_sender_refused_as_postfix(start_smtpd, delay_reject: str, how: str) -> None:
    """smtpd_reject_unlisted_sender = yes refuses an unknown sender where the sender
    restrictions run: at MAIL FROM with smtpd_delay_reject = no, else at RCPT before the
    recipient restrictions (relay access is not asked), not after a DISCARD; as
    reject_unlisted_sender in smtpd_sender_restrictions does. A sender's status is X.1.0
    (X.1.7 and X.1.8 where a bad mailbox or system is named), as Postfix 3.7 replies."""
    access = "check_sender_access inline:{ {disc@localhost=DISCARD} }"
    if how == "parameter":
        main_cf = f"smtpd_reject_unlisted_sender = yes\nsmtpd_sender_restrictions = {access}\n"
    else:
        main_cf = f"smtpd_sender_restrictions = {access} reject_unlisted_sender\n"
    main_cf += f"smtpd_delay_reject = {delay_reject}\n{UNLISTED_SENDER_CF}"
    dialogue = ["EHLO c.example"]
    for sender in ["nobody@localhost", "x@va.example", "k@va.example", "x@vm.example"]:
        dialogue += [f"MAIL FROM:<{sender}>", "RCPT TO:<x@example.com>", "RSET"]
    for sender in ["x@err.example", "x@e2.example", "x@rt.example", "disc@localhost"]:
        dialogue += [f"MAIL FROM:<{sender}>", "RCPT TO:<nobody@localhost>", "RSET"]
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
    refused = [r for r in both.their_replies if "Sender address rejected" in r]
    assert refused == [
        "450 4.1.0 <nobody@localhost>: Sender address rejected: User unknown in local "
        "recipient table",
        "550 5.1.7 <x@va.example>: Sender address rejected: User unknown in virtual alias table",
        "550 5.1.0 <x@vm.example>: Sender address rejected: User unknown in virtual mailbox table",
        "550 5.1.0 <x@err.example>: Sender address rejected: gone away",
        "550 5.1.8 <x@e2.example>: Sender address rejected: bad",
        "450 4.1.0 <x@rt.example>: Sender address rejected: later",
    ], both.their_replies
    # Where: the reply to MAIL FROM (no delay) or to the RCPT after it.
    assert both.their_replies[3 if delay_reject == "yes" else 2].startswith("450 4.1.0")
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    wanted = r": (reject|discard): "
    assert _transaction_lines(both.ours, wanted) == _transaction_lines(both.theirs, wanted)


EHLO_DISCARDED = "chunking, Dsn smtputf8 size etrn vrfy pipelining 8bitmime"


@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [
        f"smtpd_discard_ehlo_keywords = {EHLO_DISCARDED}\n",
        # The client's words replace smtpd_discard_ehlo_keywords; split at commas and
        # blanks only, "{chunking" and "8bitmime}" name nothing.
        "smtpd_discard_ehlo_keywords = auth\nsmtpd_discard_ehlo_keyword_address_maps = "
        f"inline:{{ {{127.0.0.2={{{EHLO_DISCARDED}}}}} }}\n",
        # Another client's words: smtpd_discard_ehlo_keywords, not logged (silent-discard).
        "smtpd_discard_ehlo_keywords = dsn, silent-discard\n"
        "smtpd_discard_ehlo_keyword_address_maps = inline:{ {127.0.0.9=chunking} }\n",
    ],
)
def test_ehlo_keywords_discarded_as_postfix(start_smtpd, main_cf: str) -> None:
    """smtpd_discard_ehlo_keywords and smtpd_discard_ehlo_keyword_address_maps (looked up
    by the client's address): the EHLO reply without the keywords, the "discarding EHLO
    keywords" line (Postfix's own spelling and order), DSN parameters refused ("DSN
    support is disabled"), MAIL FROM's SMTPUTF8 an unsupported option, BDAT 521 and the
    end of the session, as Postfix 3.7."""
    dialogue = ["EHLO c.example", "MAIL FROM:<a@example.org> RET=FULL"]
    dialogue += ["MAIL FROM:<a@example.org> ENVID=x", "MAIL FROM:<a@example.org> SIZE=9"]
    dialogue += ["RCPT TO:<u@localhost> NOTIFY=NEVER", "RCPT TO:<u@localhost> ORCPT=rfc822;u@x"]
    dialogue += ["RCPT TO:<u@localhost>", "RSET", "MAIL FROM:<a@example.org> SMTPUTF8", "RSET"]
    dialogue += ["VRFY u@localhost", "ETRN localhost", "BDAT 0 LAST", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    if "127.0.0.2" in main_cf:
        assert both.their_replies[2] == "501 5.7.1 DSN support is disabled", both.their_replies
    else:
        last = "221 2.0.0 Bye" if "silent" in main_cf else "(closed)"  # BDAT's 521 ends it
        assert both.their_replies[-1] == last, both.their_replies
    wanted = r"discarding EHLO|disconnect from unknown\[127.0.0.2\]"
    expected = _transaction_lines(both.theirs, wanted)
    assert _transaction_lines(both.ours, wanted) == expected
    if "silent" not in main_cf:
        assert "EHLO_MASK_SMTPUTF8" in expected[0], expected


ETRN_ACCESS = (
    "inline:{ {w.example=WARN careful} {h.example=HOLD} {d.example=DISCARD} "
    "{r.example=REJECT no} {p.example=PREPEND X-A: b} {f.example=FILTER smtp:x} "
    "{i.example=INFO hi} {rd.example=REDIRECT a@b} {b.example=BCC a@b} {o.example=OK} }"
)


@pytest.mark.slow
def test_etrn_access_actions_logged_as_postfix(start_smtpd) -> None:
    """check_etrn_access: WARN and INFO log the ETRN without a to=<> (Postfix has no
    recipient there), HOLD, DISCARD, FILTER, REDIRECT and BCC are "unavailable in
    smtpd_etrn_restrictions" and PREPEND "always skipped" (a warning each, and the ETRN
    goes on), and an ETRN that starts the flush logs nothing more: the log lines and
    replies of Postfix 3.7."""
    domains = ["w", "h", "d", "r", "p", "f", "i", "rd", "b", "o"]
    main_cf = (
        f"smtpd_etrn_restrictions = check_etrn_access {ETRN_ACCESS}\n"
        "fast_flush_domains = " + ", ".join(f"{d}.example" for d in domains) + "\n"
    )
    dialogue = ["EHLO c.example", *(f"ETRN {d}.example" for d in domains), "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    wanted = r"ETRN|access table"
    expected = _transaction_lines(both.theirs, wanted)
    assert expected[0] == (
        "NOQUEUE: warn: ETRN from unknown[127.0.0.2]: careful; proto=ESMTP helo=<c.example>"
    ), expected
    assert len(expected) == 9, expected
    assert _transaction_lines(both.ours, wanted) == expected


# compatibility_level 0 refuses to start smtpd without a relay restriction.
OLD_COMPAT = (
    "compatibility_level = 0\n"
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [
        "fast_flush_domains = p.example\nparent_domain_matches_subdomains = relay_domains\n",
        "fast_flush_domains = p.example\n",
        OLD_COMPAT,
        OLD_COMPAT + "fast_flush_domains = $relay_domains\n",
        "fast_flush_domains = hash:/nonexistent/flush\n",
    ],
    ids=["no-parent-match", "parent-match", "compat-0", "compat-0-set", "no-table"],
)
def test_etrn_fast_flush_domains_as_postfix(start_smtpd, main_cf: str) -> None:
    """ETRN asks fast_flush_domains as Postfix's domain_list_match: a subdomain of a listed
    domain only while parent_domain_matches_subdomains names fast_flush_domains (Postfix
    3.7's default does, at every compatibility_level). Below compatibility_level 2, with
    relay_domains and fast_flush_domains unset, the list is $mydestination, and each ETRN
    it lets through logs "using backwards-compatible default setting relay_domains=
    $mydestination to flush mail for domain ..."; with fast_flush_domains set, even to
    $relay_domains, nothing is logged. A table that does not open fails each lookup (the
    daemon's surrogate): 458, as for a flush service that does not answer. The replies and
    log lines of Postfix 3.7."""
    sites = ["p.example", "s.p.example", "mx.example.test", "a.mx.example.test"]
    dialogue = ["EHLO c.example", *(f"ETRN {site}" for site in sites), "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    wanted = r"ETRN|default setting relay_domains=|flush service|lookup problem|unavailable\."
    expected = _transaction_lines(both.theirs, wanted)
    assert _transaction_lines(both.ours, wanted) == expected
    if main_cf.startswith("fast_flush_domains = p.example\nparent"):
        assert both.their_replies[3] == "459 <s.p.example>: service unavailable"
    if main_cf == OLD_COMPAT:
        assert expected[-1] == (
            "using backwards-compatible default setting relay_domains=$mydestination to flush"
            ' mail for domain "a.mx.example.test"'
        ), expected
    if "nonexistent" in main_cf:
        assert both.their_replies[2:6] == ["458 Unable to queue messages"] * 4
        assert expected[-1] == "warning: unable to talk to fast flush service", expected


@pytest.mark.slow
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_access_actions_without_mail_from_skipped_as_postfix(
    start_smtpd, delay_reject: str
) -> None:
    """HOLD, BCC and PREPEND from the client restrictions where the session has no MAIL
    FROM (at connect with smtpd_delay_reject = no; VRFY outside a transaction) are
    skipped with Postfix's warning; inside a transaction they act: the log lines and
    replies of Postfix 3.7."""
    main_cf = (
        f"smtpd_delay_reject = {delay_reject}\n"
        "smtpd_client_restrictions = check_client_access "
        "inline:{ {127.0.0.2=PREPEND X-Client: seen} }, "
        "check_client_access inline:{ {127.0.0.2=HOLD} }, "
        "check_client_access inline:{ {127.0.0.2=BCC b@localhost} }\n"
    )
    dialogue = ["EHLO c.example", "VRFY u@localhost", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<u@localhost>", *MESSAGE, "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)
    wanted = r"access table|: (hold|bcc|reject|warn): "
    expected = _transaction_lines(both.theirs, wanted)
    assert any("always skipped" in ln for ln in expected), expected
    assert _transaction_lines(both.ours, wanted) == expected


@pytest.mark.slow
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_access_keys_fold_in_unicode_with_smtputf8_as_postfix(
    start_smtpd, tmp_path: Path, smtputf8: str
) -> None:
    """check_recipient_access asks its tables for the address folded as Postfix's
    casefold(): in full Unicode with smtputf8_enable = yes (`STRASSE` finds `straße`,
    `ÉTÉ` finds `été`), in ASCII only with no. Replies word for word as Postfix 3.7's."""
    t = tmp_path
    (t / "rcpt").write_text(
        "straße@example.com REJECT sharp s\nÉTÉ@example.com REJECT ete\n"
        "ΣΊΣΥΦΟΣ@example.com REJECT sisyphus\n"
    )
    main_cf = (
        f"smtputf8_enable = {smtputf8}\nrelay_domains = example.com, example.net\n"
        f"smtpd_recipient_restrictions = check_recipient_access texthash:{t}/rcpt,"
        " check_recipient_access inline:{{Straße@example.net=REJECT inline}}\n"
    )
    rcpts = [
        "STRASSE@example.com",
        "Straße@example.com",
        "été@example.com",
        "ÉtÉ@example.com",
        "ÉTÉ@example.com",
        "σίσυφοσ@example.com",
        "strasse@example.net",
        "STRAßE@example.net",
    ]
    utf8 = " SMTPUTF8" if smtputf8 == "yes" else ""
    commands = [
        "EHLO mail.example.com",
        f"MAIL FROM:<s@example.org>{utf8}",
        *[f"RCPT TO:<{r}>" for r in rcpts],
    ]
    theirs = _same_final_replies(start_smtpd, main_cf, commands)
    rejects = [line for line in theirs if line[0] == "5"]
    assert len(rejects) == (8 if smtputf8 == "yes" else 4), "\n".join(theirs)


@pytest.mark.slow
@pytest.mark.parametrize("enabled", ["yes", "no"])
def test_original_recipient_records_as_postfix(start_smtpd, enabled: str) -> None:
    """enable_original_recipient: the recipient records of the queue file (original
    recipient, DSN original recipient, NOTIFY) for recipients that virtual aliasing
    changes, folds onto one address or leaves alone, as postcat shows Postfix 3.7's."""
    main_cf = (
        f"enable_original_recipient = {enabled}\n"
        "virtual_alias_maps = inline:{ {a@localhost=b@localhost} {c@localhost=b@localhost} }\n"
    )
    commands = ["EHLO c.example", "MAIL FROM:<s@example.org>", "RCPT TO:<a@localhost>"]
    commands += ["RCPT TO:<c@localhost> NOTIFY=NEVER", "RCPT TO:<B@localhost>"]
    commands += ["RCPT TO:<d@localhost>", *MESSAGE, "QUIT"]
    (theirs,), (ours,) = _queued_on_both(start_smtpd, main_cf, _commands(commands), 1, "-e")
    expected = _recipient_records(theirs.postcat)
    assert expected[1] == "original_recipient: a@localhost", expected
    assert _recipient_records(ours.postcat) == expected


@pytest.mark.slow
@pytest.mark.parametrize("allow", ["yes", "no", "no, no percent hack"])
def test_untrusted_routing_relayed_as_postfix(start_smtpd, allow: str) -> None:
    """reject_unauth_destination with allow_untrusted_routing: an address with a routing
    operator ("%", "!", a quoted "@") left in its local part is relayed with yes and
    refused ("Relay access denied") with no, local domain or not; one routed through a
    local domain to a plain local address is ours either way: the replies of Postfix 3.7."""
    main_cf = f"allow_untrusted_routing = {allow[:3].strip(',')}\nrelay_domains = relay.example\n"
    if "percent" in allow:
        main_cf += "allow_percent_hack = no\n"
    rcpts = ["a%b@relay.example", "b!a@relay.example", '"a@b"@relay.example']
    rcpts += ["a%b%c@relay.example", "root%localhost@mx.example.test", "b!root@localhost"]
    rcpts += ["@x,@y:a@relay.example", "a%b@mx.example.test", "u@relay.example"]
    dialogue = ["EHLO c.example", "MAIL FROM:<s@example.org>"]
    dialogue += [f"RCPT TO:<{r}>" for r in rcpts] + ["QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    relayed = [r.startswith("250") for r in both.their_replies[3:-1]]
    assert relayed[0] == (allow == "yes"), both.their_replies
    assert relayed[4] == ("percent" not in allow), both.their_replies
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_domain_lists_fold_names_in_unicode_with_smtputf8_as_postfix(
    start_smtpd, smtputf8: str
) -> None:
    """relay_domains and mydestination match a domain as Postfix's match_hostname() and
    match_string() fold both sides: in full Unicode with smtputf8_enable = yes (STRASSE
    is straße's domain), in ASCII only with no. Replies word for word as Postfix 3.7's."""
    main_cf = (
        f"smtputf8_enable = {smtputf8}\nrelay_domains = straße.example, ÉTÉ.example\n"
        "mydestination = localhost, STRAẞE.test\nlocal_recipient_maps =\n"
        "smtpd_relay_restrictions = reject_unauth_destination\n"
    )
    utf8 = " SMTPUTF8" if smtputf8 == "yes" else ""
    domains = ["STRASSE.example", "Straße.example", "été.example", "ÉtÉ.example", "strasse.test"]
    commands = [
        "EHLO mail.example.com",
        f"MAIL FROM:<s@example.org>{utf8}",
        *[f"RCPT TO:<u@{d}>" for d in domains],
    ]
    theirs = _same_final_replies(start_smtpd, main_cf, commands)
    refused = [line for line in theirs if line.startswith("554")]
    assert len(refused) == (0 if smtputf8 == "yes" else 2), "\n".join(theirs)


@pytest.mark.slow
@pytest.mark.parametrize("strict", ["yes", "no"])
def test_blanks_inside_the_path_dropped_as_postfix(start_smtpd, strict: str) -> None:
    """White space inside MAIL FROM's and RCPT TO's <...> next to "@", ".", ":" or the
    brackets is dropped (tok822 tokens), with strict_rfc821_envelopes or without; between
    two words it still makes two addresses ("Bad sender address syntax"). The replies of
    Postfix 3.7, whose access(5) reply names the address it took."""
    main_cf = (
        f"strict_rfc821_envelopes = {strict}\nsmtpd_delay_reject = no\n"
        "smtpd_sender_restrictions = check_sender_access inline:{ {a@b.c=REJECT seen} }\n"
        "smtpd_recipient_restrictions = check_recipient_access inline:{ {u@localhost=REJECT "
        "seen} }\n"
    )
    forms = ["<a@b.c >", "< a@b.c>", "<a @b.c>", "<a@ b.c>", "<a. b@c.d>", "<a b@c.d>"]
    forms += ["<a@b .c>", "< >", "<@x.y: a@b.c>", "<a@b.c  > SIZE=1", "<a@b.c\t>"]
    dialogue = ["EHLO c.example"]
    for form in forms:
        dialogue += [f"MAIL FROM:{form}", "RSET"]
    dialogue += ["MAIL FROM:<s@x.example>", "RCPT TO:< u @ localhost >", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[2] == "554 5.7.1 <a@b.c>: Sender address rejected: seen"
    assert both.our_replies[1:] == both.their_replies[1:]


@pytest.mark.slow
@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_restrictions_skipped_after_discard_as_postfix(start_smtpd, delay_reject: str) -> None:
    """Once an access(5) DISCARD is in force, Postfix 3.7's generic_checks evaluates no
    more restrictions until the transaction ends: a recipient that relay control would
    refuse, a HELO that reject_invalid_helo_hostname would, are accepted; after RSET they
    are judged again. The replies of Postfix 3.7."""
    main_cf = (
        f"smtpd_delay_reject = {delay_reject}\n"
        "smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
        "smtpd_sender_restrictions = check_sender_access inline:{ {x@disc.example=DISCARD} }\n"
        "smtpd_data_restrictions = reject\n"
    )
    dialogue = ["EHLO c.example", "MAIL FROM:<x@disc.example>", "RCPT TO:<u@other.example>"]
    dialogue += ["HELO [1.2.3.4", "RCPT TO:<u@localhost>", "DATA", "RSET"]
    dialogue += ["HELO [1.2.3.4", "MAIL FROM:<a@example.org>", "RCPT TO:<u@other.example>"]
    dialogue += ["QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[3] == "250 2.1.5 Ok", both.their_replies
    assert _without_queue_ids(both.our_replies) == _without_queue_ids(both.their_replies)


def _smtpd_lines(lines: list[str]) -> list[str]:
    """The lines of the session from 127.0.0.2 (Postfix's: smtpd's, without their prefix)
    and the backwards-compatible defaults' (some name only a domain), without queue IDs,
    as written with smtputf8_enable = no (8-bit bytes as '?')."""
    texts = [ln.partition("postfix/smtpd[")[2].partition("]: ")[2] or ln for ln in lines]
    texts = [
        printable(t, "?", False)
        for t in texts
        if "127.0.0.2" in t or t.startswith("using backwards-compatible")
    ]
    return [re.sub(r"^[0-9A-F]{10,}: ", "QID: ", t) for t in texts]


def _same_compat_lines(
    start_smtpd: Any, dialogue: list[str], main_cf: str, word: str, count: int
) -> None:
    """The dialogue played on both: Postfix's smtpd logged `count` lines with `word`, and
    ours the same lines and replies."""
    both = Played(start_smtpd, dialogue, main_cf)
    theirs = _smtpd_lines([ln for ln in both.theirs if "postfix/smtpd[" in ln])
    assert sum(word in t for t in theirs) == count, "\n".join(theirs + both.their_replies)
    assert _smtpd_lines(both.ours) == theirs
    # The greetings name mail_name (that after XCLIENT too), which differs on purpose.
    mail_name = re.compile(r"(?<=^220 mx.example.test ESMTP ).*")
    mine, real = (
        [mail_name.sub("", r) for r in _without_queue_ids(replies[1:])]
        for replies in (both.our_replies, both.their_replies)
    )
    assert mine == real


@pytest.mark.slow
def test_backwards_compatible_defaults_logged_at_use_as_postfix(start_smtpd) -> None:
    """compatibility_level = 0, smtpd_relay_restrictions, its order and smtputf8_enable
    left unset: Postfix 3.7's smtpd logs each use of their older defaults, a recipient
    taken that their new defaults would refuse ("smtpd_relay_restrictions = (empty)"),
    one smtpd_recipient_restrictions refused after the refusal's line
    (smtpd_relay_before_recipient_restrictions=no), an 8-bit sender or recipient taken
    without SMTPUTF8 (smtputf8_enable=no). The same lines in the same places as Postfix."""
    main_cf = (
        "compatibility_level = 0\nsmtpd_recipient_restrictions = check_recipient_access"
        " inline:{ {u@remote.example=OK} }, permit_mynetworks, reject_unauth_destination\n"
    )
    dialogue = ["EHLO c.example", "MAIL FROM:<s@sender.example>", "RCPT TO:<u@remote.example>"]
    dialogue += ["RCPT TO:<v@remote.example>", "RCPT TO:<u@mx.example.test>", "RSET"]
    dialogue += ["MAIL FROM:<sé@sender.example>", "RCPT TO:<éu@mx.example.test>"]
    dialogue += ["RCPT TO:<éu@remote.example>", "QUIT"]
    _same_compat_lines(start_smtpd, dialogue, main_cf, "backwards-compatible", 6)


@pytest.mark.slow
def test_mynetworks_style_default_logged_at_use_as_postfix(start_smtpd, monkeypatch) -> None:
    """compatibility_level = 0 and neither mynetworks nor mynetworks_style set: a client
    that permit_mynetworks permits only as mynetworks_style's older default (subnet) has
    it, not as its new one (host: 127.0.0.1/32 here), is logged at each permit, that of
    smtpd_recipient_restrictions and that of the relay restrictions' new default, judged
    to see if their empty older one let a recipient through. As Postfix's smtpd."""
    import tests.smtpd.conftest as smtpd_conftest

    # write_config's base without its mynetworks, on both sides: the style computes it.
    original = write_config

    def base_without_mynetworks(tmp: str, main_cf: str) -> str:
        written = original(tmp, main_cf)
        path = Path(written, "main.cf")
        path.write_text(re.sub(r"^mynetworks = .*\n", "", path.read_text(), flags=re.M))
        return written

    monkeypatch.setattr(smtpd_conftest, "write_config", base_without_mynetworks)
    monkeypatch.setattr(sys.modules[__name__], "write_config", base_without_mynetworks)
    main_cf = (
        "compatibility_level = 0\n"
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
    )
    dialogue = ["EHLO c.example", "MAIL FROM:<s@sender.example>", "RCPT TO:<u@remote.example>"]
    dialogue += ["RCPT TO:<u@mx.example.test>", "QUIT"]
    _same_compat_lines(start_smtpd, dialogue, main_cf, "mynetworks_style=subnet", 4)


@pytest.mark.slow
def test_relay_domains_default_logged_at_use_as_postfix(start_smtpd) -> None:
    """compatibility_level = 0 and relay_domains unset: a recipient in a subdomain of
    mydestination is relayed only as relay_domains' older default ($mydestination, whose
    parent domains match) has it, not as its new one (empty). Postfix's smtpd logs each
    use: permit_auth_destination's (here twice a recipient, once in each restriction
    list), the recipient table check's, and the obsolete check_relay_domains' for a
    client whose name it lists (set with XCLIENT), which it permits anywhere; others it
    refuses in its own words. Ours logs and replies the same."""
    main_cf = (
        "compatibility_level = 0\nsmtpd_recipient_restrictions = check_relay_domains, reject\n"
        "smtpd_relay_restrictions = permit_auth_destination, permit\n"
        "smtpd_authorized_xclient_hosts = 127.0.0.2\n"
    )
    dialogue = ["EHLO c.example", "MAIL FROM:<s@sender.example>"]
    dialogue += ["RCPT TO:<u@sub.mx.example.test>", "RCPT TO:<u@mx.example.test>"]
    dialogue += ["RCPT TO:<u@remote.example>", "RCPT TO:<u@a.b.localhost>", "RSET"]
    dialogue += ["XCLIENT NAME=relay.mx.example.test", "EHLO c.example"]
    dialogue += ["MAIL FROM:<s@sender.example>", "RCPT TO:<u@remote.example>", "RSET"]
    # Back to no name, so the session ends as the harness waits for it to.
    dialogue += ["XCLIENT NAME=[UNAVAILABLE]", "QUIT"]
    _same_compat_lines(start_smtpd, dialogue, main_cf, "relay_domains=$mydestination", 7)


@pytest.mark.slow
@pytest.mark.parametrize(
    "actions",
    [
        "",
        "smtpd_recipient_restrictions = check_recipient_access"
        " inline:{ {p@localhost=FILTER relay:[127.0.0.1]:10026} }, permit\n",
        "header_checks = regexp:{ {/^Subject:/ FILTER relay:[127.0.0.1]:10027} }\n",
    ],
    ids=["content_filter", "access_filter", "header_filter"],
)
def test_content_filter_records_as_postfix(start_smtpd, actions: str) -> None:
    """main.cf's content_filter, which smtpd passes to cleanup first, is in the queue
    file's envelope segment (postcat -e: after create_time), and a FILTER action's over
    it in the extracted segment, as Postfix 3.7's cleanup writes them."""
    main_cf = f"{GOLDEN_MAIN_CF}content_filter = smtp:[127.0.0.1]:10025\n{actions}"
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<p@localhost>"]
    dialogue += ["DATA", "Subject: s\r\n\r\nbody\r\n.", "QUIT"]
    (theirs,), (ours,) = _queued_on_both(start_smtpd, main_cf, _commands(dialogue), 1, "-e")
    assert "content_filter: smtp:[127.0.0.1]:10025" in theirs.postcat.stdout
    assert _envelope_view(ours) == _envelope_view(theirs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "end",
    [
        ["DATA", "Subject: s\r\n\r\nbody\r\n."],
        ["DATA", "Subject: refused\r\n\r\nbody\r\n."],
        ["BDAT 10 LAST\r\nSubject: s"],
        ["DATA", "Subject: s\r\n\r\nbody\r\n.", "RSET"],
    ],
    ids=["queued", "refused", "bdat", "rset"],
)
def test_hang_up_after_the_message_logged_as_postfix(start_smtpd, end: list[str]) -> None:
    """A client that hangs up without QUIT once its message was answered, queued or
    refused, by DATA or BDAT, is not 'lost connection after DATA' in Postfix's log: its
    smtpd logs that only for a stage before the message's end or after a command since."""
    main_cf = f"{GOLDEN_MAIN_CF}header_checks = regexp:{{ {{/^Subject: refused/ REJECT no}} }}\n"
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<p@localhost>"]
    both = Played(start_smtpd, [*dialogue, *end], main_cf)
    ours, theirs = (
        [t for t in _smtpd_lines(lines) if "connect" in t or "connection" in t]
        for lines in (both.ours, [ln for ln in both.theirs if "smtpd[" in ln])
    )
    assert len(theirs) == 2 + (end[-1] == "RSET"), theirs
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("how", ["hang_up", "timeout"])
def test_session_cut_in_data_logged_as_postfix(start_smtpd, how: str) -> None:
    """A session that ends in DATA, the client gone or smtpd_timeout reached, is logged
    with the bytes of the whole lines read (dot-unstuffed, each with its <CR><LF>, and a
    line longer than line_length_limit as its pieces, each counted with one), as Postfix's
    smtpd logs it: 'lost connection|timeout after DATA (N bytes)'."""
    main_cf = f"{GOLDEN_MAIN_CF}smtpd_timeout = 1s\n"

    def play(port: int) -> None:
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        raw.reply()
        for command in ("EHLO c.example", "MAIL FROM:<a@example.org>", "RCPT TO:<p@localhost>"):
            raw.cmd(command)
        raw.cmd("DATA")
        raw.send(b"Subject: cut\r\n\r\n..dot\r\n" + b"x" * 3000 + b"\r\npartial")
        if how == "timeout":
            assert raw.reply() == "421 4.4.2 mx.example.test Error: timeout exceeded"
        raw.close()

    def session(lines: list[str]) -> list[str]:
        return [t for t in _smtpd_lines(lines) if " after " in t]

    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
        play(port)
        deadline = time.monotonic() + 20
        while not (theirs := session((d / "maillog").read_text().splitlines())):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    srv = start_smtpd(main_cf)
    play(srv.port)
    deadline = time.monotonic() + 20
    while not (ours := session(srv.log)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    what = "lost connection" if how == "hang_up" else "timeout"
    assert theirs == [f"{what} after DATA (3026 bytes) from unknown[127.0.0.2]"]
    assert ours == theirs


@pytest.mark.slow
def test_access_filter_redirect_and_prepend_reach_the_queue_file_as_postfix(start_smtpd) -> None:
    """access(5) FILTER, REDIRECT and PREPEND act on the message as Postfix 3.7's smtpd has
    cleanup apply them: the FILTER and the REDIRECT target where postcat -e shows them
    (the extracted segment's start), and every PREPEND header, in order, above smtpd's
    Received: (postcat -h)."""
    main_cf = (
        f"{GOLDEN_MAIN_CF}"
        "smtpd_sender_restrictions = check_sender_access"
        " inline:{ {a@example.org=PREPEND X-First: one} }\n"
        "smtpd_recipient_restrictions = check_recipient_access inline:{"
        " {f@localhost=FILTER relay:[127.0.0.1]:10026},"
        " {r@localhost=REDIRECT target@example.com},"
        " {p@localhost=PREPEND X-Second: two} }, permit\n"
    )
    message = ["DATA", "Subject: s\r\n\r\nbody\r\n."]
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    dialogue += ["RCPT TO:<f@localhost>", "RCPT TO:<r@localhost>"]
    dialogue += ["RCPT TO:<p@localhost>", *message, "QUIT"]
    (theirs,), (ours,) = _queued_on_both(start_smtpd, main_cf, _commands(dialogue), 1, "-e", "-h")
    assert "content_filter: relay:[127.0.0.1]:10026" in theirs.postcat.stdout
    assert "X-First: one\nX-Second: two\nReceived: " in theirs.postcat.stdout
    # The Received: header's time and MTA name apart.
    mine, real = ("\n".join(_envelope_view(q)) for q in (ours, theirs))
    mine = mine.replace("(oxipost)", "(Postfix)")
    assert re.sub(r"\d\d:\d\d:\d\d", "TIME", mine) == re.sub(r"\d\d:\d\d:\d\d", "TIME", real)
