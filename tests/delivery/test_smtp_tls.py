"""smtp(8) STARTTLS policy against a real TLS-speaking peer: oxipost's own smtpd (its
tests' fixtures) with an openssl-made certificate."""

from __future__ import annotations

from oxipost.envelope import Outcome

from tests.smtpd.conftest import start_smtpd
from tests.smtpd.test_tls import _tls_conf, cert

from .conftest import make_config, request, run

__all__ = ["cert", "start_smtpd"]  # fixtures used by name below


def _deliver(tmp_path, level: str, port: int) -> Outcome:
    cfg = make_config(tmp_path / "client", main=f"smtp_tls_security_level = {level}\n")
    (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{port}", ["user@mx.example.test"]))
    return o


def test_encrypt_uses_starttls(tmp_path, start_smtpd, cert):
    srv = start_smtpd(_tls_conf(cert))
    o = _deliver(tmp_path, "encrypt", srv.port)
    assert o.delivered, o
    assert o.text.startswith("250 2.0.0 Ok: queued as ")
    ((_env, content),) = srv.queue.messages
    assert b" with ESMTPS id " in content


def test_may_uses_tls_when_offered_and_plain_when_not(tmp_path, start_smtpd, cert):
    srv = start_smtpd(_tls_conf(cert))
    assert _deliver(tmp_path, "may", srv.port).delivered
    assert b" with ESMTPS id " in srv.queue.messages[0][1]
    plain = start_smtpd("")
    assert _deliver(tmp_path / "b", "may", plain.port).delivered
    assert b" with ESMTP id " in plain.queue.messages[0][1]


def test_none_stays_plain(tmp_path, start_smtpd, cert):
    srv = start_smtpd(_tls_conf(cert))
    assert _deliver(tmp_path, "none", srv.port).delivered
    assert b" with ESMTP id " in srv.queue.messages[0][1]
