"""The parameter values every program checks as it starts (Postfix's mail_params_init), and
how numbers, times and booleans are read, beside real Postfix 3.7 (Debian's package).

postfix(1) refuses a value it cannot use before it runs any command, its warning and fatal
line on stderr when that is a terminal; our daemons refuse it as they start, in the maillog.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from oxipost.config import ConfigError, load_config, params
from oxipost.valid import hostname_problem

from tests.conftest import main_cf_with, run_ours, run_postfix, shared_dir

POSTFIX = "/usr/sbin/postfix"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10", 10),
        ("10s", 10),
        ("5m", 300),
        ("2h30m", 7200),
        ("1h5", 3600),
        ("+5", 5),
        ("1w", 604800),
        ("35791393m", 35791393 * 60),
    ],
)
def test_times_are_read_as_postfix_37_conv_time(value, seconds):
    # Postfix 3.7 looks at the character after the number only ("2h30m" is two hours).
    assert params.parse_time("t", value, "s") == seconds


@pytest.mark.parametrize("value", ["5x", "", "-1", "5 s", "abc", "35791394m", "2147483648"])
def test_bad_times_are_refused_in_postfix_words(value):
    with pytest.raises(ConfigError) as e:
        params.parse_time("max_idle", value, "s")
    assert str(e.value) == f"parameter max_idle: bad time value or unit: {value}"


@pytest.mark.parametrize("value", ["abc", "5x", "", "2147483648", "1.5", "5 "])
def test_bad_integers_are_refused_in_postfix_words(value):
    with pytest.raises(ConfigError) as e:
        params.parse_int("default_process_limit", value)
    assert str(e.value) == f"bad numerical configuration: default_process_limit = {value}"


def test_long_parameters_take_a_long():
    assert params.parse_int("message_size_limit", "2147483648") == 2147483648
    assert params.parse_int("default_process_limit", "+5") == 5


@pytest.mark.parametrize(("value", "result"), [("yes", True), ("YES", True), ("No", False)])
def test_booleans_are_yes_or_no_in_any_case(value, result):
    assert params.parse_bool("soft_bounce", value) is result


@pytest.mark.parametrize("value", ["true", "false", "1", "", "maybe"])
def test_other_booleans_are_refused_in_postfix_words(value):
    with pytest.raises(ConfigError) as e:
        params.parse_bool("soft_bounce", value)
    assert str(e.value) == f"bad boolean configuration: soft_bounce = {value}"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a b", "invalid character 32(decimal): a b"),
        ("-a.example", "misplaced hyphen: -a.example"),
        ("a-.example", "misplaced hyphen: a-.example"),
        ("a..b", "misplaced delimiter: a..b"),
        ("a.", "misplaced delimiter: a."),
        ("1.2.3.4", "numeric hostname: 1.2.3.4"),
        ("", "empty hostname"),
        ("a" * 64 + ".example", f"hostname label too long: {'a' * 64}.example"),
        ("a_b.example", None),
    ],
)
def test_host_name_problems_in_postfix_words(name, problem):
    assert hostname_problem(name) == (problem and f"valid_hostname: {problem}")


def test_a_daemon_refuses_a_bad_value_as_it_starts(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = a b\n")
    (tmp_path / "master.cf").write_text("")
    warnings: list[str] = []
    with pytest.raises(ConfigError) as e:
        params.check_startup(load_config(str(tmp_path)), warnings.append)
    assert warnings == ["valid_hostname: invalid character 32(decimal): a b"]
    assert str(e.value) == (
        f"file {tmp_path}/main.cf: parameter myhostname: bad parameter value: a b"
    )


# One value each: what postfix(1) refuses, and what it lets through.
SETTINGS = [
    "myhostname = a b",
    "myhostname = -foo.example",
    "myhostname = 1.2.3.4",
    "myhostname = é.example",
    "myhostname = foo.",
    "mydomain = a b",
    "mail_name =",
    "default_verp_delimiters = +=-",
    "default_process_limit = abc",
    "default_process_limit = 0",
    "line_length_limit = 100",
    "delay_logging_resolution_limit = 7",
    "daemon_timeout = 5x",
    "daemon_timeout = 0",
    "in_flow_delay = 11s",
    "soft_bounce = maybe",
    "soft_bounce = true",
    "syslog_facility = MAIL",
    "myorigin = a, b",
    "myhostname = host.example\nrelayhost = HOST.example",
    # Accepted: Postfix 3.7 reads "2h30m" as two hours.
    "daemon_timeout = 2h30m",
    "soft_bounce = YES",
    "message_size_limit = 2147483648",
    # compatibility_level, read before anything else and before any default exists; below
    # 3.6, postfix(1)'s three lines of notice.
    "compatibility_level = level",
    "compatibility_level = 3.6.x",
    "compatibility_level =",
    "compatibility_level = 3.",
    "compatibility_level = 3.1024",
    "compatibility_level = 3.6.1024",
    "compatibility_level = 1.2.3.4",
    "compatibility_level = -1",
    "compatibility_level = 0x3",
    "compatibility_level = $mail_version",
    "compatibility_level = level\nsyslog_facility = bogus",
    "compatibility_level = 2\nmyhostname = a b",
    "compatibility_level = 0",
    "compatibility_level = 2",
    "compatibility_level = 3.5.99",
    "compatibility_level = +3",
    "compatibility_level = 3.-0",
    "compatibility_level = $level\nlevel = 2",
    "compatibility_level = 3.6.0",
    "compatibility_level = 3. 6",
    "compatibility_level = 2047.1023.1023",
    # inet_protocols: name_mask's words, in that case.
    "inet_protocols = ipv5",
    "inet_protocols = ipv4, ipv5, ipv7",
    "inet_protocols = IPv4",
    "inet_protocols = all",
    "inet_protocols = ipv4, ipv6",
    "inet_protocols =",
    "syslog_facility = bogus\ninet_protocols = ipv5",
    "inet_protocols = ipv5\nmyhostname = a b",
    # mynetworks_style, looked at only when mynetworks is not set.
    "mynetworks_style = hostx",
    "mynetworks_style = HOST",
    "mynetworks_style = host subnet",
    "mynetworks_style = host, host",
    "mynetworks_style = class",
    "mynetworks_style = hostx\nmynetworks = 127.0.0.0/8",
    # inet_interfaces: names that resolve to this host's addresses, with a protocol
    # inet_protocols allows; only the whole value "all" or "loopback-only" is special.
    "inet_interfaces = 203.0.113.7",
    "inet_interfaces = 127.0.0.1, 203.0.113.7",
    "inet_interfaces = 127.0.0.2",
    "inet_interfaces = 300.1.1.1",
    "inet_interfaces = host.invalid",
    "inet_interfaces = ALL",
    "inet_interfaces = all, 127.0.0.1",
    "inet_interfaces = all",
    "inet_interfaces = loopback-only",
    "inet_interfaces = localhost",
    "inet_interfaces = [127.0.0.1]",
    "inet_interfaces = ::1\ninet_protocols = ipv4",
    "inet_protocols = ipv6",
    "mynetworks_style = hostx\ninet_interfaces = 203.0.113.7",
    "inet_interfaces = 203.0.113.7\nmyorigin = a,b",
    # The accounts (Debian's: nobody's group is nogroup, postfix's is postfix).
    "mail_owner = nosuch",
    "mail_owner = root",
    "mail_owner = nobody",
    "setgid_group = nosuchg",
    "setgid_group = root",
    "setgid_group = nogroup",
    "setgid_group = postfix",
    "default_privs = root",
    "default_privs = nosuch",
    "default_privs = postfix",
    "default_privs = daemon\nmail_owner = daemon",
    "mail_owner = nosuch\nmynetworks_style = hostx",
    "default_privs = nosuch\nmail_name =",
    # mail_release_date: between mail_version and default_database_type.
    "mail_release_date =",
    "mail_release_date =\nmail_version =",
    "mail_release_date =\ndefault_database_type =",
    # The VERP delimiters, each one of verp_delimiter_filter's, checked last of all.
    "default_verp_delimiters = +x",
    "verp_delimiter_filter = x",
    "verp_delimiter_filter = x\nmyorigin = a,b",
    "default_verp_delimiters = +",
    # A name is what comes before white space or '=': a transport name's '-' is in it.
    "scalemail-backend_destination_rate_delay = 1s",
    "a.b:c-d = x",
    "a b = c",
    # A $( or ${ never closed: mac_parse's warning quotes the whole value.
    "max_idle = ${x",
    "trigger_timeout = a $(x b",
    "meta_directory = ${x?{y}",
]


def _instance(d: Path, setting: str) -> Path:
    d.mkdir()
    (d / "queue").mkdir()
    base = (
        f"queue_directory = {d}/queue\ndata_directory = {d}/data\n"
        "inet_interfaces = 127.0.0.1\ncompatibility_level = 3.6\n"
    )
    (d / "main.cf").write_text(main_cf_with(base, f"{setting}\n"))
    # Postfix reads a main.cf changed within the last second twice.
    past = time.time() - 3600
    os.utime(d / "main.cf", (past, past))
    (d / "master.cf").write_text("")
    return d


@pytest.mark.postfix
@pytest.mark.parametrize("setting", SETTINGS)
def test_postfix_command_checks_values_as_postfix(setting):
    """On a terminal, postfix(1)'s warning and fatal line, and its exit status (status:
    the system is not running either way), beside real Postfix's."""
    if os.geteuid() != 0:
        pytest.fail("running real Postfix's postfix(1) needs root (CI runs as root)")
    with shared_dir("oxipost-startup-") as d:
        ours = run_ours("postfix", "-c", str(_instance(d / "o", setting)), "status", terminal=True)
        real = run_postfix(POSTFIX, "-c", str(_instance(d / "r", setting)), "status", terminal=True)
    shown = [ours.stderr.replace(f"{d}/o", "DIR"), real.stderr.replace(f"{d}/r", "DIR")]
    assert (ours.returncode, shown[0]) == (real.returncode, shown[1])
    assert "Traceback" not in ours.stderr


def test_accounts_are_checked_only_by_a_process_run_as_root():
    """An oxipost run by a user switches to no account: mail_owner, setgid_group and
    default_privs that do not exist stop only a process that runs as root, as Postfix's
    always does."""
    if os.geteuid() != 0:
        pytest.fail("switching to nobody needs root (CI runs as root)")
    setting = "mail_owner = nosuch\nsetgid_group = nosuchg\ndefault_privs = nosuch"
    code = (
        "import sys\nfrom oxipost.config import ConfigError, load_config, params\n"
        "try:\n    params.check_startup(load_config(sys.argv[1]), print)\n"
        "except ConfigError as e:\n    print(e)\n"
    )
    with shared_dir("oxipost-accounts-") as d:
        confdir = str(_instance(d / "c", setting))
        as_user = subprocess.run(
            [sys.executable, "-c", code, confdir], capture_output=True, text=True, user="nobody"
        )
        as_root = subprocess.run(
            [sys.executable, "-c", code, confdir], capture_output=True, text=True
        )
    assert (as_user.returncode, as_user.stdout, as_user.stderr) == (0, "", "")
    assert as_root.stdout == (
        f"file {confdir}/main.cf: parameter default_privs: unknown user name value: nosuch\n"
    )
