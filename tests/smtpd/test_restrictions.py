"""Access restrictions over real sessions: the open-relay matrix (catalogue 38-40) and the
built-in restrictions, evaluated as Postfix's smtpd_check.c does."""

from __future__ import annotations

import pytest
from oxipost.config import load_config
from oxipost.smtpd.check import CheckConfigError, validate
from oxipost.smtpd.service import build_server

from tests.smtpd.conftest import Raw, RecordingQueue, write_config

RELAY = (
    "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,"
    " reject_unauth_destination\n"
)

ROUTED_FORMS = [
    "u@foreign.example",
    "u%foreign.example@localhost",
    "foreign.example!u@localhost",
    '"u@foreign.example"@localhost',
    "u@foreign.example@localhost",
    "@localhost:u@foreign.example",
    "u%foreign.example@[127.0.0.1]",
]
SENDERS = ["", "someone@localhost", "someone@mx.example.test", "someone@foreign.example"]


def _session(srv, source: str) -> Raw:
    raw = Raw(srv.host, srv.port, source=source)
    raw.reply()
    raw.cmd("EHLO client.example")
    return raw


@pytest.mark.parametrize("rcpt", ROUTED_FORMS)
def test_38_open_relay_matrix_from_outside(start_smtpd, rcpt: str) -> None:
    srv = start_smtpd(RELAY)
    raw = _session(srv, "127.0.0.2")
    for sender in SENDERS:
        assert raw.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
        # Postfix's internal form: no quotes, no source route.
        shown = rcpt.replace('"', "").removeprefix("@localhost:")
        assert raw.cmd(f"RCPT TO:<{rcpt}>") == f"554 5.7.1 <{shown}>: Relay access denied"
        assert raw.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
        assert raw.cmd("RSET") == "250 2.0.0 Ok"
    assert srv.queue.messages == []
    assert any(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1" in line for line in srv.log
    )


def test_38_default_defer_unauth_destination(start_smtpd) -> None:
    srv = start_smtpd()  # Postfix 3.7's default smtpd_relay_restrictions
    raw = _session(srv, "127.0.0.2")
    raw.cmd("MAIL FROM:<a@example.org>")
    assert raw.cmd("RCPT TO:<u@foreign.example>") == (
        "454 4.7.1 <u@foreign.example>: Relay access denied"
    )


@pytest.mark.parametrize("rcpt", ROUTED_FORMS)
def test_39_same_matrix_from_mynetworks_is_accepted(start_smtpd, rcpt: str) -> None:
    srv = start_smtpd(RELAY)
    raw = _session(srv, "127.0.0.1")
    assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert raw.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"


def test_39_local_domains_accepted_from_outside(start_smtpd) -> None:
    srv = start_smtpd(RELAY + "relay_domains = relay.example\n")
    raw = _session(srv, "127.0.0.2")
    raw.cmd("MAIL FROM:<a@example.org>")
    for rcpt in [
        "u@localhost",
        "u@mx.example.test",
        "u@[127.0.0.1]",
        "u@relay.example",
        "u@sub.relay.example",
    ]:
        assert raw.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok", rcpt


@pytest.mark.parametrize(
    "relay",
    [
        "permit_mynetworks, permit_sasl_authenticated",
        "permit_mynetworks",
        "reject_non_fqdn_recipient",
    ],
)
def test_40_relay_restrictions_without_reject_refuse_to_start(tmp_path, relay: str) -> None:
    d = write_config(
        str(tmp_path),
        f"smtpd_relay_restrictions = {relay}\nsmtpd_recipient_restrictions = permit_mynetworks\n",
    )
    cfg = load_config(d).for_service("smtp")
    with pytest.raises(CheckConfigError, match="specify at least one working instance of"):
        validate(cfg)
    with pytest.raises(CheckConfigError):
        build_server(cfg, RecordingQueue())


def test_helo_and_fqdn_restrictions(start_smtpd) -> None:
    srv = start_smtpd(
        RELAY
        + "smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\n"
        + "smtpd_sender_restrictions = reject_non_fqdn_sender\n"
        + "smtpd_recipient_restrictions = reject_non_fqdn_recipient\n"
    )
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO bad_host!name")
    raw.cmd("MAIL FROM:<a@example.org>")
    # smtpd_delay_reject = yes: the HELO verdict comes at RCPT time.
    assert raw.cmd("RCPT TO:<u@mx.example.test>") == (
        "501 5.5.2 <bad_host!name>: Helo command rejected: Invalid name"
    )
    raw.cmd("RSET")
    raw.cmd("EHLO singlelabel")
    raw.cmd("MAIL FROM:<a@example.org>")
    assert raw.cmd("RCPT TO:<u@mx.example.test>") == (
        "504 5.5.2 <singlelabel>: Helo command rejected: need fully-qualified hostname"
    )
    raw.cmd("EHLO client.example")
    raw.cmd("MAIL FROM:<a@nodots>")
    assert raw.cmd("RCPT TO:<u@mx.example.test>") == (
        "504 5.5.2 <a@nodots>: Sender address rejected: need fully-qualified address"
    )
    raw.cmd("RSET")
    raw.cmd("MAIL FROM:<a@example.org>")
    assert raw.cmd("RCPT TO:<u@mx.example.test>") == "250 2.1.5 Ok"


def test_reject_delay_reject_off_and_warn_if_reject(start_smtpd) -> None:
    srv = start_smtpd(
        RELAY
        + "smtpd_delay_reject = no\n"
        + "smtpd_sender_restrictions = warn_if_reject reject_non_fqdn_sender, "
        + "check_sender_class\n"
        + "smtpd_restriction_classes = check_sender_class\n"
        + "check_sender_class = reject\n"
    )
    raw = _session(srv, "127.0.0.2")
    # warn_if_reject logs the first reject and goes on; the class rejects at MAIL time.
    assert raw.cmd("MAIL FROM:<a@nodots>") == (
        "554 5.7.1 <a@nodots>: Sender address rejected: Access denied"
    )
    assert any("reject_warning:" in line and "need fully-qualified" in line for line in srv.log)


def test_client_permit_does_not_skip_relay_control(start_smtpd) -> None:
    srv = start_smtpd(RELAY + "smtpd_client_restrictions = permit\n")
    raw = _session(srv, "127.0.0.2")
    raw.cmd("MAIL FROM:<a@example.org>")
    assert raw.cmd("RCPT TO:<u@foreign.example>").startswith("554 5.7.1")


def test_data_restrictions_reject(start_smtpd) -> None:
    srv = start_smtpd(RELAY + "smtpd_data_restrictions = reject\n")
    raw = _session(srv, "127.0.0.2")
    raw.cmd("MAIL FROM:<a@example.org>")
    raw.cmd("RCPT TO:<u@localhost>")
    assert raw.cmd("DATA") == "554 5.7.1 <DATA>: Data command rejected: Access denied"


def test_14_unreadable_table_is_a_temporary_lookup_failure(start_smtpd, tmp_path) -> None:
    """catalogue 14: a recipient table that cannot be read answers 451 4.3.0, never accepts;
    an access(5) table that cannot be read is, as in Postfix 3.7's check_access, the access
    result "451 4.3.5 Server configuration error" (test_postfix_differential compares both
    with real Postfix)."""
    (tmp_path / "table.cdb").write_bytes(b"\xff" * 4096)  # not a cdb file
    for main_cf, reply in (
        (
            f"relay_domains = example.com\nrelay_recipient_maps = hash:{tmp_path}/table\n",
            "451 4.3.0 <u@example.com>: Temporary lookup failure",
        ),
        (
            f"smtpd_recipient_restrictions = check_recipient_access hash:{tmp_path}/table,"
            " permit_mynetworks, reject_unauth_destination\n",
            "451 4.3.5 <u@example.com>: Recipient address rejected: Server configuration error",
        ),
    ):
        srv = start_smtpd(main_cf)
        raw = Raw(srv.host, srv.port)
        raw.reply()
        raw.cmd("EHLO client.example")
        raw.cmd("MAIL FROM:<a@example.org>")
        assert raw.cmd("RCPT TO:<u@example.com>") == reply
