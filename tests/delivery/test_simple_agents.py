"""error(8), retry, discard(8), pipe(8) and the transport dispatch."""

from __future__ import annotations

import os
import sys

import pytest
from oxipost.envelope import Outcome

from .conftest import make_config, request, run


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


def _pipe_cfg(tmp_path, args: str):
    return make_config(tmp_path / "conf", master_extra=f"p unix - n n - - pipe\n  {args}\n")


SCRIPT = """\
import sys, os
data = sys.stdin.buffer.read()
open(sys.argv[1], "wb").write(repr(sys.argv[2:]).encode() + b"\\n" + data)
sys.exit(int(os.environ.get("RC", sys.argv[-1] if sys.argv[-1].isdigit() else 0)))
"""


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "s.py"
    p.write_text(SCRIPT)
    return p


def test_pipe_macros_flags_and_input(tmp_path, script):
    out_file = tmp_path / "out"
    _pipe_cfg(
        tmp_path,
        f"flags=DRhuq argv={sys.executable} {script} {out_file} ${{sender}} ${{nexthop}} "
        "${user} ${extension} ${domain} ${recipient}",
    )
    main = "recipient_delimiter = +\n"
    (tmp_path / "conf" / "main.cf").write_text(main)
    from oxipost.config import load_config

    cfg = load_config(str(tmp_path / "conf"))
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
def test_pipe_sysexits(tmp_path, script, rc, expect):
    cfg = _pipe_cfg(tmp_path, f"argv={sys.executable} {script} {tmp_path / 'o'} {rc}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == expect


def test_pipe_unknown_status_and_output(tmp_path):
    sh = tmp_path / "fail.sh"
    sh.write_text("#!/bin/sh\necho oops; echo second line\nexit 3\n")
    os.chmod(sh, 0o755)
    cfg = _pipe_cfg(tmp_path, f"argv={sh}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome(
        "5.3.0", f'Command died with status 3: "{sh}". Command output: oops second line'
    )


def test_pipe_per_recipient_argv_repeats(tmp_path, script):
    out_file = tmp_path / "out"
    cfg = _pipe_cfg(tmp_path, f"argv={sys.executable} {script} {out_file} -d ${{recipient}}")
    out = run(request(cfg, "p", "x", ["a@x", "b@x"]))
    assert [o.status for o in out] == ["2.0.0", "2.0.0"]
    assert eval(out_file.read_bytes().split(b"\n", 1)[0]) == ["-d", "a@x", "b@x"]


def test_pipe_root_user_refused(tmp_path, script):
    cfg = _pipe_cfg(tmp_path, f"user=root argv={sys.executable} {script}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o.status == "4.3.5"
    assert "specifies root privileges" in o.text


@pytest.mark.skipif(os.geteuid() != 0, reason="user= switches ids only when running as root")
def test_pipe_runs_as_user(tmp_path):
    # catalogue 50: the command runs with the user= privileges, never root's.
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="oxipost-pipe-")
    os.chmod(d, 0o777)
    try:
        out = os.path.join(d, "ids")
        cfg = _pipe_cfg(tmp_path, f"user=nobody argv=/bin/sh -c id>{out}")
        # master.cf has no quoting: argv is ["/bin/sh", "-c", "id>..."].
        (o,) = run(request(cfg, "p", "x", ["u@x"]))
        assert o.status == "2.0.0", o
        with open(out) as f:
            assert f.read().startswith("uid=65534(nobody) gid=65534(nogroup)")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_pipe_eol_null_sender_and_quoting_flags(tmp_path, script):
    out_file = tmp_path / "out"
    cfg = _pipe_cfg(
        tmp_path,
        f"flags=F> eol=\\r\\n null_sender=nobody-here argv={sys.executable} {script} "
        f"{out_file} ${{sender}}",
    )
    content = b"Subject: q\r\n\r\nFrom the start\r\n"
    (o,) = run(request(cfg, "p", "x", ["u@x"], sender="", content=content))
    assert o.delivered, o
    argv_line, rest = out_file.read_bytes().split(b"\n", 1)
    assert eval(argv_line) == ["nobody-here"]
    assert rest.startswith(b"From nobody-here  ")
    assert rest.endswith(b"\r\nSubject: q\r\n\r\n>From the start\r\n")


def test_pipe_size_limit(tmp_path, script):
    cfg = _pipe_cfg(tmp_path, f"size=10 argv={sys.executable} {script} {tmp_path / 'o'}")
    (o,) = run(request(cfg, "p", "x", ["u@x"]))
    assert o == Outcome("5.2.3", "message too large")
    assert not (tmp_path / "o").exists()
