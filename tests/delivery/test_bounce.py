"""bounce(8) notices: RFC 3464 structure, Postfix wording, who gets what (catalogue 47)."""

from __future__ import annotations

import email
import email.policy
import time

import pytest
from oxipost.bounce import Report, TemplateError, cancelled, line_wrap, notices
from oxipost.envelope import Envelope, Outcome, Recipient

from .conftest import MESSAGE, make_config

FAILED = Outcome(
    "5.1.1",
    "host mx.example.com[192.0.2.1] said: 550 5.1.1 <b@example.com>: Recipient address "
    "rejected: User unknown (in reply to RCPT TO command)",
)


def _env(sender: str, **kw) -> Envelope:
    return Envelope(sender, [Recipient("b@example.com")], time.time() - 60, **kw)


def _parse(content: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_failure_notice_structure(tmp_path):
    cfg = make_config(tmp_path / "c", main="myhostname = mail.example.org\n")
    env = _env("a@example.org", envid="ENV1")
    reports = [
        Report(
            Recipient("b@example.com"),
            FAILED,
            "dns; mx.example.com",
            "smtp; 550 5.1.1 <b@example.com>: Recipient address rejected",
        )
    ]
    ((nenv, content),) = notices("failure", cfg, "4ABCDE1234", env, MESSAGE, reports)
    assert nenv.sender == "" and [r.address for r in nenv.recipients] == ["a@example.org"]
    assert b"\r\n" in content and b"\n" not in content.replace(b"\r\n", b"")
    msg = _parse(content)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    # The template's From: (cleanup qualifies it): header_from_format=standard (Postfix
    # 3.3 on); "obsolete" keeps the old form.
    assert b"\r\nFrom: Mail Delivery System <MAILER-DAEMON>\r\n" in content
    old = make_config(
        tmp_path / "o", main="myhostname = m.example\nheader_from_format = obsolete\n"
    )
    ((_, content),) = notices("failure", old, "4ABCDE1234", env, MESSAGE, reports)
    assert b"\r\nFrom: MAILER-DAEMON (Mail Delivery System)\r\n" in content
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, status, original = msg.get_payload()
    body = text.get_content().replace("\r\n", "\n")
    assert body.startswith("This is the mail system at host mail.example.org.\n")
    assert "I'm sorry to have to inform you that your message could not\nbe delivered" in body
    # Folded as Postfix's bounce_print_wrap(): 79 columns, continuations indented by 4.
    assert (
        "\n<b@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1\n"
        "    <b@example.com>: Recipient address rejected: User unknown (in reply to RCPT\n"
        "    TO command)\n"
    ) in body
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.example.org"
    assert per_message["X-Postfix-Queue-ID"] == "4ABCDE1234"
    assert per_message["Original-Envelope-Id"] == "ENV1"
    assert per_rcpt["Final-Recipient"] == "rfc822; b@example.com"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.com"
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Subject"] == "test"
    # bounce_original(): the envelope sender's Return-Path first.
    assert original.get_payload()[0].keys()[0] == "Return-Path"
    assert original.get_payload()[0]["Return-Path"] == "<a@example.org>"


def test_remote_reply_as_postfix_reports_it(tmp_path):
    # Without a Remote-MTA and Diagnostic-Code from the caller (qmgr), a remote server's
    # reply kept in the text still gives Postfix's "dns; host" and "smtp; reply".
    cfg = make_config(tmp_path / "c", main="myhostname = mail.example.org\n")
    reports = [Report(Recipient("b@example.com"), FAILED)]
    ((_, content),) = notices("failure", cfg, "4ABCDE1234", _env("a@example.org"), MESSAGE, reports)
    _text, status, _original = _parse(content).get_payload()
    _per_message, per_rcpt = status.get_payload()
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.com"
    assert b"\r\nDiagnostic-Code: smtp; 550 5.1.1 <b@example.com>: Recipient address " in content
    local = [Report(Recipient("b@example.com"), Outcome("5.1.1", 'unknown user: "b"'))]
    ((_, content),) = notices("failure", cfg, "4ABCDE1234", _env("a@example.org"), MESSAGE, local)
    assert b'\r\nDiagnostic-Code: X-Postfix; unknown user: "b"\r\n' in content
    assert b"Remote-MTA" not in content


def test_null_sender_never_gets_a_bounce(tmp_path):
    # catalogue 47: a bounce that bounces is a double bounce or nothing; never to <>.
    cfg = make_config(tmp_path / "c")
    reports = [Report(Recipient("b@example.com"), FAILED)]
    assert notices("failure", cfg, "Q1", _env(""), MESSAGE, reports) == []
    cfg = make_config(tmp_path / "d", main="notify_classes = 2bounce, resource, software\n")
    ((nenv, content),) = notices("failure", cfg, "Q1", _env(""), MESSAGE, reports)
    assert [r.address for r in nenv.recipients] == ["postmaster"]
    assert nenv.sender.startswith("double-bounce@")
    msg = _parse(content)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    # The whole bounce, as Postfix's bounce_notify_service sends a double bounce.
    assert msg.get_payload()[2].get_content_type() == "message/rfc822"
    # The double bounce itself failing: discarded.
    dbl = _env(nenv.sender)
    assert notices("failure", cfg, "Q2", dbl, content, reports) == []


def test_postmaster_copy_and_notify_never(tmp_path):
    cfg = make_config(tmp_path / "c", main="notify_classes = bounce\n")
    r_never = Recipient("b@example.com", notify=frozenset({"NEVER"}))
    out = notices("failure", cfg, "Q1", _env("a@x.org"), MESSAGE, [Report(r_never, FAILED)])
    # The sender's notice is begun and cancelled (Postfix's bounce_notify_service): headers
    # and template text through cleanup, then dropped.
    assert [(e.recipients[0].address, cancelled(e)) for e, _ in out] == [
        ("a@x.org", True),
        ("postmaster", False),
    ]
    assert b"Final-Recipient" not in out[0][1]


def test_delay_notice_and_ret_hdrs(tmp_path):
    cfg = make_config(tmp_path / "c", main="delay_warning_time = 4h\n")
    deferred = Outcome("4.4.1", "connect to mx.example.com[192.0.2.1]:25: Connection refused")
    ((_, content),) = notices(
        "delay",
        cfg,
        "Q1",
        _env("a@x.org", ret="HDRS"),
        MESSAGE,
        [Report(Recipient("b@example.com"), deferred)],
    )
    msg = _parse(content)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    body = msg.get_payload()[0].get_content().replace("\r\n", "\n")
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in body
    assert "for more than 4 hour(s).\nIt will be retried until it is 5 day(s) old." in body
    per_rcpt = msg.get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "delayed" and per_rcpt["Will-Retry-Until"]
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_line_wrap_as_postfix():
    # Postfix's line_wrap(): a break before the word that would end past the length, the
    # blanks at the break dropped, the following lines indented and shorter by the indent.
    assert line_wrap("aaa bbb ccc", 7, 2) == ["aaa bbb", "  ccc"]
    assert line_wrap("aaa  bbb   ccc ddd", 8, 2) == ["aaa  bbb", "  ccc", "  ddd"]
    assert line_wrap("x" * 100 + " y") == ["x" * 100, "    y"]
    assert line_wrap("short  ") == ["short"]
    # A negative indent indents the first line only.
    assert line_wrap("aaa bbb ccc", 7, -2) == ["  aaa", "bbb ccc"]


def test_delay_template_times_truncated_with_postfix_warnings(tmp_path):
    cfg = make_config(tmp_path / "c", main="delay_warning_time = 90m\n")
    warnings: list[str] = []
    deferred = Outcome("4.4.1", "connect to mx.example.com[192.0.2.1]:25: Connection refused")
    reports = [Report(Recipient("b@example.com"), deferred)]
    ((_, content),) = notices(
        "delay", cfg, "Q1", _env("a@x.org"), MESSAGE, reports, warnings.append
    )
    assert b"for more than 1 hour(s).\r\n" in content
    assert warnings == []
    cfg = make_config(tmp_path / "d", main="delay_warning_time = 10s\n")
    ((_, content),) = notices(
        "delay", cfg, "Q1", _env("a@x.org"), MESSAGE, reports, warnings.append
    )
    assert b"for more than 0 hour(s).\r\n" in content
    key = "delay_warning_time_hours"
    assert warnings == [
        f'[built-in]: zero result in delay template conversion of parameter "{key}"',
        f'please reduce time unit "hours" of "{key}" in delay template',
        "for instructions see the bounce(5) manual",
    ]


def test_template_file_notice_and_postmaster_copy(tmp_path):
    """bounce_template_file's failure template: its From: (for cleanup to qualify), its
    Subject: to the sender and Postmaster-Subject: to the postmaster (who gets no text),
    its charset; a time value's warnings each time the text is expanded, as bounce(8)'s
    bounce_template_lookup() gives them."""
    path = tmp_path / "bounce.cf"
    path.write_text(
        "failure_template = <<EOF\nCharset: utf-8\nFrom: Robot <robot>\nSubject: Bounced\n"
        "Postmaster-Subject: PM bounced\n\nCaf\u00e9 $myhostname, $delay_warning_time_weeks.\n"
        "EOF\n"
    )
    cfg = make_config(
        tmp_path / "c",
        main=f"myhostname = m.example\nnotify_classes = bounce\nbounce_template_file = {path}\n"
        "delay_warning_time = 1h\n",
    )
    warnings: list[str] = []
    reports = [Report(Recipient("b@example.com"), FAILED)]
    for _ in range(2):
        (_, to_sender), (pm_env, to_pm) = notices(
            "failure", cfg, "Q1", _env("a@x.org"), MESSAGE, reports, warnings.append
        )
    assert (
        warnings
        == [
            f"{path}: zero result in failure template conversion of parameter "
            '"delay_warning_time_weeks"',
            'please reduce time unit "weeks" of "delay_warning_time_weeks" in failure template',
            "for instructions see the bounce(5) manual",
        ]
        * 2
    )
    assert b"\r\nFrom: Robot <robot>\r\nSubject: Bounced\r\n" in to_sender
    assert b"charset=utf-8\r\n" in to_sender
    assert "\r\n\r\nCaf\u00e9 m.example, 0.\r\n\r\n<b@example.com>: ".encode() in to_sender
    assert [r.address for r in pm_env.recipients] == ["postmaster"]
    assert b"\r\nSubject: PM bounced\r\n" in to_pm and "Caf\u00e9".encode() not in to_pm


def test_template_errors_fatal_to_bounce(tmp_path):
    """An undefined $name, or a template file that cannot be read: no notice, the error
    in Postfix's words for the caller to log as bounce(8)'s fatal line."""
    path = tmp_path / "bounce.cf"
    path.write_text("delay_template = <<EOF\nSubject: x\n\nSee $no_such_name.\nEOF\n")
    reports = [Report(Recipient("b@example.com"), FAILED)]
    cfg = make_config(tmp_path / "c", main=f"bounce_template_file = {path}\n")
    # The failure template is the built-in one: only the delay notice fails.
    assert notices("failure", cfg, "Q1", _env("a@x.org"), MESSAGE, reports)
    with pytest.raises(TemplateError) as e:
        notices("delay", cfg, "Q1", _env("a@x.org"), MESSAGE, reports)
    assert str(e.value) == f"{path}: undefined $name in delay template: See $no_such_name."
    missing = make_config(tmp_path / "m", main=f"bounce_template_file = {tmp_path}/nosuch\n")
    with pytest.raises(TemplateError) as e:
        notices("failure", missing, "Q1", _env("a@x.org"), MESSAGE, reports)
    assert str(e.value) == f"open {tmp_path}/nosuch: No such file or directory"


def test_ignored_template_warned_of_once(tmp_path):
    """A template bounce(8) ignores is warned of when first used, and the built-in one
    sent each time."""
    path = tmp_path / "bounce.cf"
    path.write_text("failure_template = <<EOF\nX-Foo: bar\n\nnot used\nEOF\n")
    cfg = make_config(tmp_path / "c", main=f"bounce_template_file = {path}\n")
    warnings: list[str] = []
    reports = [Report(Recipient("b@example.com"), FAILED)]
    for _ in range(2):
        ((_, content),) = notices(
            "failure", cfg, "Q1", _env("a@x.org"), MESSAGE, reports, warnings.append
        )
        assert b"Subject: Undelivered Mail Returned to Sender\r\n" in content
    assert warnings == [
        f'{path}: unknown "X-Foo" header label in failure template -- ignoring this template'
    ]


def test_verify_report_from_its_template(tmp_path):
    path = tmp_path / "bounce.cf"
    path.write_text("verify_template = <<EOF\nSubject: Probe result\n\nAs asked, $mydomain.\nEOF\n")
    cfg = make_config(
        tmp_path / "c", main=f"mydomain = example.net\nbounce_template_file = {path}\n"
    )
    ok = Outcome("2.0.0", "delivers to mailbox")
    ((_, content),) = notices(
        "verify", cfg, "Q1", _env("a@x.org"), MESSAGE, [Report(Recipient("b@x.org"), ok)]
    )
    assert b"\r\nSubject: Probe result\r\n" in content
    assert b"\r\n\r\nAs asked, example.net.\r\n\r\n<b@x.org>: delivers to mailbox\r\n" in content
