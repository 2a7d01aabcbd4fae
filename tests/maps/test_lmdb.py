"""lmdb: tables beside Debian's postfix-lmdb: the same file format both ways (a table one
postmap or postalias built, updated or pruned is read by the other), the same answers,
warnings, errors and exit codes, the map that grows past lmdb_map_size, and the fcntl
locks that keep a reader and a writer of either MTA out of each other's way."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from oxipost import maps

from tests.maps.test_postmap_differential import (
    POSTALIAS,
    POSTMAP,
    TRICKY,
    both,
    lines,
    ours,
    theirs,
)

pytestmark = pytest.mark.postfix


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "main.cf").write_text("")
    return tmp_path


KEYS = "k1\nK1\nnoval\nk2\nk3\nlonely\nabsent\n"


def _tool(tool: str) -> str:
    return {"postmap": POSTMAP, "postalias": POSTALIAS}[tool]


def test_a_table_built_by_either_is_read_by_the_other(work):
    (work / "src").write_bytes(TRICKY)
    a, b = both("postmap", work, "lmdb:src")
    assert (a[0], lines(a[2])) == (b[0], lines(b[2]))
    # Each tool's build is read by both tools: the same answers and the same dump.
    assert ours("postmap", work, "lmdb:src")[0] == 0
    (work / "src.lmdb").rename(work / "ours.lmdb")
    assert theirs(POSTMAP, work, "lmdb:src")[0] == 0
    (work / "src.lmdb").rename(work / "theirs.lmdb")
    answers = set()
    for table in ("lmdb:ours", "lmdb:theirs"):
        a, b = both("postmap", work, "-q", "-", table, stdin=KEYS)
        assert a == b, table
        answers.add(a)
        a, b = both("postmap", work, "-s", table)
        assert a == b, table
        answers.add(a)
        for key in ("K1", "k3", "absent"):
            a, b = both("postmap", work, "-q", key, table)
            assert a == b, (table, key)
        a, b = both("postmap", work, "-fq", "K1", table)
        assert a == b
    # Both files hold the same entries.
    assert len(answers) == 2


def test_keys_and_values_are_stored_with_a_null_byte_as_postfix(work):
    import lmdb

    (work / "src").write_text("Key value\n")
    assert theirs(POSTMAP, work, "lmdb:src")[0] == 0
    (work / "src.lmdb").rename(work / "theirs.lmdb")
    assert ours("postmap", work, "lmdb:src")[0] == 0
    stored = []
    for name in ("src.lmdb", "theirs.lmdb"):
        env = lmdb.open(str(work / name), subdir=False, lock=False, readonly=True)
        with env.begin() as txn:
            stored.append(list(txn.cursor()))
        env.close()
    assert stored[0] == stored[1] == [(b"key\0", b"value\0")]


def test_keys_stored_without_a_null_byte_are_found_too(work):
    """dict_lmdb tries KEY\\0 then KEY: a file some other program wrote without."""
    import lmdb

    env = lmdb.open(str(work / "plain.lmdb"), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"a", b"one")
        txn.put(b"b", b"two\0")
    env.close()
    for args in (["-q", "a", "lmdb:plain"], ["-q", "-", "lmdb:plain"], ["-s", "lmdb:plain"]):
        a, b = both("postmap", work, *args, stdin="a\nb\nc\n")
        assert a == b, args


@pytest.mark.parametrize("name", ["alias", "dups"])
def test_postalias_stores_what_postfix_stores(work, name):
    source = {
        "alias": 'root: a, b\nFoo: "x y"\nbad line\nlist: :include:/x\n',
        "dups": "a: b\nA: c\n\na: d\n",
    }[name]
    (work / name).write_text(source)
    a, b = both("postalias", work, f"lmdb:{name}")
    assert (a[0], lines(a[2])) == (b[0], lines(b[2]))
    (work / f"{name}.lmdb").rename(work / "ours.lmdb")
    assert theirs(POSTALIAS, work, f"lmdb:{name}")[0] == 0
    keys = "root\nfoo\nlist\na\n@\nYP_MASTER_NAME\nabsent\n"
    for table in ("lmdb:ours", f"lmdb:{name}"):
        for args in (["-q", "-"], ["-fq", "-"]):
            a, b = both("postalias", work, *args, table, stdin=keys)
            assert a == b, (table, args)
        a, b = both("postalias", work, "-s", table)
        # Postfix's NIS entries: the time of the build (either build's), and the host.
        stamp = re.compile(r"^YP_LAST_MODIFIED:\t\d{10}$", re.M)
        assert stamp.search(a[1]) and stamp.search(b[1])
        assert (a[0], stamp.sub("", a[1]), a[2]) == (b[0], stamp.sub("", b[1]), b[2])


def _steps(work: Path, table: str) -> list:
    """-i, -d and -d - on one table, each with both tools on a copy of it: what each
    said, and the table each left behind dumped by the other."""
    seen = []
    steps = [
        (["-i"], "new one\nK1 replaced\nnew dup\n"),
        (["-ri"], "k1 replaced\nadded two\n"),
        (["-d", "NEW"], None),
        (["-d", "absent"], None),
        (["-d", "-"], "k2\nk3 k3\n  noval\nabsent\n"),
        (["-wi"], "k1 again\n"),
    ]
    for args, stdin in steps:
        shutil.copy(work / f"{table}.lmdb", work / "copy.lmdb")
        a = ours("postmap", work, *args, f"lmdb:{table}", stdin=stdin)
        b = theirs(POSTMAP, work, *args, "lmdb:copy", stdin=stdin)
        assert a == (b[0], b[1], b[2].replace("lmdb:copy", f"lmdb:{table}")), args
        assert theirs(POSTMAP, work, "-s", f"lmdb:{table}") == ours(
            "postmap", work, "-s", "lmdb:copy"
        )
        seen.append(a)
    return seen


def test_updates_and_deletions_as_postfix(work):
    (work / "src").write_bytes(TRICKY)
    assert theirs(POSTMAP, work, "lmdb:src")[0] == 0
    said = _steps(work, "src")
    assert [s[0] for s in said] == [0, 0, 0, 1, 0, 0]
    # A table that is not there: -i creates it, and so does -d (which finds nothing).
    for args, stdin in ((["-i"], "a b\n"), (["-d", "a"], None)):
        a = ours("postmap", work, *args, "lmdb:fresh1", stdin=stdin)
        b = theirs(POSTMAP, work, *args, "lmdb:fresh2", stdin=stdin)
        assert (a[0], a[1], a[2].replace("fresh1", "fresh2")) == b
        assert (
            ours("postmap", work, "-s", "lmdb:fresh1")[1]
            == ours("postmap", work, "-s", "lmdb:fresh2")[1]
        )
        (work / "fresh1.lmdb").unlink()
        (work / "fresh2.lmdb").unlink()


@pytest.mark.parametrize(
    "content", [None, b"", b"junk\n" * 2000, "dir"], ids=["missing", "empty", "junk", "dir"]
)
@pytest.mark.parametrize("tool", ["postmap", "postalias"])
def test_a_table_that_does_not_open_is_postfix_fatal(work, content, tool):
    if content == "dir":
        (work / "bad.lmdb").mkdir()
    elif content is not None:
        (work / "bad.lmdb").write_bytes(content)
    for args in (["-q", "x"], ["-q", "-"], ["-s"]):
        a, b = both(tool, work, *args, "lmdb:bad", stdin="x\n")
        assert a == b, args
        assert "Traceback" not in a[2]
        assert a[0] == 1 and "fatal: open database bad.lmdb: " in a[2]


def test_build_errors_as_postfix(work):
    # A source that is not there: nothing is created.
    a, b = both("postmap", work, "lmdb:nosource")
    assert a == b
    assert not (work / "nosource.lmdb").exists()
    # A table in a directory that is not there.
    (work / "src").write_text("a b\n")
    a, b = both("postmap", work, "-i", "lmdb:nodir/src", stdin="a b\n")
    assert a == b
    # A table that is not LMDB's, or a directory: no writer touches it.
    (work / "junk.lmdb").write_text("junk\n")
    (work / "junk").write_text("a b\n")
    (work / "dir.lmdb").mkdir()
    (work / "dir").write_text("a b\n")
    for table in ("lmdb:junk", "lmdb:dir"):
        for args in ([], ["-i"], ["-d", "a"]):
            a, b = both("postmap", work, *args, table, stdin="a b\n")
            assert a == b, (table, args)
            assert a[0] == 1 and "fatal: open database " in a[2]
    assert (work / "junk.lmdb").read_text() == "junk\n"


def test_a_table_older_than_its_source_is_warned_of_as_postfix(work):
    (work / "src").write_text("a b\nc d\n")
    assert ours("postmap", work, "lmdb:src")[0] == 0
    now = time.time()
    os.utime(work / "src.lmdb", (now - 1000, now - 1000))
    os.utime(work / "src", (now - 200, now - 200))
    for tool, args in (
        ("postmap", ["-q", "a"]),
        ("postmap", ["-s"]),
        ("postalias", ["-q", "-"]),
        ("postmap", ["-d", "zz"]),
    ):
        a, b = both(tool, work, *args, "lmdb:src", stdin="a\n")
        assert a == b, args
        assert "warning: database src.lmdb is older than source file src" in a[2]
        os.utime(work / "src.lmdb", (now - 1000, now - 1000))
    # A source changed in the last 100 seconds: a postmap may be on its way.
    os.utime(work / "src", (now - 50, now - 50))
    a, b = both("postmap", work, "-q", "a", "lmdb:src")
    assert a == b == (0, "b\n", "")


def test_a_full_map_grows_as_postfix(work):
    """lmdb_map_size is where a writer starts: a table that needs more doubles it."""
    (work / "conf" / "main.cf").write_text("lmdb_map_size = 65536\n")
    src = "".join(f"key{i} {'v' * 40} {i}\n" for i in range(3000))
    (work / "big").write_text(src)
    (work / "big2").write_text(src)
    a = ours("postmap", work, "lmdb:big")
    b = theirs(POSTMAP, work, "lmdb:big2")
    assert a == b == (0, "", "")
    assert os.path.getsize(work / "big.lmdb") > 65536
    for table in ("lmdb:big", "lmdb:big2"):
        keys = "key0\nkey1500\nkey2999\nkey3000\n"
        a, b = both("postmap", work, "-q", "-", table, stdin=keys)
        assert a == b and a[1].count("\n") == 3
        a, b = both("postmap", work, "-s", table)
        assert a == b and a[1].count("\n") == 3000
    # An update that no longer fits grows the map too.
    more = "".join(f"more{i} {'w' * 60}\n" for i in range(3000))
    a = ours("postmap", work, "-i", "lmdb:big", stdin=more)
    b = theirs(POSTMAP, work, "-i", "lmdb:big2", stdin=more)
    assert a == b == (0, "", "")
    a, b = both("postmap", work, "-q", "more2999", "lmdb:big")
    assert a == b and a[1] == "w" * 60 + "\n"


def _blocked(cmd: list[str], work: Path, stdin: str | None, how: int, target: Path) -> None:
    """`cmd` waits while this process holds a `how` fcntl lock on target, and finishes
    once it lets go."""
    (work / "stdin").write_text(stdin or "")
    fd = os.open(target, os.O_RDWR)
    try:
        fcntl.lockf(fd, how)
        with open(work / "stdin") as keys:
            p = subprocess.Popen(
                cmd, cwd=work, stdin=keys, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        time.sleep(1.5)
        assert p.poll() is None, (cmd, p.communicate())
        fcntl.lockf(fd, fcntl.LOCK_UN)
        _, err = p.communicate(timeout=60)
        assert p.returncode in (0, 1) and "fatal" not in err, (cmd, err)
    finally:
        os.close(fd)


def test_readers_and_writers_of_either_mta_take_the_same_locks(work):
    (work / "src").write_text("a b\n")
    assert ours("postmap", work, "lmdb:src")[0] == 0
    table = work / "src.lmdb"
    conf = ["-c", str(work / "conf")]
    mine = [sys.executable, "-m", "oxipost.cli.postmap", *conf]
    postfix = [POSTMAP, *conf]
    # A writer waits for a reader's shared lock; a reader waits for a writer's lock.
    # Postfix's postmap -i takes none (its mkmap leaves an lmdb: table unlocked); ours
    # waits as its -d does, so that no reader's snapshot is reused under it.
    for cmd in (postfix, mine):
        _blocked([*cmd, "lmdb:src"], work, None, fcntl.LOCK_SH, table)
        _blocked([*cmd, "-d", "a", "lmdb:src"], work, None, fcntl.LOCK_SH, table)
        _blocked([*cmd, "-q", "a", "lmdb:src"], work, None, fcntl.LOCK_EX, table)
        _blocked([*cmd, "-s", "lmdb:src"], work, None, fcntl.LOCK_EX, table)
    _blocked([*mine, "-i", "lmdb:src"], work, "c d\n", fcntl.LOCK_SH, table)


def test_a_daemon_reads_while_postmap_updates(work, monkeypatch):
    """A table open in this process (as in a daemon) answers every lookup while both
    MTAs' postmap -i and -d change it, each answer one that a committed table held, and
    sees each change as soon as it is committed."""
    monkeypatch.chdir(work)
    (work / "src").write_text("".join(f"k{i} v{i}\n" for i in range(200)))
    assert ours("postmap", work, "lmdb:src")[0] == 0
    stop = threading.Event()
    errors: list[str] = []

    def read() -> None:
        while not stop.is_set():
            table = maps.open_table(f"lmdb:{work}/src")
            try:
                for i in (0, 57, 199):
                    if table.lookup(f"k{i}") not in (f"v{i}", f"w{i}"):
                        errors.append(f"k{i}: {table.lookup(f'k{i}')!r}")
            except maps.TableError as e:
                errors.append(str(e))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(3):
            for tool in (POSTMAP, None):
                flip = "".join(f"k{i} w{i}\n" for i in range(200))
                back = "".join(f"k{i} v{i}\n" for i in range(200))
                for stdin in (flip, back):
                    args = ("-ri", "lmdb:src")
                    if tool is None:
                        done = ours("postmap", work, *args, stdin=stdin)
                    else:
                        done = theirs(tool, work, *args, stdin=stdin)
                    assert done == (0, "", ""), round_
                    expected = stdin.split("\n")[57].split()[1]
                    assert maps.open_table(f"lmdb:{work}/src").lookup("k57") == expected
            added = ours("postmap", work, "-i", "lmdb:src", stdin=f"r{round_} x\n")
            assert added[0] == 0
            assert maps.open_table(f"lmdb:{work}/src").lookup(f"R{round_}") == "x"
            assert theirs(POSTMAP, work, "-d", f"r{round_}", "lmdb:src")[0] == 0
            assert maps.open_table(f"lmdb:{work}/src").lookup(f"r{round_}") is None
    finally:
        stop.set()
        reader.join()
    assert errors == []


def test_a_daemon_reports_a_table_that_does_not_open_as_postfix(work, monkeypatch):
    monkeypatch.chdir(work)
    reported: list[str] = []
    previous = maps.allow_surrogates(reported.append)
    try:
        table = maps.open_table("lmdb:nosuch")
        with pytest.raises(maps.TableUnavailable):
            table.lookup("a")
    finally:
        maps.allow_surrogates(previous)
    assert reported == ["open database nosuch.lmdb: No such file or directory"]
