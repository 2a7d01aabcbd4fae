"""open_table: one open per process, reopened when the file changes; atomic rebuilds;
errors as TableError (never a traceback in a CLI); warnings to the installed sink."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from oxipost import maps
from oxipost._core import maps as core
from oxipost.config import load_config
from oxipost.maps import TableConfigError, TableError, open_table

from tests.conftest import check_stub, run_postfix


@pytest.fixture
def warnings_seen():
    seen: list[str] = []
    maps.set_warning_sink(seen.append)
    yield seen
    maps.set_warning_sink(maps._stderr_warning)


def build(path: Path, text: str) -> None:
    path.write_text(text)
    assert (
        core.build_cdb(text.encode(), str(path), str(path), str(path) + ".cdb", True, False, "warn")
        == []
    )


def test_a_table_is_opened_once_and_reopened_after_a_rebuild(tmp_path):
    t = tmp_path / "t"
    build(t, "alice one\n")
    first = open_table(f"hash:{t}")
    assert open_table(f"hash:{t}") is first
    assert first.lookup("ALICE") == "one"
    build(t, "alice two\nbob b\n")
    again = open_table(f"hash:{t}")
    assert again is not first
    assert (again.lookup("alice"), again.lookup("bob")) == ("two", "b")


def test_texthash_and_regexp_notice_an_edited_file(tmp_path):
    t, r = tmp_path / "t", tmp_path / "r"
    t.write_text("a 1\n")
    r.write_text("/^a/ 1\n")
    assert open_table(f"texthash:{t}").lookup("a") == "1"
    assert open_table(f"regexp:{r}").lookup("ab") == "1"
    t.write_text("a 22\n")
    r.write_text("/^a/ 22\n")
    assert open_table(f"texthash:{t}").lookup("a") == "22"
    assert open_table(f"regexp:{r}").lookup("ab") == "22"


def test_readers_never_see_a_half_written_table(tmp_path):
    """A rebuild is temp file + fsync + rename: every open sees the old or the new table."""
    t = tmp_path / "big"
    old = "".join(f"k{i} old\n" for i in range(20000))
    new = "".join(f"k{i} new\n" for i in range(20000))
    build(t, old)
    stop = threading.Event()
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            cdb = core.Cdb(str(t) + ".cdb")
            values = {cdb.get(b"k0"), cdb.get(b"k19999")}
            if len(values) != 1 or None in values:
                bad.append(repr(values))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for i in range(30):
        build(t, new if i % 2 else old)
    stop.set()
    for th in threads:
        th.join()
    assert bad == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_errors_are_table_errors_with_postfix_words(tmp_path):
    # The file each type of Postfix's would open: hash: a Berkeley DB .db, cdb: a .cdb.
    with pytest.raises(TableError, match=r"open database .*/nope\.db: No such file or directory"):
        open_table(f"hash:{tmp_path}/nope")
    with pytest.raises(TableError, match=r"open database .*/nope\.cdb: No such file or direc"):
        open_table(f"cdb:{tmp_path}/nope")
    (tmp_path / "junk.cdb").write_bytes(b"\xff" * 4096)
    with pytest.raises(TableError, match=r"unable to init .*junk\.cdb: Protocol error"):
        open_table(f"cdb:{tmp_path}/junk")
    with pytest.raises(TableError, match="unsupported dictionary type: bogus"):
        open_table("bogus:x")
    with pytest.raises(TableError, match="query error"):
        open_table("fail:x").lookup("k")


def test_a_postfix_berkeley_db_is_what_postfix_says_of_a_db_it_cannot_read(tmp_path):
    """A hash: table left as real Postfix's postmap built it (its .db, no .cdb of ours):
    Postfix's words for a .db its library cannot read, as Postfix's postmap says them for
    a .db that is not one."""
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    (tmp_path / "t").write_text("k v\n")
    run_postfix("/usr/sbin/postmap", "-c", str(tmp_path), f"hash:{tmp_path}/t").check_returncode()
    with pytest.raises(TableError) as ours:
        open_table(f"hash:{tmp_path}/t")
    (tmp_path / "junk.db").write_bytes(b"\xff" * 4096)
    real = run_postfix("/usr/sbin/postmap", "-c", str(tmp_path), "-q", "k", f"hash:{tmp_path}/junk")
    assert f"postmap: fatal: open database {tmp_path}/junk.db: Invalid argument" in real.stderr
    assert str(ours.value) == f"open database {tmp_path}/t.db: Invalid argument"


def test_table_warnings_go_to_the_sink_once_per_open(tmp_path, warnings_seen):
    r = tmp_path / "bad"
    r.write_text("/a(/ x\n/b/ y\n")
    table = open_table(f"pcre:{r}")
    open_table(f"pcre:{r}")
    assert table.lookup("b") == "y"
    assert warnings_seen == [
        f"pcre map {r}, line 1: error in regex at offset 2: missing closing parenthesis"
    ]


def test_no_regsub_open_is_its_own_table_and_reaches_nested_tables(tmp_path, warnings_seen):
    """Postfix's DICT_FLAG_NO_REGSUB (local(8)'s alias_maps, virtual(8)'s maps): the `$n`
    rule is skipped at open with Postfix's warning and the next rule answers; the same
    file opened without it in the same process (cleanup's header_checks, smtpd's access
    tables) keeps its substitution, however the two opens interleave."""
    r = tmp_path / "re"
    r.write_text("/^run-(.*)$/ |/bin/echo $1\n/./ plain\n")
    strict = open_table(f"regexp:{r}", no_regsub=True)
    assert strict.lookup("run-x;id") == "plain"
    assert open_table(f"regexp:{r}").lookup("run-x;id") == "|/bin/echo x;id"
    assert open_table(f"regexp:{r}", no_regsub=True) is strict
    refused = "regular expression substitution is not allowed: skipping this rule"
    assert warnings_seen == [f"regexp map {r}, line 1: {refused}"]
    # proxy: opens its table directly, as Postfix 3.7's proxy client does for
    # DICT_FLAG_NO_PROXY; unionmap: and pipemap: pass the flag to what they combine.
    for spec in (f"proxy:pcre:{r}", f"unionmap:{{pcre:{r}}}", f"pipemap:{{pcre:{r}}}"):
        assert open_table(spec, no_regsub=True).lookup("run-x") == "plain", spec
        assert open_table(spec).lookup("run-x") == "|/bin/echo x", spec
    assert warnings_seen[1:] == [f"pcre map {r}, line 1: {refused}"]


def test_union_and_pipe_and_lookup_many(tmp_path):
    u = open_table("unionmap:{inline:{a=1}, static:2}")
    assert u.lookup("a") == "1,2"
    p = open_table("pipemap:{inline:{a=b}, inline:{b=c}}")
    assert (p.lookup("a"), p.lookup("b")) == ("c", None)
    build(tmp_path / "m", "x 1\ny 2\n")
    table = open_table(f"hash:{tmp_path}/m")
    assert maps.lookup_many(table, ["X", "z", "y"]) == ["1", None, "2"]


def test_postmap_builds_a_large_table_without_a_traceback_on_bad_input(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"good value\nno-value\n\x00nul value\n" + b"k v\n" * 1000)
    (tmp_path / "main.cf").write_text("")
    p = subprocess.run(
        [sys.executable, "-m", "oxipost.cli.postmap", "-c", str(tmp_path), f"hash:{src}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0
    assert "Traceback" not in p.stderr
    assert "line 2: expected format: key whitespace value" in p.stderr
    assert open_table(f"hash:{src}").lookup("good") == "value"


def test_the_maps_stub_matches_the_extension():
    stub = Path(__file__).parents[2] / "python" / "oxipost" / "_core_stubs" / "maps.pyi"
    check_stub(core, stub)


@pytest.mark.skipif(os.geteuid() != 0, reason="files of other users need root")
def test_table_owner_as_postfix_dict_owner(tmp_path):
    # Postfix's DICT_OWNER, which local(8) gives an alias's commands and files: the uid
    # owning the file as opened (the .cdb for hash:), 0 for a table without a file, and
    # for tables combined the one user besides root, unknown (None) with two users.
    paths = {}
    for name, uid in [("daemon", 1), ("nobody", 65534), ("root", 0)]:
        paths[name] = tmp_path / name
        build(paths[name], "k v\n")
        os.chown(paths[name], 0, 0)
        os.chown(str(paths[name]) + ".cdb", uid, uid)
    os.chown(paths["daemon"], 1, 1)
    assert open_table(f"hash:{paths['nobody']}").owner == 65534
    assert open_table(f"texthash:{paths['nobody']}").owner == 0
    assert open_table(f"texthash:{paths['daemon']}").owner == 1
    rules = tmp_path / "rules"
    rules.write_text("/^k$/ v\n")
    os.chown(rules, 1, 1)
    assert open_table(f"regexp:{rules}").owner == 1
    assert open_table("regexp:{{/^k$/ v}}").owner == 0
    assert open_table("inline:{k=v}").owner == 0
    assert open_table("static:x").owner == 0
    one = f"unionmap:{{hash:{paths['root']}, hash:{paths['nobody']}}}"
    two = f"pipemap:{{hash:{paths['nobody']}, texthash:{paths['daemon']}}}"
    assert open_table(one).owner == 65534
    assert open_table(two).owner is None
    assert open_table(f"unionmap:{{{two}, hash:{paths['root']}}}").owner is None


def latin1(text: bytes) -> str:
    """Text with a byte that is not UTF-8, as smtpd and cleanup hand it on."""
    return text.decode("utf-8", "surrogateescape")


def test_a_key_that_is_not_utf8_is_refused_as_postfix_dict_utf8_does(tmp_path, warnings_seen):
    rx = tmp_path / "rx"
    rx.write_bytes(b"/^Subject:.*spam/ REJECT spam\n/caf/ caf\n")
    h = tmp_path / "h"
    h.write_bytes(b"caf\xe9@example.test latin\nplain@example.test plain\n")
    assert (
        core.build_cdb(h.read_bytes(), str(h), str(h), str(h) + ".cdb", True, False, "warn") == []
    )
    key = latin1(b"caf\xe9@example.test")
    specs = [f"regexp:{rx}", f"pcre:{rx}", f"hash:{h}", f"texthash:{h}", "static:{x}"]
    for spec in specs:
        assert open_table(spec).lookup(key) is None, spec
        assert maps.lookup_many(open_table(spec), [key]) == [None], spec
    shown = 'non-UTF-8 key "caf?@example.test": malformed UTF-8 or invalid codepoint'
    # An indexed table is named by its file, as Postfix's hash:NAME.db.
    names = [f"{spec}.db" if spec == f"hash:{h}" else spec for spec in specs]
    expected = [f"{name}: {shown}" for name in names for _ in (1, 2)]
    # texthash: leaves the line out as it reads the file, as Postfix's dict_thash does.
    skipped = f'{h}, line 1: non-UTF-8 input "caf?@example.test latin" -- ignoring this line'
    expected.insert(names.index(f"texthash:{h}") * 2, skipped)
    assert warnings_seen == expected
    # A key that is UTF-8 beside it is still looked up, in one batch or one at a time.
    assert maps.lookup_many(open_table(f"hash:{h}"), ["plain@example.test", key]) == [
        "plain",
        None,
    ]
    assert open_table(f"regexp:{rx}").lookup("caf\u00e9@example.test") == "caf"
    warnings_seen.clear()
    union = f"unionmap:{{hash:{h}, regexp:{rx}}}"
    assert open_table(union).lookup(key) is None
    assert warnings_seen == [f"{union}: {shown}"]
    # No error for fail: either, as dict_utf8 refuses the key before the table is asked.
    assert open_table("fail:x").lookup(key) is None


def test_a_hash_value_that_is_not_utf8_is_a_config_error_as_postfix_dict_utf8(
    tmp_path, warnings_seen
):
    """A value postmap stored with latin-1 bytes: with smtputf8_enable = yes a query error
    of Postfix's DICT_ERR_CONFIG kind, named by the table's file, one at a time or in a
    batch; without the UTF-8 check the bytes are the answer."""
    h = tmp_path / "h"
    h.write_bytes(b"latin@example.test caf\xe9\nplain@example.test plain\n")
    assert (
        core.build_cdb(h.read_bytes(), str(h), str(h), str(h) + ".cdb", True, False, "warn") == []
    )
    table = open_table(f"hash:{h}")
    for ask in (table.lookup, lambda k: maps.lookup_many(table, ["plain@example.test", k])):
        with pytest.raises(TableConfigError) as failed:
            ask("latin@example.test")
        assert (failed.value.table, failed.value.key) == (f"hash:{h}.db", "latin@example.test")
    assert (
        warnings_seen
        == [
            f'hash:{h}.db: key "latin@example.test": non-UTF-8 value "caf?": '
            "malformed UTF-8 or invalid codepoint"
        ]
        * 2
    )
    assert table.lookup("plain@example.test") == "plain"
    assert open_table(f"hash:{h}", utf8=False).lookup("latin@example.test") == latin1(b"caf\xe9")


def test_keys_that_are_not_utf8_are_matched_as_bytes_without_utf8(tmp_path, warnings_seen):
    # header_checks and body_checks (no DICT_FLAG_UTF8_REQUEST), or smtputf8_enable = no.
    subject = latin1(b"Subject: caf\xe9 spam")
    rx = tmp_path / "rx"
    rx.write_bytes(b"/^Subject:.*spam/ REJECT spam\n/^raw caf\xe9$/ raw byte rule\n")
    table = open_table(f"regexp:{rx}", utf8=False)
    assert table.lookup(subject) == "REJECT spam"
    assert table.lookup(latin1(b"raw caf\xe9")) == "raw byte rule"
    assert maps.lookup_many(table, ["x", subject]) == [None, "REJECT spam"]
    assert open_table(f"pcre:{rx}", utf8=False).lookup(subject) == "REJECT spam"
    # hash: finds the raw bytes postmap stored, folding only ASCII, as Postfix's lowercase().
    h = tmp_path / "h"
    h.write_bytes(b"caf\xe9@example.test latin\n")
    assert (
        core.build_cdb(h.read_bytes(), str(h), str(h), str(h) + ".cdb", True, False, "warn") == []
    )
    key = latin1(b"CAF\xe9@Example.TEST")
    cfg_off = tmp_path / "cf"
    cfg_off.mkdir()
    (cfg_off / "main.cf").write_text("smtputf8_enable = no\n")
    cfg = load_config(str(cfg_off))
    assert open_table(f"hash:{h}", cfg).lookup(key) == "latin"
    assert maps.lookup_many(open_table(f"hash:{h}", cfg), [key, "x"]) == ["latin", None]
    assert open_table(f"texthash:{h}", cfg).lookup(key) == "latin"
    c = tmp_path / "c"
    c.write_text("127.0.0.0/8 local\n")
    assert open_table(f"cidr:{c}", cfg).lookup(key) is None
    union = open_table(f"unionmap:{{hash:{h}, texthash:{h}, regexp:{rx}}}", cfg)
    assert union.lookup(key) == "latin,latin"
    assert warnings_seen == []


@pytest.fixture
def daemon_sinks():
    """Warnings and open errors as a daemon logs them (oxipost.master.child)."""
    seen: list[str] = []
    maps.set_warning_sink(lambda text: seen.append("warning: " + text))
    maps.allow_surrogates(lambda text: seen.append("error: " + text))
    yield seen
    maps.allow_surrogates(None)
    maps.set_warning_sink(maps._stderr_warning)


@pytest.mark.parametrize(("kind", "suffix"), [("hash", ".db"), ("cdb", ".cdb")])
def test_a_daemon_goes_on_with_a_surrogate(tmp_path, daemon_sinks, kind, suffix):
    """Postfix's dict_surrogate: the open failure logged once, as an error, when the table
    is opened; each lookup warns and fails; a rebuilt table is opened for real."""
    spec = f"{kind}:{tmp_path}/later"
    reason = f"open database {tmp_path}/later{suffix}: No such file or directory"
    table = open_table(spec)
    assert daemon_sinks == [f"error: {reason}"]
    assert open_table(spec) is table  # the cache: no second error, no stat of a new file
    assert daemon_sinks == [f"error: {reason}"]
    for _ in range(2):
        with pytest.raises(maps.TableUnavailable) as failed:
            table.lookup("k")
        assert failed.value.spec == spec
    assert daemon_sinks[1:] == [f"warning: {spec} is unavailable. {reason}"] * 2
    # A pattern table: an address search gives it the whole address only.
    assert not table.fixed
    build(tmp_path / "later", "k v\n")
    assert open_table(spec).lookup("k") == "v"


def test_a_surrogate_in_a_search_warns_as_maps_find(tmp_path, daemon_sinks):
    from oxipost.maps.search import PARTIAL, maps_find

    spec = f"hash:{tmp_path}/gone"
    reason = f"open database {tmp_path}/gone.db: No such file or directory"
    table = open_table(spec)
    with pytest.raises(TableError):
        maps_find([table], [("@example.com", PARTIAL), "a@example.com"])
    assert daemon_sinks == [
        f"error: {reason}",
        f"warning: {spec} is unavailable. {reason}",
        f'warning: {spec} lookup error for "a@example.com"',
    ]


def test_a_table_type_that_is_none_is_no_surrogate(daemon_sinks):
    """dict_open's "unsupported dictionary type" stops a Postfix daemon: no table stands
    in for it here, the lookup that wants it fails."""
    with pytest.raises(TableError, match="unsupported dictionary type: bogus"):
        open_table("bogus:x")
    assert daemon_sinks == []


def test_a_part_of_a_daemon_logs_its_tables_itself(tmp_path, daemon_sinks):
    """cleanup in smtpd logs its tables' lines as cleanup (oxipost.maps.logging_to)."""
    part: list[str] = []

    class PartLog:
        def warning(self, text: str) -> None:
            part.append("warning: " + text)

        def error(self, text: str) -> None:
            part.append("error: " + text)

    spec = f"cdb:{tmp_path}/none"
    with maps.logging_to(PartLog()):
        with pytest.raises(TableError):
            open_table(spec).lookup("k")
    reason = f"open database {tmp_path}/none.cdb: No such file or directory"
    assert part == [f"error: {reason}", f"warning: {spec} is unavailable. {reason}"]
    assert daemon_sinks == []
