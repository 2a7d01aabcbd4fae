"""sendmail -bv compared with real Postfix 3.7's: the probe, its log lines and its report.

The same main.cf runs under our master and under Postfix, with the same smtp-sink next
hops; `sendmail -bv` names a local mailbox user, aliases to a file, a command and a list
(a local user, the file, a remote address), an :include: list and a user's .forward (to
users, remote addresses, a file and a command), an unknown local user, virtual Maildir and
mbox users and an unknown virtual one, relays to an smtp-sink that accepts RCPT, one that
refuses it (5xx) and one that defers it (4xx), a discard: and an error: transport and a
pipe(8) service (Debian's uucp). Both must say the same on stdout, log the same pickup,
qmgr, agent and bounce lines (status=deliverable or undeliverable, "sender delivery status
notification"), and mail the sender the same "Mail Delivery Status Report" (its headers,
text, delivery-status fields and the probe's headers) once queue IDs, dates, pids and
delays are set aside: recipients in any order, as each system finishes them in its own.
Nothing is delivered: no mailbox but the sender's (the report), no file appended, no
command run, nothing sent past RCPT TO.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.qmgr.queue import message_size

from tests.conftest import free_port, postfix_log_lines, run_ours, smtp_sink
from tests.delivery.test_e2e_local import running_ours
from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

SENDER = "nobody@localhost"
RCPTS = [
    "daemon@localhost",
    "tofile@localhost",
    "tocmd@localhost",
    "multi@localhost",
    "nosuch@localhost",
    "v@virt.test",
    "m@virt.test",
    "x@virt.test",
    "a@sink.test",
    "b@hard.test",
    "c@soft.test",
    "d@disc.test",
    "e@err.test",
    "f@uucp.test",
]
PROGRAMS = ("pickup", "qmgr", "local", "virtual", "smtp", "error", "discard", "pipe", "bounce")


def _main_cf(top: Path, ports: list[int]) -> str:
    ok, hard, soft = ports
    return (
        # The alias table of a root-owned file: inline: is (Postfix's dict_inline).
        "alias_maps = inline:{ "
        f'{{tofile={top}/file.out}}, {{tocmd="|/bin/touch {top}/cmd.out"}}, '
        "{multi=daemon, tofile, other@sink.test}, "
        f"{{incl=:include:{top}/list}} }}\n"
        f"alias_database =\nmail_spool_directory = {top}/mail\n"
        f"virtual_mailbox_domains = virt.test\nvirtual_mailbox_base = {top}/vmail\n"
        "virtual_mailbox_maps = inline:{ v@virt.test=v/, m@virt.test=m }\n"
        "virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n"
        f"transport_maps = inline:{{ sink.test=smtp:[127.0.0.1]:{ok}, "
        f"hard.test=smtp:[127.0.0.1]:{hard}, soft.test=smtp:[127.0.0.1]:{soft}, "
        "{disc.test=discard:dropped here}, {err.test=error:5.1.2 no such place}, "
        "uucp.test=uucp:gateway.test }\n"
        # Expanded by cleanup as the probe is queued: each address reported with the
        # original.
        "virtual_alias_maps = inline:{ {va@localhost=bin@localhost, a2@sink.test} }\n"
        "queue_run_delay = 1h\n"
    )


@pytest.fixture
def sinks() -> Iterator[tuple[list[int], Path]]:
    """The next hops (accepting, 5xx and 4xx to RCPT), and what the accepting one heard."""
    ports = [free_port() for _ in range(3)]
    ok, hard, soft = ports
    heard = Path(f"/tmp/oxipost-bv-sink-{os.getpid()}.txt")
    try:
        with (
            smtp_sink(ok, "-v", output=heard),
            smtp_sink(hard, "-f", "RCPT"),
            smtp_sink(soft, "-r", "RCPT"),
        ):
            yield ports, heard
    finally:
        heard.unlink(missing_ok=True)


def _wait(maillog: Path) -> str:
    """The log once the probe's report is delivered and both are removed (or the probe,
    when no report is sent)."""
    deadline = time.monotonic() + 60
    while True:
        log = maillog.read_text() if maillog.exists() else ""
        qids = re.findall(r" notification: ([0-9A-F]+)", log)
        if qids and all(f"{q}: removed" in log for q in qids) and log.count(": removed") >= 2:
            return log
        if "not sending trace" in log and ": removed" in log:
            return log
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


# What the probe needs besides running_ours' smtpd, qmgr and local; uucp as in Debian's
# master.cf, which real Postfix runs.
SERVICES = """\
pickup unix n - n 60 1 pickup
virtual unix - n n - - virtual
smtp unix - - n - - smtp
error unix - - n - - error
discard unix - - n - - discard
uucp unix - n n - - pipe
  flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
"""


def _run_ours(top: Path, main_cf: str, sendmail: list[str]) -> tuple[str, str]:
    with running_ours(top, main_cf, SERVICES):
        r = run_ours("sendmail", "-C", str(top / "conf"), *sendmail)
        assert r.returncode == 0, r.stderr
        return r.stdout, _wait(top / "maillog")


def _run_postfix(main_cf: str, sendmail: list[str]) -> tuple[str, str]:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(main_cf + logging) as (_port, d):
        env = dict(os.environ, MAIL_CONFIG=str(d))
        r = subprocess.run(
            ["/usr/sbin/sendmail", "-C", str(d), *sendmail],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout, _wait(d / "maillog")


def _roles(log: str) -> dict[str, str]:
    m = re.search(r"pickup\[\d+\]: ([0-9A-F]+): ", log)
    assert m, log
    roles = {m.group(1): "QID"}
    for qid in re.findall(r" notification: ([0-9A-F]+)", log):
        roles[qid] = "REPORT"
    return roles


def _normal(text: str, roles: dict[str, str], top: Path) -> str:
    text = text.replace(str(top), "TOP")
    for qid, role in roles.items():
        text = text.replace(qid, role)
    text = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", text)
    text = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"\.\d{9,10}/", ".TIME/", text)  # the report's MIME boundary
    text = re.sub(r"<\d{14}\.", "<STAMP.", text)  # Message-Id
    return text.replace("(oxipost", "(Postfix")


def _lines(log: str, top: Path) -> tuple[list[str], dict[str, int]]:
    """The compared programs' lines without time, host, pid and delays, queue IDs by role;
    and each message's size= (queue IDs of other lengths make other sizes)."""
    roles = _roles(log)
    out, sizes = [], {}
    for program, line in postfix_log_lines(log, PROGRAMS):
        text = _normal(line, roles, top)
        s = re.search(r"^(\w+): from=<.*>, size=(\d+), ", text)
        if s:
            sizes[s.group(1)] = int(s.group(2))
            text = text.replace(f"size={s.group(2)}", "size=N")
        out.append(f"{program}: {text}")
    return sorted(out), sizes


def _sizes_as_queued(top: Path) -> dict[str, int]:
    """The size of the report and of the probe as each system counts it (its queue file's
    records): the report as the mailbox holds it without local(8)'s headers, the probe as
    the report returns it (it has headers only)."""
    raw = re.split(r"^From MAILER-DAEMON .*\n", (top / "mail" / "nobody").read_text(), flags=re.M)
    report = re.sub(r"\A(?:(?:Return-Path|X-Original-To|Delivered-To): .*\n)+", "", raw[1])[:-1]
    probe = report.split("Return-Path: <nobody@localhost>\n", 1)[1].rsplit("\n\n--", 1)[0]
    return {
        role: message_size(text.replace("\n", "\r\n").encode(), 2048)
        for role, text in (("REPORT", report), ("QID", probe + "\n"))
    }


def _report(top: Path, log: str) -> dict[str, object]:
    """The report in the sender's mailbox, in parts: its headers (without local(8)'s), the
    text's opening and its recipient paragraphs (as a set), the delivery-status part's
    message fields and recipient blocks (as a set), the probe's headers."""
    text = _normal((top / "mail" / "nobody").read_text(), _roles(log), top)
    messages = re.split(r"^From MAILER-DAEMON .*\n", text, flags=re.M)[1:]
    assert len(messages) == 1, text
    head, _, body = messages[0].partition("\n\n")
    boundary = re.search(r'boundary="([^"]+)"', head)
    assert boundary, head
    parts = body.split(f"--{boundary.group(1)}")
    assert len(parts) == 5 and parts[4] == "--\n\n", parts
    notice_head, _, notice = parts[1].partition("\n\n")
    opening, *paragraphs = notice.split("\n\n<")
    dsn_head, _, dsn = parts[2].partition("\n\n")
    fields, *blocks = dsn.strip("\n").split("\n\n")
    added = re.compile(r"\A(?:(?:Return-Path|X-Original-To|Delivered-To): .*\n)+")
    return {
        "head": added.sub("", head),
        "preamble": parts[0],
        "notice": (notice_head, opening, sorted(p.strip("\n") for p in paragraphs)),
        "dsn": (dsn_head, fields, sorted(blocks)),
        "probe": parts[3],
    }


def test_sendmail_bv_as_postfix(
    shared_tmp: Path, sinks: tuple[list[int], Path], system_user: pwd.struct_passwd
) -> None:
    ports, heard = sinks
    # An :include: list, and a user's .forward (to a user, a remote address and a command).
    user = system_user.pw_name
    forward = Path(system_user.pw_dir) / ".forward"
    forward.write_text(f'daemon, fwd@sink.test, "|/bin/touch {shared_tmp}/fwd.out"\n')
    os.chown(forward, system_user.pw_uid, system_user.pw_gid)
    # va: a virtual alias, expanded by cleanup as the probe is queued.
    more = ["incl@localhost", f"{user}@localhost", "va@localhost"]
    sendmail = ["-f", SENDER, "-bv", *RCPTS, *more]
    results = {}
    # Names of one length: the paths in the report fold alike.
    for who in ("postfix", "oxipost"):
        top = shared_tmp / who
        for d in (top, top / "mail", top / "vmail"):
            d.mkdir(mode=0o755)
        (top / "mail").chmod(0o1777)
        (top / "vmail").chmod(0o777)
        main_cf = _main_cf(top, ports)
        (top / "list").write_text(f"bin\ninc@sink.test\n{top}/incl.out\n")
        if who == "postfix":
            stdout, log = _run_postfix(main_cf, sendmail)
        else:
            stdout, log = _run_ours(top, main_cf, sendmail)
        assert stdout == f"Mail Delivery Status Report will be mailed to <{SENDER}>.\n"
        # The report, and nothing else, was delivered.
        assert sorted(p.name for p in (top / "mail").iterdir()) == ["nobody"], who
        assert not any((top / "vmail").iterdir()), who
        written = [f for f in ("file.out", "cmd.out", "incl.out") if (top / f).exists()]
        assert not written and not (shared_tmp / "fwd.out").exists(), who
        lines, sizes = _lines(log, top)
        assert sizes == _sizes_as_queued(top), who
        results[who] = (lines, _report(top, log))
    ours, theirs = results["oxipost"], results["postfix"]
    assert ours[0] == theirs[0]
    for part, value in theirs[1].items():
        assert ours[1][part] == value, part
    # Both stopped at RCPT TO: the accepting next hop never saw DATA.
    said = heard.read_text()
    assert said.count("RCPT TO:<a@sink.test>") == 2 and "DATA" not in said, said
    assert said.count("RCPT TO:<a2@sink.test>") == 2, said


def test_sendmail_bv_t_refused(shared_tmp: Path) -> None:
    """-t with -bv is refused as Postfix 3.7's sendmail refuses it (its fatal error, exit
    75), before anything is queued."""
    write_config(str(shared_tmp), "")
    (shared_tmp / "spool" / "maildrop").mkdir(parents=True)
    argv = ["-C", str(shared_tmp), "-f", SENDER, "-bv", "-t", "x@localhost"]
    ours = run_ours("sendmail", *argv, stdin="")
    env = dict(os.environ, MAIL_CONFIG=str(shared_tmp))
    theirs = subprocess.run(
        ["/usr/sbin/sendmail", *argv], env=env, input="", capture_output=True, text=True
    )
    assert theirs.stderr == "sendmail: fatal: -t option cannot be used with -bv\n"
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        theirs.returncode,
        theirs.stdout,
        theirs.stderr,
    )
    assert not os.listdir(shared_tmp / "spool" / "maildrop")


@pytest.mark.parametrize("sender", ["<>", "MAILER-DAEMON", "double-bounce"])
def test_sendmail_bv_reports_to_no_bounce_address(shared_tmp: Path, sender: str) -> None:
    """A probe from the null sender or the double-bounce address is reported to nobody
    ("not sending trace/success notification for single-bounce message", or
    double-bounce, as Postfix's bounce logs it); MAILER-DAEMON is the null sender once
    cleanup has it (cleanup_addr_sender)."""
    results = {}
    for who in ("postfix", "oxipost"):
        top = shared_tmp / who
        for d in (top, top / "mail"):
            d.mkdir(mode=0o755)
        (top / "mail").chmod(0o1777)
        main_cf = f"alias_maps =\nalias_database =\nmail_spool_directory = {top}/mail\n"
        sendmail = ["-f", sender, "-bv", "daemon@localhost"]
        if who == "postfix":
            stdout, log = _run_postfix(main_cf, sendmail)
        else:
            stdout, log = _run_ours(top, main_cf, sendmail)
        lines = _lines(log, top)[0]
        results[who] = stdout, lines, sorted(p.name for p in (top / "mail").iterdir())
    assert results["oxipost"] == results["postfix"]
