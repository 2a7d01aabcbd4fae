"""local(8) deliveries compared with real Postfix 3.7's: the same aliases file, :include:
files, users' .forward files, main.cf and envelope, delivered by Postfix (its qmgr and
local under its master) and then by a full oxipost, one after the other into the same
directories. Both must log the same local, qmgr, cleanup, bounce and discard lines (queue
IDs by order of appearance, delays set aside), and leave the same files: mailboxes
(Maildir and mbox, owner and mode), the /files of aliases and .forward files and what
each command received (its uid, directory, environment and input), notices included.
Named scenarios pin differences found; a few random ones (a fixed seed) mix aliases,
owner- aliases, :include: files, /file and |command targets, address extensions,
luser_relay, home_mailbox and DSN options."""

from __future__ import annotations

import difflib
import os
import pwd
import random
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, postfix_log_lines, run_ours, shared_dir
from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

# What a command item runs: its argv, rights, directory, environment and input, appended
# to out/cmd-NAME; with a second argument, that exit status and a line of output.
REC = """#!/bin/sh
{{ echo "== $*"; echo "uid=$(id -un) gid=$(id -gn) cwd=$(pwd)"; env | sort; echo --; cat; }} \
>> {top}/out/cmd-$1
case "$2" in ""|0) exit 0;; *) echo "rec $1 fails $2"; exit $2;; esac
"""
PROGRAMS = ("local", "qmgr", "bounce", "discard", "cleanup")


class Scenario:
    def __init__(
        self,
        files: dict[str, tuple[str, str]],
        main_cf: dict[str, str],
        rcpts: list[str],
        sender: str = "lfs@localhost",
        body: bytes = b"hello\r\n",
        mail_options: tuple[str, ...] = (),
    ) -> None:
        # files: path under the top directory → (text, owner: "root" or a user's role).
        self.files, self.main_cf, self.rcpts, self.sender = files, main_cf, rcpts, sender
        self.body, self.mail_options = body, mail_options


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, str]]:
    """Four throwaway users (useradd), by role: lfa, lfb, lfc and the sender lfs."""
    if os.geteuid() != 0:
        pytest.fail("this test creates system users: run the tests as root")
    names = {role: f"ox{role}{os.getpid() % 10000}" for role in ("lfa", "lfb", "lfc", "lfs")}
    try:
        for name in names.values():
            r = subprocess.run(
                ["useradd", "-M", "-U", "-d", f"/nonexistent/{name}", "-s", "/bin/sh", name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
        yield names
    finally:
        for name in names.values():
            subprocess.run(["userdel", name], capture_output=True, timeout=60)


def _text(text: str, top: Path, users: dict[str, str]) -> str:
    text = text.replace("{top}", str(top))
    for role, name in users.items():
        text = re.sub(rf"\b{role}\b", name, text)
        text = re.sub(rf"\b{role.upper()}\b", name.upper(), text)
    return text


def _reset(top: Path, sc: Scenario, users: dict[str, str]) -> None:
    for sub in ("etc", "bin", "out", "mail", "home"):
        shutil.rmtree(top / sub, ignore_errors=True)
        (top / sub).mkdir()
    for sub in ("out", "mail"):
        (top / sub).chmod(0o1777)
    (top / "bin" / "rec").write_text(REC.format(top=top))
    (top / "bin" / "rec").chmod(0o755)
    for name in users.values():
        pw = pwd.getpwnam(name)
        subprocess.run(
            ["usermod", "-d", str(top / "home" / name), name],
            check=True,
            capture_output=True,
            timeout=60,
        )
        (top / "home" / name).mkdir()
        os.chown(top / "home" / name, pw.pw_uid, pw.pw_gid)
    (top / ALIASES).write_text("")
    for path, (text, owner) in sc.files.items():
        p = top / _text(path, top, users)
        p.write_text(_text(text, top, users))
        if owner != "root":
            pw = pwd.getpwnam(users[owner])
            os.chown(p, pw.pw_uid, pw.pw_gid)


def _send(port: int, sc: Scenario, top: Path, users: dict[str, str]) -> list[int]:
    codes = []
    with smlib(port) as s:
        s.ehlo("client.example.org")
        s.mail(_text(sc.sender, top, users), list(sc.mail_options))
        for r in sc.rcpts:
            address, _, options = _text(r, top, users).partition(" ")
            codes.append(s.rcpt(address, options.split())[0])
        if 250 in codes:
            s.data(b"Subject: test\r\nFrom: f@example.org\r\nTo: t@example.org\r\n\r\n" + sc.body)
    return codes


def smlib(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=30)


def _settled(maillog: Path) -> str:
    """The log once every message qmgr took is removed or deferred and nothing more was
    written for two seconds."""
    deadline = time.monotonic() + 60
    last, since = "", time.monotonic()
    while time.monotonic() < deadline:
        log = maillog.read_text() if maillog.exists() else ""
        qids = set(re.findall(r"qmgr\[\d+\]: ([0-9A-F]+): from=", log))
        done = all(
            f"{q}: removed" in log or re.search(rf"{q}: to=.*status=deferred", log) for q in qids
        )
        if log != last or not done:
            last, since = log, time.monotonic()
        elif time.monotonic() - since > 2:
            return log
        time.sleep(0.2)
    pytest.fail(f"deliveries did not settle:\n{last}")


def _main_cf(top: Path, sc: Scenario, users: dict[str, str]) -> str:
    settings = {
        "alias_maps": f"texthash:{top}/etc/aliases",
        "alias_database": "",
        "mydestination": "localhost, $myhostname",
        "default_transport": "discard:remote",
        "mail_spool_directory": f"{top}/mail",
        # One delivery pass: a deferred recipient is not retried while we look.
        "minimal_backoff_time": "1h",
        "maximal_backoff_time": "2h",
        "queue_run_delay": "1h",
    } | {k: _text(v, top, users) for k, v in sc.main_cf.items()}
    return "".join(f"{k} = {v}\n" for k, v in settings.items())


def _run_postfix(top: Path, sc: Scenario, users: dict[str, str]) -> tuple[list[int], str, str]:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(_main_cf(top, sc, users) + logging) as (port, d):
        codes = _send(port, sc, top, users)
        return codes, _settled(d / "maillog"), f"{d}/spool"


def _run_ours(top: Path, sc: Scenario, users: dict[str, str]) -> tuple[list[int], str, str]:
    with shared_dir("oxipost-local-") as d:
        conf, port = d / "conf", free_port()
        conf.mkdir()
        write_config(
            str(conf),
            _main_cf(top, sc, users) + f"queue_directory = {d}/spool\ndata_directory = {d}/data\n"
            f"maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n"
            "smtpd_worker_processes = 1\n",
        )
        master_cf = (REPO / "conf" / "master.cf").read_text()
        (conf / "master.cf").write_text(master_cf.replace("127.0.0.1:2525", f"127.0.0.1:{port}"))
        started = run_ours("postfix", "-c", str(conf), "start")
        assert started.returncode == 0, started.stderr
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    smlib(port).quit()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "smtpd does not answer"
                    time.sleep(0.1)
            codes = _send(port, sc, top, users)
            return codes, _settled(d / "maillog"), f"{d}/spool"
        finally:
            run_ours("postfix", "-c", str(conf), "stop")


QID = re.compile(r"\b[0-9A-F]{10,12}\b")
# A message another made: "QID: to=<a>, orig_to=<b>, ... (forwarded as NEW)", "QID:
# sender non-delivery notification: NEW".
MADE = re.compile(
    rf"({QID.pattern}): (?:(to=<[^>]*>(?:, orig_to=<[^>]*>)?).* \(forwarded as "
    rf"|([a-z -]+ notification): )({QID.pattern})"
)


def _qids(log: str) -> dict[str, str]:
    """Each queue ID's stand-in: Q and its place once the messages are ordered by what
    they are, not by when their IDs first appear: a message another made (a forwarded copy,
    a notice) comes after it, by the recipient it was made for; the others (the client's,
    a notice bounce(8) begins and cancels) by first appearance. local(8) forwards
    recipients in parallel, each copy taking its ID as its delivery finishes."""
    made = {m[4]: (m[1], m[2] or m[3]) for m in MADE.finditer(log)}
    first: dict[str, None] = dict.fromkeys(QID.findall(log))
    roots = [q for q in first if q not in made]

    def key(q: str) -> tuple[str, ...]:
        if q not in made:
            return (f"{roots.index(q):04d}",)
        parent, how = made[q]
        return (*key(parent), how)

    # Copies made alike (one recipient twice) by first appearance.
    keys = sorted((key(q), i, q) for i, q in enumerate(first))
    return {q: f"Q{n}" for n, (_, _, q) in enumerate(keys)}


def _qids_set_aside(text: str, qids: dict[str, str]) -> str:
    return QID.sub(lambda m: qids.get(m[0], m[0]), text)


def _lines(log: str) -> list[str]:
    qids = _qids(log)
    out = []
    for program, text in postfix_log_lines(log, PROGRAMS):
        if ' is in "key: value" format' in text:
            continue
        text = _qids_set_aside(text, qids)
        text = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", text)
        text = re.sub(r"size=\d+", "size=N", text)
        text = re.sub(r"message-id=<[^>]*>", "message-id=<M>", text)
        out.append(f"{program}: {text}")
    return sorted(out)


def _normal(text: str, qids: dict[str, str], spool: str) -> str:
    text = _qids_set_aside(text, qids).replace(spool, "SPOOL")
    text = re.sub(
        r"^(From \S+) +\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$", r"\1 D", text, flags=re.M
    )
    text = re.sub(r"\w{3}, [ \d]?\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}( \(\w+\))?", "D", text)
    text = re.sub(r"\.\d{9,10}/", ".TIME/", text)  # a notice's MIME boundary
    text = re.sub(r"<\d{14}\.", "<STAMP.", text)
    text = re.sub(r"^MAIL_CONFIG=.*\n", "", text, flags=re.M)
    return _recipients_sorted(text.replace("(oxipost)", "(Postfix)"))


def _recipients_sorted(text: str) -> str:
    """A notice's recipient paragraphs ("<rcpt>: reason", "Final-Recipient: ...") sorted
    within each run: local(8) takes one recipient per delivery (its recipient limit), in
    parallel, so the order they are reported in is the order they finished."""
    out: list[str] = []
    run: list[str] = []
    for para in text.split("\n\n"):
        if para.startswith(("<", "Final-Recipient:")):
            run.append(para)
            continue
        out += [*sorted(run), para]
        run = []
    return "\n\n".join(out + sorted(run))


def _files(top: Path, log: str, spool: str) -> dict[str, list[str]]:
    """Every file delivered under out/, mail/ and home/ (a Maildir's by directory), with
    its owner and mode."""
    qids = _qids(log)
    found: dict[str, list[str]] = {}
    for sub in ("out", "mail", "home"):
        for p in sorted((top / sub).rglob("*")):
            if not p.is_file() or p.name == ".forward":
                continue
            st = p.stat()
            where = re.sub(r"/(new|cur|tmp)/[^/]*$", r"/\1/*", str(p.relative_to(top)))
            owner = pwd.getpwuid(st.st_uid).pw_name
            text = _normal(p.read_text(errors="replace"), qids, spool)
            # The messages of an mbox (or a command's log) in order of content: recipients
            # are delivered in parallel (local's recipient limit is 1).
            parts = sorted(re.split(r"(?m)^(?=From \S+ D$|== )", text))
            found.setdefault(where, []).append(f"[{owner} {st.st_mode:o}]\n" + "".join(parts))
    return {k: sorted(v) for k, v in found.items()}


def _as_postfix(top: Path, sc: Scenario, users: dict[str, str]) -> None:
    results = {}
    for who, run in (("postfix", _run_postfix), ("ours", _run_ours)):
        _reset(top, sc, users)
        codes, log, spool = run(top, sc, users)
        results[who] = (codes, _lines(log), _files(top, log, spool))
    ours, theirs = results["ours"], results["postfix"]
    # Something was delivered: a scenario that only defers compares nothing.
    assert theirs[2], theirs[1]
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1], "\n".join(difflib.ndiff(theirs[1], ours[1]))
    assert ours[2].keys() == theirs[2].keys()
    for where in theirs[2]:
        diff = difflib.unified_diff(
            "\n".join(theirs[2][where]).splitlines(),
            "\n".join(ours[2][where]).splitlines(),
            lineterm="",
        )
        assert ours[2][where] == theirs[2][where], f"{where}\n" + "\n".join(diff)


@pytest.fixture
def top(shared_tmp: Path) -> Path:
    return shared_tmp


ALIASES = "etc/aliases"
SCENARIOS = {
    # "\user" is the address user (the parser takes the backslash for a quoted pair): its
    # own .forward is read; a .forward's own user (quoted or not) means the mailbox, under
    # the name it resolves to, delivered once however many of its items reach it
    # (mailbox.c's "mailbox LOCAL" filter: here also through the alias al1).
    "backslash_user": Scenario(
        {
            ALIASES: (
                "list \\lfb, \\lfc\nlfc \\lfc, {top}/out/lfc-file\nal1 lfa\n",
                "root",
            ),
            "home/lfb/.forward": ("\\lfb, {top}/out/lfb-file\n", "lfb"),
            "home/lfa/.forward": ("\\lfa, lfa, al1\n", "lfa"),
        },
        {"allow_mail_to_files": "alias, forward"},
        ["list@localhost", "LFA@localhost"],
    ),
    # mailbox.c: a spool Maildir ("/" at the end of mail_spool_directory) before an mbox in
    # home_mailbox.
    "home_mbox_with_spool_maildir": Scenario(
        {}, {"home_mailbox": "Mailbox", "mail_spool_directory": "{top}/mail/"}, ["lfa@localhost"]
    ),
    # forward.c: the copy for other users of a .forward is a new message with its own
    # Received: header and a lower-case Delivered-To:, logged by cleanup. An alias the
    # .forward lists (without an owner- of its own) leaves its user the owner: its members
    # go in that copy too (al9's lfc).
    "forwarded_copy": Scenario(
        {
            "home/lfa/.forward": ("lfb, al9\n", "lfa"),
            ALIASES: ("al9 lfc@localhost, {top}/out/al9-file\n", "root"),
        },
        {},
        ["LFA@localhost NOTIFY=SUCCESS"],
    ),
    # pipe_command.c: the output's newlines become spaces (the last one too), and output
    # that starts with "D.S.N text" is the status and reason; commands see local(8)'s
    # environment and the From_ line first, and create files under umask 077. A failed
    # command's notice has a Diagnostic-Code of x-unix and what the command wrote, else
    # its exit status's text (sysexits.h's, or "unknown mail system error N"). token.c: an
    # :include: file's line that defers ends the file (inc's /file is not judged).
    "command_status": Scenario(
        {
            ALIASES: (
                'dsnout "|echo 5.2.2 mailbox full; exit 1"\n'
                'badexit "|{top}/bin/rec f1 1"\ntempfail "|{top}/bin/rec f2 75"\n'
                'ok |{top}/bin/rec c1\nperm "|{top}/bin/rec f3 77"\nquiet "|exit 67"\n'
                'noout "|exit 1"\nincl :include:{top}/etc/inc, noout\n'
                'later "|{top}/bin/rec f4 75"\n',
                "root",
            ),
            "etc/inc": ("quiet\nlater\n{top}/out/after\n", "root"),
        },
        {},
        [
            f"{name}@localhost"
            for name in ("dsnout", "badexit", "tempfail", "ok+ext", "perm", "quiet", "noout")
        ]
        + ["incl@localhost"],
    ),
    # file.c: a /file/name ending in "/" is a Maildir, logged as deliver_maildir() does;
    # a /file is written once with the same rights, however many aliases list it (its
    # "file UID PATH" filter), the second not even judged by allow_mail_to_files.
    "maildir_file": Scenario(
        {
            ALIASES: (
                "md {top}/out/md/, f2, lfa\nf2 {top}/out/f, {top}/out/md/\n",
                "root",
            ),
            "home/lfa/.forward": ("{top}/out/f, {top}/out/f\n", "lfa"),
        },
        {"allow_mail_to_files": "alias"},
        ["md@localhost"],
    ),
    # file.c and mbox_open(): /dev/null takes the message as any file does, without the
    # dotlock an unprivileged user could not make beside it (as default_privs for the
    # aliases, as the user for a .forward). A /file's dotlock may fail (its
    # MBOX_DOT_LOCK_MAY_FAIL): a warning, and the file written under its kernel lock
    # alone (lfb may write the box, not lfa's directory it is in).
    "dev_null": Scenario(
        {
            ALIASES: ("devnull /dev/null, {top}/out/copy\n", "root"),
            "home/lfa/.forward": ("/dev/null\n", "lfa"),
            "home/lfa/box": ("", "lfb"),
            "home/lfb/.forward": ("{top}/home/lfa/box\n", "lfb"),
        },
        {},
        ["devnull@localhost", "lfa@localhost", "lfb@localhost"],
    ),
    # tok822_parse(): words with only white space or a comment between them are items of
    # their own, an unquoted "|command arg" the command and an address. (include.c: an
    # :include: file is expanded once with the same rights, however many aliases list
    # it: t6's command is refused once.)
    "unquoted_words": Scenario(
        {
            ALIASES: (
                "t1 |{top}/bin/rec c1 arg2\nt2 lfa lfb\nt3 {top}/out/f1 {top}/out/f2\n"
                't4 "|{top}/bin/rec c4" lfc\nt5 lfa@localhost lfb (comment) lfc\n'
                "t6 t7, :include:{top}/etc/inc0\nt7 :include:{top}/etc/inc0\n"
                "t8 :include:{top}/etc/inc1, lfa\n",
                "root",
            ),
            "etc/inc0": ('"|{top}/bin/rec c6"\n', "root"),
            "etc/inc1": (":include:{top}/etc/inc1\n", "root"),
        },
        {},
        [f"t{i}@localhost" for i in range(1, 9)],
        sender="",
    ),
    # token.c: each item is what tok822_parse() makes of the line, as in a message header:
    # a route address <a> or a phrase's "Name" <a> is a; a group "name: a, b;" is a and b;
    # a (comment) is dropped; "g: ;" lists nothing. An item in quotes is an address when it
    # is not a /file, |command or :include: in internal form: its '@' in quotes is part of
    # its local part, which rewriting gives @$myorigin ("r4@remote.test"@mx.example.test)
    # and resolve_dequoted_address then opens. ~/file is under the home of the user whose
    # rights the expansion has, refused without one, and ~user is refused. A .forward or
    # :include: file's line starting with "#" is a comment, one with a blank first not.
    "phrases_groups_and_quotes": Scenario(
        {
            ALIASES: (
                'a1 "Joe" <lfa>, <r1@remote.test>, grp: lfb, r2@remote.test;, (c) r3@remote.test\n'
                'a2 "r4@remote.test"\na3 "lfc@localhost", <al0> (x), g2: ;\n'
                "a4 Some Name <r5@remote.test> r6@remote.test, <{top}/out/f1>, ~/f2\n"
                'a5 :include:{top}/etc/inc\nal0 "r7@remote.test" <r8@remote.test>\n',
                "root",
            ),
            "etc/inc": (
                '"Inc" <r9@remote.test>, gi: r10@remote.test;\n"r11@remote.test"\n'
                "#r12@remote.test\n #r13@remote.test\n",
                "root",
            ),
            "home/lfa/.forward": (
                '# "Fwd" <r14@remote.test>\n"Fwd" <r15@remote.test>, gf: lfb;, "r16@remote.test"\n'
                "~/f3, ~lfb/f4\n",
                "lfa",
            ),
        },
        {"allow_mail_to_files": "alias, forward"},
        [f"a{i}@localhost" for i in range(1, 6)],
    ),
    # The '@' of a quoted item is part of its local part however the item is written
    # (alone, in <>, in a .forward): without resolve_dequoted_address the address is a
    # local user "r1@remote.test" at $myorigin, not r1@remote.test, and its notice names
    # it "r1@remote.test"@mx.example.test, quoted as bounce(8) keeps its addresses.
    "quoted_at_sign": Scenario(
        {
            ALIASES: ('q1 "r1@remote.test", <"lfb@localhost">\n', "root"),
            "home/lfa/.forward": ('"r2@remote.test"\n', "lfa"),
        },
        {"resolve_dequoted_address": "no"},
        ["q1@localhost", "lfa@localhost"],
    ),
    # unknown.c: luser_relay sends the address on as it is, NOTIFY=SUCCESS included, where
    # an alias takes it off its members and reports "alias expanded" itself: the success
    # notice names the mailbox delivered, expanded from the unknown user.
    "luser_relay_success": Scenario(
        {ALIASES: ("al1 lfb\n", "root")},
        {"luser_relay": "lfc"},
        ["nosuch0@localhost NOTIFY=SUCCESS", "al1@localhost NOTIFY=SUCCESS"],
    ),
    # An alias met again through luser_relay (nosuch0 relayed to lfc) is expanded again,
    # but command.c runs a |command once per user and rights ("command USER:UID CMD"),
    # and unknown.c relays a local part once: nosuch1, relayed already (to lfc's
    # mailbox, the alias lfc being expanded), is met again and done, not bounced.
    "alias_again_through_luser_relay": Scenario(
        {ALIASES: ('al2 lfc, nosuch0\nlfc "|{top}/bin/rec x", nosuch1\n', "root")},
        {"luser_relay": "lfc"},
        ["al2@localhost"],
    ),
    # file.c makes no directory: a /file whose directory is missing (or a file) fails,
    # its dotlock with a warning and the file as a bounce. An unquoted /file before an
    # :include: is one name with it (tok822_parse()).
    "file_without_directory": Scenario(
        {
            ALIASES: (
                "f1 {top}/out/nodir/x\nf2 {top}/out/md-0/ :include:{top}/etc/inc1\n"
                "f3 {top}/out/plain/x\n",
                "root",
            ),
            "etc/inc1": ("lfb\n", "root"),
            "out/plain": ("", "root"),
        },
        {},
        ["f1@localhost", "f2@localhost", "f3@localhost", "lfa@localhost"],
    ),
    # unknown.c: a luser_relay naming no user is relayed once more, and then, its local
    # part given to luser_relay already, is an unknown user; a luser_relay naming a new
    # user each time ends in alias.c's loop, its level counted as Postfix's.
    "luser_relay_unknown": Scenario(
        {},
        {"luser_relay": "${extension?{$local-r}:{nosuchrelay}}", "recipient_delimiter": "+"},
        ["nosuch0@localhost", "nosuch1+x@localhost"],
    ),
    # VERP (MAIL FROM's XVERP): each delivery's sender is the sender with the recipient as
    # the client gave it in it, what local(8) writes in the From_ and Return-Path: lines,
    # gives commands as $SENDER and sends on with a .forward's copy.
    "verp_sender": Scenario(
        {
            ALIASES: ('al1 lfa, "|{top}/bin/rec v1"\n', "root"),
            "home/lfb/.forward": ("lfc\n", "lfb"),
        },
        {"smtpd_authorized_verp_clients": "127.0.0.1"},
        ["al1@localhost", "lfb@localhost"],
        mail_options=("XVERP",),
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_as_postfix(name: str, top: Path, users: dict[str, str]) -> None:
    _as_postfix(top, SCENARIOS[name], users)


# The random scenarios: what they may use. Seeds left out: 6 and 13 deliver nothing to
# compare; 9, 11, 12, 14 to 20 agree, left out for time (16, 18 and 19 are named
# scenarios: luser_relay_success, alias_again_through_luser_relay, file_without_directory).
USERS = ("lfa", "lfb", "lfc")
ALIAS_NAMES = ("al0", "al1", "al2", "a.b", "list-x")


def _item(rng: random.Random, forwarder: str = "") -> str:
    kind = rng.randrange(12)
    if kind < 2:
        return rng.choice(USERS)
    return [
        "",
        "",
        rng.choice(ALIAS_NAMES),
        f"{{top}}/out/file-{rng.randint(0, 2)}",
        f"{{top}}/out/md-{rng.randint(0, 1)}/",
        f"|{{top}}/bin/rec c{rng.randint(0, 9)}",
        f'"|{{top}}/bin/rec t{rng.randint(0, 9)} 75"',
        f":include:{{top}}/etc/inc{rng.randint(0, 1)}",
        "\\" + (forwarder or rng.choice(USERS)),
        rng.choice(USERS) + rng.choice(["@localhost", "@mx.example.test", "+e1"]),
        f"r{rng.randint(0, 3)}@remote.test",
        f"nosuch{rng.randint(0, 1)}",
    ][kind]


def _items(rng: random.Random, forwarder: str = "") -> str:
    sep = rng.choice([", ", ", ", " "])
    return sep.join(_item(rng, forwarder) for _ in range(rng.randint(1, 3)))


def random_scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    lines = [f"{a} {_items(rng)}" for a in ALIAS_NAMES if rng.random() < 0.8]
    lines += [f"{u} {_items(rng)}" for u in USERS if rng.random() < 0.2]
    lines += [f"owner-{a} {rng.choice(USERS)}" for a in ALIAS_NAMES[:3] if rng.random() < 0.3]
    files = {ALIASES: ("\n".join(lines) + "\n", "root")}
    for i in range(2):
        text = "\n".join(_item(rng) for _ in range(rng.randint(1, 3))) + "\n"
        files[f"etc/inc{i}"] = (text, rng.choice(["root", "lfb"]))
    for u in USERS:
        if rng.random() < 0.5:
            files[f"home/{u}/.forward"] = (_items(rng, u) + "\n", u)
    main_cf = {
        "allow_mail_to_commands": rng.choice(["alias, forward", "alias, forward, include"]),
        "allow_mail_to_files": rng.choice(["alias, forward", "alias, forward, include"]),
        "mail_spool_directory": rng.choice(["{top}/mail", "{top}/mail/"]),
    }
    if rng.random() < 0.5:
        main_cf["recipient_delimiter"] = "+"
    if rng.random() < 0.3:
        main_cf["home_mailbox"] = rng.choice(["Maildir/", "Mailbox"])
    if rng.random() < 0.2:
        main_cf["luser_relay"] = "lfc"
    if rng.random() < 0.2:
        main_cf["expand_owner_alias"] = "yes"
    pool = [*USERS, *ALIAS_NAMES, "nosuch0", "LFA", "lfa+e1", "al1+y", "owner-al0"]
    rcpts = []
    for _ in range(rng.randint(1, 3)):
        rcpt = rng.choice(pool) + "@localhost"
        if rng.random() < 0.3:
            rcpt += " NOTIFY=" + rng.choice(["SUCCESS,FAILURE", "NEVER", "SUCCESS"])
        rcpts.append(rcpt)
    sender = rng.choice(["lfs@localhost", "lfs@localhost", "", "x@remote.test"])
    body = rng.choice([b"hello\r\n", b"From me\r\n>From you\r\n", b"x\r\n..dot\r\n"])
    return Scenario(files, main_cf, rcpts, sender, body)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 7, 8, 10])
def test_random_scenario_as_postfix(seed: int, top: Path, users: dict[str, str]) -> None:
    _as_postfix(top, random_scenario(seed), users)
