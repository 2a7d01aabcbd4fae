"""cleanup behind a real smtpd on a loopback socket: replies at end of DATA, log lines, and
what reaches the real spool (QueueState.load)."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

from oxipost.config import load_config
from oxipost.qmgr.queue import QueueState

from tests.cleanup.conftest import header


def _tables(srv: Any, **tables: str) -> None:
    for name, text in tables.items():
        (Path(srv.config_dir) / name).write_text(text)


def _queued(srv: Any) -> list[tuple[Any, bytes]]:
    cfg = load_config(srv.config_dir)
    state = QueueState(cfg)
    return [state.load(qid) for qid in state.messages]


def test_header_checks_reject_answers_550_at_end_of_data(start_smtpd: Any, tmp_path: Path) -> None:
    (tmp_path / "header_checks").write_text("/^Subject:.*viagra/ REJECT no spam here\n")
    srv = start_smtpd(f"header_checks = regexp:{tmp_path}/header_checks\n")
    with smtplib.SMTP(srv.host, srv.port) as s:
        s.ehlo("client.example")
        s.mail("a@example.org")
        s.rcpt("postmaster@localhost")
        code, text = s.data(b"Subject: cheap viagra\r\n\r\nbody\r\n")
        assert (code, text) == (550, b"5.7.1 no spam here")
        # The session goes on: the next message is accepted.
        s.mail("a@example.org")
        s.rcpt("postmaster@localhost")
        assert s.data(b"Subject: hello\r\n\r\nbody\r\n")[0] == 250
    assert len(srv.queue.messages) == 1
    (line,) = [ln for ln in srv.log if "reject: header" in ln]
    # Under the queue ID the transaction took at RCPT, as Postfix's cleanup logs it.
    (qid,) = [ln.split(":")[0] for ln in srv.log if ": client=" in ln][:1]
    assert line == (
        f"{qid}: reject: header Subject: cheap viagra from unknown[127.0.0.1]; "
        "from=<a@example.org> to=<postmaster@localhost> proto=ESMTP helo=<client.example>: "
        "5.7.1 no spam here"
    )


def test_body_checks_warn_and_discard(start_smtpd: Any, tmp_path: Path) -> None:
    (tmp_path / "body_checks").write_text("/^warn/ WARN odd\n/^drop it/ DISCARD dropped\n")
    srv = start_smtpd(f"body_checks = regexp:{tmp_path}/body_checks\n")
    with smtplib.SMTP(srv.host, srv.port) as s:
        s.ehlo("client.example")
        s.mail("a@example.org")
        s.rcpt("postmaster@localhost")
        code, text = s.data(b"Subject: x\r\n\r\nwarn me\r\n")
        assert code == 250
        qid = text.decode().rsplit(" ", 1)[1]
        s.mail("a@example.org")
        s.rcpt("postmaster@localhost")
        code, text = s.data(b"Subject: y\r\n\r\ndrop it now\r\n")
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    assert len(srv.queue.messages) == 1
    assert any(ln.startswith(f"{qid}: warning: body warn me from unknown[") for ln in srv.log)
    assert any(": discard: body drop it now from unknown[" in ln for ln in srv.log)


def test_virtual_alias_recursion_into_the_spool(start_smtpd: Any, tmp_path: Path) -> None:
    (tmp_path / "virtual").write_text(
        "team@example.test alice@example.test, bob@example.test\n"
        "bob@example.test robert@example.test\n"
        "@lists.example.test team@example.test\n"
    )
    srv = start_smtpd(
        f"virtual_alias_maps = texthash:{tmp_path}/virtual\nmynetworks = 127.0.0.0/8\n",
        real_queue=True,
    )
    with smtplib.SMTP(srv.host, srv.port) as s:
        s.ehlo("client.example")
        s.mail("a@example.org")
        s.rcpt("all@lists.example.test")
        assert s.data(b"Subject: x\r\n\r\nbody\r\n")[0] == 250
    ((env, _content),) = _queued(srv)
    assert [(r.address, r.original) for r in env.recipients] == [
        ("alice@example.test", "all@lists.example.test"),
        ("robert@example.test", "all@lists.example.test"),
    ]


def test_virtual_alias_loop_tempfails(start_smtpd: Any, tmp_path: Path) -> None:
    (tmp_path / "virtual").write_text(
        "a@example.test b@example.test\nb@example.test a@example.test\n"
    )
    srv = start_smtpd(
        f"virtual_alias_maps = texthash:{tmp_path}/virtual\nmynetworks = 127.0.0.0/8\n"
    )
    with smtplib.SMTP(srv.host, srv.port) as s:
        s.ehlo("client.example")
        s.mail("x@example.org")
        s.rcpt("a@example.test")
        assert s.data(b"Subject: x\r\n\r\nbody\r\n") == (451, b"4.6.0 Alias expansion error")
    assert srv.queue.messages == []
    (qid,) = [ln.split(":")[0] for ln in srv.log if ": client=" in ln]
    assert (
        f"warning: {qid}: unreasonable virtual_alias_maps map nesting for a@example.test -- "
        "message not accepted, try again later"
    ) in srv.log


def test_canonical_and_masquerade_in_the_spool(start_smtpd: Any, tmp_path: Path) -> None:
    (tmp_path / "canonical").write_text("joe@host.example.test joseph@host.example.test\n")
    srv = start_smtpd(
        f"canonical_maps = texthash:{tmp_path}/canonical\n"
        "masquerade_domains = example.test\n"
        "local_header_rewrite_clients = permit_mynetworks\n",
        real_queue=True,
    )
    with smtplib.SMTP(srv.host, srv.port) as s:
        s.ehlo("client.example")
        s.mail("joe@host.example.test")
        s.rcpt("postmaster@localhost")
        msg = b"From: Joe <joe@host.example.test>\r\nTo: someone\r\nSubject: x\r\n\r\nbody\r\n"
        assert s.data(msg)[0] == 250
    ((env, content),) = _queued(srv)
    assert env.sender == "joseph@example.test"
    assert header(content, "From") == ["From: Joe <joseph@example.test>"]
    # A bare header address gets @$myorigin (a local client), then masquerading.
    assert header(content, "To") == ["To: someone@example.test"]
