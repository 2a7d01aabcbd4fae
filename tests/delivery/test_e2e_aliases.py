"""End to end, oxipost under its master (local(8) a privileged process of its own, answering
qmgr over private/local): the members of an alias that resolve to local(8) itself are
delivered in the same delivery, as Postfix's local/resolve.c does, one log line each
(to=<member>, orig_to=<what the queue held>) and none for the alias; the others go on in
one forwarded message ("forwarded as"). A member that bounces is named in the bounce
notice, expanded from the alias; one that defers defers the whole recipient, whose every
member is tried again. The expectations are what Postfix 3.7 logged and sent for the same
aliases (postfix -c DIR start, Debian's package)."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_ours
from tests.qmgr.test_service import wait_log

from .test_dovecot_reads import ROOT
from .test_e2e_delivery import HOST, Oxipost, forwarded_as, oxi

pytestmark = [pytest.mark.slow, pytest.mark.postfix]
__all__ = ["oxi"]  # the fixture, used by name

# texthash: the postmap format, "key value".
ALIASES = """\
postmaster {user}
a b
b {user}
both {user}, nosuchuser
mixed {user}, info@example.com
deferme {user}, "|exit 75"
"""


def _start(oxi: Oxipost, user: str) -> None:
    assert ROOT, "the test suite runs as root (CI): local(8) runs apart only under root's master"
    (oxi.conf / "aliases").write_text(ALIASES.format(user=user))
    mail = oxi.dir / "mail"
    mail.mkdir()
    mail.chmod(0o1777)
    oxi.start(
        "mydestination = localhost, $myhostname\n"
        f"alias_maps = texthash:{oxi.conf}/aliases\nmail_spool_directory = {mail}/\n"
    )


def _mailbox(oxi: Oxipost, user: str) -> list[email.message.EmailMessage]:
    new = oxi.dir / "mail" / user / "new"
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(new.iterdir())
    ]


def _lines(log: str, qid: str) -> list[str]:
    """The delivery lines of qid, without the syslog prefix's date and the delays."""
    out = []
    for ln in log.splitlines():
        m = re.search(rf"(postfix/\w+)\[\d+\]: {qid}: (to=.*)", ln)
        if m:
            line = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", f"{m.group(1)}: {m.group(2)}")
            out.append(line)
    return out


def _to_mailbox(user: str, alias: str) -> str:
    return (
        f"postfix/local: to=<{user}@{HOST}>, orig_to=<{alias}@localhost>, relay=local, "
        "dsn=2.0.0, status=sent (delivered to maildir)"
    )


def _send(oxi: Oxipost, user: str, alias: str, sender: str = "sender@example.org") -> str:
    """Mail to alias@localhost from sender, with oxi started for user; its queue ID."""
    _start(oxi, user)
    qid = oxi.swaks(sender, f"{alias}@localhost", alias, "to an alias")
    assert oxi.cfg is not None
    return qid


def _delivered(
    oxi: Oxipost, user: str, alias: str, sender: str = "sender@example.org"
) -> tuple[list[str], str]:
    """_send's message's delivery lines once it is removed, and the log."""
    qid = _send(oxi, user, alias, sender)
    assert oxi.cfg is not None
    log = wait_log(oxi.cfg, rf"{qid}: removed", timeout=60)
    return _lines(log, qid), log


def _resent(oxi: Oxipost, line: str, alias: str) -> list[str]:
    """The delivery lines of the message forwarded for alias (its line given), once the
    message is removed."""
    resent = forwarded_as(line, f"{alias}@localhost")
    assert oxi.cfg is not None
    return _lines(wait_log(oxi.cfg, rf"{resent}: removed", timeout=60), resent)


def _to_virtual(vuser: str, alias: str) -> str:
    return (
        f"postfix/virtual: to=<{vuser}@example.com>, orig_to=<{alias}@localhost>, "
        "relay=virtual, dsn=2.0.0, status=sent (delivered to maildir)"
    )


def test_alias_members_delivered_in_process_as_postfix(oxi, system_user):
    user = system_user.pw_name
    direct = _send(oxi, user, "postmaster")
    nested = oxi.swaks("sender@example.org", "a@localhost", "nested", "two")
    assert oxi.cfg is not None
    log = wait_log(oxi.cfg, rf"{nested}: removed", timeout=60)
    log = wait_log(oxi.cfg, rf"{direct}: removed", timeout=60)
    assert _lines(log, direct) == [_to_mailbox(user, "postmaster")], log
    # The original recipient is what the queue held, however deep the nesting.
    assert _lines(log, nested) == [_to_mailbox(user, "a")], log
    # Written by qmgr from what local(8), a process of its own, answered over
    # private/local: the line carries the agent's pid.
    agent = re.search(rf"postfix/local\[(\d+)\]: {direct}: to=", log)
    qmgr = re.search(rf"postfix/qmgr\[(\d+)\]: {direct}: from=", log)
    assert agent and qmgr and agent.group(1) != qmgr.group(1), log
    # No new message: two came in, two went through the active queue.
    assert len(re.findall(r"\(queue active\)", log)) == 2, log
    # By the alias each came for: the two deliveries' order is not forced, and Maildir
    # names (microseconds without leading zeros) do not sort in time within a second.
    by_alias = {m["X-Original-To"]: m for m in _mailbox(oxi, user)}
    assert sorted(by_alias) == ["a@localhost", "postmaster@localhost"]
    first, second = by_alias["postmaster@localhost"], by_alias["a@localhost"]
    # Postfix's frozen_delivered_to: Delivered-To names the alias, as X-Original-To.
    assert first.get_all("Delivered-To") == ["postmaster@localhost"]
    assert first["Return-Path"] == "<sender@example.org>"
    assert second.get_all("Delivered-To") == ["a@localhost"]
    oxi.stop()


def test_mixed_alias_delivers_local_members_and_forwards_the_rest(oxi, system_user):
    user = system_user.pw_name
    (local, forwarded), log = _delivered(oxi, user, "mixed")
    assert local == _to_mailbox(user, "mixed"), log
    assert _resent(oxi, forwarded, "mixed") == [_to_virtual("info", "mixed")], oxi.log()
    (path,) = oxi.wait_mail("info")
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg.get_all("Delivered-To") == ["info@example.com", "mixed@localhost"]
    (own,) = _mailbox(oxi, user)
    assert own.get_all("Delivered-To") == ["mixed@localhost"]
    oxi.stop()
    # pflogsumm reads the member lines as deliveries, the forwarding as forwarded.
    pflogsumm = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    if not os.path.exists(pflogsumm):
        pytest.fail("pflogsumm is missing: `make sysdeps` installs it")
    out = subprocess.run(
        [pflogsumm, str(oxi.dir / "maillog")], capture_output=True, text=True, timeout=60
    ).stdout
    assert re.search(r"^\s*2\s+delivered", out, re.M), out
    assert re.search(r"^\s*1\s+forwarded", out, re.M), out
    assert re.search(r"^\s*0\s+bounced", out, re.M), out


def test_bounced_member_named_in_the_notice_expanded_from_the_alias(oxi, system_user):
    user = system_user.pw_name
    # The sender is a virtual mailbox here: the notice can be read back.
    lines, log = _delivered(oxi, user, "both", "info@example.com")
    assert lines == [
        _to_mailbox(user, "both"),
        f"postfix/local: to=<nosuchuser@{HOST}>, orig_to=<both@localhost>, relay=local, "
        'dsn=5.1.1, status=bounced (unknown user: "nosuchuser")',
    ], log
    assert re.search(r"postfix/bounce\[\d+\]: \w+: sender non-delivery notification", log)
    (path,) = oxi.wait_mail("info")
    notice = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text, dsn, _original = notice.iter_parts()
    # Folded as Postfix folds it (bounce_print_wrap): continuations indented by 4.
    assert (
        f'<nosuchuser@{HOST}> (expanded from <both@localhost>): unknown user: "nosuchuser"'
        in re.sub(r"\n    ", " ", text.get_content())
    ), text.get_content()
    fields = dsn.as_string()
    assert f"Final-Recipient: rfc822; nosuchuser@{HOST}\n" in fields, fields
    assert "Original-Recipient: rfc822;both@localhost\n" in fields, fields
    assert "Action: failed\nStatus: 5.1.1\n" in fields, fields
    assert len(_mailbox(oxi, user)) == 1
    oxi.stop()


def test_deferred_member_defers_the_alias_and_every_member_is_retried(oxi, system_user):
    user = system_user.pw_name
    qid = _send(oxi, user, "deferme")
    log = wait_log(oxi.cfg, rf"{qid}: to=<deferme@localhost>, .*status=deferred", timeout=60)
    sent, deferred = _lines(log, qid)
    assert sent == _to_mailbox(user, "deferme"), log
    # The command's line names the alias: it is what the command was delivered for.
    assert deferred == (
        "postfix/local: to=<deferme@localhost>, relay=local, dsn=4.3.0, "
        "status=deferred (temporary failure)"
    ), log
    assert "forwarded as" not in log
    # The queue keeps the alias, not the member.
    queue = run_ours("postqueue", "-c", str(oxi.conf), "-p").stdout
    assert qid in queue and "deferme@localhost" in queue, queue
    assert f"{user}@" not in queue, queue
    # Retried whole: the member delivered before is delivered again, as in Postfix.
    assert run_ours("postqueue", "-c", str(oxi.conf), "-f").returncode == 0
    wait_log(oxi.cfg, rf"{qid}: to=<deferme@localhost>, .*status=deferred", count=2, timeout=60)
    assert len(_mailbox(oxi, user)) == 2
    oxi.stop()


def test_member_with_its_own_forward_file(oxi, system_user):
    """A member's ~/.forward is read in the same delivery, as recipient.c's switch does
    for every local member; what it lists off this host is forwarded for the alias."""
    user = system_user.pw_name
    fwd = Path(system_user.pw_dir) / ".forward"
    fwd.write_text("alice@example.com\n")
    os.chown(fwd, system_user.pw_uid, system_user.pw_gid)
    (forwarded,), log = _delivered(oxi, user, "postmaster")
    assert _resent(oxi, forwarded, "postmaster") == [_to_virtual("alice", "postmaster")], log
    assert not (oxi.dir / "mail" / user).exists()
    oxi.stop()
