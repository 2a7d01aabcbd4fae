"""smtp(8)'s "verify" and "secure" TLS levels, compared with real Postfix 3.7's smtp client.

The next hop is a real Postfix smtpd offering STARTTLS with Debian's snakeoil certificate
(self-signed, subjectAltName DNS:localhost). The same mail goes to it from a second real
Postfix and from our client, with the same main.cf: what was sent and what deferred ("Server
certificate not verified", 4.7.5), and from which relay, must be the same: an untrusted
certificate (no smtp_tls_CAfile: Postfix trusts no system CA by default), a trusted one
whose names hold the host's name (verify) or the next-hop domain (secure), and a trusted
one that names another host (127.0.0.1: no IP address in it); a TLS policy's match= names
in place of the *_cert_match parameters; the "fingerprint" level, the certificate's or its
public key's digest among the policy's match= values (or smtp_tls_fingerprint_cert_match).
The TLS session lines ("Verified TLS connection established to ...", smtp_tls_loglevel 1)
and the certificate checks' failures (whatever the loglevel) must be the same too."""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import subprocess
import time

import pytest
from oxipost.delivery import smtp

from tests.smtpd.test_postfix_differential import running_postfix

from .conftest import make_config, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
NEXT_HOP_CF = (
    "smtpd_tls_security_level = may\n"
    f"smtpd_tls_cert_file = {SNAKEOIL}\n"
    "smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key\n"
    "mydestination = $myhostname, x.test\n"
) + LOG_CF
# (global level, smtp_tls_CAfile, destination, its smtp_tls_policy_maps entry)
CASES = [
    ("verify", "", "[localhost]:HOP", ""),
    ("verify", SNAKEOIL, "[localhost]:HOP", ""),
    ("verify", SNAKEOIL, "[127.0.0.1]:HOP", ""),
    ("secure", SNAKEOIL, "[localhost]:HOP", ""),
    ("secure", SNAKEOIL, "[127.0.0.1]:HOP", ""),
    ("may", SNAKEOIL, "[localhost]:HOP", "secure match=other.test:.localhost"),
    ("may", SNAKEOIL, "[127.0.0.1]:HOP", "secure match=other.test:localhost"),
    # Fingerprints (sha256, Postfix 3.7's default digest at this compatibility level).
    ("fingerprint", "", "[127.0.0.1]:HOP", ""),
    ("may", "", "[127.0.0.1]:HOP", "fingerprint match=CERT"),
    ("may", "", "[127.0.0.1]:HOP", "fingerprint match=00:11|PUBKEY"),
    ("may", "", "[127.0.0.1]:HOP", "fingerprint match=00:11:22"),
    ("may", "", "[127.0.0.1]:HOP", "fingerprint match=" + "ab" * 32),
]
# The lines of Postfix's smtp_tls_loglevel 1 and of its certificate checks.
TLS_LINE = r".*(?:TLS connection established|certificate verification failed) .*"
# What tls_log_summary adds from OpenSSL and Python's ssl module does not tell.
KEY_EXCHANGE = re.compile(r" key-exchange .*")


def _fingerprints() -> dict[str, str]:
    """The snakeoil certificate's sha256 fingerprints, as openssl computes them: of the
    certificate (with colons, as `openssl x509 -fingerprint` writes it) and of its public
    key (without)."""
    cert = subprocess.run(
        ["openssl", "x509", "-in", SNAKEOIL, "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pem = subprocess.run(
        ["openssl", "x509", "-in", SNAKEOIL, "-noout", "-pubkey"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=pem.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return {"CERT": cert.strip().split("=", 1)[1], "PUBKEY": hashlib.sha256(der).hexdigest()}


def test_certificate_verification_as_postfix(tmp_path, shared_tmp, caplog) -> None:
    caplog.set_level(logging.INFO, logger="oxipost.smtp")
    theirs, ours, their_lines, our_lines = [], [], [], []
    with running_postfix(NEXT_HOP_CF, without=("qmgr",)) as (hop, _hop_dir):
        for n, (level, cafile, dest, policy) in enumerate(CASES):
            dest = dest.replace("HOP", str(hop))
            # compatibility_level as running_postfix's (sha256 fingerprints from 3.6 on).
            # The "secure" cases at loglevel 0: a failed check is logged all the same.
            loglevel = 0 if level == "secure" else 1
            main = (
                f"smtp_tls_security_level = {level}\nsmtp_tls_CAfile = {cafile}\n"
                "smtp_host_lookup = native\ncompatibility_level = 3.6\n"
                f"smtp_tls_loglevel = {loglevel}\n"
            )
            for name, value in _fingerprints().items():
                policy = policy.replace(name, value)
            if policy:
                # Read by Postfix's smtp as user postfix: not pytest's 0700 tree.
                table = shared_tmp / f"policy{n}"
                table.write_text(f"{dest} {policy}\n")
                main += f"smtp_tls_policy_maps = texthash:{table}\n"
            relay_cf = f"mydestination =\nrelayhost = {dest}\n" + main + LOG_CF
            with running_postfix(relay_cf) as (port, d):
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                    s.sendmail("x@example.org", ["u@x.test"], b"Subject: x\r\n\r\nx\r\n")
                deadline = time.monotonic() + 30
                pattern = r"relay=([^,]+), .* dsn=([\d.]+), status=(\w+) \((.*?)(?:: queued|\))"
                while not (m := re.search(pattern, log := (d / "maillog").read_text())):
                    assert time.monotonic() < deadline, log
                    time.sleep(0.1)
                theirs.append(m.groups())
                lines = re.findall(rf"postfix/smtp\[\d+\]: ({TLS_LINE})", log)
                their_lines.append([KEY_EXCHANGE.sub("", line) for line in lines])
            cfg = make_config(tmp_path / f"ours{n}", main)
            caplog.clear()
            (o,) = run(request(cfg, "smtp", dest, ["u@x.test"]))
            messages = [r.getMessage() for r in caplog.records]
            our_lines.append([m for m in messages if re.fullmatch(TLS_LINE, m)])
            state = "sent" if o.delivered else "deferred"
            ours.append((o.relay or "none", o.status, state, o.text.partition(": queued")[0]))
    assert ours == theirs
    assert our_lines == their_lines
    states = ["deferred", "sent", "deferred", "sent", "deferred", "deferred", "sent"]
    states += ["deferred", "sent", "sent", "deferred", "deferred"]
    assert [t[2] for t in theirs] == states
    assert theirs[0][1:] == ("4.7.5", "deferred", "Server certificate not verified")
    assert their_lines[3] == []
    assert their_lines[4] == [
        f"server certificate verification failed for 127.0.0.1[127.0.0.1]:{hop}: "
        "num=62:hostname mismatch"
    ]
    assert their_lines[1] == [
        f"Verified TLS connection established to localhost[127.0.0.1]:{hop}: "
        "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    ]


def test_certificate_name_forms() -> None:
    """A wildcard stands for one label; a wanted name with a leading dot takes any
    subdomain; the CN counts only without DNS names in subjectAltName; an IP address
    matches an IP Address entry only."""
    wild = {"subjectAltName": (("DNS", "*.example.com"),), "subject": ()}
    assert smtp._cert_matches(wild, ["mail.example.com"])
    assert not smtp._cert_matches(wild, ["a.mail.example.com"])
    assert not smtp._cert_matches(wild, ["example.com"])
    mx = {"subjectAltName": (("DNS", "mx.example.com"),), "subject": ()}
    assert smtp._cert_matches(mx, [".example.com"])
    assert not smtp._cert_matches(mx, [".mx.example.com", "example.com"])
    cn = {"subject": ((("commonName", "mx.example.com"),),)}
    assert smtp._cert_matches(cn, ["MX.example.com."])
    both = {"subjectAltName": (("DNS", "other.test"),), "subject": cn["subject"]}
    assert not smtp._cert_matches(both, ["mx.example.com"])
    ip = {"subjectAltName": (("IP Address", "127.0.0.1"), ("DNS", "127.0.0.2")), "subject": ()}
    assert smtp._cert_matches(ip, ["127.0.0.1"])
    assert not smtp._cert_matches(ip, ["127.0.0.2"])
