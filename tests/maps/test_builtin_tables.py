"""unix:, environ: and randmap: (oxipost.maps.builtin) beside Debian's postmap 3.7."""

from __future__ import annotations

import grp
import pwd
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.maps import open_table

from tests.conftest import run_ours, run_postfix
from tests.maps import test_postmap_differential
from tests.maps.test_postmap_differential import both, ours, theirs
from tests.smtpd.test_postfix_differential import running_postfix

# The same fixture: a directory with an empty main.cf that both postmaps run in.
work = test_postmap_differential.work

pytestmark = pytest.mark.postfix

POSTMAP = "/usr/sbin/postmap"


def _stdin_agrees(work: Path, flags: list[str], table: str, keys: list[str]) -> str:
    """`postmap FLAGS -q - TABLE` with keys on stdin on both; → Postfix's output."""
    stdin = "".join(f"{k}\n" for k in keys)
    a, b = both("postmap", work, *flags, "-q", "-", table, stdin=stdin)
    assert a == b, table
    return b[1]


@pytest.mark.parametrize("fold", [[], ["-f"]])
def test_unix_tables_answer_every_entry_as_postfix(work, fold):
    """Every user and group of this system, as given and upper-cased, and names that are
    none: getpwnam's and getgrnam's entries in Postfix's format (a group's members
    comma-separated after the last colon); without -f the key is folded."""
    users = [p.pw_name for p in pwd.getpwall()]
    groups = [g.gr_name for g in grp.getgrall()]
    probes = ["nosuch", "root@localhost", "", " root"]
    for table, names in (("unix:passwd.byname", users), ("unix:group.byname", groups)):
        keys = names + [n.upper() for n in names] + probes
        out = _stdin_agrees(work, fold, table, keys)
        assert "root\troot:x:0:" in out
    members = [g for g in grp.getgrall() if g.gr_mem]
    if members:
        out = _stdin_agrees(work, [], "unix:group.byname", [members[0].gr_name])
        assert out.endswith(":" + ",".join(members[0].gr_mem) + "\n")


@pytest.mark.parametrize(
    "args",
    [
        ["-q", "root", "unix:passwd.byname"],
        ["-q", "ROOT", "unix:group.byname"],
        ["-f", "-q", "ROOT", "unix:passwd.byname"],
        ["-q", "root", "unix:PASSWD.BYNAME"],
        ["-q", "root", "unix:passwd.byuid"],
        ["-q", "root", "unix:"],
        ["-q", "root", "unix:{passwd.byname}"],
        ["-s", "unix:passwd.byname"],
        ["-s", "unix:group.byname"],
        ["-d", "root", "unix:passwd.byname"],
        ["-i", "unix:passwd.byname"],
        ["unix:passwd.byname"],
        ["unix:t"],
        ["-s", "environ:x"],
        ["-d", "HOME", "environ:x"],
        ["-i", "environ:x"],
        ["environ:nofile"],
        ["environ:t"],
        ["-q", "x", "environ:"],
        ["-s", "randmap:{a}"],
        ["-d", "x", "randmap:{a}"],
        ["-i", "randmap:{a}"],
        ["randmap:{a}"],
        ["randmap:t"],
        ["-d", "x", "static:s"],
        ["-i", "texthash:t"],
        ["texthash:nofile"],
        ["-q", "x", "static:"],
    ],
)
def test_what_postmap_says_of_them_as_postfix(work, args):
    """Lookups, and what cannot be done with these tables: list them (-s), delete (-d),
    add (-i) or build them, in Postfix's words (a build opens its source first)."""
    (work / "t").write_text("a b\n")
    a, b = both("postmap", work, *args, stdin="k v\n")
    assert a == b


@pytest.mark.parametrize(
    "name",
    [
        "{}",
        "{ }",
        "{,}",
        "{ , ,}",
        "a",
        "{a",
        "{a}x",
        "{a}}",
        "{{a}",
        "{a}{b}",
        "}a{",
        "{a{}",
        "{a, {b}",
        "{{}}",
        "{ {} }",
        "{{a b}}",
    ],
)
def test_randmap_syntax_as_postfix(work, name):
    """dict_random's name: one balanced brace group with at least one value, else 'bad
    syntax: "randmap:NAME"; need "randmap:{value...}"'."""
    a, b = both("postmap", work, "-q", "key", f"randmap:{name}")
    assert a == b


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("{a, b, c}", {"a", "b", "c"}),
        ("{a,,b}", {"a", "b"}),
        ("{ one\ttwo,three }", {"one", "two", "three"}),
        ("{ {a b}, c }", {"{a b}", "c"}),
        ("{x {y}z w}", {"x", "{y}z", "w"}),
        ("{{only one}}", {"{only one}"}),
    ],
)
def test_randmap_answers_each_value_as_postfix(work, name, values):
    """Every key gets one of the values, chosen at random: over 80 keys each side gives
    every value and nothing else (braces kept as dict_random keeps them)."""
    keys = "".join(f"k{i}\n" for i in range(80))
    for side in (
        ours("postmap", work, "-q", "-", f"randmap:{name}", stdin=keys),
        theirs(POSTMAP, work, "-q", "-", f"randmap:{name}", stdin=keys),
    ):
        rc, out, err = side
        assert (rc, err) == (0, "")
        answers = [line.split("\t", 1) for line in out.splitlines()]
        assert [k for k, _ in answers] == keys.split()
        assert {v for _, v in answers} == values


def test_environ_answers_the_environment_as_postfix(work, monkeypatch):
    """environ: looks the key up in the process's environment: folded (so not found for
    an upper-case name) unless -f; an empty value is found, with postmap's warnings."""
    monkeypatch.setenv("OXI_TEST_VAR", "some value")
    monkeypatch.setenv("oxi_lower", "lower")
    monkeypatch.setenv("OXI_EMPTY", "")
    keys = ["OXI_TEST_VAR", "oxi_lower", "OXI_LOWER", "OXI_NOSUCH", "HOME"]
    assert "OXI_TEST_VAR\tsome value" in _stdin_agrees(work, ["-f"], "environ:x", keys)
    assert _stdin_agrees(work, [], "environ:x", keys) == "oxi_lower\tlower\nOXI_LOWER\tlower\n"
    a, b = both("postmap", work, "-f", "-q", "OXI_EMPTY", "environ:x")
    assert a == b
    assert "empty string result is not allowed" in b[2]


def test_their_kind_and_owner(tmp_path):
    """unix: and environ: are tables of exact keys (Postfix's DICT_FLAG_FIXED: an address
    search asks them the local part too), randmap: a pattern table; all are root's."""
    for spec, fixed in (
        ("unix:passwd.byname", True),
        ("unix:group.byname", True),
        ("environ:x", True),
        ("randmap:{a}", False),
    ):
        table = open_table(spec)
        assert (table.fixed, table.owner) == (fixed, 0), spec


PROXY_CF = (
    "proxy_read_maps = proxy:unix:passwd.byname, {proxy:unix:group.byname x=y}\n"
    "    proxy:proxy:randmap:{a} hash:/etc/aliases\n"
)


@pytest.mark.slow
def test_proxied_tables_as_postfix_proxymap_serves_them():
    """proxy:TYPE:NAME answers as TYPE:NAME when proxy_read_maps lists proxy:TYPE:NAME
    (also inside braces with attributes, or as proxy:proxy:), and is otherwise
    'proxymap service is not configured for table "TYPE:NAME"', as Postfix 3.7's postmap
    says through its running proxymap(8)."""
    specs = [
        "proxy:unix:passwd.byname",
        "proxy:unix:group.byname",
        "proxy:randmap:{a}",
        "proxy:inline:{root=x}",
        "proxy:hash:/etc/aliases",
        "proxy:proxy:unix:passwd.byname",
        "proxy:proxy:unix:group.byname",
        "proxy:proxy:inline:{root=x}",
    ]
    with running_postfix(PROXY_CF) as (_port, d):
        for spec in specs:
            args = ["-c", str(d), "-q", "root", spec]
            mine = run_ours("postmap", *args)
            real = run_postfix(POSTMAP, *args)
            assert (mine.returncode, mine.stdout, mine.stderr) == (
                real.returncode,
                real.stdout,
                real.stderr,
            ), spec


def test_a_proxied_file_is_reopened_when_it_changes(tmp_path):
    """proxy:hash:FILE is the table hash:FILE: rebuilt by postmap, it answers anew."""
    (tmp_path / "main.cf").write_text(f"proxy_read_maps = proxy:hash:{tmp_path}/t\n")
    cfg = load_config(str(tmp_path), master_cf=False)
    spec = f"proxy:hash:{tmp_path}/t"
    for value in ("one", "two"):
        (tmp_path / "t").write_text(f"k {value}\n")
        assert run_ours("postmap", "-c", str(tmp_path), f"hash:{tmp_path}/t").returncode == 0
        assert open_table(spec, cfg).lookup("k") == value
