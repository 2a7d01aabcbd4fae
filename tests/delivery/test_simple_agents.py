"""error(8), retry, discard(8), pipe(8) and the transport dispatch."""

from __future__ import annotations

import gc
import os
import pwd
import re
import time
import weakref

import pytest
from oxipost import runloop
from oxipost.delivery import AgentFatal, deliver
from oxipost.delivery.pipe import parse_args
from oxipost.envelope import Outcome

from tests.conftest import shared_dir

from .conftest import make_config, read_env, request, run

# The commands run as nobody (user= is required), who can reach neither pytest's 0700
# tree nor this virtualenv's Python under /root.
PYTHON = "/usr/bin/python3"


def test_error_bounces_with_nexthop_reason(tmp_path):
    cfg = make_config(tmp_path)
    out = run(request(cfg, "error", "no mail accepted for kdent", ["k@x", "j@x"]))
    assert out == [Outcome("5.0.0", "no mail accepted for kdent")] * 2
    assert out[0].permanent
    (o,) = run(request(cfg, "error", "5.1.1 user unknown", ["k@x"]))
    assert o == Outcome("5.1.1", "user unknown")


def test_retry_defers(tmp_path):
    cfg = make_config(tmp_path)
    (o,) = run(request(cfg, "retry", "try again later", ["k@x"]))
    assert o == Outcome("4.0.0", "try again later") and not o.permanent


def test_discard_is_sent(tmp_path):
    cfg = make_config(tmp_path)
    (o,) = run(request(cfg, "discard", "silently", ["k@x"]))
    assert o == Outcome("2.0.0", "silently") and o.delivered


def test_unknown_transport_defers(tmp_path):
    cfg = make_config(tmp_path)
    (o,) = run(request(cfg, "nosuch", "x", ["k@x"]))
    assert o == Outcome("4.3.0", "mail transport unavailable")


def test_a_configuration_delivered_with_is_freed(tmp_path):
    # A reload's new Config replaces the old one; what a delivery worked out from the old
    # one (the transport's -o view) must not keep it alive.
    cfg = make_config(tmp_path)
    (o,) = run(request(cfg, "discard", "silently", ["k@x"]))
    assert o.delivered
    gone = weakref.ref(cfg)
    del cfg
    gc.collect()
    assert gone() is None


def test_invalid_o_option_is_fatal_to_an_agent_run_in_process(tmp_path):
    # Postfix's error(8) would die at start of "-o { a b }" (split_nameval); qmgr running
    # the agent itself gets the same fatal text to log under the agent's name.
    cfg = make_config(tmp_path, master_extra="bad unix - - n - - error -o a=b -o { a b }\n")
    fatal = "invalid \"-o a b\" option value: missing '=' after attribute name"
    with pytest.raises(AgentFatal, match=f"^{re.escape(fatal)}$"):
        run(request(cfg, "bad", "x", ["k@x"]))


def _pipe_cfg(tmp_path, args: str, main: str = ""):
    return make_config(
        tmp_path / "conf", main=main, master_extra=f"p unix - n n - - pipe\n  {args}\n"
    )


SCRIPT = """\
import sys, os
data = sys.stdin.buffer.read()
open(sys.argv[1], "wb").write(repr(sys.argv[2:]).encode() + b"\\n" + data)
sys.exit(int(os.environ.get("RC", sys.argv[-1] if sys.argv[-1].isdigit() else 0)))
"""


@pytest.fixture
def shared():
    """A directory the command's user can write in."""
    with shared_dir("oxipost-pipe-", 0o1777) as d:
        yield d


@pytest.fixture
def script(shared):
    p = shared / "s.py"
    p.write_text(SCRIPT)
    p.chmod(0o644)
    return p


def test_pipe_macros_flags_and_input(tmp_path, shared, script):
    out_file = shared / "out"
    cfg = _pipe_cfg(
        tmp_path,
        f"flags=DRhuq user=nobody argv={PYTHON} {script} {out_file} ${{sender}} ${{nexthop}} "
        "${user} ${extension} ${domain} ${recipient}",
        main="recipient_delimiter = +\n",
    )
    (o,) = run(request(cfg, "p", "Next.Example", ["Joe+Box@Example.COM"], sender="a b@x"))
    assert o == Outcome("2.0.0", "delivered via p service")
    argv_line, rest = out_file.read_bytes().split(b"\n", 1)
    assert eval(argv_line) == [
        '"a b"@x',
        "next.example",
        "joe",
        "Box",
        "example.com",
        "Joe+Box@Example.COM",
    ]
    assert rest.startswith(b"Return-Path: <a b@x>\nDelivered-To: Joe+Box@Example.COM\nFrom: ")
    assert b"\r\n" not in rest


@pytest.mark.parametrize(
    ("rc", "expect"),
    [
        (0, Outcome("2.0.0", "delivered via p service")),
        (75, Outcome("4.3.0", "temporary failure")),
        (67, Outcome("5.1.1", "user unknown")),
        (78, Outcome("5.3.5", "local configuration error")),
    ],
)
def test_pipe_sysexits(tmp_path, shared, script, rc, expect):
    cfg = _pipe_cfg(tmp_path, f"user=nobody argv={PYTHON} {script} {shared / 'o'} {rc}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == expect


def test_pipe_unknown_status_and_output(tmp_path, shared):
    sh = shared / "fail.sh"
    sh.write_text("#!/bin/sh\necho oops; echo second line\nexit 3\n")
    os.chmod(sh, 0o755)
    cfg = _pipe_cfg(tmp_path, f"user=nobody argv={sh}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome(
        "5.3.0", f'Command died with status 3: "{sh}". Command output: oops second line '
    )


def test_pipe_per_recipient_argv_repeats(tmp_path, shared, script):
    out_file = shared / "out"
    cfg = _pipe_cfg(tmp_path, f"user=nobody argv={PYTHON} {script} {out_file} -d ${{recipient}}")
    out = run(request(cfg, "p", "x", ["a@x", "b@x"]))
    assert [o.status for o in out] == ["2.0.0", "2.0.0"]
    assert eval(out_file.read_bytes().split(b"\n", 1)[0]) == ["-d", "a@x", "b@x"]


def test_pipe_grouped_argument_is_one_argv_word(tmp_path, shared):
    # master.cf's "{ }" (Postfix 3.0): the shell gets "echo ... > file" as its one -c word,
    # and ${recipient} inside the group is expanded in place.
    out_file = shared / "out"
    cfg = _pipe_cfg(
        tmp_path, f"user=nobody argv=/bin/sh -c {{ echo grouped  ${{recipient}} > {out_file} }}"
    )
    assert parse_args(cfg.service("p").args, "postfix").argv == [
        "/bin/sh",
        "-c",
        f"echo grouped  ${{recipient}} > {out_file}",
    ]
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome("2.0.0", "delivered via p service")
    assert out_file.read_text() == "grouped u@x\n"


def test_pipe_reads_its_attributes_after_the_daemon_options(tmp_path, shared):
    # "-o name=value" (and -v) lead the arguments as for any daemon; pipe's attributes
    # are what follows them, as Postfix's daemons consume their options with getopt.
    out_file = shared / "out"
    cfg = _pipe_cfg(
        tmp_path,
        f"-v -o syslog_name=postfix/piped user=nobody argv=/bin/sh -c {{ echo ok > {out_file} }}",
    )
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome("2.0.0", "delivered via p service")
    assert out_file.read_text() == "ok\n"
    assert cfg.service("p").overrides == {"syslog_name": "postfix/piped"}


@pytest.mark.parametrize(
    ("attrs", "fatal"),
    [
        # Postfix's pipe(8) texts (get_service_attr), each a msg_fatal there.
        ("user=root", "user= command-line attribute specifies root privileges"),
        ("", "missing user= command-line attribute"),
        ("user=postfix", "user= command-line attribute specifies mail system owner postfix"),
        ("user=nobody:root", "user= command-line attribute specifies privileged group id 0"),
        ("user=no-such-user", "get_service_attr: unknown username: no-such-user"),
        ("user=nobody:no-such-group", "get_service_attr: unknown group: no-such-group"),
        ("user=nobody flags=Z", "unknown flag: Z (ignored)"),
        ("user=nobody colour=red", "unknown attribute name: colour=red"),
    ],
)
def test_pipe_attributes_postfix_dies_of(tmp_path, shared, script, attrs, fatal):
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        if "postfix" in attrs:
            pytest.skip("no postfix user (mail_owner) here")
    cfg = _pipe_cfg(tmp_path, f"{attrs} argv={PYTHON} {script} {shared / 'o'}")
    with pytest.raises(AgentFatal, match=f"^{re.escape(fatal)}$"):
        run(request(cfg, "p", "x", ["u@x"]))
    assert not (shared / "o").exists()


def test_pipe_missing_argv(tmp_path):
    cfg = _pipe_cfg(tmp_path, "user=nobody")
    with pytest.raises(AgentFatal, match=r"^missing argv= command-line attribute$"):
        run(request(cfg, "p", "x", ["u@x"]))


def test_pipe_delivered_to_needs_one_recipient(tmp_path, shared, script):
    # Postfix: "4.3.5 mail system configuration error" and a warning naming the limit.
    cfg = _pipe_cfg(tmp_path, f"flags=D user=nobody argv={PYTHON} {script} {shared / 'o'}")
    out = run(request(cfg, "p", "x", ["a@x", "b@x"]))
    assert out == [Outcome("4.3.5", "mail system configuration error")] * 2
    assert not (shared / "o").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="user= switches ids only when running as root")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipe_runs_as_user(tmp_path, shared, loop):
    # catalogue 50: the command runs with the user= privileges, never root's; its only
    # group is the user's (or user=name:group's), as Postfix's set_ugid leaves it. On
    # uvloop too (our services' loop), whose subprocesses know no user= or group=.
    out = shared / "ids"

    def deliver_as(user: str) -> str:
        # master.cf has no quoting: argv is ["/bin/sh", "-c", "id>..."].
        cfg = _pipe_cfg(tmp_path, f"user={user} argv=/bin/sh -c id>{out}")
        req = request(cfg, "p", "x", ["u@x"])
        (o,) = run(req) if loop == "asyncio" else runloop.run(deliver(req))
        assert o.status == "2.0.0", o
        ids = out.read_text().strip()
        out.unlink()
        return ids

    assert deliver_as("nobody") == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    assert deliver_as("nobody:mail") == "uid=65534(nobody) gid=8(mail) groups=8(mail)"


def test_pipe_eol_null_sender_and_quoting_flags(tmp_path, shared, script):
    out_file = shared / "out"
    cfg = _pipe_cfg(
        tmp_path,
        f"flags=F> eol=\\r\\n null_sender=nobody-here user=nobody argv={PYTHON} {script} "
        f"{out_file} ${{sender}}",
    )
    content = b"Subject: q\r\n\r\nFrom the start\r\n"
    (o,) = run(request(cfg, "p", "x", ["u@x"], sender="", content=content))
    assert o.delivered, o
    argv_line, rest = out_file.read_bytes().split(b"\n", 1)
    assert eval(argv_line) == ["nobody-here"]
    assert rest.startswith(b"From nobody-here  ")
    assert rest.endswith(b"\r\nSubject: q\r\n\r\n>From the start\r\n")


def test_pipe_null_sender_is_mailer_daemon_by_default(tmp_path, shared, script):
    out_file = shared / "out"
    cfg = _pipe_cfg(tmp_path, f"flags=R user=nobody argv={PYTHON} {script} {out_file} ${{sender}}")
    (o,) = run(request(cfg, "p", "x", ["u@x"], sender=""))
    assert o.delivered, o
    argv_line, rest = out_file.read_bytes().split(b"\n", 1)
    assert eval(argv_line) == ["MAILER-DAEMON"]
    assert rest.startswith(b"Return-Path: <MAILER-DAEMON>\n")


def test_pipe_size_limit(tmp_path, shared, script):
    cfg = _pipe_cfg(tmp_path, f"size=10 user=nobody argv={PYTHON} {script} {shared / 'o'}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome("5.2.3", "message too large")
    assert not (shared / "o").exists()


def test_pipe_time_limit_kills_and_bounces(tmp_path):
    # pipe_command.c: the time limit is PIPE_STAT_BOUNCE with 5.3.0, the output quoted.
    argv = "argv=/bin/sh -c { echo still working; exec sleep 30 }"
    cfg = _pipe_cfg(tmp_path, f"user=nobody {argv}", main="p_time_limit = 1s\n")
    started = time.monotonic()
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome(
        "5.3.0", 'Command time limit exceeded: "/bin/sh". Command output: still working '
    )
    assert time.monotonic() - started < 10


def test_pipe_command_environment_is_export_environment_alone(tmp_path, shared, monkeypatch):
    # pipe(8) sets no variable of its own: export_environment ({name=value} sets one),
    # PATH reset, the queue directory as working directory; nothing else of the agent's.
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("OXIPOST_UNLISTED", "leak")
    monkeypatch.delenv("LANG", raising=False)
    out = shared / "env"
    cfg = _pipe_cfg(
        tmp_path,
        f"user=nobody argv=/bin/sh -c env>{out}",
        main=f"queue_directory = {shared}\n"
        "export_environment = TZ LANG MAIL_CONFIG {GREETING=hello world}\n",
    )
    (o,) = run(request(cfg, "p", "x", ["u@x"], client_addr="192.0.2.7"))
    assert o.delivered, o
    expected = {"PATH": "/usr/bin:/bin", "TZ": "Europe/Paris", "GREETING": "hello world"}
    if "MAIL_CONFIG" in os.environ:
        expected["MAIL_CONFIG"] = os.environ["MAIL_CONFIG"]
    # PWD: the shell exports its working directory.
    assert read_env(out) == {**expected, "PWD": str(shared)}


def test_pipe_directory_it_cannot_enter_defers(tmp_path, shared, caplog):
    out = shared / "pwd"
    inside = shared / "inside"
    inside.mkdir()
    cfg = _pipe_cfg(tmp_path, f"user=nobody directory={inside} argv=/bin/sh -c pwd>{out}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o.delivered, o
    assert out.read_text() == f"{inside}\n"
    cfg = _pipe_cfg(tmp_path, f"user=nobody directory={shared}/gone argv=/bin/true")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome("4.3.0", "temporary failure")
    assert (
        f'cannot change directory to "{shared}/gone" for uid=65534 gid=65534: '
        "No such file or directory"
    ) in caplog.text
    if os.geteuid() == 0:
        # Root could enter it, user= cannot: as Postfix's child, which changes user first.
        private = shared / "private"
        private.mkdir(mode=0o700)
        cfg = _pipe_cfg(tmp_path, f"user=nobody directory={private} argv=/bin/true")
        (o,) = run(request(cfg, "p", "x", ["u@x"]))
        assert o == Outcome("4.3.0", "temporary failure")
        assert f'"{private}" for uid=65534 gid=65534: Permission denied' in caplog.text
