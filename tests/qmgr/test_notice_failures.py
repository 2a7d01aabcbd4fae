"""A bounce, delay or success notice that cannot be built or queued, compared with real
Postfix 3.7's.

bounce(8) dies of its template file (an undefined $name in bounce_template_file), or
cleanup refuses the notice (a header_checks REJECT of its Subject: under
internal_mail_filter_classes = bounce). Postfix's qmgr then logs `QID: status=deferred
(bounce failed)` ("trace failed" for a success notice, "delay warning failed" for a delay
warning) and keeps the message in the deferred queue; nothing is removed. Both systems run
the same main.cf: the pass must log the same qmgr, smtp, local, bounce and cleanup lines and
leave the message queued, listed alike by mailq. The recipients whose notice failed are
done: Postfix keeps them in the message's bounce or trace logfile, ours in its notice log.
Then the fault is taken away, both reload and flush, and the notice goes out from that log:
the retry's lines are compared too, and no recipient is delivered to twice."""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import free_port, postfix_log_lines, run_ours
from tests.delivery.test_e2e_local import running_ours
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

SENDER = "nobody@localhost"
PROGRAMS = ("qmgr", "smtp", "local", "bounce", "cleanup")
# Under internal_mail_filter_classes = bounce.
REJECTED = (
    "/^Subject: Undelivered Mail/ REJECT no bounce\n"
    "/^Subject: Delayed Mail/ REJECT no delay\n"
    "/^Subject: Successful Mail/ REJECT no success\n"
)
UNDEFINED = "".join(
    f"{kind}_template = <<EOF\nSubject: x\n\nhello $nosuchparam\nEOF\n"
    for kind in ("failure", "delay", "success")
)


class Scenario(NamedTuple):
    main_cf: str
    # Recipients, each with its RCPT options after a space.
    rcpts: list[str]
    # The qmgr line of the failed pass.
    failed: str
    # Whether the message is finished by the pass after the fault is taken away.
    finished: bool = True
    # The fault: bounce_template_file (UNDEFINED) or header_checks (REJECTED).
    fault: str = UNDEFINED


SCENARIOS = {
    "bounce": Scenario("", ["nosuch@localhost"], "bounce failed"),
    "success": Scenario("", ["daemon@localhost NOTIFY=SUCCESS"], "trace failed"),
    # The bounce and the recipient delivered with it are both in the retry's pass.
    "bounce_and_sent": Scenario("", ["nosuch@localhost", "daemon@localhost"], "bounce failed"),
    "delay": Scenario(
        "delay_warning_time = 1s\n", ["later@soft.test"], "delay warning failed", False
    ),
    "expired": Scenario("maximal_queue_lifetime = 0\n", ["later@soft.test"], "bounce failed"),
    # cleanup refuses the notice.
    "bounce_rejected": Scenario("", ["nosuch@localhost"], "bounce failed", fault=REJECTED),
    "success_rejected": Scenario(
        "", ["daemon@localhost NOTIFY=SUCCESS"], "trace failed", fault=REJECTED
    ),
    "delay_rejected": Scenario(
        "delay_warning_time = 1s\n",
        ["later@soft.test"],
        "delay warning failed",
        False,
        REJECTED,
    ),
}


def _main_cf(top: Path, sc: Scenario) -> str:
    return (
        f"alias_maps =\nalias_database =\nmail_spool_directory = {top}/mail\n"
        # Nothing listens there: deferred.
        f"transport_maps = inline:{{ soft.test=smtp:[127.0.0.1]:{free_port()} }}\n"
        # One pass: nothing is retried while we look but by the flush.
        "minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n"
        + (
            f"bounce_template_file = {top}/fault\n"
            if sc.fault == UNDEFINED
            else f"header_checks = regexp:{top}/fault\ninternal_mail_filter_classes = bounce\n"
        )
        + sc.main_cf
    )


def _send(port: int, sc: Scenario) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo()
        assert s.mail(SENDER)[0] == 250
        for r in sc.rcpts:
            address, _, options = r.partition(" ")
            assert s.rcpt(address, options.split())[0] == 250
        assert s.data(b"Subject: t\r\n\r\nhi\r\n")[0] == 250


def _wait(maillog: Path, done: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + 60
    while True:
        log = maillog.read_text() if maillog.exists() else ""
        if done(log):
            time.sleep(1)  # anything more that would be wrong
            return maillog.read_text()
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


def _notices_removed(log: str) -> bool:
    """Whether log tells of a notice, and every notice it tells of is removed: their own
    lines (qmgr's, local's) are compared and the mailbox read, all there only then."""
    notices = re.findall(r" notification: (\w+)", log)
    return bool(notices) and all(f"{n}: removed" in log for n in notices)


def _qid(log: str) -> str:
    m = re.search(r"smtpd\[\d+\]: ([0-9A-F]+): client=", log)
    assert m, log
    return m.group(1)


def _lines(log: str, qid: str, programs: tuple[str, ...] = PROGRAMS) -> list[str]:
    """The compared programs' lines without time, host, pid and delays, the message's queue
    ID as QID and any other (a notice's) as NOTICE, sorted."""
    out = []
    for program, line in postfix_log_lines(log, programs):
        text = re.sub(r"\b[0-9A-F]{10,}\b", "NOTICE", line.replace(qid, "QID"))
        text = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", text)
        # A queue ID of another length in Received: (the size is the other tests' subject).
        text = re.sub(r", size=\d+, ", ", size=N, ", text)
        text = re.sub(r"\]:\d+", "]:PORT", text)
        text = re.sub(r"<\d{14}\.", "<STAMP.", text)
        out.append(f"{program}: {re.sub(r'/tmp/[^ ]+/(?:postfix|ours)/', 'TOP/', text)}")
    # Two deliveries of one pass finish in either order.
    return sorted(out)


def _mailq(text: str, qid: str) -> str:
    """mailq's listing without the queue ID, size, arrival time and port."""
    text = re.sub(rf"^{qid}\s+\d+ .{{19}}", "QID SIZE DATE", text, flags=re.M)
    return re.sub(r"\]:\d+", "]:PORT", text)


def _deliveries(mail: Path) -> dict[str, int]:
    """How many messages each mailbox holds."""
    return {box.name: box.read_text().count("\nFrom ") + 1 for box in mail.iterdir()}


def _play(top: Path, port: int, sc: Scenario, retry: Callable[[], None]) -> tuple[str, str]:
    """The log of the failed pass, and that of the pass after the fault was taken away."""
    maillog = top / "maillog"
    _send(port, sc)
    first = _wait(maillog, lambda log: f"status=deferred ({sc.failed})" in log)
    (top / "fault").write_text("")
    retry()
    qid = _qid(first)
    want = f"{qid}: removed" if sc.finished else "delay notification: "

    def finished(log: str) -> bool:
        return want in log[len(first) :] and _notices_removed(log[len(first) :])

    second = _wait(maillog, finished)
    return first, second[len(first) :]


def _run_postfix(top: Path, main_cf: str, sc: Scenario) -> tuple[str, str, str]:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(main_cf + logging) as (port, d):
        env = dict(os.environ, MAIL_CONFIG=str(d))
        mailq: list[str] = []

        def retry() -> None:
            mailq.append(
                subprocess.run(
                    ["mailq", "-C", str(d)], env=env, capture_output=True, text=True
                ).stdout
            )
            for cmd in (["postfix", "-c", str(d), "reload"], ["postqueue", "-c", str(d), "-f"]):
                subprocess.run(cmd, env=env, capture_output=True, timeout=60)

        (top / "maillog").symlink_to(d / "maillog")
        first, second = _play(top, port, sc, retry)
    return first, second, mailq[0]


def _run_ours(top: Path, main_cf: str, sc: Scenario) -> tuple[str, str, str]:
    conf = top / "conf"
    mailq: list[str] = []

    def retry() -> None:
        mailq.append(run_ours("mailq", "-C", str(conf)).stdout)
        run_ours("postfix", "-c", str(conf), "reload")
        run_ours("postqueue", "-c", str(conf), "-f")

    with running_ours(top, main_cf, "smtp unix - - n - - smtp\n") as port:
        first, second = _play(top, port, sc, retry)
    return first, second, mailq[0]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_failed_notice_defers_as_postfix(scenario: str, shared_tmp: Path) -> None:
    sc = SCENARIOS[scenario]
    results = {}
    for who, run in (("postfix", _run_postfix), ("ours", _run_ours)):
        top = shared_tmp / who
        top.mkdir(mode=0o755)
        (top / "mail").mkdir()
        (top / "mail").chmod(0o1777)
        top.chmod(0o755)
        (top / "fault").write_text(sc.fault)
        first, second, mailq = run(top, _main_cf(top, sc), sc)
        qid = _qid(first)
        # Still queued after the failed pass, and not finished before the retry.
        assert qid in mailq, (who, mailq)
        assert f"{qid}: removed" not in first, (who, first)
        # The retry's notice reached the sender.
        box = (top / "mail" / "nobody").read_text()
        assert f"id {qid}" in box or qid in box, (who, box)
        assert re.search(rf"{qid}: sender [\w -]+ notification: ", second), (who, second)
        results[who] = (
            _lines(first, qid),
            _mailq(mailq, qid),
            _lines(second, qid),
            _deliveries(top / "mail"),
        )
    for i, what in enumerate(("failed pass", "mailq", "retry", "deliveries")):
        assert results["ours"][i] == results["postfix"][i], what
