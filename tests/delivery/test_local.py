"""local(8): mailboxes, loops, unknown users, and the alias item rules (catalogue 47, 48)."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re

import pytest
from oxipost import runloop
from oxipost.delivery import deliver, local
from oxipost.delivery.mailstore import delivered_to
from oxipost.envelope import Entry, Outcome, Recipient

from tests.conftest import main_cf_with, run_ours, shared_dir

from .conftest import MESSAGE, make_config, read_env, request, run

ROOT = os.geteuid() == 0


@pytest.fixture
def spool():
    # Written as "nobody" when root: pytest's 0700 tmp_path is out of its reach.
    with shared_dir("oxipost-spool-", 0o1777) as d:
        yield d


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


@pytest.mark.parametrize(
    ("content", "found"),
    [
        # Any case, white space around the value, LF or CR LF lines, the first line too.
        (b"DELIVERED-TO:  Joe@X \r\nSubject: s\r\n\r\nbody\r\n", {"joe@x"}),
        (b"Subject: s\ndelivered-to:a@x\nDelivered-To: b@x\n\nbody\n", {"a@x", "b@x"}),
        # Only the header counts, whichever blank line ends it first.
        (b"Subject: s\r\n\r\nDelivered-To: joe@x\r\n", set()),
        (b"Subject: s\n\nDelivered-To: joe@x\r\n\r\n", set()),
        # Not at a line start: a folded line, another header's text.
        (b"Subject: s\r\n Delivered-To: joe@x\r\nX-A: Delivered-To: b@x\r\n\r\n", set()),
        (b"Delivered-To: joe@x", {"joe@x"}),
    ],
)
def test_delivered_to_reads_the_header_lines_only(content, found):
    # catalogue 47: what the mail forwarding loop check compares the recipient with.
    assert delivered_to(content) == found


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
    """The items (internal form) as an alias lists them in quotes, expanded."""
    quoted = ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return asyncio.run(local._expand(ctx, local._split_items(quoted)))


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
    # command.c's copy: the From_ line, then local(8)'s headers.
    assert re.match(
        rb"From a@example.org  \w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\nReturn-Path: <a@example.org>\n",
        out.read_bytes(),
    )
    assert _expand(_ctx(cfg, "alias"), ["|exit 75"]) == Outcome("4.3.0", "temporary failure")
    assert _expand(_ctx(cfg, "alias"), ["|exit 67"]) == Outcome("5.1.1", "user unknown")


@pytest.mark.skipif(not ROOT, reason="commands run as another user only when root")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_alias_command_runs_as_default_privs(tmp_path, spool, loop):
    # catalogue 50: an alias |command runs as default_privs, with its group as the only
    # one (Postfix's set_ugid) — on uvloop too, the loop local(8) runs on under master,
    # whose subprocesses take no user= or group=.
    (tmp_path / "aliases").write_text(f'runs-id "|id > {spool}/ids"\n')
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
    # catalogue 48: an :include: file that includes itself must stop: read once with the
    # same rights (include.c's "include UID PATH" filter), nothing more to do or log, as
    # Postfix 3.7 (test_local_as_postfix.py's unquoted_words, t8).
    cfg = make_config(tmp_path / "c")
    inc = tmp_path / "self.inc"
    inc.write_text(f":include:{inc}\n")
    ctx = _ctx(cfg, "alias")
    assert _expand(ctx, [f":include:{inc}"]).status == "2.0.0"
    assert ctx.trace.entries == []


def test_restrictions_follow_configuration(tmp_path, spool):
    cfg = make_config(tmp_path / "c", main="allow_mail_to_commands = alias, forward, include\n")
    inc = tmp_path / "list.inc"
    out = spool / "inc-out"
    inc.write_text(f'"|cat > {out}"\n')
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
    # Quoted, as aliases(5) asks of a command with spaces (unquoted, its words after the
    # first would be addresses).
    (tmp_path / "aliases").write_text(f'envdump "|{command}"\n')
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
        "No such file or directory ",
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
        "5.3.0", 'Command time limit exceeded: "echo busy; sleep 30". Command output: busy '
    )


def test_local_command_shell_gets_the_command_as_one_argument(tmp_path, spool):
    shell = spool / "shell"
    shell.write_text(f'#!/bin/sh\nprintf "%s|" "$@" > {spool}/args\n')
    shell.chmod(0o755)
    cfg = _alias_cfg(tmp_path, spool, "echo a  b > c", main=f"local_command_shell = {shell} -c\n")
    (o,) = run(request(cfg, "local", "localhost", ["envdump@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "args").read_text() == "-c|echo a  b > c|"


def _owned_aliases(tmp_path, spool, text: str, owner: int | None, main: str = "", kind="texthash"):
    """An alias table in spool (where other users can reach what it names), its file
    (the .cdb for hash:) owned by uid owner, and a config using it."""
    src = spool / "aliases"
    src.write_text(text)
    cfg = make_config(
        tmp_path / "c",
        main=f"alias_maps = {kind}:{src}\nalias_database =\nqueue_directory = {spool}\n" + main,
    )
    table = src
    if kind == "hash":
        r = run_ours("postmap", "-c", str(tmp_path / "c"), f"hash:{src}")
        assert r.returncode == 0, r.stderr
        table = spool / "aliases.cdb"
    if owner is not None:
        os.chown(table, owner, owner)
    return cfg


def _ids(pw: pwd.struct_passwd) -> str:
    group = grp.getgrgid(pw.pw_gid).gr_name
    return f"uid={pw.pw_uid}({pw.pw_name}) gid={pw.pw_gid}({group}) groups={pw.pw_gid}({group})"


def _unused_uid() -> int:
    uid = 40000
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


@pytest.mark.parametrize("kind", ["texthash", "hash"])
def test_alias_commands_and_files_have_the_table_owners_rights(tmp_path, spool, system_user, kind):
    # alias.c: an alias table not owned by root gives its owner's rights to the alias's
    # |command and /file deliveries; the owner of the file as opened counts (for hash:
    # the .cdb, here the user's while its source is root's). The command gets the owner's
    # HOME and SHELL (SET_USER_ATTR); LOGNAME and USER stay the recipient's (command.c).
    pw = system_user
    cfg = _owned_aliases(
        tmp_path,
        spool,
        f'owned "|id > {spool}/ids; env > {spool}/env", {spool}/owned.mbox\n',
        pw.pw_uid,
        kind=kind,
    )
    (o,) = run(request(cfg, "local", "localhost", ["owned@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "ids").read_text().strip() == _ids(pw)
    env = read_env(spool / "env")
    assert (env["HOME"], env["SHELL"]) == (pw.pw_dir, "/usr/sbin/nologin")
    assert (env["LOGNAME"], env["USER"]) == ("owned", "owned")
    mbox = spool / "owned.mbox"
    assert (mbox.stat().st_uid, mbox.stat().st_gid) == (pw.pw_uid, pw.pw_gid)
    assert mbox.read_text().startswith("From a@example.org ")


@pytest.mark.skipif(not ROOT, reason="tables of other users need root")
def test_alias_table_owner_without_account_or_known(tmp_path, spool, system_user, caplog):
    # alias.c: an owner uid without a passwd entry defers; so does a table whose owner
    # cannot be known, here a unionmap: of two users' tables (DICT_OWNER_UNKNOWN, as
    # DICT_OWNER_AGGREGATE_UPDATE makes it). A root-owned member leaves the other's owner.
    uid = _unused_uid()
    cfg = _owned_aliases(tmp_path, spool, f'owned "|id > {spool}/ids"\n', uid)
    (o,) = run(request(cfg, "local", "localhost", ["owned@localhost"]))
    assert o == Outcome("4.3.0", "cannot find alias database owner")
    assert f"cannot find alias database owner for texthash:{spool}/aliases" in caplog.text
    assert not (spool / "ids").exists()
    # A table is its file as opened (a chown later is not seen): one file per owner.
    for name, owner in [("mine", system_user.pw_uid), ("other", 65534), ("root", 0)]:
        table = spool / name
        table.write_text(f'owned "|id > {spool}/ids"\n' if name == "mine" else "unrelated x\n")
        os.chown(table, owner, owner)
    for other, expected in [
        ("other", Outcome("4.3.0", "mail system configuration error")),
        ("root", Outcome("2.0.0", f"delivered to command: id > {spool}/ids")),
    ]:
        union = f"unionmap:{{texthash:{spool}/mine, texthash:{spool}/{other}}}"
        cfg = make_config(tmp_path / other, main=f"alias_maps = {union}\nalias_database =\n")
        (o,) = run(request(cfg, "local", "localhost", ["owned@localhost"]))
        assert o == expected
    union = f"unionmap:{{texthash:{spool}/mine, texthash:{spool}/other}}"
    assert f"deliver_alias: no owner UID for alias database {union}" in caplog.text
    assert (spool / "ids").read_text().strip() == _ids(system_user)


@pytest.mark.skipif(not ROOT, reason="files of other users need root")
def test_include_file_owner_rights(tmp_path, spool, system_user):
    # include.c: listed in a root-owned alias table, an :include: file not owned by root
    # gives its owner's rights, HOME and SHELL to the commands it lists; listed in a
    # table of another user, it leaves that user's rights alone.
    pw = system_user
    inc = spool / "list.inc"
    main = "allow_mail_to_commands = alias, forward, include\n"

    def deliver(step: str, include_owner: int, table_owner: int) -> tuple[str, dict[str, str]]:
        # One table file per owner and output files per step: a table is its file as
        # opened, and one user cannot write over another's file in the sticky spool.
        inc.write_text(f'"|id > {spool}/{step}.ids; env > {spool}/{step}.env"\n')
        os.chown(inc, include_owner, include_owner)
        table = spool / f"aliases.{step}"
        table.write_text(f"list :include:{inc}\n")
        os.chown(table, table_owner, table_owner)
        cfg = make_config(
            tmp_path / step,
            main=f"alias_maps = texthash:{table}\nalias_database =\n"
            f"queue_directory = {spool}\n" + main,
        )
        (o,) = run(request(cfg, "local", "localhost", ["list@localhost"]))
        assert o.status == "2.0.0", o
        return (spool / f"{step}.ids").read_text().strip(), read_env(spool / f"{step}.env")

    ids, env = deliver("root-table", pw.pw_uid, 0)
    assert ids == _ids(pw)
    assert (env["HOME"], env["SHELL"], env["USER"]) == (pw.pw_dir, pw.pw_shell, "list")
    ids, env = deliver("user-table", 65534, pw.pw_uid)
    assert ids == _ids(pw)
    assert env["HOME"] == pw.pw_dir
    # Root's include file in root's table: the default rights, no HOME.
    ids, env = deliver("root-file", 0, 0)
    assert ids == _ids(pwd.getpwnam("nobody"))
    assert "HOME" not in env


@pytest.mark.skipif(not ROOT, reason="files of other users need root")
def test_include_file_checks(tmp_path, spool, system_user, caplog):
    # include.c's checks, each a bounce with 5.3.5 and a warning naming the file: a
    # relative path, no such file, no regular file, world writable, not readable with
    # the rights it is opened with; an owner without a passwd entry defers (4.3.5).
    inc = spool / "list.inc"
    inc.write_text("nobody\n")
    private = spool / "private"
    private.mkdir(mode=0o700)
    (private / "list.inc").write_text("nobody\n")
    refused = Outcome("5.3.5", "mail system configuration error")
    cases = [
        ("list.inc", ":include:list.inc uses a relative path"),
        (f"{spool}/none", f"unable to lookup :include: file {spool}/none: No such file"),
        (str(private), f":include: file {private} is not a regular file"),
    ]
    for path, line in cases:
        assert _expand(_ctx(make_config(tmp_path / "c"), "alias"), [f":include:{path}"]) == refused
        assert line in caplog.text
    inc.chmod(0o646)
    assert _expand(_ctx(make_config(tmp_path / "c"), "alias"), [f":include:{inc}"]) == refused
    assert f":include: file {inc} is world writable" in caplog.text
    inc.chmod(0o600)
    # The alias owner's rights reach neither into private/ nor into root's 0600 file.
    cfg = _owned_aliases(
        tmp_path, spool, f"a :include:{private}/list.inc\nb :include:{inc}\n", system_user.pw_uid
    )
    (o,) = run(request(cfg, "local", "localhost", ["a@localhost"]))
    assert o == refused
    assert f"unable to lookup :include: file {private}/list.inc: Permission denied" in caplog.text
    (o,) = run(request(cfg, "local", "localhost", ["b@localhost"]))
    assert o == refused
    assert f"cannot open include file {inc}: Permission denied" in caplog.text
    uid = _unused_uid()
    os.chown(inc, uid, uid)
    assert _expand(_ctx(cfg, "alias"), [f":include:{inc}"]) == Outcome(
        "4.3.5", "mail system configuration error"
    )
    assert f"cannot find username for uid {uid}" in caplog.text
    assert f"{inc}: cannot find :include: file owner username" in caplog.text


def test_mailbox_command_maps_before_mailbox_command(tmp_path, spool):
    # postconf(5): mailbox_command_maps, looked up with the user name, takes precedence
    # over mailbox_command, which serves users it does not list; a table that cannot be
    # read defers. allow_mail_to_commands does not apply to either (mailbox.c delivers
    # to them directly, not as the items of an alias or .forward).
    user = _user()
    cmds = tmp_path / "cmds"
    cmds.write_text(f'{user} echo "map $USER" > {spool}/out\n')
    main = f"alias_maps =\nallow_mail_to_commands =\nmailbox_command = echo main > {spool}/out\n"
    cfg = make_config(tmp_path / "a", main=main + f"mailbox_command_maps = texthash:{cmds}\n")
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome("2.0.0", f'delivered to command: echo "map $USER" > {spool}/out'), o
    assert (spool / "out").read_text() == f"map {user}\n"
    cfg = make_config(tmp_path / "b", main=main + "mailbox_command_maps = inline:{other=x}\n")
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o.status == "2.0.0", o
    assert (spool / "out").read_text() == "main\n"
    cfg = make_config(tmp_path / "c", main=main + "mailbox_command_maps = fail:cmds\n")
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome("4.3.0", "table lookup failure")


def test_owner_alias_sender_and_original_recipient(tmp_path, spool):
    # alias.c: with an owner-list alias the expansion's sender is owner-list@$myorigin
    # (canon_addr_internal), or with expand_owner_alias the owner alias's value so
    # qualified, and the recipient's original address is dropped: no
    # ORIGINAL_RECIPIENT, no X-Original-To; Return-Path names the new sender.
    aliases = f'list "|env > {spool}/env; cat > {spool}/msg"\n'

    def deliver(text: str, main: str = "") -> tuple[dict[str, str], str]:
        cfg = _owned_aliases(tmp_path, spool, text, None, "myorigin = example.net\n" + main)
        req = request(cfg, "local", "localhost", ["list@localhost"])
        req.recipients[0] = Recipient("list@localhost", original="List@Example.ORG")
        (o,) = run(req)
        assert o.status == "2.0.0", o
        return read_env(spool / "env"), (spool / "msg").read_text()

    env, msg = deliver(aliases)
    assert (env["SENDER"], env["ORIGINAL_RECIPIENT"]) == ("a@example.org", "List@Example.ORG")
    assert msg.split("\n", 1)[1].startswith(
        "Return-Path: <a@example.org>\nX-Original-To: List@Example.ORG\n"
        "Delivered-To: list@localhost\n"
    )
    env, msg = deliver(aliases + "owner-list listadmin\n")
    assert env["SENDER"] == "owner-list@example.net"
    assert "ORIGINAL_RECIPIENT" not in env
    assert msg.startswith("From owner-list@example.net  ")
    assert msg.split("\n", 1)[1].startswith(
        "Return-Path: <owner-list@example.net>\nDelivered-To: list@localhost\nFrom: "
    )
    env, _ = deliver(aliases + "owner-list listadmin\n", "expand_owner_alias = yes\n")
    assert env["SENDER"] == "listadmin@example.net"


def test_forwarded_recipients_of_an_alias(tmp_path, spool, monkeypatch):
    # alias.c and forward.c: addresses of an alias are queued anew with the original
    # recipient and ORCPT of the alias, NOTIFY without SUCCESS ("NEVER" when that was
    # all); after an owner- alias, with neither (cleanup makes each its own original and
    # gives it rfc822;address as ORCPT), and the owner as sender.
    from oxipost.qmgr.queue import QueueState

    monkeypatch.setattr(local, "_queue", None)
    (spool / "aliases").write_text("alias one@example.com\nlist two@example.com\nowner-list x\n")
    cfg = make_config(
        tmp_path / "c",
        main=f"alias_maps = texthash:{spool}/aliases\nalias_database =\n"
        f"queue_directory = {tmp_path}/q\nmyorigin = example.net\n",
    )
    req = request(cfg, "local", "localhost", ["alias@localhost", "list@localhost"])
    for i, address in enumerate(["alias@localhost", "list@localhost"]):
        req.recipients[i] = Recipient(
            address,
            original=f"{address.upper()}",
            notify=frozenset({"SUCCESS"} if i == 0 else {"SUCCESS", "FAILURE"}),
            orcpt=f"rfc822;{address}",
        )
    try:
        assert [o.status for o in run(req)] == ["2.0.0", "2.0.0"]
    finally:
        assert local._queue is not None
        local._queue.close()
    state = QueueState(cfg)
    queued = {}
    for qid in state.messages:
        env, _ = state.load(qid)
        (r,) = env.recipients
        queued[r.address] = (env.sender, r.original, r.notify, r.orcpt)
    assert queued == {
        "one@example.com": (
            "a@example.org",
            "ALIAS@LOCALHOST",
            frozenset({"NEVER"}),
            "rfc822;alias@localhost",
        ),
        "two@example.com": (
            "owner-list@example.net",
            "two@example.com",
            frozenset({"FAILURE"}),
            "rfc822;two@example.com",
        ),
    }


def test_alias_members_delivered_in_the_same_delivery(tmp_path, spool):
    # resolve.c: an alias member that resolves to local(8) itself is delivered at once,
    # each with an entry (the address, the original recipient) for qmgr to log; twice at
    # one level counts once (the duplicate filter); aliases that list each other end in
    # a bounce at the nesting limit (alias.c), the recipient done as a whole.
    user = _user()
    (tmp_path / "aliases").write_text(f"twice {user}, {user}\nping pong\npong ping\n")
    cfg = make_config(
        tmp_path / "c",
        main=f"alias_maps = texthash:{tmp_path}/aliases\nalias_database =\n"
        f"mail_spool_directory = {spool}/\nmydestination = localhost\nmyorigin = localhost\n"
        # compatibility_level 0's append_dot_mydomain = yes would make user@localhost
        # user@localhost.$mydomain (as in Postfix), not a local address.
        "append_dot_mydomain = no\n",
    )
    req = request(cfg, "local", "localhost", ["twice@localhost", "ping@localhost"])
    req.recipients[1] = Recipient("ping@localhost", original="Ping@Example.ORG")
    twice, ping = run(req)
    assert twice == Outcome("2.0.0", "delivered to maildir")
    assert twice.entries == (Entry(f"{user}@localhost", "", "2.0.0", "delivered to maildir"),), (
        twice
    )
    assert len(os.listdir(spool / user / "new")) == 1
    assert ping == Outcome("5.4.6", "alias database loop for ping")
    assert ping.entries == (
        Entry("ping@localhost", "Ping@Example.ORG", "5.4.6", "alias database loop for ping"),
    ), ping


def test_mailbox_transport_passes_the_recipient_on(tmp_path, spool, caplog):
    # mailbox.c: mailbox_transport_maps (keyed by the user), then mailbox_transport, before
    # mailbox_command, whether or not the user has a passwd entry; the outcome is the
    # other agent's, named so that qmgr logs its line (deliver_pass()); "transport" alone
    # takes this request's nexthop.
    user = _user()
    main = (
        f"alias_maps =\nmailbox_command = echo main > {spool}/out\n"
        f"mailbox_transport = discard:5.7.1 sent elsewhere\n"
        f"mailbox_transport_maps = inline:{{{user}=discard}}\n"
    )
    cfg = make_config(tmp_path / "a", main=main)
    caplog.set_level("INFO", logger="oxipost.local")
    mine, unknown = run(request(cfg, "local", "localhost", [f"{user}@localhost", "x9@localhost"]))
    assert (mine, mine.agent) == (Outcome("2.0.0", "localhost"), "discard")
    assert (unknown, unknown.agent) == (Outcome("2.7.1", "sent elsewhere"), "discard")
    assert not (spool / "out").exists()
    assert f"4ABCDE1234: passing <{user}@localhost> to transport=discard" in caplog.messages
    cfg = make_config(tmp_path / "b", main=main_cf_with(main, "mailbox_transport_maps = fail:x\n"))
    (o,) = run(request(cfg, "local", "localhost", [f"{user}@localhost"]))
    assert o == Outcome("4.3.0", "table lookup failure")


def test_pass_to_a_transport_without_agent_or_name(tmp_path, caplog):
    cfg = make_config(tmp_path / "a", main="alias_maps =\nmailbox_transport = nosuch\n")
    (o,) = run(request(cfg, "local", "localhost", [f"{_user()}@localhost"]))
    assert (o, o.relay, o.agent) == (Outcome("4.3.0", "mail transport unavailable"), "none", "")
    assert "connect #1 to subsystem private/nosuch: No such file or directory" in caplog.messages
    cfg = make_config(tmp_path / "b", main="alias_maps =\nmailbox_transport = :x\n")
    with pytest.raises(local.AgentFatal, match='missing transport name in ":x"'):
        run(request(cfg, "local", "localhost", [f"{_user()}@localhost"]))


@pytest.mark.skipif(not ROOT, reason="unknown users get a spool mailbox when not root")
def test_unknown_user_fallbacks_in_order(tmp_path, spool, caplog):
    # unknown.c: fallback_transport_maps, fallback_transport, luser_relay (expanded with
    # local(8)'s attributes, delivered as an alias member: its own line, orig_to the
    # recipient), then the reserved names discarded, then the bounce. A user with a
    # passwd entry never gets there.
    user = _user()
    base = (
        f"alias_maps =\nmail_spool_directory = {spool}/\nrecipient_delimiter = +\n"
        "append_dot_mydomain = no\n"  # keep user@localhost local (compatibility_level 0)
    )
    luser = f"luser_relay = {user}+$local@localhost\n"
    fallback = "fallback_transport = discard:fallback\n"
    maps = "fallback_transport_maps = inline:{ghost=discard:map}\n"
    rcpts = ["ghost@localhost", "nosuch+x@localhost", f"{user}@localhost"]
    cfg = make_config(tmp_path / "a", main=base + maps + fallback + luser)
    ghost, nosuch, mine = run(request(cfg, "local", "localhost", rcpts))
    assert [(o.text, o.agent) for o in (ghost, nosuch)] == [
        ("map", "discard"),
        ("fallback", "discard"),
    ]
    assert (mine, mine.agent) == (Outcome("2.0.0", "delivered to maildir"), "")
    cfg = make_config(tmp_path / "b", main=base + maps + luser)
    ghost, nosuch, mine = run(request(cfg, "local", "localhost", rcpts))
    assert nosuch == Outcome("2.0.0", "delivered to maildir")
    assert nosuch.entries == (
        Entry(f"{user}+nosuch+x@localhost", "", "2.0.0", "delivered to maildir"),
    )
    cfg = make_config(tmp_path / "c", main=base)
    postmaster, nosuch = run(
        request(cfg, "local", "localhost", ["postmaster@localhost", "nosuch@localhost"])
    )
    assert postmaster == Outcome("2.0.0", "discarded")
    assert "required alias not found: postmaster" in caplog.messages
    assert nosuch == Outcome("5.1.1", 'unknown user: "nosuch"')


def test_alias_of_nothing_defers(tmp_path, caplog):
    # alias.c: a value with no recipient in it is a broken table, not a delivery.
    aliases = tmp_path / "aliases"
    aliases.write_text("empty ,\n")
    cfg = make_config(tmp_path / "a", main=f"alias_maps = texthash:{aliases}\n")
    (o,) = run(request(cfg, "local", "localhost", ["empty@localhost"]))
    assert o == Outcome("4.3.0", "alias database unavailable")
    assert "no recipient in alias lookup result for empty" in caplog.messages
