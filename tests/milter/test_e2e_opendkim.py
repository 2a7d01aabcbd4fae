"""Under master: the smtpd workers (dropped to mail_owner) sign through Debian's opendkim,
and virtual(8) delivers the signed message, which opendkim then verifies."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import free_port
from tests.delivery.test_e2e_delivery import oxi  # noqa: F401
from tests.milter.conftest import dkim_key, opendkim


def test_signed_by_opendkim_and_delivered(oxi, tmp_path: Path) -> None:  # noqa: F811
    key = dkim_key(tmp_path)
    port = free_port()
    with opendkim(tmp_path, "s", key, port):
        oxi.start(f"smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = reject\n")
        oxi.swaks("joe@example.test", "alice@example.com", "signed", "hello from joe")
        (delivered,) = oxi.wait_mail("alice")
    text = delivered.read_text()
    assert "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.test;" in text
    conf = tmp_path / "verify.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {key.with_suffix('.keys')}\nSyslog no\n")
    signed = tmp_path / "delivered.eml"
    signed.write_text(text)
    verify = subprocess.run(
        ["opendkim", "-x", str(conf), "-t", str(signed)], capture_output=True, text=True
    )
    assert "verification (s=test, d=example.test, 2048-bit key) succeeded" in verify.stdout, verify
