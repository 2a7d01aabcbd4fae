"""local(8): mailboxes, loops, unknown users, and the alias item rules (catalogue 47, 48)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest
from oxipost import runloop
from oxipost.delivery import deliver, local
from oxipost.envelope import Outcome, Recipient

from .conftest import MESSAGE, make_config, read_env, request, run

ROOT = os.geteuid() == 0


@pytest.fixture
def spool():
    # Written as "nobody" when root: pytest's 0700 tmp_path is out of its reach.
    d = Path(tempfile.mkdtemp(prefix="oxipost-spool-"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _user() -> str:
    return "nobody" if ROOT else os.environ.get("USER", "root")


def test_maildir_per_user_in_spool(tmp_path, spool):
    cfg = make_config(tmp_path / "c", main=f"alias_maps =\nmail_spool_directory = {spool}/\n")
    user = _user()
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome("2.0.0", "delivered to maildir"), o
    (name,) = os.listdir(spool / user / "new")
    data = (spool / user / "new" / name).read_bytes()
    assert data.startswith(
        f"Return-Path: <a@example.org>\nDelivered-To: {user}@localhost\nFrom: ".encode()
    )
    if ROOT:
        assert (spool / user / "new" / name).stat().st_uid == 65534


def test_mbox_in_spool(tmp_path, spool):
    cfg = make_config(tmp_path / "c", main=f"alias_maps =\nmail_spool_directory = {spool}\n")
    user = _user()
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome("2.0.0", "delivered to mailbox"), o
    text = (spool / user).read_text()
    assert text.startswith("From a@example.org  ")
    assert f"Delivered-To: {user}@localhost\n" in text


def test_delivered_to_loop(tmp_path, spool):
    # catalogue 47
    cfg = make_config(tmp_path / "c", main=f"alias_maps =\nmail_spool_directory = {spool}/\n")
    content = b"Delivered-To: Joe@Localhost\r\n" + MESSAGE
    (o,) = run(request(cfg, "local", "localhost", ["joe@localhost"], content=content))
    assert o == Outcome("5.4.6", "mail forwarding loop for joe@localhost")


@pytest.mark.skipif(not ROOT, reason="unknown users get a spool mailbox when not root")
def test_unknown_user_bounces(tmp_path, spool):
    cfg = make_config(tmp_path / "c", main=f"alias_maps =\nmail_spool_directory = {spool}/\n")
    (o,) = run(request(cfg, "local", "localhost", ["no-such-user-x@localhost"]))
    assert o == Outcome("5.1.1", 'unknown user: "no-such-user-x"')


def test_listed_user_without_account_gets_a_spool_mailbox(tmp_path, spool):
    # The embedded default's conf/local_users: named by a local_recipient_maps table, no
    # passwd entry. As root it is written as default_privs, never root; an address no
    # table names still bounces.
    users = tmp_path / "local_users"
    users.write_text("pseudo-user-x x\n")
    cfg = make_config(
        tmp_path / "c",
        main=f"alias_maps =\nmail_spool_directory = {spool}\n"
        f"local_recipient_maps = texthash:{users}\n",
    )
    (o,) = run(request(cfg, "local", "localhost", ["pseudo-user-x@localhost"]))
    assert o == Outcome("2.0.0", "delivered to mailbox"), o
    owner = (spool / "pseudo-user-x").stat().st_uid
    assert owner == (pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.getuid())
    (o,) = run(request(cfg, "local", "localhost", ["not-listed-x@localhost"]))
    expected = "5.1.1" if os.geteuid() == 0 else "2.0.0"
    assert o.status == expected, o


def _ctx(cfg, source: str) -> local.Ctx:
    req = request(cfg, "local", "localhost", ["list@localhost"])
    return local.Ctx(req, Recipient("list@localhost"), "a@example.org", source, None)


def _expand(ctx: local.Ctx, items: list[str]) -> Outcome:
    return asyncio.run(local._expand(ctx, items, "list"))


def test_include_cannot_run_commands_or_write_files(tmp_path):
    # catalogue 48: allow_mail_to_commands/files default to "alias, forward".
    cfg = make_config(tmp_path / "c")
    inc = tmp_path / "list.inc"
    inc.write_text("|/bin/true\n")
    assert _expand(_ctx(cfg, "alias"), [f":include:{inc}"]) == Outcome(
        "5.7.1", "mail to command is restricted"
    )
    inc.write_text(f"{tmp_path}/out\n")
    assert _expand(_ctx(cfg, "alias"), [f":include:{inc}"]) == Outcome(
        "5.7.1", "mail to file is restricted"
    )
    assert not (tmp_path / "out").exists()


def test_alias_file_and_command(tmp_path, spool):
    cfg = make_config(tmp_path / "c")
    target = spool / "archive"
    o = _expand(_ctx(cfg, "alias"), [str(target)])
    assert o == Outcome("2.0.0", f"delivered to file: {target}")
    assert "Delivered-To: list@localhost" in target.read_text()
    out = spool / "cmd-out"
    o = _expand(_ctx(cfg, "alias"), [f"|cat > {out}"])
    assert o.status == "2.0.0", o
    assert out.read_bytes().startswith(b"Return-Path: <a@example.org>\n")
    assert _expand(_ctx(cfg, "alias"), ["|exit 75"]) == Outcome("4.3.0", "temporary failure")
    assert _expand(_ctx(cfg, "alias"), ["|exit 67"]) == Outcome("5.1.1", "user unknown")


@pytest.mark.skipif(not ROOT, reason="commands run as another user only when root")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_alias_command_runs_as_default_privs(tmp_path, spool, loop):
    # catalogue 50: an alias |command runs as default_privs, with its group as the only
    # one (Postfix's set_ugid) — on uvloop too, the loop local(8) runs on under master,
    # whose subprocesses take no user= or group=.
    (tmp_path / "aliases").write_text(f"runs-id |id > {spool}/ids\n")
    cfg = make_config(
        tmp_path / "c", main=f"alias_maps = texthash:{tmp_path}/aliases\nalias_database =\n"
    )
    req = request(cfg, "local", "localhost", ["runs-id@localhost"])
    (o,) = run(req) if loop == "asyncio" else runloop.run(deliver(req))
    assert o == Outcome("2.0.0", f"delivered to command: id > {spool}/ids"), o
    ids = (spool / "ids").read_text().strip()
    assert ids == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"


def test_executable_file_refused(tmp_path, spool):
    # catalogue 48
    cfg = make_config(tmp_path / "c")
    exe = spool / "prog"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert _expand(_ctx(cfg, "alias"), [str(exe)]) == Outcome("5.7.1", "file is executable")
    assert exe.read_text() == "#!/bin/sh\n"


def test_include_recursion_is_bounded(tmp_path):
    # catalogue 48: an :include: file that includes itself must stop.
    cfg = make_config(tmp_path / "c")
    inc = tmp_path / "self.inc"
    inc.write_text(f":include:{inc}\n")
    assert _expand(_ctx(cfg, "alias"), [f":include:{inc}"]) == Outcome(
        "5.4.6", "mail forwarding loop for list@localhost"
    )


def test_restrictions_follow_configuration(tmp_path, spool):
    cfg = make_config(tmp_path / "c", main="allow_mail_to_commands = alias, forward, include\n")
    inc = tmp_path / "list.inc"
    out = spool / "inc-out"
    inc.write_text(f"|cat > {out}\n")
    assert _expand(_ctx(cfg, "alias"), [f":include:{inc}"]).status == "2.0.0"
    assert out.exists()
    cfg = make_config(tmp_path / "d", main="allow_mail_to_commands = forward\n")
    assert _expand(_ctx(cfg, "alias"), ["|/bin/true"]) == Outcome(
        "5.7.1", "mail to command is restricted"
    )


def test_mailbox_size_limit(tmp_path, spool):
    cfg = make_config(
        tmp_path / "c",
        main=f"alias_maps =\nmail_spool_directory = {spool}\nmailbox_size_limit = 150\n",
    )
    user = _user()
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o.delivered, o
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome(
        "5.2.2",
        f"cannot update mailbox {spool}/{user} for user {user}. "
        "error writing message: File too large",
    )


def test_forward_path_expands_home_and_extension_per_recipient(tmp_path):
    # forward_path's $home and ${extension} are local(8)'s, not main.cf parameters: the
    # default finds ~/.forward (and ~/.forward+ext for user+ext), never "/.forward".
    from oxipost.delivery.local import _forward_files

    joe = {"user": "joe", "local": "joe", "recipient": "joe@x", "home": "/home/joe"}
    joe_ext = {**joe, "local": "joe+lists", "extension": "lists", "recipient_delimiter": "+"}
    cfg = make_config(tmp_path / "c", main="recipient_delimiter = +\n")
    assert _forward_files(cfg, joe) == ["/home/joe/.forward"]
    assert _forward_files(cfg, joe_ext) == ["/home/joe/.forward+lists", "/home/joe/.forward"]


def test_forward_path_is_local_expanded(tmp_path):
    # dotforward.c: each path through local_expand() with forward_expansion_filter; a
    # path using a name without a value (here $nosuch, which is no local(8) attribute
    # even when main.cf defines it) is skipped, a name only tested by ${name?...} is not.
    from oxipost.delivery.local import _forward_files

    joe = {"user": "joe", "local": "jo;e", "recipient": "jo;e@x", "home": "/home/joe"}
    cfg = make_config(
        tmp_path / "c",
        main="nosuch = /etc\nforward_path = $nosuch/f, "
        "$home/.fwd${extension?-x}, /var/fwd/$local, $home/${broken\n",
    )
    assert _forward_files(cfg, joe) == ["/home/joe/.fwd", "/var/fwd/jo_e"]


def _quiet_environment(monkeypatch) -> None:
    """The agent's own environment: what export_environment may pass on, and one variable
    it must not."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("OXIPOST_UNLISTED", "leak")
    monkeypatch.delenv("MAIL_CONFIG", raising=False)


def _alias_cfg(tmp_path, spool, command: str, main: str = ""):
    (tmp_path / "aliases").write_text(f"envdump |{command}\n")
    return make_config(
        tmp_path / "c",
        main=f"alias_maps = texthash:{tmp_path}/aliases\nalias_database =\n"
        f"recipient_delimiter = +\nqueue_directory = {spool}\n" + main,
    )


def test_alias_command_environment_as_postfix_local(tmp_path, spool, monkeypatch):
    # local(8) EXTERNAL COMMAND DELIVERY: export_environment, PATH, the recipient's and
    # the client's attributes, each censored with command_expansion_filter ("'" ";" " "
    # and each byte of "ö" become "_"); no HOME or SHELL for a root-owned alias database
    # (no user: Postfix's RESET_USER_ATTR); the queue directory as working directory.
    _quiet_environment(monkeypatch)
    cfg = _alias_cfg(tmp_path, spool, f"env > {spool}/env")
    req = request(
        cfg,
        "local",
        "localhost",
        ["EnvDump+Lists@LocalHost"],
        sender="o'neil@example.org",
        client_addr="192.0.2.7",
        client_name="client.example.net",
        helo_name="helo;rm -rf",
        protocol="ESMTP",
        sasl_method="PLAIN",
        sasl_username="jöe",
        sasl_sender="<x;y@example.org>",
    )
    req.recipients[0] = Recipient("EnvDump+Lists@LocalHost", original="Orig@Example.ORG")
    (o,) = run(req)
    assert o == Outcome("2.0.0", f"delivered to command: env > {spool}/env"), o
    assert read_env(spool / "env") == {
        "PATH": "/usr/bin:/bin",
        "TZ": "Europe/Paris",
        "LANG": "C.UTF-8",
        "PWD": str(spool),  # exported by the shell, from its working directory
        "LOGNAME": "envdump",
        "USER": "envdump",
        "LOCAL": "envdump+lists",
        "DOMAIN": "localhost",
        "EXTENSION": "lists",
        "RECIPIENT": "EnvDump+Lists@LocalHost",
        "ORIGINAL_RECIPIENT": "Orig@Example.ORG",
        "SENDER": "o_neil@example.org",
        "CLIENT_ADDRESS": "192.0.2.7",
        "CLIENT_HOSTNAME": "client.example.net",
        "CLIENT_HELO": "helo_rm_-rf",
        "CLIENT_PROTOCOL": "ESMTP",
        "SASL_METHOD": "PLAIN",
        "SASL_USERNAME": "j__e",
        "SASL_SENDER": "_x_y@example.org_",
    }


def test_mailbox_command_has_the_recipient_account_and_shell_syntax(tmp_path, spool):
    # HOME and SHELL of the recipient's passwd entry; mailbox_command is not main.cf-
    # expanded (postconf(5)), so "$USER+$EXTENSION" reaches the shell.
    user = _user()
    pw = pwd.getpwnam(user)
    cfg = make_config(
        tmp_path / "c",
        main="alias_maps =\nrecipient_delimiter = +\n"
        f'mailbox_command = env > {spool}/env; echo "$USER+$EXTENSION" > {spool}/ext\n',
    )
    (o,) = run(request(cfg, "local", "localhost", [f"{user}+box@localhost"]))
    assert o.status == "2.0.0", o
    env = read_env(spool / "env")
    assert (env["HOME"], env["SHELL"], env["LOGNAME"]) == (pw.pw_dir, pw.pw_shell, user)
    assert (spool / "ext").read_text() == f"{user}+box\n"


def test_command_execution_directory(tmp_path, spool, caplog):
    # $name expansion per delivery, each value censored with
    # execution_directory_expansion_filter ("'" → "_"); a directory the command's user
    # cannot change to defers, with the line Postfix's child logs.
    (spool / "envdump").mkdir()
    (spool / "a_b").mkdir()
    cfg = _alias_cfg(
        tmp_path,
        spool,
        f"pwd > {spool}/pwd",
        main=f"command_execution_directory = {spool}/${{extension?{{$extension}}:{{$user}}}}\n",
    )
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "pwd").read_text() == f"{spool}/envdump\n"
    (o,) = run(request(cfg, "local", "localhost", ["envdump+a'b@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "pwd").read_text() == f"{spool}/a_b\n"
    (o,) = run(request(cfg, "local", "localhost", ["envdump+none@localhost"]))
    assert o == Outcome("4.3.0", "temporary failure")
    uid, gid = (65534, 65534) if ROOT else (os.getuid(), os.getgid())
    assert (
        f'cannot change directory to "{spool}/none" for uid={uid} gid={gid}: '
        "No such file or directory"
    ) in caplog.text
    bad = _alias_cfg(tmp_path, spool, "true", main="command_execution_directory = ${user\n")
    (o,) = run(request(bad, "local", "localhost", ["envdump@localhost"]))
    assert o == Outcome("4.3.5", "mail system configuration error")
    assert "bad parameter value syntax for command_execution_directory: ${user" in caplog.text


@pytest.mark.skipif(not ROOT, reason="only root runs the command as another user")
def test_execution_directory_checked_as_the_command_user(tmp_path, spool):
    # Root could enter it; nobody, who runs the command, cannot: deferred as in Postfix,
    # whose child changes directory after it became the user.
    private = spool / "private"
    private.mkdir(mode=0o700)
    cfg = _alias_cfg(tmp_path, spool, "true", main=f"command_execution_directory = {private}\n")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o == Outcome("4.3.0", "temporary failure")


def test_command_without_shell_magic_runs_directly(tmp_path, spool):
    # Postfix's exec_command: no shell for a command without shell magic, so a program
    # that does not exist is Postfix's "execvp" failure (deferred), not the shell's 127.
    cfg = _alias_cfg(tmp_path, spool, "/nonexistent/program -x")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o == Outcome(
        "4.3.0",
        "temporary failure. Command output: local: fatal: execvp /nonexistent/program: "
        "No such file or directory",
    )
    # A shell built-in is found by the shell.
    (tmp_path / "b").mkdir()
    cfg = _alias_cfg(tmp_path / "b", spool, "exit 67")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o == Outcome("5.1.1", "user unknown")


def test_command_time_limit_bounces(tmp_path, spool):
    # local(8) runs its command through pipe_command.c as pipe(8) does: over
    # command_time_limit the command is killed and the recipient bounced (5.3.0).
    cfg = _alias_cfg(tmp_path, spool, "echo busy; sleep 30", main="command_time_limit = 1s\n")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o == Outcome(
        "5.3.0", 'Command time limit exceeded: "echo busy; sleep 30". Command output: busy'
    )


def test_local_command_shell_gets_the_command_as_one_argument(tmp_path, spool):
    shell = spool / "shell"
    shell.write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {spool}/args\n')
    shell.chmod(0o755)
    cfg = _alias_cfg(tmp_path, spool, "echo a  b > c", main=f"local_command_shell = {shell} -c\n")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "args").read_text() == "-c|echo a  b > c|"
