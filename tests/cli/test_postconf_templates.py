"""postconf -b and -t (bounce(5) templates) and the listing modes -a, -A, -l, -m and -T,
against real Postfix 3.7's postconf where it can answer the same question.

-b and -t must print, warn and fail byte for byte as Postfix's: the built-in templates, a
template file named on the command line or by bounce_template_file, and each of its
errors (Postfix's postconf runs bounce(8) for them, so they are "postfix/bounce: ...")."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from oxipost.maps import TABLE_TYPES

from tests.conftest import POSTFIX_POSTCONF, postconf_as_postfix, run_ours, run_postfix

pytestmark = pytest.mark.postfix

# myhostname set: the -b text names it (Postfix's and ours would find the same, but a
# fixed name keeps the test off the host's).
MAIN_CF = "myhostname = mx.example.test\nmydomain = example.test\n"

CUSTOM = """\
# A comment, then a blank line.

failure_template = <<EOF
charset: iso-8859-1
FROM:   Bounce Robot <bounces@example.com>
Subject: Your mail failed $myhostname
Postmaster-Subject: PM copy


Hello from $myhostname / $mydomain, $delay_warning_time_minutes m, \
$maximal_queue_lifetime_hours h, ${myorigin} $(mydomain) $$5\x20\x20
  leading space and tab\tend
Caf\u00e9 ${nosuch?yes}${myhostname?{set}:{unset}} $(nosuch:dflt) ${{1} == {1} ? {eq} : {ne}}

EOF

delay_template = <<END
Subject: Late

Late: $delay_warning_time_seconds s, $maximal_queue_lifetime_days d
END
success_template = one line $myhostname$$\x20\x20
bogus_template = <<EOF
Subject: x

y
EOF
"""

# Each is warned of and leaves the built-in template in place.
IGNORED = {
    "empty_header": "failure_template = <<EOF\nSubject:\n\nx\nEOF\n",
    "non_ascii_header": "failure_template = <<EOF\nSubject: caf\u00e9\n\nx\nEOF\n",
    "inapplicable": "success_template = <<EOF\nPostmaster-Subject: pm\n\nx\nEOF\n",
    "unknown_label": "verify_template = <<EOF\nX-Foo: pm\n\nx\nEOF\n",
    "blank_text": "failure_template = <<EOF\nSubject: pm\n\n  \nEOF\n",
    "no_text": "delay_template = <<EOF\nSubject: pm\nEOF\n",
    "eight_bit_us_ascii": "failure_template = <<EOF\nSubject: pm\n\ncaf\u00e9\nEOF\n",
    "no_end_marker": "failure_template = <<EOF\nSubject: pm\n\nx\n",
    "unknown_name": "failures_template = <<EOF\nSubject: pm\n\nx\nEOF\n",
}

FATAL = {
    "no_marker": "failure_template = <<\n",
    "bad_marker": 'failure_template = <<"EOF"\nx\nEOF\n',
    "no_equals": "# c\nfailure_template\n",
    "no_name": "= x\n",
    "undefined": "failure_template = <<EOF\nSubject: pm\n\nx $nosuchparam y\nEOF\n",
    "undefined_braced": "verify_template = <<EOF\nSubject: pm\n\nx ${nosuch}\nEOF\n",
    "unknown_time_unit": (
        "delay_template = <<EOF\nSubject: pm\n\n$delay_warning_time_fortnights\nEOF\n"
    ),
    # A parameter of another daemon: unknown to bounce(8).
    "daemon_parameter": "verify_template = <<EOF\nSubject: pm\n\nx $smtpd_banner\nEOF\n",
    "daemon_parameter_default": (
        "verify_template = <<EOF\nSubject: pm\n\n$relay_domains\n$smtp_helo_name\nEOF\n"
    ),
    "lone_dollar": "failure_template = <<EOF\nSubject: pm\n\ncost $ 5\nEOF\n",
    "dollar_at_end": "failure_template = <<EOF\nSubject: pm\n\n$myhostname$\nEOF\n",
    "truncated": "failure_template = <<EOF\nSubject: pm\n\nx ${myhostname y\nEOF\n",
}

# A time value that converts to zero or to more than 999: warned of, expanded.
TIMES = (
    "failure_template = <<EOF\nSubject: pm\n\n$maximal_queue_lifetime_minutes "
    "$maximal_queue_lifetime_weeks $delay_warning_time_hours $delay_warning_time_seconds\nEOF\n"
)


def _confdir(tmp_path: Path, main_cf: str = MAIN_CF) -> Path:
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text("")
    return tmp_path


@pytest.mark.parametrize("option", ["-b", "-t"])
def test_built_in_templates_as_postfix(tmp_path: Path, option: str) -> None:
    postconf_as_postfix(_confdir(tmp_path), option)


def test_built_in_templates_empty_main_cf(tmp_path: Path) -> None:
    """Postfix's own defaults: delay_warning_time 0h ("0 hour(s)", no warning for 0)."""
    confdir = _confdir(tmp_path, "")
    postconf_as_postfix(confdir, "-b")
    postconf_as_postfix(confdir, "-t")


def test_obsolete_header_from_format(tmp_path: Path) -> None:
    postconf_as_postfix(_confdir(tmp_path, MAIN_CF + "header_from_format = obsolete\n"), "-t")


@pytest.mark.parametrize("option", ["-b", "-t"])
def test_template_file_as_postfix(tmp_path: Path, option: str) -> None:
    path = tmp_path / "bounce.cf"
    path.write_text(CUSTOM)
    confdir = _confdir(tmp_path, MAIN_CF + "delay_warning_time = 4h\n")
    postconf_as_postfix(confdir, option, str(path))
    # Named by bounce_template_file instead.
    (confdir / "main.cf").write_text(MAIN_CF + f"bounce_template_file = {path}\n")
    postconf_as_postfix(confdir, option)


@pytest.mark.parametrize("case", sorted(IGNORED))
@pytest.mark.parametrize("option", ["-b", "-t"])
def test_ignored_template_as_postfix(tmp_path: Path, case: str, option: str) -> None:
    path = tmp_path / "bounce.cf"
    path.write_text(IGNORED[case])
    postconf_as_postfix(_confdir(tmp_path), option, str(path))


@pytest.mark.parametrize("case", sorted(FATAL))
def test_fatal_template_as_postfix(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bounce.cf"
    path.write_text(FATAL[case])
    confdir = _confdir(tmp_path)
    postconf_as_postfix(confdir, "-b", str(path))
    ours = run_ours("postconf", "-c", str(confdir), "-b", str(path))
    assert ours.returncode == 1 and "/bounce: fatal: " in ours.stderr


def test_time_conversion_warnings_as_postfix(tmp_path: Path) -> None:
    path = tmp_path / "bounce.cf"
    path.write_text(TIMES)
    postconf_as_postfix(_confdir(tmp_path, MAIN_CF + "delay_warning_time = 30m\n"), "-b", str(path))


@pytest.mark.parametrize("utf8", ["yes", "no"])
def test_parameter_values_in_text_as_postfix(tmp_path: Path, utf8: str) -> None:
    """$myhostname's ACE labels in UTF-8 with smtputf8_enable; a value's bytes outside
    printable ASCII (UTF-8 text too without smtputf8_enable) become "_"; syslog_name
    names the diagnostics."""
    path = tmp_path / "bounce.cf"
    path.write_text(
        "verify_template = <<EOF\nSubject: pm\n\n$myhostname $mydomain $myorigin $custom\n"
        "$undefined_here\nEOF\n"
    )
    main_cf = (
        "myhostname = mx.xn--caf-dma.example\nmydomain = xn--caf-dma.example\n"
        f"smtputf8_enable = {utf8}\ncustom = caf\u00e9 ctl\x01x\nsyslog_name = tpl\n"
    )
    postconf_as_postfix(_confdir(tmp_path, main_cf), "-b", str(path))


def test_bounce_parameters_as_postfix(tmp_path: Path) -> None:
    """The global parameters and bounce(8)'s own expand, as do main.cf's names, whatever
    daemon they are for."""
    path = tmp_path / "bounce.cf"
    path.write_text(
        "failure_template = <<EOF\nSubject: pm\n\n$relay_domains; $mydestination\n"
        "$notify_classes $bounce_size_limit $mail_owner $double_bounce_sender $myorigin\n"
        "$maximal_queue_lifetime $header_from_format $compatibility_level $relayhost.\n"
        "$smtpd_banner / $custom\nEOF\n"
    )
    main_cf = MAIN_CF + "smtpd_banner = $myhostname ESMTP\ncustom = here\n"
    postconf_as_postfix(_confdir(tmp_path, main_cf), "-b", str(path))


def test_template_file_errors_as_postfix(tmp_path: Path) -> None:
    confdir = _confdir(tmp_path)
    postconf_as_postfix(confdir, "-b", str(tmp_path / "missing.cf"))
    postconf_as_postfix(confdir, "-t", "one", "two")
    postconf_as_postfix(confdir, "-b", "-t")
    postconf_as_postfix(confdir, "-t", "-b")
    postconf_as_postfix(confdir, "-b", "-o", "myhostname=x")


def test_lock_methods_and_tls_as_postfix(tmp_path: Path) -> None:
    confdir = _confdir(tmp_path)
    postconf_as_postfix(confdir, "-l")
    # The OpenSSL library both are linked with on this host.
    postconf_as_postfix(confdir, "-T", "run-version")
    postconf_as_postfix(confdir, "-T", "nosuchmode")
    assert run_ours("postconf", "-T", "run-version").stdout == ssl.OPENSSL_VERSION + "\n"


def test_compile_version_and_algorithms(tmp_path: Path) -> None:
    confdir = _confdir(tmp_path)
    ours = run_ours("postconf", "-c", str(confdir), "-T", "compile-version")
    major, minor, _fix, patch = ssl._OPENSSL_API_VERSION[:4]
    assert ours.stdout == f"OpenSSL {major}.{minor}.{patch}\n"
    algorithms = run_ours("postconf", "-c", str(confdir), "-T", "public-key-algorithms")
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-T", "public-key-algorithms")
    assert algorithms.stdout == real.stdout == "dsa\necdsa\nrsa\n"


def test_sasl_types(tmp_path: Path) -> None:
    """Ours, not Postfix's (which has Cyrus's server too): the servers smtpd_sasl_type
    takes, the client smtp_sasl_type names."""
    confdir = _confdir(tmp_path)
    assert run_ours("postconf", "-c", str(confdir), "-a").stdout == "dovecot\npasswd-file\n"
    assert run_ours("postconf", "-c", str(confdir), "-A").stdout == "cyrus\n"


def test_table_types_are_those_served(tmp_path: Path) -> None:
    confdir = _confdir(tmp_path)
    ours = run_ours("postconf", "-c", str(confdir), "-m").stdout.splitlines()
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-m").stdout.splitlines()
    assert ours == sorted(TABLE_TYPES)
    # Each a type Postfix 3.7 knows, listed in its order.
    assert set(ours) <= set(real)
    assert ours == [t for t in real if t in ours]
    # Both read main.cf first.
    postconf_as_postfix(tmp_path / "nosuch", "-m")
