"""Local submission (sendmail → pickup → cleanup → local) compared with real Postfix 3.7's:
what the mailbox holds and what local(8) logs.

Each system is sent the same messages through its own sendmail, to an unqualified
recipient, a qualified one and to recipients sendmail -t takes from To:, with and without
a From: header, with full names from -F (plain, with specials, with runs of blanks, blanks
only, not ASCII, empty), $NAME and the passwd gecos, from the null sender, and with a
Resent- header. Postfix's cleanup qualifies an unqualified recipient and keeps it as the
original one (orig_to=<daemon>, X-Original-To: daemon), and adds the missing From: after
the other headers, in header_from_format's form, both of which must be the same here once
queue IDs, dates and mail_name are set aside.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import postfix_log_lines, wait_for_log
from tests.delivery.test_e2e_local import running_ours
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

# (sendmail arguments, message, environment); each message's Subject: names it.
SUBMISSIONS: list[tuple[list[str], str, dict[str, str]]] = [
    (["-F", "Joe Q. Public", "daemon"], "Subject: one\nX-A: b\n\nbody\n", {}),
    (["-F", "  Joe \t  Public  ", "daemon"], "Subject: two\n\nbody\n", {}),
    (["-F", 'Joe (x) "Pub" \\ <y>', "daemon@localhost"], "Subject: three\n\nbody\n", {}),
    (["daemon"], "Subject: four\n\nbody\n", {"NAME": "N. Ame"}),
    (["daemon"], "Subject: five\n\nbody\n", {"NAME": ""}),
    (["-F", "J\u00f6rg M\u00fcller", "daemon"], "Subject: six\n\nbody\n", {}),
    (["-F", "   ", "daemon"], "Subject: seven\n\nbody\n", {}),
    (["-f", "<>", "-F", "X Y", "daemon"], "Subject: eight\n\nbody\n", {}),
    (["-F", "Joe", "daemon"], "Subject: nine\nResent-To: bin\n\nbody\n", {}),
    # The passwd gecos (root's: "root").
    (["daemon"], "Subject: ten\nTo: someone\n\nbody\n", {}),
    (["-F", "Joe", "daemon"], "Subject: eleven\nFrom: me\n\nbody\n", {}),
    (["-F", "", "-t"], "Subject: twelve\nTo: daemon, bin@localhost\n\nbody\n", {}),
    # Each argument is an address list: a phrase and <>, a comma.
    (["-F", "", "Daemon <daemon>, bin"], "Subject: thirteen\n\nbody\n", {}),
]
# Deliveries: twelve and thirteen go to two mailboxes each.
DELIVERIES = len(SUBMISSIONS) + 2


def _main_cf(top: Path, hfrom: str) -> str:
    return (
        f"mail_spool_directory = {top}/mail\nalias_maps =\nalias_database =\n"
        f"header_from_format = {hfrom}\n"
    )


def _send(sendmail: list[str], conf: str, env: dict[str, str], maillog: Path) -> str:
    for args, text, extra in SUBMISSIONS:
        r = subprocess.run(
            [*sendmail, "-C", conf, *args],
            input=text.encode(),
            env={k: v for k, v in env.items() if k != "NAME"} | extra,
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 60
    while True:
        log = maillog.read_text() if maillog.exists() else ""
        if log.count("status=sent") >= DELIVERIES:
            return log
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


def _delivered(top: Path, log: str) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Each delivered message by (mailbox, Subject), and local's lines, each with its queue
    ID replaced by its message's Subject; queue IDs, dates and mail_name set aside."""
    subjects: dict[str, str] = {}
    messages = {}
    for box in sorted((top / "mail").iterdir()):
        for msg in re.split(r"^(?=From \S+ +\w{3} \w{3} )", box.read_text(), flags=re.M)[1:]:
            qid = re.search(r"^\tid ([0-9A-F]+);", msg, re.M)
            subject = re.search(r"^Subject: (\w+)$", msg, re.M)
            assert qid and subject, msg
            subjects[qid.group(1)] = subject.group(1)
            msg = msg.replace(qid.group(1), "QID")
            msg = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} \(\w+\)", "DATE", msg)
            msg = re.sub(r"^(From \S+ +).*", r"\1DATE", msg)
            msg = re.sub(r"<\d{14}\.", "<STAMP.", msg).replace("(oxipost,", "(Postfix,")
            messages[(box.name, subject.group(1))] = msg
    lines = []
    for m in re.finditer(r" postfix/local\[\d+\]: ([0-9A-F]+): (to=.*), relay=", log):
        lines.append(f"{subjects[m.group(1)]}: {m.group(2)}")
    return messages, sorted(lines)


def submit(sendmail: list[str], args: list[str], text: str) -> subprocess.CompletedProcess:
    """One submission through a sendmail command line (ours or Postfix's), its output kept."""
    return subprocess.run([*sendmail, *args], input=text.encode(), capture_output=True, timeout=30)


def our_sendmail(top: Path, main_cf: str = "") -> list[str]:
    """Our sendmail's command line with a configuration of its own in top (main_cf's
    settings added), logging to top/maillog; no mail system runs there."""
    conf = top / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {top}/spool\nmaillog_file = {top}/maillog\n"
        f"maillog_file_prefixes = {top}\n{main_cf}"
    )
    (top / "maillog").write_text("")
    return [sys.executable, "-m", "oxipost.cli.sendmail", "-C", str(conf)]


@pytest.mark.parametrize("hfrom", ["standard", "obsolete"])
def test_local_submission_as_postfix(shared_tmp: Path, hfrom: str) -> None:
    results = {}
    for who in ("postfix", "oxipost"):
        top = shared_tmp / who
        top.mkdir()
        (top / "mail").mkdir(mode=0o1777)
        (top / "mail").chmod(0o1777)
        main_cf = _main_cf(top, hfrom)
        if who == "postfix":
            logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
            with running_postfix(main_cf + logging) as (_port, d):
                env = dict(os.environ, MAIL_CONFIG=str(d))
                log = _send(["/usr/sbin/sendmail"], str(d), env, d / "maillog")
        else:
            services = "pickup unix n - n 60 1 pickup\n"
            with running_ours(top, main_cf + f"queue_directory = {top}/spool\n", services):
                sendmail = [sys.executable, "-m", "oxipost.cli.sendmail"]
                log = _send(sendmail, str(top / "conf"), dict(os.environ), top / "maillog")
        results[who] = _delivered(top, log)
    (ours_msgs, ours_lines), (theirs_msgs, theirs_lines) = results["oxipost"], results["postfix"]
    assert ours_lines == theirs_lines
    assert "ten: to=<daemon@mx.example.test>, orig_to=<daemon>" in ours_lines
    assert sorted(ours_msgs) == sorted(theirs_msgs)
    for key, text in theirs_msgs.items():
        assert ours_msgs[key] == text, key


# sendmail's refusals: (arguments, message); none of them queues anything.
REFUSED = [
    ([], "Subject: x\n\n"),
    (["-bv"], ""),
    (["-f", "<x@y>", "-i"], "Subject: x\n\n"),
    (["-f", "<>"], "Subject: x\n\n"),
    (["-f", "a@b, c@d"], "Subject: x\n\n"),
    (["-t", "-f", "Me <me@y>"], "Subject: no recipients\nCc:\n\n"),
    (["-t", "-bv", "a"], ""),
    (["-Z", "a"], ""),
    (["-f"], ""),
    (["-n", "a"], ""),
    (["-B", "bad", "a"], ""),
    (["-ZY", "-B", "x"], ""),
    (["-o"], ""),
    (["-oi", "-tV"], ""),
    (["-bX"], ""),
    (["-XQ"], ""),
    (["-oA"], ""),
    (["-qR"], ""),
    (["-qI"], ""),
    (["-qX"], ""),
    (["-t", "-bp"], ""),
    (["-bh", "-t"], ""),
    (["-t", "-q"], ""),
    (["-bv", "-N", "success", "a"], ""),
    (["-bv", "-R", "full", "a"], ""),
    (["-bv", "-v", "a"], ""),
    (["-qRsite", "a"], ""),
    (["-qIABC", "a"], ""),
    (["-bp", "a"], ""),
    (["-q", "a"], ""),
    (["-bi", "a"], ""),
    (["-I", "a"], ""),
    (["-bs", "a"], ""),
    (["-bd", "-q", "a"], ""),
    (["-bm"], "Subject: x\n\n"),
    # Nothing to do: a queue run interval outside daemon mode, host status.
    (["-q5m"], ""),
    (["-bh"], ""),
    # VERP delimiters: two of verp_delimiter_filter, and a sender (the old -V forms too).
    (["-XVab", "a"], ""),
    (["-Vab", "a"], ""),
    (["-XV+=", "-f", "<>", "a"], "Subject: x\n\n"),
]
# Submissions sendmail takes with a warning for an option value it ignores.
WARNED = [
    (["-N", "never,success", "a"], "Subject: x\n\n"),
    (["-N", "Bogus,success", "a"], "Subject: x\n\n"),
    (["-N", "", "a"], "Subject: x\n\n"),
    (["-R", "bogus", "a"], "Subject: x\n\n"),
    (["-V", "x" * 101, "a"], "Subject: x\n\n"),
    (["-V", "a\tb", "a"], "Subject: x\n\n"),
    (["-V", "\u00e9", "a"], "Subject: x\n\n"),
]


def test_sendmail_refusals_as_postfix(tmp_path: Path) -> None:
    """What Postfix 3.7's sendmail says, exits with (75 after every fatal error) and logs
    when it refuses a submission: no recipient (counted once the message is read, named
    with the sender and uid), none in the header with -t, options it does not know or
    take (getopt's complaints twice: it scans for -C first), modes that take no
    recipient, options that do not go together; -f takes the first address of a list,
    with a warning, and a DSN option value it ignores has one."""
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(logging) as (_port, d):
        postfix = ["/usr/sbin/sendmail", "-C", str(d)]
        theirs = [submit(postfix, args, text) for args, text in REFUSED + WARNED]
        # Each fatal error and warning is logged.
        expected = sum(
            r.stderr.count(b": fatal: ") + r.stderr.count(b": warning: ") for r in theirs
        )
        text = wait_for_log(d / "maillog", r" postfix/sendmail\[", expected)
        their_log = [
            ln.split("]: ", 1)[1] for ln in text.splitlines() if " postfix/sendmail[" in ln
        ]
    sendmail = our_sendmail(tmp_path)
    for (args, text), their in zip(REFUSED + WARNED, theirs, strict=True):
        mine = submit(sendmail, args, text)
        assert (mine.returncode, mine.stderr) == (their.returncode, their.stderr), args
        refused = (args, text) in REFUSED and args not in (["-q5m"], ["-bh"])
        assert their.returncode == (75 if refused else 0), args
    our_log = [ln.split("]: ", 1)[1] for ln in (tmp_path / "maillog").read_text().splitlines()]
    assert our_log == their_log
    assert (
        "fatal: (0): Recipient addresses must be specified on the command line or via the -t option"
        in our_log
    )
    assert len(list(tmp_path.glob("spool/maildrop/*"))) == len(WARNED)


# Daemon mode while the mail system runs already: -C names the directory or its main.cf.
DAEMON_MODE = [["-bd"], ["-bl", "-q30m"]]
ALREADY_RUNNING = r"postfix-script\[\d+\]: fatal: the Postfix mail system is already running$"


def _daemon_mode(
    sendmail: list[str], mailq: list[str], conf: Path, maillog: Path
) -> tuple[list[object], list[str]]:
    """What each DAEMON_MODE command line, then mailq -C main.cf, exits with and prints,
    and the postfix-script lines logged after them, once each `postfix start` has refused
    to start a second master."""
    before = len(maillog.read_text().splitlines())
    said = []
    for config, args in zip([str(conf), f"{conf}/main.cf"], DAEMON_MODE, strict=True):
        done = submit([*sendmail, "-C", config], args, "")
        said.append((done.returncode, done.stdout, done.stderr))
    done = submit([*mailq, "-C", f"{conf}/main.cf"], [], "")
    said.append((done.returncode, done.stdout, done.stderr))
    log = "\n".join(wait_for_log(maillog, ALREADY_RUNNING, len(DAEMON_MODE)).splitlines()[before:])
    return said, [text for _prog, text in postfix_log_lines(log, ["postfix-script"])]


def test_daemon_mode_as_postfix(shared_tmp: Path) -> None:
    """sendmail -bd (-bl) is Postfix's mail_run_background() of `postfix start`: sendmail
    exits 0 without waiting for it, whatever it says (here that the mail system runs
    already, in the log alone as stderr is no terminal), with a -q interval too. sendmail
    and mailq take -C main.cf for its directory."""
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(logging) as (_port, d):
        theirs = _daemon_mode(["/usr/sbin/sendmail"], ["/usr/bin/mailq"], d, d / "maillog")
    with running_ours(shared_tmp, "", "showq unix n - n - - showq\n"):
        sendmail, mailq = (
            [sys.executable, "-m", f"oxipost.cli.{tool}"] for tool in ("sendmail", "mailq")
        )
        mine = _daemon_mode(sendmail, mailq, shared_tmp / "conf", shared_tmp / "maillog")
    assert mine == theirs
    refused = ["fatal: the Postfix mail system is already running"] * len(DAEMON_MODE)
    listed = (0, b"Mail queue is empty\n", b"")
    assert theirs == ([(0, b"", b"")] * len(DAEMON_MODE) + [listed], refused)
