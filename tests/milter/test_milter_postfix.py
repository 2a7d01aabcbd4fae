"""smtpd_milters compared with real Postfix 3.7 talking to the same milters: a libmilter
application (tests/milter/libmilter_app.py) that refuses, discards, holds and edits as
told and records what it was sent, and Debian's opendkim signing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_ours
from tests.milter.conftest import AppMilter, dkim_key, opendkim
from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import (
    _played_on_both,
    _queued_on_both,
    _session_from,
)

pytestmark = pytest.mark.postfix

CLIENT = "unknown[127.0.0.2]"
MESSAGE = "Subject: hi\r\nX-Multi: a\r\n\tb\r\nX-Multi: second\r\n\r\nbody line\r\n."
# A message to two recipients, from MAIL to the end of its content.
TRANSACTION = [
    "MAIL FROM:<a@example.test>",
    "RCPT TO:<good@localhost>",
    "RCPT TO:<other@localhost>",
    "DATA",
    MESSAGE,
]


def _milter_lines(lines: list[str]) -> list[str]:
    """The session's lines about milters, without the queue IDs and the log prefix."""
    out = []
    for line in _session_from(lines, CLIENT):
        text = line.split("]: ", 1)[1] if "postfix/" in line else line
        # Not the port probes of a starting Postfix.
        if "milter" in text.lower() and "[127.0.0.1]" not in text:
            out.append(re.sub(r"^[0-9A-F]{8,12}: ", "QID: ", text))
    return out


def _same(ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> None:
    for mine, postfix in zip(ours, theirs, strict=True):
        assert mine == postfix


def _replies(replies: list[str]) -> list[str]:
    # The greeting names the program (smtpd_banner: ESMTP $mail_name), XCLIENT's too.
    out = [re.sub(r"queued as [0-9A-F]+", "queued as QID", r) for r in replies[1:]]
    return [re.sub(r"^(220 \S+ ESMTP) (Postfix|oxipost)$", r"\1 NAME", r) for r in out]


def _both(
    start_smtpd: Any,
    app: AppMilter | None,
    dialogue: list[str],
    main_cf: str,
    also: tuple[AppMilter, ...] = (),
    client: str = CLIENT,
) -> tuple[tuple[list[str], list[str], list[Any]], ...]:
    """(Postfix's, ours): (replies, milter log lines, what the application was told, then
    what each of `also` was told), for a session whose client ends as `client`."""
    apps = (app, *also) if app is not None else also
    out = []
    for postfix in (True, False):
        for each in apps:
            each.clear()
        lines, replies = _played_on_both(start_smtpd, dialogue, main_cf, postfix, client)
        told = app.told() if app is not None else []
        for each in also:
            told += [["(next milter)"], *each.told()]
        out.append((_replies(replies), _milter_lines(lines), told))
    return out[0], out[1]


def test_envelope_refusals_and_what_the_milter_is_told_as_postfix(start_smtpd, app_milter) -> None:
    """MAIL tempfailed, RCPT refused with the milter's own reply (%% undone), RCPT and
    the message passed: the replies, the milter-reject lines and every event and macro the
    milter got (connect's j, {daemon_name}, {daemon_addr}, v, _; mail's {mail_addr},
    {mail_host}, {mail_mailer}; rcpt's; i from DATA on; the headers with Sendmail's first
    space eaten, a folded one with its newline; the body) as Postfix sends them."""
    app = app_milter(
        {
            "mail": {"<temp@example.test>": ["tempfail"]},
            "rcpt": {"<bad@localhost>": ["550", "5.7.1", "No thanks %% really"]},
        }
    )
    dialogue = [
        "EHLO client.test",
        "MAIL FROM:<temp@example.test>",
        "MAIL FROM:<a@example.test> SIZE=100",
        "RCPT TO:<bad@localhost>",
        "RCPT TO:<good@localhost> NOTIFY=NEVER",
        "DATA",
        MESSAGE,
        "RSET",
        "QUIT",
    ]
    theirs, ours = _both(start_smtpd, app, dialogue, f"smtpd_milters = {app.endpoint}\n")
    assert theirs[0][3] == "550 5.7.1 No thanks % really"
    assert "milter-reject: MAIL" in "\n".join(theirs[1])
    _same(ours, theirs)


@pytest.mark.parametrize(
    "rules",
    [
        {"connect": ["reject"]},
        {"connect": ["451", "4.7.0", "later please"]},
        {"helo": ["550", "5.7.1", "bad helo"]},
        {"data": ["reject"]},
        {"rcpt": {"<other@localhost>": ["discard"]}},
        {"mail": {"<a@example.test>": ["accept"]}, "eom": ["reject"]},
    ],
    ids=["connect-5xx", "connect-4xx", "helo", "data", "rcpt-discard", "accept-message"],
)
def test_milter_decisions_before_the_message_as_postfix(
    start_smtpd, app_milter, rules: dict[str, Any]
) -> None:
    """Each stage's refusal as Postfix takes it: a 5XX at connect is the 554 greeting, a
    refused HELO/EHLO is logged (EHLO then offers only ENHANCEDSTATUSCODES) and given again
    at MAIL, DATA refused, a DISCARD at RCPT throws the message away, an ACCEPT at MAIL
    ends the milter's part for the message."""
    app = app_milter(rules)
    dialogue = ["EHLO client.test", "HELO again.test", "EHLO client.test", *TRANSACTION, "QUIT"]
    theirs, ours = _both(start_smtpd, app, dialogue, f"smtpd_milters = {app.endpoint}\n")
    _same(ours, theirs)


@pytest.mark.parametrize(
    ("rules", "reply"),
    [
        ({"eom": ["550", "5.7.1", "Spam %% detected"]}, "550 5.7.1 Spam % detected"),
        ({"eom": ["tempfail"]}, "451 4.7.1 Service unavailable - try again later"),
        ({"eom": ["discard"]}, "250 2.0.0 Ok: queued as QID"),
        ({"edits": [["quarantine", "looks odd"]]}, "250 2.0.0 Ok: queued as QID"),
    ],
    ids=["reject", "tempfail", "discard", "quarantine"],
)
def test_end_of_message_decisions_as_postfix(
    start_smtpd, app_milter, rules: dict[str, Any], reply: str
) -> None:
    """The decision at the end of the message: the reply and cleanup's line ("milter-reject:
    END-OF-MESSAGE from ...: 5.7.1 ...; from=<..> to=<..> ...", milter-discard, milter-hold)."""
    app = app_milter(rules)
    dialogue = ["HELO client.test", *TRANSACTION, "QUIT"]
    theirs, ours = _both(start_smtpd, app, dialogue, f"smtpd_milters = {app.endpoint}\n")
    assert theirs[0][-2] == reply
    _same(ours, theirs)


@pytest.mark.parametrize(
    "main_cf",
    [
        "smtpd_milters = unix:/nonexistent/milter\n",
        "smtpd_milters = inet:127.0.0.1:1\nmilter_default_action = reject\n",
        "smtpd_milters = inet:127.0.0.1:1\nmilter_default_action = accept\n",
        "smtpd_milters = { inet:127.0.0.1:1, default_action=reject }\n",
    ],
    ids=["tempfail", "reject", "accept", "per-milter"],
)
def test_unreachable_milter_as_postfix(start_smtpd, main_cf: str) -> None:
    """A milter that cannot be reached: Postfix's warning, then milter_default_action
    (tempfail: 451 4.7.1 at MAIL, reject: 550 5.5.0, accept: as if there were none)."""
    dialogue = ["EHLO client.test", "MAIL FROM:<a@example.test>", "RCPT TO:<good@localhost>"]
    dialogue += ["QUIT"]
    theirs, ours = _both(start_smtpd, None, dialogue, main_cf)
    assert any("connect to Milter service" in ln for ln in theirs[1])
    _same(ours, theirs)


def _view(postcat: subprocess.CompletedProcess) -> list[str]:
    """The envelope's sender and recipients and the message, without what differs by
    nature (queue IDs, times, ports, sizes) and without Postfix-only attributes."""
    keep = ("sender:", "recipient:", "original_recipient:", "canceled_recipient:")
    out = []
    body = False
    for line in postcat.stdout.splitlines():
        if line.startswith("*** MESSAGE CONTENTS"):
            body = True
            continue
        if line.startswith("***"):
            body = False
        if body:
            if line.startswith("\t"):  # our Received: header's "by" and date lines
                line = re.sub(r"\((oxipost|Postfix)\)|id [0-9A-F]+|\w{3}, .*", "X", line)
            out.append(line)
        elif line.startswith(keep):
            out.append(line)
    return out


def test_end_of_message_modifications_queued_as_postfix(start_smtpd, app_milter) -> None:
    """ADDHEADER, INSHEADER at 0 and 1 (above our Received:), CHGHEADER of the first
    Subject:, of the second X-Multi: to nothing (deleted), of a header not there (added),
    ADDRCPT, DELRCPT and CHGFROM: the queued envelope and message as Postfix queues them."""
    app = app_milter(
        {
            "edits": [
                ["addheader", "X-Added", "one"],
                ["addheader", "X-Ins0", "zero", 0],
                ["addheader", "X-Ins1", "first", 1],
                ["chgheader", "Subject", 1, "changed"],
                ["chgheader", "X-Multi", 2, ""],
                ["chgheader", "X-None", 1, "created"],
                ["addrcpt", "<added@localhost>"],
                ["delrcpt", "<good@localhost>"],
                ["chgfrom", "<new@example.test>"],
            ]
        }
    )

    def play(raw: Raw, name: str) -> None:
        raw.reply()
        for command in ["HELO client.test", *TRANSACTION]:
            raw.cmd(command)
        raw.cmd("QUIT")

    theirs, ours = _queued_on_both(start_smtpd, f"smtpd_milters = {app.endpoint}\n", play, 1)
    their_view, our_view = _view(theirs[0].postcat), _view(ours[0].postcat)
    assert "X-Ins0: zero" in their_view
    assert our_view == their_view


def test_replaced_body_and_two_milters_in_order_as_postfix(start_smtpd, app_milter) -> None:
    """The second milter sees the first one's edits (its replaced body, its header): what
    each was told and what is queued, as with Postfix."""
    first = app_milter(
        {"edits": [["replacebody", "new body\r\nsecond line\r\n"], ["addheader", "X-First", "1"]]}
    )
    second = app_milter({"edits": [["addheader", "X-Second", "2"]]})

    def play(raw: Raw, name: str) -> None:
        raw.reply()
        for command in ["HELO client.test", "MAIL FROM:<a@example.test>"]:
            raw.cmd(command)
        for command in ["RCPT TO:<good@localhost>", "DATA", MESSAGE]:
            raw.cmd(command)
        raw.cmd("QUIT")

    main_cf = f"smtpd_milters = {first.endpoint}, {second.endpoint}\n"
    theirs, ours = _queued_on_both(start_smtpd, main_cf, play, 1)
    sessions: list[list[Any]] = []
    for event in second.told():
        if event[0] == "connect":
            sessions.append([])
        sessions[-1].append(event)
    assert len(sessions) == 2
    assert ["body", "new body\r\nsecond line\r\n"] in sessions[0]
    assert ["header", "X-First", "1"] in sessions[0]
    assert sessions[1] == sessions[0]
    assert _view(ours[0].postcat) == _view(theirs[0].postcat)


def test_opendkim_signs_the_queued_message(start_smtpd, tmp_path: Path) -> None:
    """Debian's opendkim as smtpd_milters signs mail from example.test: the queued message
    has its DKIM-Signature: on top, and opendkim in verify mode finds it good."""
    from tests.conftest import free_port

    key = dkim_key(tmp_path)
    port = free_port()
    with opendkim(tmp_path, "s", key, port):
        srv = start_smtpd(f"smtpd_milters = inet:127.0.0.1:{port}\n", real_queue=True)
        raw = Raw(srv.host, srv.port, source="127.0.0.2")
        raw.reply()
        for command in ["HELO client.test", "MAIL FROM:<a@example.test>"]:
            assert raw.cmd(command).startswith("250")
        assert raw.cmd("RCPT TO:<good@localhost>").startswith("250")
        assert raw.cmd("DATA").startswith("354")
        text = "From: a@example.test\r\nTo: good@localhost\r\nSubject: signed\r\n\r\nhello\r\n."
        reply = raw.cmd(text)
        assert reply.startswith("250 2.0.0 Ok: queued as "), reply
        raw.cmd("QUIT")
        qid = reply.rsplit(" ", 1)[1]
    postcat = run_ours("postcat", "-c", srv.config_dir, "-bh", "-q", qid)
    message = "".join(ln for ln in postcat.stdout.splitlines(True) if not ln.startswith("***"))
    assert message.startswith(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.test;"
    ), message
    signed = tmp_path / "signed.eml"
    signed.write_text(message)
    conf = tmp_path / "verify.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {key.with_suffix('.keys')}\nSyslog no\n")
    verify = subprocess.run(
        ["opendkim", "-x", str(conf), "-t", str(signed)], capture_output=True, text=True
    )
    assert "verification (s=test, d=example.test, 2048-bit key) succeeded" in verify.stdout, verify
    # A message changed after signing no longer verifies: the check can fail.
    signed.write_text(message.replace("hello", "jello"))
    verify = subprocess.run(
        ["opendkim", "-x", str(conf), "-t", str(signed)], capture_output=True, text=True
    )
    assert "failed: signature verification failed" in verify.stdout, verify


@pytest.mark.parametrize(
    ("edits", "reply"),
    [
        (
            [
                ["addheader", "X-Warn", "w"],
                ["addheader", "X-Gone", "g"],
                ["addheader", "X-Bad", "b"],
            ],
            "550 5.7.1 milter header refused",
        ),
        (
            [["addheader", "X-Gone", "g"], ["chgheader", "Subject", 1, "held"]],
            "250 2.0.0 Ok: queued as QID",
        ),
    ],
    ids=["reject", "hold"],
)
def test_milter_header_checks_as_postfix(
    start_smtpd, app_milter, tmp_path: Path, edits: list[Any], reply: str
) -> None:
    """milter_header_checks on the headers the milter adds and changes: WARN, IGNORE,
    REJECT and HOLD with Postfix's "milter-header-ACTION: header ..." lines and reply."""
    table = tmp_path / "milter_header_checks"
    table.write_text(
        "/^X-Bad:/ REJECT milter header refused\n/^X-Warn:/ WARN seen\n/^X-Gone:/ IGNORE\n"
        "/^Subject: held/ HOLD\n"
    )
    table.chmod(0o644)
    tmp_path.chmod(0o755)
    app = app_milter({"edits": edits})
    dialogue = ["HELO client.test", *TRANSACTION, "QUIT"]
    main_cf = f"smtpd_milters = {app.endpoint}\nmilter_header_checks = regexp:{table}\n"
    theirs, ours = _both(start_smtpd, app, dialogue, main_cf)
    assert theirs[0][-2] == reply
    _same(ours, theirs)


@pytest.mark.parametrize("mapped", ["DISABLE", "other"], ids=["disable", "override"])
def test_smtpd_milter_maps_as_postfix(start_smtpd, app_milter, tmp_path: Path, mapped: str) -> None:
    """smtpd_milter_maps: the client's address looked up (cidr:), its result in place of
    smtpd_milters (another milter), or DISABLE: none for this client."""
    default = app_milter({"mail": {"<a@example.test>": ["550", "5.7.1", "default milter"]}})
    other = app_milter({"rcpt": {"<other@localhost>": ["550", "5.7.1", "mapped milter"]}})
    table = tmp_path / "smtpd_milter_map"
    result = "DISABLE" if mapped == "DISABLE" else f"{{ {other.endpoint}, default_action=accept }}"
    table.write_text(f"127.0.0.2/32 {result}\n")
    table.chmod(0o644)
    tmp_path.chmod(0o755)
    main_cf = f"smtpd_milters = {default.endpoint}\nsmtpd_milter_maps = cidr:{table}\n"
    dialogue = ["HELO client.test", *TRANSACTION, "QUIT"]
    theirs, ours = _both(start_smtpd, other, dialogue, main_cf)
    assert theirs[0][1] == "250 2.1.0 Ok"
    assert bool(theirs[2]) == (mapped != "DISABLE")
    _same(ours, theirs)
    assert default.told() == []


@pytest.mark.parametrize("rules", [{}, {"data": ["reject"]}], ids=["passed", "refused"])
def test_bdat_as_postfix(start_smtpd, app_milter, rules: dict[str, Any]) -> None:
    """BDAT's first chunk is the milter's DATA event, as Postfix sends it."""
    app = app_milter(rules)
    content = "Subject: hi\r\n\r\nbody line\r\n"
    chunk = f"BDAT {len(content)} LAST\r\n{content.removesuffix(chr(13) + chr(10))}"
    dialogue = ["EHLO client.test", *TRANSACTION[:3], chunk, "QUIT"]
    theirs, ours = _both(start_smtpd, app, dialogue, f"smtpd_milters = {app.endpoint}\n")
    assert any(event[0] == "data" for event in theirs[2])
    _same(ours, theirs)


def test_refused_recipients_told_to_milters_that_ask_as_postfix(start_smtpd, app_milter) -> None:
    """SMFIP_RCPT_REJ: a milter that asks for refused recipients gets RCPT for one the
    restrictions refused (after smtpd's reject line, before the reply), with
    {rcpt_mailer} error, {rcpt_host} the enhanced code and {rcpt_addr} the text; what it
    answers is not used. A milter that did not ask never hears of that recipient."""
    asks = app_milter(
        {"rcpt_rej": True, "rcpt": {"<x@elsewhere.test>": ["550", "5.7.1", "milter says no"]}}
    )
    other = app_milter({})
    dialogue = [
        "EHLO client.test",
        "MAIL FROM:<a@example.test>",
        "RCPT TO:<x@elsewhere.test> NOTIFY=NEVER",
        "RCPT TO:<good@localhost>",
        "DATA",
        MESSAGE,
        "QUIT",
    ]
    main_cf = f"smtpd_milters = {asks.endpoint}, {other.endpoint}\n"
    theirs, ours = _both(start_smtpd, asks, dialogue, main_cf, also=(other,))
    assert theirs[0][2] == "454 4.7.1 <x@elsewhere.test>: Relay access denied"
    rejected = ["<x@elsewhere.test>", ["NOTIFY=NEVER"]]
    macros = {"{rcpt_addr}": "Relay access denied", "{rcpt_host}": "4.7.1"}
    macros["{rcpt_mailer}"] = "error"
    assert ["rcpt", *rejected, macros] in theirs[2]
    assert sum(event[:2] == ["rcpt", "<x@elsewhere.test>"] for event in theirs[2]) == 1
    _same(ours, theirs)


def _warnings(lines: list[str]) -> list[str]:
    """The session's warnings, without the log prefix and queue IDs (nor that this
    Postfix runs no qmgr)."""
    found = (
        ln.split("warning: ", 1)[1] for ln in _session_from(lines, CLIENT) if "warning: " in ln
    )
    return [re.sub(r"^[0-9A-F]{8,12}: ", "QID: ", w) for w in found if "public/qmgr" not in w]


def _dsn_view(postcat: subprocess.CompletedProcess) -> list[str]:
    """The envelope's sender, recipients and DSN attributes; of the message's RET and
    ENVID only the last record (Postfix appends a milter's after the client's)."""
    last = {}
    out = []
    for line in postcat.stdout.split("*** MESSAGE CONTENTS")[0].splitlines():
        name = line.partition("=")[0]
        if name in ("named_attribute: envelope_id", "named_attribute: ret_flags"):
            last[name] = line
        elif line.startswith(("sender:", "recipient:", "original_recipient:")) or name in (
            "named_attribute: notify_flags",
            "named_attribute: dsn_orig_rcpt",
        ):
            out.append(line)
    return sorted(last.values()) + out


def test_esmtp_parameters_of_added_recipients_and_new_sender_as_postfix(
    start_smtpd, app_milter
) -> None:
    """SMFIR_ADDRCPT_PAR's NOTIFY= and ORCPT= and SMFIR_CHGFROM's RET= and ENVID= are taken
    (a later RET=/ENVID= replaces the client's); a bad, repeated or other parameter is
    warned of as Postfix's cleanup warns ("QID: Bad NOTIFY parameter from Milter or
    header/body_checks: ...", "Ignoring bad ESMTP parameter "SIZE=5" in SMFI_CHGFROM
    request") and left out: the queued envelope and the warnings."""
    app = app_milter(
        {
            "edits": [
                ["addrcpt", "<added@localhost>", "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+2By@y.test"],
                ["addrcpt", "<added2@localhost>", "notify=never NOTIFY=FAILURE BOGUS=1"],
                ["addrcpt", "<added3@localhost>", "ORCPT=bad ORCPT=rfc822;a+zz NOTIFY=BAD"],
                ["addrcpt", "<added4@localhost>", "ORCPT=;x NOTIFY=NEVER,DELAY NOTIFY="],
                ["chgfrom", "<new@example.test>", "RET=BAD ENVID=a+zz SIZE=5 ret=full envid=x+2By"],
            ]
        }
    )
    dialogue = ["EHLO client.test", "MAIL FROM:<a@example.test> RET=HDRS ENVID=orig"]
    dialogue += [*TRANSACTION[1:], "QUIT"]
    main_cf = f"smtpd_milters = {app.endpoint}\n"
    logged = [_played_on_both(start_smtpd, dialogue, main_cf, pf, CLIENT)[0] for pf in (1, 0)]
    assert 'QID: Bad NOTIFY parameter from Milter or header/body_checks: "NOTIFY=BAD"' in (
        _warnings(logged[0])
    )
    assert _warnings(logged[1]) == _warnings(logged[0])

    def play(raw: Raw, name: str) -> None:
        raw.reply()
        for command in dialogue:
            raw.cmd(command)

    theirs, ours = _queued_on_both(start_smtpd, main_cf, play, 1)
    their_view, our_view = _dsn_view(theirs[0].postcat), _dsn_view(ours[0].postcat)
    assert "named_attribute: notify_flags=10" in their_view
    assert our_view == their_view


@pytest.mark.parametrize(
    "case", ["passed", "refused", "mapped"], ids=["passed", "refused-at-connect", "milter-maps"]
)
def test_xclient_starts_a_new_milter_session_as_postfix(
    start_smtpd, app_milter, tmp_path: Path, case: str
) -> None:
    """XCLIENT ends the milters' session with the old client and starts one with the new
    (CONNECT with its name, address and macros; smtpd_milter_maps looked up for its
    address); a milter's 5XX at that CONNECT is logged as a milter-reject of XCLIENT and
    answered with the 554 greeting, and the milter refuses the commands after it."""
    from tests.smtpd.test_xclient import XCLIENT_MAIN_CF

    rules = {"connect": {"spike.example": ["550", "5.7.1", "not you"]}} if case == "refused" else {}
    app = app_milter(rules)
    main_cf = XCLIENT_MAIN_CF + f"smtpd_milters = {app.endpoint}\n"
    if case == "mapped":
        table = tmp_path / "smtpd_milter_map"
        table.write_text("10.0.0.1/32 DISABLE\n")
        table.chmod(0o644)
        tmp_path.chmod(0o755)
        main_cf += f"smtpd_milter_maps = cidr:{table}\n"
    dialogue = [
        "EHLO client.test",
        "XCLIENT NAME=spike.example ADDR=10.0.0.1 PORT=4321",
        "EHLO after.test",
        *TRANSACTION,
        "QUIT",
    ]
    theirs, ours = _both(start_smtpd, app, dialogue, main_cf, client="spike.example[10.0.0.1]")
    connects = [event[1:3] for event in theirs[2] if event[0] == "connect"]
    if case == "mapped":
        assert connects == [["[127.0.0.2]", "127.0.0.2"]], theirs[2]
    else:
        assert connects == [["[127.0.0.2]", "127.0.0.2"], ["spike.example", "10.0.0.1"]]
    if case == "refused":
        assert theirs[0][1] == "554 mx.example.test ESMTP not accepting connections"
    _same(ours, theirs)


def _message_lines(log: str, qid: str) -> list[str]:
    """What smtpd, cleanup and qmgr logged of one message, without the log prefix and
    its size (our Received: header names another host and program)."""
    out = []
    for line in log.splitlines():
        if f": {qid}: " in line:
            program = line.split("postfix/", 1)[1].split("[", 1)[0]
            text = re.sub(r", size=\d+,", ", size=N,", line.split(f": {qid}: ", 1)[1])
            out.append(f"{program}: {text}")
    return out


def test_milter_deleting_the_only_recipient_as_postfix(app_milter) -> None:
    """DELRCPT of the message's only recipient: Postfix accepts and queues the message,
    its qmgr counts the canceled recipient in nrcpt and removes the message with no
    delivery, no bounce, no other line."""
    import contextlib
    import time

    from tests.delivery.test_e2e_delivery import Oxipost
    from tests.smtpd.test_postfix_differential import running_postfix

    app = app_milter({"edits": [["delrcpt", "<good@localhost>"]]})
    main_cf = f"smtpd_milters = {app.endpoint}\n"
    dialogue = ["EHLO client.test", *TRANSACTION[:2], *TRANSACTION[3:], "QUIT"]

    def play(port: int) -> str:
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        raw.reply()
        replies = [raw.cmd(command) for command in dialogue]
        raw.close()
        assert replies[-2].startswith("250 2.0.0 Ok: queued as "), replies
        return replies[-2].rsplit(" ", 1)[1]

    def removed(read: Any, qid: str) -> list[str]:
        deadline = time.monotonic() + 30
        while f"{qid}: removed" not in read():
            assert time.monotonic() < deadline, read()
            time.sleep(0.1)
        time.sleep(0.5)  # anything qmgr would log after it
        return _message_lines(read(), qid)

    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf) as (port, d):
        theirs = removed((d / "maillog").read_text, play(port))
    with contextlib.closing(Oxipost()) as oxi:
        oxi.start(main_cf)
        ours = removed(oxi.log, play(oxi.port))
    assert theirs == [
        "smtpd: client=unknown[127.0.0.2]",
        "cleanup: message-id=<>",
        "qmgr: from=<a@example.test>, size=N, nrcpt=1 (queue active)",
        "qmgr: removed",
    ]

    assert ours == theirs


def test_no_events_after_a_discard_and_resolved_addresses_as_postfix(
    start_smtpd, app_milter
) -> None:
    """Once a milter DISCARDs the transaction at RCPT, Postfix tells the milters nothing
    more of it (MILTER_SKIP_FLAGS: no RCPT, DATA or message), the next transaction is told
    again; {mail_addr} and {rcpt_addr} are the addresses as trivial-rewrite resolves them
    (an unqualified one gets $myorigin) with the local part quoted as RFC 5321 wants."""
    app = app_milter({"rcpt": {"<drop@localhost>": ["discard"]}})
    dialogue = [
        "EHLO client.test",
        "MAIL FROM:<a@example.test>",
        "RCPT TO:<drop@localhost>",
        "RCPT TO:<good@localhost>",
        "DATA",
        MESSAGE,
        "MAIL FROM:<sender>",
        'RCPT TO:<"x y"@localhost>',
        "RCPT TO:<postmaster>",
        "DATA",
        MESSAGE,
        "QUIT",
    ]
    theirs, ours = _both(start_smtpd, app, dialogue, f"smtpd_milters = {app.endpoint}\n")
    told = [event[:2] for event in theirs[2] if event[0] in ("rcpt", "data")]
    assert told[:2] == [["rcpt", "<drop@localhost>"], ["rcpt", '<"x y"@localhost>']], told
    macros = [event[-1] for event in theirs[2] if event[0] == "rcpt"]
    assert macros[1]["{rcpt_addr}"] == '"x y"@localhost', macros
    _same(ours, theirs)
