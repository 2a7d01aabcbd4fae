"""sqlite: tables beside real Postfix's (Debian's postfix-sqlite): `postmap -q KEY
sqlite:FILE` from both on the same configuration files and databases, compared for
exit status, output and warnings."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from oxipost.maps import TableError, open_table, set_warning_sink

from tests.conftest import POSTFIX_POSTCONF, run_ours, run_postfix
from tests.maps.test_postmap_differential import POSTMAP, lines, ours, theirs

pytestmark = pytest.mark.postfix

ROWS = [
    ("a@example.com", "x"),
    ("a@example.com", "y"),
    ("null@example.com", None),
    ("empty@example.com", ""),
    ("o'q@example.com", "quoted"),
    ("@example.com", "catch-all"),
    ("example.com", "the domain"),
    ("a", "bare user"),
    ("p%s", "percent"),
    ("int@example.com", 42),
    ("real@example.com", 2.0),
    ("big@example.com", 1e20),
    ("blob@example.com", b"bl\x00ob"),
    ("addr@example.com", "fwd@mail.example.net"),
    ("addr@example.com", "@only.domain"),
    ("addr@example.com", "nodomain"),
    ("user@mail.example.com", "deep"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sqlite")
    (d / "conf").mkdir()
    (d / "conf" / "main.cf").write_text("")
    (d / "garbage").write_text("this is no database, but long enough to be read as one\n" * 4)
    with sqlite3.connect(d / "db.sqlite") as db:
        db.execute("CREATE TABLE v (k TEXT, v)")
        db.executemany("INSERT INTO v VALUES (?, ?)", ROWS)
        db.execute("CREATE TABLE parts (k TEXT, v TEXT)")
        db.executemany(
            "INSERT INTO parts VALUES (?, ?)",
            [("a", "user a"), ("example.com", "domain"), ("com", "tld"), ("mail", "third")],
        )
    db.close()
    return d


def table(work: Path, name: str, text: str) -> str:
    """A configuration file `name` in work holding text; its sqlite: spec."""
    (work / name).write_text(text.replace("{dir}", str(work)))
    return f"sqlite:{work / name}"


def both_answer(work: Path, spec: str, keys: list[str]) -> None:
    """Each key asked alone (postmap -q KEY) of both: the same status, output and
    warnings."""
    for key in keys:
        a = ours("postmap", work, "-q", key, spec)
        b = theirs(POSTMAP, work, "-q", key, spec)
        assert (a[0], a[1], lines(a[2])) == (b[0], b[1], lines(b[2])), (spec, key)


KEYS = [
    "a@example.com",
    "A@EXAMPLE.COM",
    "null@example.com",
    "empty@example.com",
    "o'q@example.com",
    "@example.com",
    "example.com",
    "a",
    "p%s",
    "int@example.com",
    "real@example.com",
    "big@example.com",
    "blob@example.com",
    "addr@example.com",
    "absent@example.com",
    "x' OR '1'='1",
]


def test_rows_null_and_empty_results_and_quoting_as_postfix(work: Path) -> None:
    """Every row's first column comma-joined; NULL skipped, an empty value warned of;
    integers, reals (SQLite's rendering) and blobs as sqlite3_column_text gives them; a
    quote in the key doubled, so that no key changes the query; keys folded."""
    spec = table(
        work, "plain.cf", "dbpath = {dir}/db.sqlite\nquery = SELECT v, k FROM v WHERE k='%s'\n"
    )
    both_answer(work, spec, KEYS)
    keys = "".join(f"{k}\n" for k in KEYS)
    a = ours("postmap", work, "-q", "-", spec, stdin=keys)
    b = theirs(POSTMAP, work, "-q", "-", spec, stdin=keys)
    assert (a[0], a[1], lines(a[2])) == (b[0], b[1], lines(b[2]))
    assert "a@example.com\tx,y\n" in b[1]


@pytest.mark.parametrize(
    ("query", "result_format"),
    [
        ("SELECT v FROM parts WHERE k='%u'", "%s"),
        ("SELECT v FROM parts WHERE k='%d'", "[%s]"),
        ("SELECT v FROM parts WHERE k='%1'", "%s for %U at %D (%S) 100%%"),
        ("SELECT v FROM parts WHERE k='%3'", "%2.%1 %s"),
        ("SELECT '%s' || ' ' || '%U' || ' ' || '%D'", "%s"),
        ("SELECT v FROM v WHERE k='%s'", "%u at %d"),
        ("SELECT v FROM v WHERE k='%s'", "user %u"),
        ("SELECT v FROM v WHERE k='%s'", "smtp:[%d]"),
    ],
)
def test_query_and_result_expansions_as_postfix(work: Path, query: str, result_format: str) -> None:
    """%s %u %d %S %U %D %1-%9 and %% in both templates: a key that lacks a part one of
    them needs is not looked up, a value that lacks one is left out."""
    spec = table(
        work,
        "expand.cf",
        f"dbpath = {{dir}}/db.sqlite\nquery = {query}\nresult_format = {result_format}\n",
    )
    keys = [
        "a@example.com",
        "user@mail.example.com",
        "a",
        "@example.com",
        "a@",
        "a@com",
        "a@mail..example.com",
        "addr@example.com",
        "o'q@example.com",
    ]
    both_answer(work, spec, keys)


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "other.org, EXAMPLE.COM",
        "inline:{{example.com=yes}}",
        "{dir}/domains",
        "!example.com, example.com",
        "other.org",
    ],
)
def test_domain_list_restricts_the_keys_looked_up_as_postfix(work: Path, domain: str) -> None:
    """domain: only user@domain with a listed domain is asked (no bare user, no @domain,
    no domain alone, not a subdomain)."""
    (work / "domains").write_text("# listed\nexample.com\n")
    spec = table(
        work,
        "domain.cf",
        f"dbpath = {{dir}}/db.sqlite\nquery = SELECT v FROM v WHERE k='%s'\ndomain = {domain}\n",
    )
    keys = ["a@example.com", "@example.com", "example.com", "a", "user@mail.example.com"]
    both_answer(work, spec, keys)


def test_legacy_query_and_expansion_limit_as_postfix(work: Path) -> None:
    """select_field, table, where_field and additional_conditions without query; more
    results than expansion_limit is a warning and a query error."""
    legacy = table(
        work,
        "legacy.cf",
        "dbpath = {dir}/db.sqlite\ntable = v\nselect_field = v\nwhere_field = k\n"
        "additional_conditions = and v <> 'y'\n",
    )
    both_answer(work, legacy, ["a@example.com", "o'q@example.com", "absent"])
    limited = table(
        work,
        "limit.cf",
        "dbpath = {dir}/db.sqlite\nquery = SELECT v FROM v WHERE k='%s'\nexpansion_limit = +1\n",
    )
    both_answer(work, limited, ["a@example.com", "o'q@example.com"])


def test_parameters_in_main_cf_as_postfix(work: Path) -> None:
    """A name that is no path names main.cf parameters NAME_dbpath, ... ($name expanded
    there); one that is not set is a fatal error in its name."""
    (work / "conf" / "main.cf").write_text(
        f"sq_dbpath = {work}/db.sqlite\n"
        "sq_query = SELECT v FROM v WHERE k='%s'\n"
        "sq_result_format = <$myhostname %s>\n"
    )
    try:
        both_answer(work, "sqlite:sq", ["a@example.com", "absent"])
        both_answer(work, "sqlite:other", ["a@example.com"])
    finally:
        (work / "conf" / "main.cf").write_text("")


BROKEN = {
    "no-dbpath.cf": "query = SELECT v FROM v WHERE k='%s'\n",
    "no-table.cf": "dbpath = {dir}/db.sqlite\nselect_field = v\n",
    "no-where.cf": "dbpath = {dir}/db.sqlite\nquery =\ntable = v\nselect_field = v\n",
    "sql-error.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT v FROM nosuch WHERE k='%s'\n",
    "step-error.cf": (
        "dbpath = {dir}/db.sqlite\nquery = SELECT abs(-9223372036854775808) FROM v WHERE k='%s'\n"
    ),
    "not-a-db.cf": "dbpath = {dir}/garbage\nquery = SELECT v FROM v WHERE k='%s'\n",
    "no-dir.cf": "dbpath = {dir}/nodir/db.sqlite\nquery = SELECT v FROM v WHERE k='%s'\n",
    "a-dir.cf": "dbpath = {dir}\nquery = SELECT v FROM v WHERE k='%s'\n",
    "bad-query.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT v FROM v WHERE k='%s' AND %x\n",
    "bad-result.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT 1\nresult_format = 50%\n",
    "empty-result.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT 1\nresult_format =\n",
    "bad-limit.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT 1\nexpansion_limit = 1x\n",
    "big-limit.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT 1\nexpansion_limit = 99999999999\n",
    "bad-line.cf": "dbpath = {dir}/db.sqlite\nno equals here\n",
    "no-name.cf": "= {dir}/db.sqlite\n",
    "indented.cf": " dbpath = {dir}/db.sqlite\nquery = SELECT 1\n",
    "two-statements.cf": "dbpath = {dir}/db.sqlite\nquery = SELECT 'first'; SELECT 'second'\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_errors_as_postfix(work: Path, name: str) -> None:
    """Configuration and database errors in Postfix's words and exit status: fatal at
    open for a bad parameter or a database that cannot be opened, fatal at lookup for
    SQL that does not prepare or fails as it runs (after a warning)."""
    spec = table(work, name, BROKEN[name])
    both_answer(work, spec, ["a@example.com"])


def test_a_parameter_set_twice_as_postfix(work: Path) -> None:
    """The last one counts, after Postfix's "overriding earlier entry" warnings."""
    spec = table(
        work,
        "twice.cf",
        "dbpath = {dir}/db.sqlite\nquery = SELECT 'first'\nquery = SELECT v FROM v WHERE k='%s'\n",
    )
    both_answer(work, spec, ["a@example.com"])


def test_a_missing_configuration_file_as_postfix(work: Path) -> None:
    both_answer(work, f"sqlite:{work}/nosuch.cf", ["a@example.com"])


def test_a_missing_database_is_not_created(work: Path) -> None:
    """Postfix's sqlite3_open creates a missing database (and its query then finds no
    table); ours opens read-only and says the same without creating it, and reads the
    database once it is there."""
    spec = table(
        work, "missing.cf", "dbpath = {dir}/later.sqlite\nquery = SELECT v FROM v WHERE k='%s'\n"
    )
    a = ours("postmap", work, "-q", "a@example.com", spec)
    assert not (work / "later.sqlite").exists()
    b = theirs(POSTMAP, work, "-q", "a@example.com", spec)
    assert (a[0], a[1], lines(a[2])) == (b[0], b[1], lines(b[2]))
    assert "SQL prepare failed: no such table: v?" in b[2]
    os.unlink(work / "later.sqlite")

    opened = open_table(spec)
    with pytest.raises(TableError, match="no such table: v"):
        opened.lookup("a@example.com")
    with sqlite3.connect(work / "later.sqlite") as db:
        db.execute("CREATE TABLE v (k TEXT, v TEXT)")
        db.execute("INSERT INTO v VALUES ('a@example.com', 'arrived')")
    db.close()
    assert opened.lookup("a@example.com") == "arrived"


def test_the_database_is_opened_read_only(work: Path) -> None:
    """A query that writes fails (Postfix's would write: ours never changes the data)."""
    spec = table(
        work, "writer.cf", "dbpath = {dir}/db.sqlite\nquery = DELETE FROM v WHERE k='%s'\n"
    )
    with pytest.raises(TableError, match="attempt to write a readonly database"):
        open_table(spec).lookup("a@example.com")
    reader = table(
        work, "reader.cf", "dbpath = {dir}/db.sqlite\nquery = SELECT v FROM v WHERE k='%s'\n"
    )
    assert open_table(reader).lookup("a@example.com") == "x,y"


def test_main_cf_parameters_of_a_table_are_parameters_to_postconf(tmp_path: Path) -> None:
    """NAME_query etc. of a sqlite:NAME that a value names (through proxy: and inside
    braces too) are parameters to postconf when set: listed by -n, shown by name, never
    "unused"; the others stay unused, and one not set is unknown, as Postfix's."""
    (tmp_path / "main.cf").write_text(
        "virtual_mailbox_maps = sqlite:sq, proxy:sqlite:px\n"
        "smtpd_recipient_restrictions = check_recipient_access unionmap:{sqlite:un, hash:/x}\n"
        "sq_dbpath = /nonexistent/db.sqlite\n"
        "sq_query = SELECT v FROM v WHERE k='%s'\n"
        "sq_bogus = 1\n"
        "px_domain = example.com\n"
        "un_result_format = %s\n"
        "nowhere_query = x\n"
    )
    (tmp_path / "master.cf").write_text("")
    for args in (["-n"], ["px_table", "sq_query", "sq_bogus", "un_result_format"]):
        a = run_ours("postconf", "-c", str(tmp_path), *args)
        b = run_postfix(POSTFIX_POSTCONF, "-c", str(tmp_path), *args)
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout), args
        assert sorted(lines(a.stderr)) == sorted(lines(b.stderr)), args
        assert "unused parameter: sq_bogus=1" in b.stderr


def test_a_key_that_is_not_utf8_is_not_looked_up(work: Path) -> None:
    """As dict_sqlite skips it: not found, after dict_utf8's warning when the table was
    opened for UTF-8 (smtputf8_enable's default); the query never sees the byte."""
    spec = table(work, "utf8.cf", "dbpath = {dir}/db.sqlite\nquery = SELECT '%s'\n")
    key = "caf" + b"\xe9".decode("utf-8", "surrogateescape") + "@example.com"
    seen: list[str] = []
    previous = set_warning_sink(seen.append)
    try:
        assert open_table(spec).lookup(key) is None
        assert open_table(spec, utf8=False).lookup(key) is None
    finally:
        set_warning_sink(previous)
    assert seen == [
        f'{spec}: non-UTF-8 key "caf?@example.com": malformed UTF-8 or invalid codepoint'
    ]
    assert open_table(spec).lookup("café@example.com") == "café@example.com"
