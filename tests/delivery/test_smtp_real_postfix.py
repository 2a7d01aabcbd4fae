"""smtp(8) client against real Postfix 3.7's smtpd (Debian's package, `postfix -c DIR
start` on a free port, the smtpd tests' fixture): acceptance, and a per-recipient
relay refusal kept with Postfix's own text, via smtp_bind_address."""

from __future__ import annotations

import pytest
from oxipost.envelope import Outcome

from tests.smtpd.test_postfix_differential import real_postfix

from .conftest import make_config, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]
__all__ = ["real_postfix"]  # the fixture, used by name


def test_delivered_to_real_postfix(tmp_path, real_postfix):
    cfg = make_config(tmp_path / "c")
    (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{real_postfix}", ["user@mx.example.test"]))
    assert o.status == "2.0.0", o
    assert o.text.startswith("250 2.0.0 Ok: queued as ")


def test_relay_refusal_per_recipient(tmp_path, real_postfix):
    # From 127.0.0.2 (outside mynetworks) Postfix defers relaying: only that recipient.
    cfg = make_config(tmp_path / "c", main="smtp_bind_address = 127.0.0.2\n")
    out = run(
        request(
            cfg, "smtp", f"[127.0.0.1]:{real_postfix}", ["x@remote.test", "user@mx.example.test"]
        )
    )
    assert out[0] == Outcome(
        "4.7.1",
        "host 127.0.0.1[127.0.0.1] said: 454 4.7.1 <x@remote.test>: Relay access denied "
        "(in reply to RCPT TO command)",
    )
    assert out[1].delivered, out
