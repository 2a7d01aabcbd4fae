"""postsuper -e and -f (force-expire), -r and -H, compared with real Postfix 3.7.

A message is deferred (nothing listens at its destination) or held from its arrival
(check_recipient_access HOLD); postsuper -e (or -f for the held one) expires it, mailq marks
it '#', and the flush returns it to its sender without a delivery: Postfix's qmgr logs
"status=force-expired, returned to sender" and bounces each recipient with its last
deferral, or, never deferred, sends them through the error agent as "4.7.0 message is
administratively expired". The postsuper, qmgr, error and bounce lines, mailq's listing
and the notice's per-recipient reports must be the same on both.

postsuper -r moves a deferred message to maildrop/, where mailq still lists it under its ID,
until pickup (kicked here: nobody wakes it) queues it through cleanup under a new ID,
logging "uid=N from=<sender> orig_id=OLD"; -H moves a held one to the deferred queue, where
it waits for the next queue scan (an hour off), here postqueue -f."""

from __future__ import annotations

import re
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.test_queue_tools import blocks
from tests.conftest import free_port, run_ours, run_postfix
from tests.delivery.test_e2e_local import running_ours
from tests.qmgr.test_notice_failures import _lines, _notices_removed, _qid, _wait
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

PROGRAMS = ("postsuper", "qmgr", "error", "bounce", "smtp")
SENDER = "nobody@localhost"
# Each scenario: RCPT TO addresses, what the log shows first, the postsuper option and
# the one after mailq looked (the held message stays held with -e: "!#"; released then).
SCENARIOS = {
    "deferred": (["x@soft.test", "y@soft.test"], "status=deferred", "-e", None),
    "held": (["h@soft.test", "y@soft.test"], "triggers HOLD action", "-e", "-f"),
    # Deferred by a command (the mailbox_command exits EX_TEMPFAIL, a second after the
    # other's refused connection): its output is the notice's x-unix Diagnostic-Code, as
    # the defer logfile kept it; mailq's reason without the output's newline; both in the
    # order deferred. (Expired once the command's deferral is in: postsuper leaves a
    # message in delivery alone.)
    "command": (["daemon@localhost", "x@soft.test"], "Command output", "-e", None),
    # The same command deferring an alias's member (the other delivered): the defer
    # logfile, and so mailq and the notice, names the member; mailq lists the alias after
    # it as "(reason unavailable)".
    "alias": (["list@localhost", "x@soft.test"], "Command output", "-e", None),
}


def _main_cf(top: Path) -> str:
    return (
        "alias_maps = inline:{ {list=daemon, bin} }\nalias_database =\n"
        f"mail_spool_directory = {top}/mail\n"
        f"transport_maps = inline:{{ soft.test=smtp:[127.0.0.1]:{free_port()} }}\n"
        "minimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n"
        "mailbox_command_maps = inline:{ {daemon=/bin/sh -c 'sleep 1; echo try later; exit 75'} }\n"
        "smtpd_recipient_restrictions = check_recipient_access"
        " inline:{ {h@soft.test=HOLD} }, permit_mynetworks, reject\n"
    )


Run = Callable[..., subprocess.CompletedProcess]


def _play(top: Path, port: int, scenario: str, run: Run) -> tuple[list[str], str, str]:
    """The compared lines from the postsuper on, postsuper's stderr and mailq after it
    (run: one of the MTA's commands with its configuration)."""
    rcpts, first, option, then = SCENARIOS[scenario]
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(SENDER, rcpts, b"Subject: t\r\n\r\nhi\r\n")
    maillog = top / "maillog"
    before = _wait(maillog, lambda log: first in log and "disconnect from" in log)
    qid = _qid(before)
    expired = run("postsuper", option, qid)
    mailq = run("postqueue", "-p")
    shown = expired.stderr
    if then:
        shown += run("postsuper", then, qid).stderr
    run("postqueue", "-f")
    log = _wait(maillog, lambda log: f"{qid}: removed" in log and _notices_removed(log))
    return (
        _lines(log[len(before) :], qid, PROGRAMS),
        shown.replace(qid, "QID"),
        # Its marks kept ('#', "!#"), the ID, size and arrival time masked.
        re.sub(
            r"\]:\d+",
            "]:PORT",
            re.sub(rf"^{qid}(\S*)\s+\d+ .{{19}}", r"QID\1 SIZE DATE", mailq.stdout, flags=re.M),
        ),
    )


def _reports(box: Path) -> list[str]:
    """The notice's per-recipient report lines."""
    text = box.read_text()
    fields = "Final-Recipient|Original-Recipient|Action|Status|Remote-MTA|Diagnostic-Code"
    lines = re.findall(rf"^(?:{fields}): .*$", text, re.M)
    return [re.sub(r"\]:\d+", "]:PORT", line) for line in lines]


def _on_both(shared_tmp: Path, play: Callable[[Path, int, Run], object]) -> dict[str, object]:
    """What play(top, port, run) returns with real Postfix and with ours, each in
    shared_tmp/WHO with a mail spool and its maillog at top/maillog."""
    results = {}
    for who in ("postfix", "ours"):
        top = shared_tmp / who
        top.mkdir(mode=0o755)
        (top / "mail").mkdir()
        (top / "mail").chmod(0o1777)
        main_cf = _main_cf(top)
        if who == "postfix":
            logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
            with running_postfix(main_cf + logging) as (port, d):
                (top / "maillog").symlink_to(d / "maillog")

                def run_theirs(tool: str, *args: str, d: Path = d) -> subprocess.CompletedProcess:
                    return run_postfix(f"/usr/sbin/{tool}", "-c", str(d), *args)

                results[who] = play(top, port, run_theirs)
        else:
            conf = str(top / "conf")

            def run_mine(tool: str, *args: str, conf: str = conf) -> subprocess.CompletedProcess:
                return run_ours(tool, "-c", conf, *args)

            services = "smtp unix - - n - - smtp\npickup unix n - n 60 1 pickup\n"
            with running_ours(top, main_cf, services) as port:
                results[who] = play(top, port, run_mine)
    return results


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_force_expire_as_postfix(scenario: str, shared_tmp: Path) -> None:
    def play(top: Path, port: int, run: Run) -> object:
        return (*_play(top, port, scenario, run), _reports(top / "mail" / "nobody"))

    results = _on_both(shared_tmp, play)
    assert results["ours"] == results["postfix"]


def _requeue_and_release(top: Path, port: int, run: Run) -> tuple[list[str], str, list[list[str]]]:
    """The lines from the postsuper on (the deferred message as OLD, its new ID as NEW, the
    held one as HELD), postsuper's stderr and mailq's listings after it and after pickup."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(SENDER, ["x@soft.test", "y@soft.test"], b"Subject: t\r\n\r\nhi\r\n")
        s.sendmail(SENDER, ["h@soft.test"], b"Subject: h\r\n\r\nhi\r\n")
    maillog = top / "maillog"
    before = _wait(maillog, lambda log: "status=deferred" in log and "triggers HOLD action" in log)
    old, held = re.findall(r"smtpd\[\d+\]: ([0-9A-F]+): client=", before)
    shown = run("postsuper", "-r", old).stderr + run("postsuper", "-H", held).stderr
    listings = [run("postqueue", "-p").stdout]
    run("postkick", "public", "pickup", "W")
    log = _wait(maillog, lambda log: log.count("to=<y@soft.test>, relay") == 2)
    new = re.findall(r"pickup\[\d+\]: ([0-9A-F]+): uid=", log)
    assert len(new) == 1 and new[0] != old
    # The held message is not tried before the flush.
    assert "to=<h@soft.test>, relay" not in log
    listings.append(run("postqueue", "-p").stdout)
    run("postqueue", "-f")
    log = _wait(maillog, lambda log: "to=<h@soft.test>, relay" in log)
    lines = _lines(log[len(before) :].replace(held, "HELD").replace(new[0], "NEW"), old, PICKUP)
    masked = [blocks(re.sub(r"\]:\d+", "]:PORT", text)) for text in listings]
    return lines, shown.replace(old, "OLD").replace(held, "HELD"), masked


PICKUP = ("postsuper", "pickup", "cleanup", "qmgr", "smtp")


def test_requeue_and_release_as_postfix(shared_tmp: Path) -> None:
    results = _on_both(shared_tmp, _requeue_and_release)
    assert results["ours"] == results["postfix"]
