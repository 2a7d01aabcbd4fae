"""What each daemon refuses as it starts, beside mail_params_init (config/daemon_params.tsv),
against Debian's Postfix 3.7 daemons run stand-alone (-S, their messages on stderr with -V).

Each row of the table is set, in turn, to a value that is no number (or no boolean), or
empty for a string, and just below its minimum and above its maximum where it has them: the
first fatal line of the real daemon and our check_daemon's refusal must say the same; a
value within bounds (the default) is refused by neither. The process-level side (a service
of ours logging the fatal line as it starts) is in tests/master/test_master.py.
"""

from __future__ import annotations

import os
import re
import smtplib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from oxipost.config import ConfigError, load_config, params

from tests.conftest import main_cf_with, shared_dir
from tests.delivery.test_e2e_delivery import oxi  # noqa: F401 (a fixture)
from tests.master.test_master import wait_until
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

DAEMONS = "/usr/lib/postfix/sbin"
# virtual(8) refuses an empty virtual_mailbox_base among its strings, before its booleans;
# smtpd(8) would wait for proxymap (local_recipient_maps) before its keywords.
BASE = (
    "compatibility_level = 3.6\ninet_protocols = ipv4\nvirtual_mailbox_base = /tmp\n"
    "local_recipient_maps =\n"
)


def _rows() -> list[tuple[str, str, str, int, int]]:
    path = Path(params.__file__).with_name("daemon_params.tsv")
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            daemon, name, kind, least, most = line.split("\t")
            rows.append((daemon, name, kind, int(least), int(most)))
    return rows


def _cases() -> list[tuple[str, str, str]]:
    """(daemon, name, value): every row with a value of the wrong kind, and past each bound."""
    cases = []
    for daemon, name, kind, least, most in _rows():
        if kind in ("str", "raw"):
            # Any word is a string: only one too short is refused.
            cases.append((daemon, name, ""))
            continue
        cases.append((daemon, name, "x"))
        if least:
            cases.append((daemon, name, str(least - 1)))
        if most:
            cases.append((daemon, name, str(most + 1)))
    return cases


def _config(d: Path, setting: str) -> Path:
    d.mkdir()
    (d / "queue").mkdir()
    base = f"queue_directory = {d}/queue\ndata_directory = {d}/data\n" + BASE
    (d / "main.cf").write_text(main_cf_with(base, setting))
    # Postfix reads a main.cf changed within the last second twice.
    past = time.time() - 3600
    os.utime(d / "main.cf", (past, past))
    (d / "master.cf").write_text("")
    return d


def _real_fatal(daemon: str, confdir: Path) -> str | None:
    """The text of the first fatal line the real daemon writes as it starts, None if it
    starts (it then waits for its stand-alone client, and is stopped)."""
    argv = [daemon, "-S", "-V"]
    env = dict(os.environ, MAIL_CONFIG=str(confdir))
    try:
        proc = subprocess.run(
            argv,
            executable=f"{DAEMONS}/{daemon}",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=3,
        )
    except subprocess.TimeoutExpired:
        return None
    m = re.search(rf"^postfix/{re.escape(daemon)}: fatal: (.*)$", proc.stderr, re.MULTILINE)
    return m.group(1) if m else None


def _ours(daemon: str, confdir: Path) -> str | None:
    try:
        params.check_daemon(load_config(str(confdir)), daemon)
    except ConfigError as e:
        return str(e)
    return None


def test_each_daemon_refuses_a_bad_value_as_postfix():
    if os.geteuid() != 0:
        pytest.fail("running real Postfix's daemons needs root (CI runs as root)")
    cases = _cases()
    with shared_dir("oxipost-daemon-checks-") as d:
        dirs = [_config(d / str(i), f"{c[1]} = {c[2]}\n") for i, c in enumerate(cases)]
        # Each refusal costs the real daemon a second (it sleeps before it exits): in
        # parallel, they take seconds rather than minutes.
        with ThreadPoolExecutor(max_workers=24) as pool:
            real = list(pool.map(_real_fatal, [c[0] for c in cases], dirs))
        shown = [
            (case, theirs, _ours(case[0], confdir))
            for case, theirs, confdir in zip(cases, real, dirs, strict=True)
        ]
    assert [s for s in shown if s[1] != s[2]] == []
    # Each of them was a refusal, not two daemons starting alike.
    assert all(theirs is not None for _, theirs, _ in shown)


# A keyword in another case: one word (name_code) is taken, a list's (name_mask) refused;
# and a list with one good word and one bad, the bad one named.
CASE_RULES = [
    ("smtpd", "header_from_format", "Obsolete"),
    ("smtpd", "header_from_format", "standard x"),
    ("smtpd", "smtpd_forbid_bare_newline", "Normalize"),
    ("smtpd", "reject_tempfail_action", "DEFER"),
    ("smtpd", "reject_tempfail_action", "x"),
    ("smtpd", "notify_classes", "Bounce"),
    ("smtpd", "notify_classes", "bounce, x"),
    ("local", "allow_mail_to_files", "Alias"),
    ("local", "mailbox_delivery_lock", "fcntl, x"),
    ("virtual", "virtual_mailbox_lock", "Flock"),
]


def test_keywords_are_read_as_postfix_reads_them():
    if os.geteuid() != 0:
        pytest.fail("running real Postfix's daemons needs root (CI runs as root)")
    with shared_dir("oxipost-daemon-keywords-") as d:
        dirs = [_config(d / str(i), f"{c[1]} = {c[2]}\n") for i, c in enumerate(CASE_RULES)]
        with ThreadPoolExecutor(max_workers=len(dirs)) as pool:
            real = list(pool.map(_real_fatal, [c[0] for c in CASE_RULES], dirs))
        ours = [_ours(c[0], confdir) for c, confdir in zip(CASE_RULES, dirs, strict=True)]
    assert ours == real
    assert None in real and len(set(real)) > 2


@pytest.mark.parametrize("daemon", sorted({row[0] for row in _rows()}))
def test_defaults_pass_every_daemon_table(tmp_path, daemon):
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    (tmp_path / "master.cf").write_text("")
    assert _ours(daemon, tmp_path) is None


def test_a_daemon_override_is_checked_in_that_service_only(tmp_path):
    """-o values of one service (master.cf's) are what its daemon checks; another service of
    the same daemon, without them, starts."""
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    (tmp_path / "master.cf").write_text(
        "submission inet n - n - - smtpd -o smtpd_timeout=0\nsmtp inet n - n - - smtpd\n"
    )
    cfg = load_config(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        params.check_daemon(cfg.for_service("submission"), "smtpd")
    assert str(e.value) == "invalid smtpd_timeout: 0 (min 1)"
    params.check_daemon(cfg.for_service("smtp"), "smtpd")


def _daemon_lines(log: str) -> list[str]:
    """The fatal line and master's warnings about the process, without PIDs."""
    lines = re.findall(r"postfix/(?:smtpd|master)\[\d+\]: (?:fatal|warning): .*", log)
    return sorted({re.sub(r"\[\d+\]|pid \d+", "", ln) for ln in lines})


def test_smtpd_dies_of_header_from_format_under_master_as_postfix(oxi):  # noqa: F811
    """header_from_format = bogus, which postfix(1) lets start: Postfix's smtpd dies of it as
    the first client connects, its master throttles it; ours dies as it starts, in the same
    lines, and neither client gets a greeting."""
    setting = "header_from_format = bogus\n"
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(setting + logging) as (port, d):
        with pytest.raises(OSError):
            smtplib.SMTP("127.0.0.1", port, timeout=5)
        assert wait_until(lambda: "throttling" in (d / "maillog").read_text())
        theirs = _daemon_lines((d / "maillog").read_text())
    oxi.start(setting)
    assert wait_until(lambda: "throttling" in oxi.log())
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", oxi.port, timeout=5)
    assert _daemon_lines(oxi.log()) == theirs
    assert 'postfix/smtpd: fatal: invalid setting: "header_from_format = bogus"' in theirs
