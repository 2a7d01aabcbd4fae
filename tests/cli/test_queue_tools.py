"""mailq/postqueue, postsuper, postcat and qshape: our output beside real Postfix's.

Real Postfix (Debian's package) runs in a temporary config and queue directory with a
relayhost that refuses connections, so its messages sit deferred with a reason; oxipost's
queue gets the same messages and the same reason. The listings must then agree line for
line except queue IDs, sizes (Postfix counts its queue-file records) and arrival times.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import Queue, QueueState

from tests.conftest import main_cf_with, run_ours, run_postfix, wait_for_log

pytestmark = pytest.mark.postfix

REASON = "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"
MESSAGES = [("sender@example.com", "rcpt1@example.org"), ("", "r2@example.org")]
# A line of 128 bytes or more takes a longer record header than its CR LF in Postfix's
# queue file, and one over line_length_limit (2048) a record per piece.
BODY = b"Subject: t\n\nhello\n" + b"x" * 300 + b"\n" + b"y" * 5000 + b"\n"


@pytest.fixture
def real_postfix(shared_tmp):
    if os.geteuid() != 0:
        pytest.fail("running real Postfix needs root (CI runs as root)")
    # Postfix's daemons run as user postfix: the tree must be reachable for them, which
    # pytest's private tmp_path is not.
    d = shared_tmp
    conf, spool, data = d / "conf", d / "spool", d / "data"
    for p in (conf, spool, data):
        p.mkdir(parents=True)
    subprocess.run(["chown", "postfix", str(data)], check=True)
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    (conf / "master.cf").write_text(re.sub(r"(?m)^smtp(\s+)inet", r"#smtp\1inet", master))
    (conf / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = pf.example.test\n"
        "inet_interfaces = loopback-only\ninet_protocols = ipv4\nmydestination =\n"
        f"relayhost = [127.0.0.1]:9\nqueue_directory = {spool}\ndata_directory = {data}\n"
    )
    subprocess.run(["/usr/sbin/postfix", "-c", str(conf), "start"], check=True, capture_output=True)
    try:
        for sender, rcpt in MESSAGES:
            subprocess.run(
                ["/usr/sbin/sendmail", "-C", str(conf), "-f", sender, rcpt],
                input=BODY,
                check=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = run_postfix("/usr/sbin/postqueue", "-c", str(conf), "-p").stdout
            if out.count(f"({REASON})") == len(MESSAGES):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"real Postfix did not defer the test messages:\n{out}")
        yield str(conf)
    finally:
        subprocess.run(["/usr/sbin/postfix", "-c", str(conf), "stop"], capture_output=True)


@pytest.fixture
def ours(tmp_path):
    conf = tmp_path / "ox"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/ox-queue\n")
    cfg = load_config(str(conf))
    q = Queue.open(cfg, "test")
    ids = [
        q.enqueue_sync(Envelope(s, [Recipient(r)], time.time()), b"Subject: t\r\n\r\nhello\r\n")
        for s, r in MESSAGES
    ]
    q.close()
    st = QueueState(cfg, lock=True)
    for qid in ids:
        st.defer(qid, REASON, time.time() + 300)
    st.close()
    return str(conf)


def blocks(listing: str) -> list[str]:
    """The message blocks of a listing, with ID, size and time masked, sorted."""
    head, *rest = listing.split("\n\n")
    masked = []
    for block in [head.split("\n", 1)[1], *rest[:-1]]:
        block = re.sub(
            r"^[0-9A-F]{10,12}([*! ]) +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d ",
            r"ID\1 SIZE TIME ",
            block,
        )
        masked.append(block)
    return sorted(masked)


def both(tool: str, real_conf: str, our_conf: str, *args: str):
    return run_ours(tool, "-c", our_conf, *args), run_postfix(
        f"/usr/sbin/{tool}", "-c", real_conf, *args
    )


def test_mailq_layout_matches_postfix(real_postfix, ours):
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert mine.stdout.splitlines()[0] == real.stdout.splitlines()[0]
    assert blocks(mine.stdout) == blocks(real.stdout)
    assert re.search(r"-- \d+ Kbytes in 2 Requests\.\n$", mine.stdout)


def test_hold_and_release_match_postfix(real_postfix, ours):
    for args in (["-h", "ALL"], ["-H", "ALL", "deferred"], ["-d", "NOSUCHID"], ["-d", "bad!id"]):
        mine, real = both("postsuper", real_postfix, ours, *args)
        assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr), args
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert blocks(mine.stdout) == blocks(real.stdout)
    assert mine.stdout.count("!") == 2
    mine, real = both("postsuper", real_postfix, ours, "-H", "ALL")
    assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr)
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert blocks(mine.stdout) == blocks(real.stdout)


def test_named_messages_reported_as_postfix(real_postfix, ours):
    # Each message named by its ID is reported as it changes; ALL gives the count alone.
    real_ids = re.findall(
        r"^([0-9A-F]{10,})", both("postqueue", real_postfix, ours, "-p")[1].stdout, re.M
    )
    our_ids = sorted(QueueState(load_config(ours)).messages)
    for action in ("-h", "-H", "-r", "-d"):
        mine = run_ours("postsuper", "-c", ours, action, our_ids[0])
        real = run_postfix("/usr/sbin/postsuper", "-c", real_postfix, action, real_ids[0])
        shown = mine.stderr.replace(our_ids[0], "ID")
        assert (mine.returncode, shown) == (real.returncode, real.stderr.replace(real_ids[0], "ID"))
        assert "ID: " in shown
        if action == "-r":
            # In maildrop/ until pickup takes it (nobody wakes it): listed as before.
            mine, real = both("postqueue", real_postfix, ours, "-p")
            assert blocks(mine.stdout) == blocks(real.stdout)
            assert our_ids[0] in mine.stdout


def test_json_matches_postfix(real_postfix, ours):
    import json

    mine, real = both("postqueue", real_postfix, ours, "-j")

    def norm(text: str) -> list[dict]:
        out = []
        for line in text.splitlines():
            obj = json.loads(line)
            for k in ("queue_id", "arrival_time", "message_size"):
                obj.pop(k)
            out.append(obj)
        return sorted(out, key=lambda o: o["sender"])

    assert norm(mine.stdout) == norm(real.stdout)


def test_sizes_match_postfix(real_postfix, tmp_path):
    """postqueue -j's message_size and mailq's size column are Postfix's queue-file content
    records (showq reads the SIZE record, qmgr's size=): the content Postfix queued, queued
    here, lists the same size, not its length."""
    import json

    listed = run_postfix("/usr/sbin/postqueue", "-c", real_postfix, "-j").stdout
    real = [json.loads(ln) for ln in listed.splitlines()]
    conf = tmp_path / "sized"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/sized-queue\n")
    cfg = load_config(str(conf))
    q = Queue.open(cfg, "test")
    lengths = []
    for msg in real:
        text = run_postfix("/usr/sbin/postcat", "-c", real_postfix, "-bh", "-q", msg["queue_id"])
        content = text.stdout.replace("\n", "\r\n").encode()
        lengths.append(len(content))
        q.enqueue_sync(Envelope(msg["sender"], [Recipient("r@example.org")], 0.0), content)
    q.close()
    mine = run_ours("postqueue", "-c", str(conf), "-j")
    sizes = sorted(json.loads(ln)["message_size"] for ln in mine.stdout.splitlines())
    assert sizes == sorted(msg["message_size"] for msg in real)
    assert sizes != sorted(lengths)
    listing = run_ours("postqueue", "-c", str(conf), "-p").stdout
    assert sorted(int(m) for m in re.findall(r"(?m)^[0-9A-F]+ +(\d+) ", listing)) == sizes


def test_listing_reads_no_content(tmp_path):
    """showq lists the size replay found as it read the queue, as Postfix's showq reads
    the SIZE record and not the message: right even once the content is out of reach."""
    from oxipost.qmgr import showq
    from oxipost.qmgr.queue import message_size

    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n")
    cfg = load_config(str(tmp_path))
    q = Queue.open(cfg, "test")
    content = BODY.replace(b"\n", b"\r\n")
    q.enqueue_sync(Envelope("a@example.org", [Recipient("b@example.org")], 0.0), content)
    q.close()
    state = QueueState(cfg)
    for segment in (tmp_path / "queue" / "segments").iterdir():
        segment.unlink()
    (listed,) = showq.records(state)
    assert listed["message_size"] == message_size(content, 2048) != len(content)


def test_delete_all_then_empty_matches_postfix(real_postfix, ours):
    mine, real = both("postsuper", real_postfix, ours, "-d", "ALL")
    assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr)
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert mine.stdout == real.stdout == "Mail queue is empty\n"


def test_logfile_queues_as_postfix(real_postfix, ours):
    # Postfix's postsuper takes its logfile directories as queues, where no message is
    # found or counted; -d ALL defer removes the deferral logs, and mailq then lists the
    # messages without their reason.
    for args in (
        ["-h", "ALL", "defer"],
        ["-r", "ALL", "flush"],
        ["-e", "ALL", "trace"],
        ["-d", "ALL", "bounce"],
        ["-d", "ALL", "trace"],
        ["-d", "ALL", "flush"],
        ["-d", "ABCDEF1234", "defer"],
        ["-d", "ALL", "defer"],
    ):
        mine, real = both("postsuper", real_postfix, ours, *args)
        assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr), args
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert REASON not in real.stdout
    assert blocks(mine.stdout) == blocks(real.stdout)


def test_several_queues_as_postfix(real_postfix, ours):
    # postsuper takes any number of queues after the action, each checked before anything
    # is done; ours took the first one only.
    for args in (
        ["-h", "ALL", "incoming", "deferred"],
        ["-H", "ALL", "hold", "nosuch"],
        ["-d", "ALL", "deferred", "hold"],
    ):
        mine, real = both("postsuper", real_postfix, ours, *args)
        assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr), args
    assert real.stderr == "postsuper: Deleted: 2 messages\n"
    mine, real = both("postqueue", real_postfix, ours, "-p")
    assert mine.stdout == real.stdout == "Mail queue is empty\n"


def test_delete_looks_in_maildrop_first_as_postfix(real_postfix, ours):
    # postsuper -d QID looks in maildrop/ before the queues (Postfix's delete_one): a whole
    # message there by a queued message's name is the one deleted, the queued one stays;
    # a symlink by the other's name is warned of once, and the queued one goes.
    sides = []
    for conf, tool, mta in (
        (real_postfix, "/usr/sbin/postsuper", run_postfix),
        (ours, "postsuper", run_ours),
    ):
        spool = Path(load_config(conf).path("queue_directory"))
        if tool == "postsuper":
            ids = sorted(QueueState(load_config(conf)).messages)
        else:
            listing = run_postfix("/usr/sbin/postqueue", "-c", conf, "-p").stdout
            ids = sorted(re.findall(r"^([0-9A-F]{10,})", listing, re.M))
        dropped = spool / "maildrop" / ids[0]
        dropped.write_bytes(b"junk\n")
        dropped.chmod(0o700)
        shutil.chown(dropped, "postfix")
        (spool / "maildrop" / ids[1]).symlink_to("/etc/passwd")
        shown = []
        for qid in ids:
            out = mta(tool, "-c", conf, "-d", qid)
            shown.append((out.returncode, out.stderr.replace(qid, "QID")))
        assert not dropped.exists()
        left = re.findall(
            r"^[0-9A-F]{10,}", mta(tool.replace("super", "queue"), "-c", conf, "-p").stdout, re.M
        )
        sides.append((shown, [ids.index(q) for q in left]))
    assert sides[0][0][1][1] == (
        "postsuper: warning: maildrop/QID: uid 0: not a regular file\n"
        "postsuper: QID: removed\npostsuper: Deleted: 1 message\n"
    )
    assert sides[1] == sides[0] == (sides[0][0], [0])


def test_postcat_unknown_id_matches_postfix(real_postfix, ours):
    mine, real = both("postcat", real_postfix, ours, "-q", "NOSUCH")
    assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr)


def stopped_postfix(d: Path, main_cf: str = "") -> str:
    """The configuration directory of a Postfix that is not running, in d, its public/ as
    its postfix-files has it (postfix:postdrop 0710); main_cf's settings added."""
    (d / "conf").mkdir(parents=True)
    base = f"compatibility_level = 3.6\nqueue_directory = {d}/spool\n"
    (d / "conf" / "main.cf").write_text(main_cf_with(base, main_cf))
    shutil.copy("/usr/share/postfix/master.cf.dist", d / "conf" / "master.cf")
    (d / "spool" / "public").mkdir(parents=True)
    shutil.chown(d / "spool" / "public", "postfix", "postdrop")
    (d / "spool" / "public").chmod(0o710)
    return str(d / "conf")


def test_flush_without_qmgr_matches_postfix(tmp_path, ours):
    # Postfix stopped: the same warning and refusal, the same exit status (EX_UNAVAILABLE).
    real = stopped_postfix(tmp_path / "real")
    for args in (["-f"], ["-i", "ABCDEF"]):
        mine, theirs = both("postqueue", real, ours, *args)
        assert theirs.returncode == 69 and "mail system is down" in theirs.stderr
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr), args


FLUSH_SITES = "myhostname = mx.example.test\nmydestination = localhost, $myhostname\n"


@pytest.mark.parametrize(
    "main_cf",
    [
        "fast_flush_domains = p.example\nparent_domain_matches_subdomains = relay_domains\n",
        "fast_flush_domains = p.example\n",
        "compatibility_level = 0\n",
        "compatibility_level = 0\nfast_flush_domains = $relay_domains\n",
        # A command's table that does not open is fatal (no surrogate as in a daemon).
        "fast_flush_domains = hash:/nonexistent/flush\n",
    ],
    ids=["no-parent-match", "parent-match", "compat-0", "compat-0-set", "no-table"],
)
def test_flush_site_eligibility_matches_postfix(tmp_path, main_cf):
    # postqueue -s asks fast_flush_domains itself before the mail system (stopped here):
    # a site it does not list is "not configured", a listed one "mail system is down";
    # a subdomain is listed only where parent_domain_matches_subdomains names the list, and
    # compatibility_level 0's $mydestination (relay_domains, fast_flush_domains unset) says
    # so at each use.
    real = stopped_postfix(tmp_path / "real", FLUSH_SITES + main_cf)
    conf = tmp_path / "ox"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/ox-queue\n{FLUSH_SITES}{main_cf}")
    for site in ("p.example", "s.p.example", "localhost", "a.mx.example.test"):
        mine, theirs = both("postqueue", real, str(conf), "-s", site)
        assert theirs.returncode == 69, theirs.stderr
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr), site
        if site == "localhost" and main_cf == "compatibility_level = 0\n":
            assert "relay_domains=$mydestination" in theirs.stderr, theirs.stderr


def test_flush_arguments_checked_as_postfix(real_postfix, ours):
    # postqueue.c judges -s's destination (valid_hostname, or an address literal) and -i's
    # queue ID (mail_queue_id_ok) before it asks anything of the mail system.
    long_name = "a" * 120 + ".example"
    for args in (
        ["-s", "bad..site"],
        ["-s", "trailing.dot."],
        ["-s", "1.2.3.4"],
        ["-s", "[::1]"],
        ["-s", "[0.1.2.3]"],
        ["-s", "[1.2.3.4]x"],
        ["-s", "\u00e9.example"],
        ["-s", long_name],
        ["-i", "bad.id"],
        ["-i", "A" * 256],
    ):
        mine, theirs = both("postqueue", real_postfix, ours, *args)
        assert theirs.returncode == 69 and "invalid" in theirs.stderr, (args, theirs.stderr)
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr), args


def test_postcat_shows_envelope_and_content(ours):
    st = QueueState(load_config(ours))
    qid = next(i.queue_id for i in st.messages.values() if i.sender)
    out = run_ours("postcat", "-c", ours, "-q", qid)
    assert out.returncode == 0
    text = out.stdout
    assert text.startswith(f"*** ENVELOPE RECORDS deferred/{qid} ***\n")
    assert "sender: sender@example.com\n" in text
    assert "recipient: rcpt1@example.org\n" in text
    assert f"*** MESSAGE CONTENTS deferred/{qid} ***\nSubject: t\n\nhello\n" in text
    assert text.endswith(f"*** MESSAGE FILE END deferred/{qid} ***\n")
    body = run_ours("postcat", "-c", ours, "-b", "-q", qid).stdout
    assert "Subject" not in body and "hello" in body


def test_qshape_counts_by_domain(ours):
    out = run_ours("qshape", "-c", ours, "deferred")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["T", "5", "10"]
    assert lines[1].split()[:3] == ["TOTAL", "2", "2"]
    assert any(line.split()[0] == "example.org" and line.split()[1] == "2" for line in lines)


def test_postsuper_stdin_ids_and_requeue(ours):
    import json

    st = QueueState(load_config(ours))
    ids = sorted(st.messages)
    out = subprocess.run(
        [sys.executable, "-m", "oxipost.cli.postsuper", "-c", ours, "-r", "-"],
        input="\n".join(ids) + "\n",
        capture_output=True,
        text=True,
    )
    requeued = "".join(f"postsuper: {qid}: requeued\n" for qid in ids)
    assert out.stderr == requeued + "postsuper: Requeued: 2 messages\n"
    # Out of the queue, into maildrop/ for pickup, and listed there under their IDs.
    assert QueueState(load_config(ours)).messages == {}
    shown = [json.loads(ln) for ln in run_ours("postqueue", "-c", ours, "-j").stdout.splitlines()]
    # (in directory order, as Postfix's showq lists maildrop/)
    assert sorted((m["queue_id"], m["queue_name"]) for m in shown) == [(q, "maildrop") for q in ids]


# sendmail's arguments and input. With -t, Postfix's sendmail writes the header's
# recipients (in its order, a duplicate kept) after the command line's in the maildrop file.
SUBMISSIONS = [
    (("-f", "sender@example.com", "rcpt1@example.org", "r2@example.org"), "Subject: t\n\nhi\n"),
    (("-f", "", "rc3@example.org"), "Subject: t\n\nhello\n"),
    (
        ("-t", "-f", "joe", "extra"),
        "Cc: a@example.com\nTo: a@example.com, B <b@example.com>\nBcc: c@example.com\n"
        " ,more@example.com\nSubject: t\n\nbody\n",
    ),
]


def _submit_without_pickup(d: Path, who: str) -> str:
    """The configuration directory of an MTA in d that is not running (so pickup takes
    nothing), after the SUBMISSIONS and a junk file named like a queue ID in its
    maildrop/; who is "postfix" or "ours"."""
    if who == "postfix":
        conf = stopped_postfix(d)
        spool = d / "spool"
        (spool / "maildrop").mkdir()
        shutil.chown(spool / "maildrop", "postfix", "postdrop")
        (spool / "maildrop").chmod(0o1730)
        # showq walks every queue: a missing one ends its listing.
        for q in ("incoming", "active", "deferred", "hold", "corrupt"):
            (spool / q).mkdir(mode=0o700)
            shutil.chown(spool / q, "postfix")
    else:
        (d / "conf").mkdir(parents=True)
        (d / "conf" / "main.cf").write_text(f"queue_directory = {d}/spool\n")
        conf = str(d / "conf")
    for args, text in SUBMISSIONS:
        args = ("-C", conf, *args)
        done = (
            run_postfix("/usr/sbin/sendmail", *args, stdin=text)
            if who == "postfix"
            else run_ours("sendmail", *args, stdin=text)
        )
        assert done.returncode == 0, done.stderr
    junk = d / "spool" / "maildrop" / "ABCDEF1234"
    junk.write_bytes(b"junk\n")
    # Complete, as Postfix's postdrop leaves its files (owner execute: MAIL_QUEUE_STAT_READY).
    junk.chmod(0o744)
    return conf


def test_maildrop_listed_and_deleted_as_postfix(shared_tmp):
    # Local submissions pickup has not taken are listed under their file's queue ID, with
    # no mark; the junk file is not listed. postsuper takes "maildrop" as a queue: only -d
    # finds anything there (the junk file too, as Postfix's), named or ALL.
    real = _submit_without_pickup(shared_tmp / "real", "postfix")
    ours = _submit_without_pickup(shared_tmp / "ours", "ours")
    mine, theirs = both("postqueue", real, ours, "-p")
    assert theirs.stdout.endswith("-- 0 Kbytes in 3 Requests.\n"), theirs.stdout
    assert blocks(mine.stdout) == blocks(theirs.stdout)
    assert mine.stdout.splitlines()[-1] == theirs.stdout.splitlines()[-1]
    for action in ("-h", "-H", "-r", "-e", "-f"):
        mine, theirs = both("postsuper", real, ours, action, "ALL", "maildrop")
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr), action
    named = []
    for tool, conf, mta in (
        ("postsuper", ours, run_ours),
        ("/usr/sbin/postsuper", real, run_postfix),
    ):
        listing = mta(tool.replace("postsuper", "postqueue"), "-c", conf, "-p").stdout
        qid = re.findall(r"^([0-9A-F]{10,}) ", listing, re.M)[0]
        out = mta(tool, "-c", conf, "-d", qid, "maildrop")
        named.append((out.returncode, out.stderr.replace(qid, "QID")))
    assert named[0] == named[1]
    assert named[1][1] == "postsuper: QID: removed\npostsuper: Deleted: 1 message\n"
    mine, theirs = both("postsuper", real, ours, "-d", "ALL", "maildrop")
    assert theirs.stderr == "postsuper: Deleted: 3 messages\n"
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
    mine, theirs = both("postqueue", real, ours, "-p")
    assert mine.stdout == theirs.stdout == "Mail queue is empty\n"


def test_incomplete_maildrop_file_as_postfix(shared_tmp):
    # A maildrop file postdrop has not made READY (0600: being written, or left so by a
    # postdrop that died) is not listed (showq's mail_open_ok), nor deleted by its ID.
    real = _submit_without_pickup(shared_tmp / "real", "postfix")
    ours = _submit_without_pickup(shared_tmp / "ours", "ours")
    named = []
    for who in ("real", "ours"):
        d = shared_tmp / who / "spool" / "maildrop"
        (half,) = [f for f in d.iterdir() if b"rc3@ex" in f.read_bytes()]
        half.chmod(0o600)
        named.append(half.name)
    mine, theirs = both("postqueue", real, ours, "-p")
    assert theirs.stdout.endswith("-- 0 Kbytes in 2 Requests.\n"), theirs.stdout
    assert blocks(mine.stdout) == blocks(theirs.stdout)
    outs = [
        run_postfix("/usr/sbin/postsuper", "-c", real, "-d", named[0]),
        run_ours("postsuper", "-c", ours, "-d", named[1]),
    ]
    assert [(o.returncode, o.stderr) for o in outs] == [(0, "postsuper: Deleted: 0 messages\n")] * 2


def _add_odd_entries(maildrop: Path) -> None:
    """What else may sit in a maildrop/ (it is writable by postdrop's group): files not
    named like a queue ID (a dot file, an old-style name), one being written (its owner
    without rwx: not READY), subdirectories, a symlink and a dangling one."""
    for name, mode in (
        (".dotfile", 0o744),
        ("notqid", 0o744),
        ("1A2B3C.12345.1.host", 0o744),
        (".inprogress", 0o644),
        ("ABCDEF12345", 0o644),
    ):
        (maildrop / name).write_bytes(b"junk\n")
        (maildrop / name).chmod(mode)
    (maildrop / "A").mkdir()
    (maildrop / "subdir").mkdir(exist_ok=True)
    (maildrop / "subdir" / "f").write_bytes(b"x\n")
    (maildrop / "SYMLINK1").symlink_to("/etc/passwd")
    (maildrop / "DANGLING").symlink_to("/nonexistent")


def test_maildrop_odd_names_deleted_as_postfix(shared_tmp):
    # -d QID deletes only a whole message (mail_open_ok): a directory or symlink by that
    # name is warned of, twice (postsuper's two passes), a file being written stays.
    # -d ALL removes everything, whatever its name, and counts what lstat() calls READY
    # (a symlink too); a subdirectory with something in it stays, warned of.
    real = _submit_without_pickup(shared_tmp / "real", "postfix")
    ours = _submit_without_pickup(shared_tmp / "ours", "ours")
    drops = [shared_tmp / who / "spool" / "maildrop" for who in ("real", "ours")]
    for d in drops:
        _add_odd_entries(d)
    for name in ("ABCDEF12345", "A", "SYMLINK1", ".dotfile", "notqid"):
        mine, theirs = both("postsuper", real, ours, "-d", name, "maildrop")
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr), name
    assert theirs.stderr == "postsuper: notqid: removed\npostsuper: Deleted: 1 message\n"
    mine, theirs = both("postsuper", real, ours, "-d", "ALL", "maildrop")
    assert theirs.stderr == (
        "postsuper: warning: remove subdirectory maildrop/subdir: Directory not empty\n"
        "postsuper: Deleted: 8 messages\n"
    )
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
    left = [sorted(os.listdir(d)) for d in drops]
    assert left[0] == left[1] == ["subdir"]
    # -d ALL without a queue takes maildrop/ among the others (Postfix's stops at a
    # missing queue directory: its logfile directories too).
    for q in ("defer", "bounce", "flush"):
        (shared_tmp / "real" / "spool" / q).mkdir(mode=0o700)
        shutil.chown(shared_tmp / "real" / "spool" / q, "postfix")
    for d in drops:
        _add_odd_entries(d)
    mine, theirs = both("postsuper", real, ours, "-d", "ALL")
    assert "Deleted: 5 messages\n" in theirs.stderr
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
    assert sorted(os.listdir(drops[0])) == sorted(os.listdir(drops[1]))


def test_maildrop_listed_in_directory_order_as_postfix(shared_tmp):
    # Postfix's showq lists maildrop/ as readdir() returns it, not by arrival time. The
    # same names in two directories of one file system come back in the same order (on
    # ext4, the file system's hash order), so each side's submissions are renamed alike,
    # in the order they were made; names of 11 characters, without a mark, also take up
    # the ID column whole (Postfix pads "ID+mark" to 11, then a blank).
    names = {b"r2@ex": "ABCDEF00001", b"rc3@ex": "ABCDEF00002", b"more@ex": "ABCDEF00003"}
    listings = []
    for who in ("real", "ours"):
        conf = _submit_without_pickup(shared_tmp / who, "postfix" if who == "real" else who)
        d = shared_tmp / who / "spool" / "maildrop"
        (d / "ABCDEF1234").unlink()
        for f in list(d.iterdir()):
            (new,) = [n for mark, n in names.items() if mark in f.read_bytes()]
            f.rename(d / new)
        order = [n for n in os.listdir(d) if n in names.values()]
        mta = run_postfix if who == "real" else run_ours
        tool = "/usr/sbin/postqueue" if who == "real" else "postqueue"
        out = mta(tool, "-c", conf, "-p").stdout
        # Each message's ID and where its size column ends (sizes themselves differ).
        heads = [(m[1], m.end(3) - m.start()) for m in re.finditer(r"(?m)^(\w+)( +)(\d+) ", out)]
        listings.append((order, heads))
    assert [h[0] for h in listings[0][1]] == listings[0][0]
    assert listings[1] == listings[0]


def test_command_refusals_logged_as_postfix(tmp_path):
    # Once main.cf is read, postqueue's and postsuper's warnings and fatal errors go to the
    # log as well as to stderr, as Postfix's (msg_syslog_init).
    from tests.smtpd.test_postfix_differential import running_postfix

    commands = [
        ("postqueue", "-s", "bad..x"),
        ("postqueue", "-i", "bad.id"),
        ("postqueue", "-s", "x.example"),
        ("postsuper", "-d", "bad!id"),
    ]
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(logging) as (_port, d):
        theirs = [run_postfix(f"/usr/sbin/{tool}", "-c", str(d), *args) for tool, *args in commands]
        text = wait_for_log(d / "maillog", r"postfix/postsuper\[", 2)
        their_log = [
            ln.split("]: ", 1)[1]
            for ln in text.splitlines()
            if re.search(r" postfix/post(queue|super)\[", ln)
        ]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\nmaillog_file = {tmp_path}/maillog\n"
        f"maillog_file_prefixes = {tmp_path}\n"
    )
    (tmp_path / "maillog").write_text("")
    for (tool, *args), their in zip(commands, theirs, strict=True):
        mine = run_ours(tool, "-c", str(conf), *args)
        assert (mine.returncode, mine.stderr) == (their.returncode, their.stderr), args
    our_log = [ln.split("]: ", 1)[1] for ln in (tmp_path / "maillog").read_text().splitlines()]
    assert our_log == their_log
    assert 'fatal: Cannot flush mail queue - invalid destination: "bad..x"' in our_log
    assert "warning: invalid mail queue id: bad!id" in our_log
