"""postmap and postalias beside real Postfix's (Debian's postfix, postfix-pcre, postfix-cdb).

Each case runs both programs as real processes on the same files, in the same directory,
and compares exit status, standard output and warnings. Tables built by one are read by
the other where the format is shared (cdb:). Postfix's hash: is Berkeley DB (<name>.db)
and ours is cdb (<name>.cdb): there each tool reads its own build of the same source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.postfix

POSTMAP, POSTALIAS = "/usr/sbin/postmap", "/usr/sbin/postalias"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("maps")
    (d / "conf").mkdir()
    (d / "conf" / "main.cf").write_text("")
    return d


def _run(cmd: list[str], cwd: Path, stdin: str | None) -> tuple[int, str, str]:
    p = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def ours(tool: str, work: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    return _run(
        [sys.executable, "-m", f"oxipost.cli.{tool}", "-c", str(work / "conf"), *args],
        work,
        stdin,
    )


def theirs(path: str, work: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: `make sysdeps` installs Debian's postfix")
    cmd = [path, "-c", str(work / "conf"), *args]
    p = subprocess.run(
        cmd,
        executable=path,
        cwd=work,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.returncode, p.stdout, p.stderr


def both(tool: str, work: Path, *args: str, stdin: str | None = None):
    path = {"postmap": POSTMAP, "postalias": POSTALIAS}[tool]
    return ours(tool, work, *args, stdin=stdin), theirs(path, work, *args, stdin=stdin)


def lines(err: str) -> list[str]:
    """Warnings once each, in order (Postfix repeats some on reopen)."""
    seen: list[str] = []
    for line in err.splitlines():
        if line not in seen:
            seen.append(line)
    return seen


TRICKY = (
    b"#c\n\nnoval\n  lead ws\nk1 v1\n  cont\n# mid\n\tmore  \nK1 dup\nk2\tv2\r\nk3 a\0b\nlonely\n"
)


def test_texthash_reads_the_source_as_postfix(work):
    (work / "t").write_bytes(TRICKY)
    for key in ("k1", "K1", "noval", "k2", "k3", "lonely", "absent"):
        a, b = both("postmap", work, "-q", key, "texthash:t")
        assert a == b, key
    a, b = both("postmap", work, "-s", "texthash:t")
    assert (a[0], sorted(a[1].splitlines()), lines(a[2])) == (
        b[0],
        sorted(b[1].splitlines()),
        lines(b[2]),
    )


def test_cdb_built_by_either_is_read_by_the_other(work):
    (work / "c1").write_bytes(TRICKY)
    assert ours("postmap", work, "cdb:c1")[0] == 0
    (work / "c1.cdb").rename(work / "ours.cdb")
    b = theirs(POSTMAP, work, "cdb:c1")
    assert b[0] == 0
    (work / "c1.cdb").rename(work / "theirs.cdb")
    keys = "k1\nK1\nnoval\nk2\nk3\nlonely\nabsent\n"
    for table in ("cdb:ours", "cdb:theirs"):
        a, b = both("postmap", work, "-q", "-", table, stdin=keys)
        assert a[:2] == b[:2], table
    # Build warnings: Postfix names the file as given for cdb:.
    os.unlink(work / "theirs.cdb")
    a, b = both("postmap", work, "cdb:c1")
    assert (a[0], lines(a[2])) == (b[0], lines(b[2]))


KEY = st.text(alphabet="abcXYZ09._-@+", min_size=1, max_size=8)
VALUE = st.text(alphabet="abc xyz,:@!$", min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(entries=st.lists(st.tuples(KEY, VALUE), min_size=1, max_size=30), probes=st.lists(KEY))
def test_generated_tables_agree_through_cdb(work, entries, probes):
    src = "".join(f"{k} {v}\n" for k, v in entries)
    (work / "g").write_text(src)
    # Postfix's texthash: pauses on a file changed a moment ago and reads it again ("pausing
    # to let file %s cool down"): about two seconds an example.
    past = time.time() - 10
    os.utime(work / "g", (past, past))
    assert ours("postmap", work, "cdb:g")[0] == 0
    keys = "".join(f"{k}\n" for k in [k for k, _ in entries] + probes)
    a = theirs(POSTMAP, work, "-q", "-", "cdb:g", stdin=keys)
    b = ours("postmap", work, "-q", "-", "texthash:g", stdin=keys)
    c = theirs(POSTMAP, work, "-q", "-", "texthash:g", stdin=keys)
    assert a[:2] == b[:2] == c[:2]


def test_hash_tables_each_built_by_its_own_tool_answer_alike(work):
    (work / "h").write_text("Alice a1\nbob b1\nALICE a2\nx@Example.COM mixed\n")
    a, b = both("postmap", work, "hash:h")
    assert (a[0], b[0]) == (0, 0)
    keys = "alice\nBOB\nx@example.com\nnone\n"
    a, b = both("postmap", work, "-q", "-", "hash:h", stdin=keys)
    assert a[:2] == b[:2]
    a, b = both("postmap", work, "-fq", "ALICE", "hash:h")
    assert a[:2] == b[:2]
    # -d and -i rewrite a hash: table; a cdb: table refuses as Postfix's does.
    a, b = both("postmap", work, "-d", "bob", "hash:h")
    assert a[0] == b[0] == 0
    a, b = both("postmap", work, "-d", "bob", "hash:h")
    assert a[0] == b[0] == 1
    a, b = both("postmap", work, "-i", "hash:h", stdin="new value\nalice again\n")
    assert a[0] == b[0] == 0
    a, b = both("postmap", work, "-s", "hash:h")
    assert sorted(a[1].splitlines()) == sorted(b[1].splitlines())
    a, b = both("postmap", work, "-q", "-", "hash:h", stdin="new\nalice\nbob\n")
    assert a[:2] == b[:2]
    (work / "dc").write_text("a 1\n")
    both("postmap", work, "cdb:dc")
    for args in (["-d", "a", "cdb:dc"], ["-s", "cdb:dc"]):
        a, b = both("postmap", work, *args)
        assert (a[0], a[2]) == (b[0], b[2]), args


@pytest.mark.parametrize("kind", ["hash", "cdb"])
def test_a_table_older_than_its_source_is_warned_of_as_postfix(work, kind):
    """dict_db and dict_cdb warn as they open a table built before its source last
    changed, unless the source changed in the last 100 seconds. Each tool reads the file
    it built (for hash: ours is src.cdb, Postfix's src.db), named as Postfix's."""
    src = work / f"older-{kind}"
    src.write_text("a b\n")
    a, b = both("postmap", work, f"{kind}:{src.name}")
    assert a[0] == b[0] == 0
    now = time.time()
    for built in work.glob(f"{src.name}.*db"):
        os.utime(built, (now - 1000, now - 1000))
    os.utime(src, (now - 200, now - 200))
    warning = f"warning: database {src.name}.{'db' if kind == 'hash' else 'cdb'} is older"
    for args in (["-q", "a"], ["-s"]):
        a, b = both("postmap", work, *args, f"{kind}:{src.name}")
        assert (a[0], lines(a[2])) == (b[0], lines(b[2])), args
        assert warning in a[2], a
    os.utime(src, (now - 50, now - 50))
    a, b = both("postmap", work, "-q", "a", f"{kind}:{src.name}")
    assert a == b == (0, "b\n", "")


BAD_RULES = (
    "/a(/ bad\n/abc/ r1\n!/x/ neg\n/q/z r2\n/no-close r3\nif /^if/\n"
    "/^ifx(.)/ got $1 and ${1} $$ $2\nendif\n/(b)(c)/ $3\n/nores/\nendif\nif /zz/\n"
)


def _engine_neutral(err: str) -> list[str]:
    """The regex library's own wording of a syntax error differs (glibc/PCRE2 vs Rust)."""
    return [
        re.sub(r"(line \d+): (Unmatched|Invalid|error in regex).*", r"\1: <regex error>", w)
        for w in lines(err)
    ]


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
def test_bad_rules_are_skipped_with_postfix_warnings(work, dialect):
    (work / "re").write_text(BAD_RULES)
    for key in ("abc", "ABC", "ifxy", "bc", "q", "nores", "zz"):
        a, b = both("postmap", work, "-q", key, f"{dialect}:re")
        assert a[:2] == b[:2], key
        assert _engine_neutral(a[2]) == _engine_neutral(b[2])
    a, b = both("postmap", work, "-q", "x", f"{dialect}:re")
    first = lines(b[2])[0]
    assert lines(a[2])[0] == first, "the common regex errors use Postfix's words"


ATOMS = st.sampled_from(["a", "b", "c", "x", ".", "[ab]", "[^c]", "\\.", "@", "[0-9]"])
QUANT = st.sampled_from(["", "", "*", "+", "?", "{1,2}"])


@st.composite
def patterns(draw) -> tuple[str, int]:
    parts, groups = [], 0
    for _ in range(draw(st.integers(1, 4))):
        piece = draw(ATOMS) + draw(QUANT)
        if draw(st.booleans()):
            piece = f"({piece})"
            groups += 1
        parts.append(piece)
    pat = "".join(parts)
    if draw(st.booleans()):
        pat = "^" + pat
    if draw(st.booleans()):
        pat += "$"
    return pat, groups


@st.composite
def rule_tables(draw) -> str:
    out = []
    depth = 0
    for i in range(draw(st.integers(1, 12))):
        pat, groups = draw(patterns())
        flags = draw(st.sampled_from(["", "", "i"]))
        kind = draw(st.sampled_from(["rule", "rule", "rule", "neg", "if", "endif"]))
        if kind == "if":
            out.append(f"if /{pat}/{flags}")
            depth += 1
        elif kind == "endif" and depth:
            out.append("endif")
            depth -= 1
        elif kind == "neg":
            out.append(f"!/{pat}/{flags} neg{i}")
        else:
            subst = f" ${draw(st.integers(1, groups))}" if groups else ""
            out.append(f"/{pat}/{flags} r{i}{subst}")
    out.extend(["endif"] * depth)
    return "\n".join(out) + "\n"


PROBES = st.lists(st.text(alphabet="abcxABX.@09", max_size=8), min_size=1, max_size=25)


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=rule_tables(), keys=PROBES)
def test_generated_regex_tables_agree(work, dialect, table, keys):
    (work / f"gen.{dialect}").write_text(table)
    stdin = "".join(f"{k}\n" for k in keys if k)
    if not stdin:
        return
    a, b = both("postmap", work, "-q", "-", f"{dialect}:gen.{dialect}", stdin=stdin)
    assert a[:2] == b[:2], table


def test_pcre_look_around_and_back_references(work):
    (work / "la").write_text("/^(?!admin)(\\w+)@/ user $1\n/(a)\\1/ double\n/(?<=x)y/ after-x\n")
    for key in ("bob@x", "admin@x", "aa", "xy", "zy"):
        a, b = both("postmap", work, "-q", key, "pcre:la")
        assert a == b, key


# Results as Postfix's mac_parse() and the tables' prescan read them: $0, names that are
# not numbers, truncated and empty references, then the order of the checks after it.
RESULT_RULES = (
    "/(a)/ r $0\n/(a)/ r ${0}\n/(a)/ r ${x}$y\n/(a)/ r $x\n/(a)/ r ${1\n/(a)/ r $\n"
    "/(a)/ r $-\n/(a)/ r ${}\n/(a)/ r $ 1\n/(a)/ r ${1)\n/(a)/ r $(1}\n/(a)/ r ${{1}}\n"
    "/(a)/ r ${1}x$1y\n/(a)/ r $1_\n/(a)/ r ${1?yes}\n/(a)/ r ${1:no}\n!/a/ $0\n!/a/ $1\n"
    "/(a/\n/(a/ $0\n/(a/ $5\n/(a)/ r $2\n/(a)(b)?/ [$(1)][${2}][$$1][$01]\n"
)
# Negations, dict_regexp's /p1/!/p2/ (pcre: refuses it), flags and empty patterns.
PATTERN_LINES = (
    "!!/a/ r1\n! ! /b/ r2\n/c/#x r3\n!\n/d/!/e/!/f/ r4\n/(g)/!!/h/ r5$1\n/i/!/(j/ r6\n"
    "/k/!x r7\n/l/!/m/i r8\nif !!/n/\n/n/ r9\nendif\n"
    "if /a/ extra\n/a/ r10\nendif\nfoo /b/ r11\nENDIF x\nIF /d/!/e/\n/d/ r12\nendif\n  /f/ r13\n"
)
PATTERN_KEYS = ["a", "b", "c", "dx", "de", "gh", "g", "i", "k", "l", "lM", "n"]


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
def test_pattern_lines_are_parsed_as_postfix(work, dialect):
    (work / "lines.re").write_text(PATTERN_LINES)
    stdin = "".join(f"{k}\n" for k in PATTERN_KEYS)
    a, b = both("postmap", work, "-q", "-", f"{dialect}:lines.re", stdin=stdin)
    assert a == b
    assert ("dx\t!/f/ r4" in b[1]) == (dialect == "regexp")


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
def test_results_are_parsed_as_postfix(work, dialect):
    (work / "results.re").write_text(RESULT_RULES)
    a, b = both("postmap", work, "-q", "ab", f"{dialect}:results.re")
    assert a == b
    assert b[1] == "[a][b][$1][a]\n" and "bad replacement syntax" in b[2]


# regexp: is glibc's regcomp (REG_EXTENDED | REG_ICASE; `i` drops REG_ICASE, `x` drops
# REG_EXTENDED, `m` adds REG_NEWLINE) in the C locale. Each rule alone in a table, each of
# its keys through `postmap -q -`: the answers, the exit status and the warnings (glibc's
# regerror() text for a rule it refuses) are Postfix's.
POSIX_CASES: list[tuple[str, list[str]]] = [
    # A backslash quotes an ordinary character; REG_ICASE does not read it through
    # toupper(), so an escaped lower-case letter matches nothing.
    (r"/a\d/ r", ["ad", "a1", "aD"]),
    (r"/a\d/i r", ["ad", "a1"]),
    (r"/\D/ r", ["d", "D"]),
    (r"/\n/ r", ["n"]),
    (r"/\%/ r", ["%"]),
    (r"/\Z/i r", ["Z", "z"]),
    (r"/\./ r", [".", "a"]),
    (r"/\(\{\}\^\$\[/ r", ["({}^$[", "x"]),
    (r"/a\|b/ r", ["a|b", "a"]),
    # GNU's escapes.
    (r"/\s/ r", [" ", "s"]),
    (r"/\S+$/ r", ["a b", "ab "]),
    (r"/\w+/ r", ["_", "-"]),
    (r"/\W/ r", ["a", "a-b"]),
    (r"/\<ab/ r", ["x ab", "xab"]),
    (r"/ab\>/ r", ["ab x", "abc"]),
    (r"/\bfoo\b/ r", ["a foo b", "afoo"]),
    (r"/\Bfoo/ r", ["afoo", "foo"]),
    (r"/\`ab\'/ r", ["ab", "xab"]),
    (r"/\p{Lu}/ r", ["A"]),
    # Bracket expressions: a backslash is itself, a leading ] is a member.
    (r"/[\s]/ r", ["\\", "s", "x y"]),
    (r"/[\d]/ r", ["d", "1"]),
    (r"/[]a]/ r", ["]", "a", "b"]),
    (r"/[^]a]/ r", ["]", "b"]),
    (r"/[]-a]/ r", ["^", "b"]),
    (r"/[^-a]/ r", ["b", "x-"]),
    (r"/[.]/ r", ["a", "."]),
    (r"/[*+?{}()|]/ r", ["|", "a"]),
    (r"/[\]]/ r", ["\\]", "]"]),
    (r"/x[a-]/ r", ["x-", "xb"]),
    (r"/x[%--]/ r", ["x-", "x+", "x."]),
    (r"/x[a-z-9]/ r", ["x9"]),
    (r"/x[a--]/ r", ["x-"]),
    (r"/[z-a]/ r", ["a"]),
    (r"/[_-a]/ r", ["_"]),
    (r"/[A-_]/ r", ["_", "a", "z", "`"]),
    (r"/[Z-a]/i r", ["a", "Z", "_", "z"]),
    (r"/[A-Z]/ r", ["a"]),
    (r"/[a-z]/i r", ["A"]),
    # Classes, equivalence classes and collating symbols of the C locale.
    (r"/[[:alpha:]]/ r", ["a", "1"]),
    (r"/[[:alpha:][:digit:]]+$/ r", ["ab1", "ab-"]),
    (r"/[^[:alpha:]]/ r", ["a", "1"]),
    (r"/^[[:punct:]]+$/ r", ["!-~", "a!"]),
    (r"/^[[:xdigit:][:blank:]]+$/ r", ["fF 0", "g"]),
    (r"/[[:upper:]]/ r", ["a"]),
    (r"/[[:upper:]]/i r", ["a", "A"]),
    (r"/[[:lower:]]/ r", ["A"]),
    (r"/[[:lower:]]/i r", ["A", "a"]),
    (r"/[[:foo:]]/ r", ["a"]),
    (r"/[[:UPPER:]]/ r", ["a"]),
    (r"/x[[:alpha:]-z]/ r", ["x-"]),
    (r"/[[=a=]]/ r", ["a", "A", "b"]),
    (r"/[[=ab=]]/ r", ["a"]),
    (r"/x[[.-.]]/ r", ["x-", "xa"]),
    (r"/x[[.a.]-c]/ r", ["xb", "xd"]),
    (r"/x[[.hyphen.]]/ r", ["x-"]),
    (r"/[[.ab.]]/ r", ["a"]),
    (r"/[[:]]/ r", ["a"]),
    # Unterminated lists.
    (r"/a[/ r", ["a"]),
    (r"/a[^/ r", ["a"]),
    (r"/a[b/ r", ["a"]),
    (r"/a[]/ r", ["a"]),
    (r"/a[[:alpha:]/ r", ["a"]),
    (r"/a[[.a/ r", ["a"]),
    # Intervals.
    (r"/^a{,3}$/ r", ["aaa", "aaaa"]),
    (r"/^a{2,}$/ r", ["a", "aa"]),
    (r"/a{01}/ r", ["a"]),
    (r"/a{3}{2}/ r", ["aaaaaa", "aaaaa"]),
    (r"/a{0}b/ r", ["b"]),
    (r"/(a){0}b/ [$1]", ["b"]),
    (r"/(a){0}(b)/ [$1][$2]", ["b"]),
    (r"/a{32767}/ r", ["a"]),
    (r"/a{32768}/ r", ["a"]),
    (r"/{/ r", ["{"]),
    (r"/a{/ r", ["a{"]),
    (r"/a{1/ r", ["a"]),
    (r"/a{x}/ r", ["a"]),
    (r"/a{}/ r", ["a"]),
    (r"/a{2,1}/ r", ["a"]),
    (r"/a{1,2,3}/ r", ["a"]),
    (r"/a\{2\}/ r", ["a{2}", "aa"]),
    (r"/}/ r", ["}"]),
    # Repetition where nothing precedes it; repeated repetition.
    (r"/*a/ r", ["a"]),
    (r"/(*a)/ r", ["a"]),
    (r"/a|*b/ r", ["a"]),
    (r"/^*/ r", ["a"]),
    (r"/a**/ r", ["b"]),
    (r"/a+*/ r", ["b"]),
    (r"/a?*/ r", ["b"]),
    (r"/a{2}*/ r", ["b"]),
    # Groups, alternatives and anchors.
    (r"/a)/ r", ["a)"]),
    (r"/)/ r", [")"]),
    (r"/(a/ r", ["a"]),
    (r"/()/ r", ["a"]),
    (r"/a||b/ r", ["c"]),
    (r"/(|a)/ r", ["c"]),
    (r"/$a/ r", ["a"]),
    (r"/a^/ r", ["a"]),
    (r"/(^a|b$)/ r", ["a", "b", "ba"]),
    # Back-references.
    (r"/(a)\1/ r", ["aa", "ab", "aA"]),
    (r"/(a)\1/i r", ["aa", "aA"]),
    (r"/^(.+)@\1$/ r$1", ["ab@AB", "ab@ab", "ab@ac"]),
    (r"/(a|ab)\1/ [$1]", ["abab", "aab"]),
    (r"/\(a*\)\1/x [$1]", ["aaaa", "aaa"]),
    (r"/(a)(b)?\2/ [$1]", ["a", "ab"]),
    (r"/(a)\2/ r", ["aa"]),
    (r"/(a\1)/ r", ["aa"]),
    (r"/\9/ r", ["9"]),
    (r"/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\10/ r", ["abcdefghija0", "abcdefghijj"]),
    # Substitution of what glibc's groups matched.
    (r"/(.*)@(.*)/ $1|$2", ["a@b@c"]),
    (r"/(a*)(a*)/ [$1][$2]", ["aaa"]),
    (r"/(a|ab)(c|bcd)(d*)/ $1:$2:$3", ["abcd"]),
    (r"/(a*)(ab)*(b*)/ $1:$2:$3", ["ab"]),
    (r"/(wee|week)(knights|night)/ $1:$2", ["weeknights"]),
    # The longest of the leftmost matches, its groups the pattern's first way to it.
    (r"/(a|ab)/ $1", ["ab", "xab"]),
    (r"/^(ab|a)(bcd|c)/ [$1][$2]", ["abcd"]),
    (r"/(a*)(ab)?/ [$1][$2]", ["aab"]),
    (r"/(a|ab)(b*)/ [$1][$2]", ["ab"]),
    (r"/(foo|foobar)(bar)?/ [$1][$2]", ["foobar"]),
    (r"/(x|xy)\b/ [$1]", ["xy z", "xyz"]),
    (r"/(x|xy)$/ [$1]", ["xy"]),
    (r"/^(.*)(\.example)?\.com$/ [$1][$2]", ["a.example.com"]),
    (r"/(.*)(@.*)?/ [$1][$2]", ["a@b"]),
    (r"/(a|ab|abc)(c*)/ [$1][$2]", ["abc"]),
    (r"/([a-z]+|[a-z]+[0-9]+)([0-9]*)/ [$1][$2]", ["abc123"]),
    (r"/(a?)(ab)?b/ [$1][$2]", ["abb"]),
    (r"/(a+|b+)*/ [$1]", ["aabb"]),
    (r"/((a)|(ab))*c/ [$1][$2][$3]", ["abac"]),
    (r"/\(a\|ab\)/x [$1]", ["ab"]),
    # An assertion where that match ends sees the byte after it.
    (r"/(.*)(b|ba){1}[ab]($)*/ [$1][$2][$3]", ["baab", "bab"]),
    (r"/(a|ab)\b(.*)/ [$1][$2]", ["ab c", "abc"]),
    # Basic regular expressions (the `x` flag).
    (r"/a\{2\}/x r", ["aa", "a{2}"]),
    (r"/a{2}/x r", ["a{2}", "aa"]),
    (r"/\(a\)\1/x r $1", ["aa"]),
    (r"/a\|b/x r", ["b", "a|b"]),
    (r"/a|b/x r", ["a|b", "b"]),
    (r"/a+/x r", ["a+", "aa"]),
    (r"/a\+/x r", ["aa", "a"]),
    (r"/a\?b/x r", ["b", "ab"]),
    (r"/*a/x r", ["*a", "a"]),
    (r"/\(*a\)/x r", ["*a"]),
    (r"/^*a/x r", ["*a"]),
    (r"/a**/x r", ["a"]),
    (r"/a*\{2\}/x r", ["a"]),
    (r"/\{1\}a/x r", ["a"]),
    (r"/a^b/x r", ["a^b"]),
    (r"/a$b/x r", ["a$b"]),
    (r"/\(^a\)/x r", ["a"]),
    (r"/\(a$\)/x r", ["a"]),
    (r"/a\|^b/x r", ["b"]),
    (r"/a$\|b/x r", ["a"]),
    (r"/a\)/x r", ["a)"]),
    (r"/\(a/x r", ["a"]),
    (r"/(a/x r", ["(a"]),
    (r"/a\{1,x\}/x r", ["a"]),
    # REG_NEWLINE (no newline reaches a key here: what stays the same without one).
    (r"/a.b/m r", ["a.b"]),
    (r"/^b$/m r", ["b"]),
    (r"/[^a]/m r", ["b"]),
    # Bytes above 0x7F are themselves: a range of them, and no case.
    ("/[\u00e9-\u00ff]/ r", ["\u00ea", "e"]),
    ("/^caf\u00e9$/ r", ["CAF\u00e9", "caf\u00c9"]),
]


def _posix_answers(cmd: list[str], work: Path, i: int, rule: str, keys: list[str]) -> tuple:
    table = work / f"posix{i}.re"
    table.write_text(rule + "\n")
    p = subprocess.run(
        [*cmd, "-c", str(work / "conf"), "-q", "-", f"regexp:{table.name}"],
        cwd=work,
        input="".join(f"{k}\n" for k in keys),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout, p.stderr


def test_regexp_tables_are_posix_regcomp_as_in_postfix(work):
    from concurrent.futures import ThreadPoolExecutor

    def compare(case: tuple[int, tuple[str, list[str]]]) -> str | None:
        i, (rule, keys) = case
        a = _posix_answers([sys.executable, "-m", "oxipost.cli.postmap"], work, i, rule, keys)
        b = _posix_answers([POSTMAP], work, i, rule, keys)
        return None if a == b else f"{rule} {keys}: ours {a} theirs {b}"

    with ThreadPoolExecutor(4) as pool:
        wrong = [w for w in pool.map(compare, enumerate(POSIX_CASES)) if w]
    assert not wrong, "\n".join(wrong)
    # The table exercises both outcomes: matches and glibc's refusals.
    refused = _posix_answers([POSTMAP], work, 0, r"/a{1/ r", ["a"])[2]
    assert r"line 1: Unmatched \{" in refused


# Rules and keys with bytes above 0x7F, latin-1 and UTF-8: Postfix 3.7 compares bytes
# (C-locale regcomp, PCRE without UTF), so `.` is one byte and case folds in ASCII only.
BYTE_RULES = (
    b"/^a\xe9$/ latin1-e9\n/^a.$/ anyone\n/^a\xc3\xa9$/ utf8-e-acute\n/^b[\xc3\xa9]$/ bclass\n"
    b"/^c(.)$/ c=$1\n/^\xc9$/ upper-E9\n/^\xc3\x89$/ upper-utf8\n/^d..$/ d-two\n"
    b"/^(\\w+)\\W(.*)$/ word=$1 rest=$2\n/^r$/ r\xe9sultat\n/^[[:alpha:]]+$/ alpha\n"
)
BYTE_KEYS = [
    b"a\xe9",
    b"a\xe8",
    b"a\xc3\xa9",
    b"b\xc3",
    b"b\xa9",
    b"c\xe8",
    b"c\xc3\xa9",
    b"d\xc3\xa9",
    b"\xe9",
    b"\xc3\xa9",
    b"\xc3\x89",
    b"\xc9",
    b"caf\xc3\xa9 au lait",
    b"caf\xe9 au lait",
    b"r",
    b"R",
    b"abc\xe9",
    b"Abc",
]


def _byte_answers(work: Path, smtputf8: str, table: str, keys: list[bytes]) -> list[tuple]:
    """Ours and theirs (exit, stdout, stderr) for `postmap -q KEY` and `-uq KEY` of each
    key, and for the keys in one batch from standard input, all as bytes."""
    conf = work / f"conf-utf8-{smtputf8}"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(f"smtputf8_enable = {smtputf8}\n")
    batch = b"\n".join(keys) + b"\n"
    runs = []
    for cmd in ([sys.executable, "-m", "oxipost.cli.postmap"], [POSTMAP]):
        for flags in (["-q"], ["-uq"]):
            runs += [([*cmd, "-c", str(conf), *flags, key, table], b"") for key in keys]
            runs.append(([*cmd, "-c", str(conf), *flags, "-", table], batch))

    def run(job: tuple[list, bytes]) -> tuple:
        args, stdin = job
        p = subprocess.run(args, cwd=work, input=stdin, capture_output=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    # Read-only lookups, each its own process: side by side, as most of a run is our
    # interpreter starting.
    with ThreadPoolExecutor(max_workers=4) as pool:
        out = list(pool.map(run, runs))
    return [out[: len(out) // 2], out[len(out) // 2 :]]


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_regex_tables_match_the_bytes_of_keys_as_postfix(work, dialect, smtputf8):
    # With smtputf8_enable = yes a key that is not UTF-8 is refused (dict_utf8) but a
    # UTF-8 key is still matched as bytes; with -u nothing is refused.
    (work / "bytes.re").write_bytes(BYTE_RULES)
    ours, theirs = _byte_answers(work, smtputf8, f"{dialect}:bytes.re", BYTE_KEYS)
    assert ours == theirs
    found = b"".join(out for _, out, _ in theirs)
    assert b"c=\xe8" in found and b"r\xe9sultat" in found and b"utf8-e-acute" in found


# Look-ahead sends these rules to the fallback engine: the same bytes, \xHH escapes and
# ranges of bytes, and case folding in ASCII only there too.
FALLBACK_RULES = (
    b"/^a\xe9(?!x)$/ latin1-e9\n/^(\\w+)(?!x)$/ word=$1\n/^\\x{e8}(?!x)/ escaped-e8\n"
    b"/^[\\x80-\\xe0](?!x)/ range\n/^c(.)(?!x)$/ c=$1\n"
)
FALLBACK_KEYS = [
    b"A\xe9",
    b"a\xc9",
    b"Ab",
    b"\xe8y",
    b"\xe0y",
    b"\xe1y",
    b"c\xe8",
    b"c\xc3\xa9",
    b"\xe9\xe9",
]


def test_pcre_fallback_rules_match_bytes_as_postfix(work):
    (work / "fallback.pcre").write_bytes(FALLBACK_RULES)
    ours, theirs = _byte_answers(work, "no", "pcre:fallback.pcre", FALLBACK_KEYS)
    assert ours == theirs
    assert b"escaped-e8" in b"".join(out for _, out, _ in theirs)


CIDR = (
    "10.0.0.0/8 ten\n1.2.3.4/24 bits\n300.1.1.1 bad\n1.2.3.0/33 badlen\nfoo bar\n"
    "2001:db8::/32 v6\n[::1] lo6\n!10.1.0.0/16 notten\n10.1.2.3\nif 192.168.0.0/16\n"
    "192.168.1.0/24 inner\nendif\n"
)


def test_cidr_matches_and_warns_as_postfix(work):
    (work / "c").write_text(CIDR)
    keys = ["10.1.1.1", "10.2.0.1", "1.2.3.4", "2001:db8::1", "::1", "11.0.0.1", "bogus"]
    for key in keys:
        a, b = both("postmap", work, "-q", key, "cidr:c")
        assert (a[0], a[1], lines(a[2])) == (b[0], b[1], lines(b[2])), key
    (work / "c2").write_text("if 192.168.0.0/16\n192.168.1.0/24 inner\nendif\n0.0.0.0/0 any\n")
    for key in ("192.168.1.5", "192.168.2.1", "8.8.8.8"):
        a, b = both("postmap", work, "-q", key, "cidr:c2")
        assert a == b, key


@pytest.mark.parametrize(
    "args",
    [
        ["-q", "a", "inline:{a=1, {b = two words}, c=3}"],
        ["-q", "B", "inline:{a=1, {b = two words}, c=3}"],
        ["-q", "a", "inline:{a=1, bad}"],
        ["-q", "k", "inline:{k=first, b=c, K=last}"],
        ["-q", "a", "inline:{}"],
        ["-q", "x", "static:foo"],
        ["-q", "x", "static:{two words}"],
        ["-q", "x", "fail:foo"],
        ["-q", "x", "bogus:foo"],
        ["-q", "a", "unionmap:{inline:{a=1}, inline:{a=2}}"],
        ["-q", "a", "pipemap:{inline:{a=b}, inline:{b=c}}"],
        ["-q", "a", "pcre:{{/a/ one}, {/b/ two}}"],
        ["-q", "10.1.1.1", "cidr:{{10.0.0.0/8 ten}}"],
        ["-q", "zz", "cdb:nonexistent"],
        # Postfix's hash: opens nonexistent.db, and says so; ours reads a .cdb.
        ["-q", "zz", "hash:nonexistent"],
        ["-q", "a", "hash:"],
        ["-q", "a", "sqlite:"],
        ["-q", "a", ":x"],
        ["sqlite:t"],
        ["-q", "a"],
        ["-Z", "x"],
        ["-s", "static:x"],
        ["-s", "-q", "a", "static:x"],
        ["regexp:re"],
        ["texthash:t"],
        ["missing-source"],
        ["-d", "a", "texthash:t"],
    ],
)
def test_types_and_fatal_messages(work, args):
    (work / "re").write_text("/a/ b\n")
    (work / "t").write_text("a b\n")
    a, b = both("postmap", work, *args)
    assert a == b


def test_a_file_that_is_not_cdb_is_a_clean_fatal(work):
    (work / "junk.cdb").write_text("junk\n")
    a, b = both("postmap", work, "-q", "zz", "cdb:junk")
    assert a == b
    assert "Traceback" not in a[2]


MESSAGE = "Subject: hi\n there\nX-Y: z\n\nbody line\nmore\n"


@pytest.mark.parametrize("flags", ["-hq", "-bq", "-bhq"])
def test_header_and_body_checks_on_a_message(work, flags):
    (work / "hc").write_text("/^Subject:/ REJECT subj\n/body/ WARN b\n/^X-/ IGNORE\n")
    a, b = both("postmap", work, flags, "-", "regexp:hc", stdin=MESSAGE)
    assert a == b


ALIASES = {
    "al": 'a: b,\n   c\n"Quoted Name": x\nInc:  :include:/etc/inc , |"cmd arg"\nnocolon\n'
    "empty:\n  dd : e\nA: again\n: novalname\n",
    "al2": 'x: "|/bin/cat -n", /tmp/file,\tu@Example.COM  ,  b   (comment) , Name <n@d>, '
    '"quoted local"@d,  :include:/a/b\ny: \\\\root, ~/x\nz: a@b@c, "a b"\n',
    "al3": "".join(
        f"k{i}: {c}\n"
        for i, c in enumerate(
            [
                "a<b@c>",
                "a , b",
                "a@ b . c",
                "(c)x",
                "x(c)",
                "<a@b> (c)",
                "a;b",
                "a:b;",
                "x\\y",
                '"a\\"b"',
                'a  "q"  b',
                "a\\,b",
                "u@[1.2.3.4]",
                '|exec "x y"',
                "/path/with space",
                "x@y , , z",
                "a (b (c)) d",
            ]
        )
    ),
}


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_postalias_stores_what_postfix_stores(work, name):
    (work / name).write_text(ALIASES[name])
    keys = ["a", "quoted name", "inc", "empty", "dd", "x", "y", "z", "@", "absent"]
    keys += [f"k{i}" for i in range(17)]
    a, b = both("postalias", work, f"cdb:{name}")
    assert (a[0], lines(a[2])) == (b[0], lines(b[2]))
    # Postfix reads the table oxipost built.
    os.rename(work / f"{name}.cdb", work / f"{name}-ours.cdb")
    theirs(POSTALIAS, work, f"cdb:{name}")
    stdin = "".join(f"{k}\n" for k in keys)
    mine = theirs(POSTALIAS, work, "-q", "-", f"cdb:{name}-ours", stdin=stdin)
    ref = theirs(POSTALIAS, work, "-q", "-", f"cdb:{name}", stdin=stdin)
    assert mine[:2] == ref[:2]
    a, b = both("postalias", work, "-q", "-", f"cdb:{name}", stdin=stdin)
    assert a[:2] == b[:2]


@pytest.mark.parametrize("tool", ["postmap", "postalias"])
def test_an_empty_result_warns_as_postfix(work, tool):
    """A table that answers with an empty string: printed, found, and Postfix's two
    warnings, with -q and with -q -."""
    (work / "r.re").write_text("/^k$/ \n")
    for table in ("inline:{k=, j=x}", "regexp:r.re"):
        a, b = both(tool, work, "-q", "k", table)
        assert a == b, table
        a, b = both(tool, work, "-q", "-", table, stdin="k\nj\nk\n")
        assert a == b, table


# Latin-1 in a key, a value, a continuation, a line without a value; UTF-8 elsewhere; a
# tab and trailing blanks in a skipped line; a duplicate key around them.
NOT_UTF8 = (
    b"a caf\xe9\nb ok\ncaf\xe9 x\nd caf\xc3\xa9\n e cont\xe9\nk v\nk w\nk\xe9 v2\n"
    b"x\t caf\xe9  \ncaf\xe9\nu caf\xc3\xa9\n"
)


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_texthash_skips_lines_not_utf8_as_postfix(work, smtputf8):
    """With smtputf8_enable = yes Postfix's dict_thash skips each logical line that is not
    UTF-8 as it reads the file, with 'FILE, line N: non-UTF-8 input "LINE" -- ignoring
    this line' (the whole logical line, '?' for each bad byte and control character);
    without, it keeps the bytes. The same answers and warnings from postmap -q."""
    table = work / f"not-utf8-{smtputf8}"
    table.write_bytes(NOT_UTF8)
    # A file changed within the last second is "hot": dict_thash reads it again, warning
    # again, until it has cooled down.
    old = time.time() - 3600
    os.utime(table, (old, old))
    keys = [b"a", b"b", b"d", b"k", b"x", b"u", b"caf\xe9", b"caf\xc3\xa9"]
    ours, theirs = _byte_answers(work, smtputf8, f"texthash:{table.name}", keys)
    assert ours == theirs
    warned = b'warning: not-utf8-yes, line 9: non-UTF-8 input "x? caf?  " -- ignoring this line'
    assert (warned in theirs[0][2]) == (smtputf8 == "yes"), theirs[0]
    assert theirs[5][1] == b"caf\xc3\xa9\n", theirs[5]


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_inline_table_not_utf8_as_postfix(work, smtputf8):
    """An inline: table that is not UTF-8 does not open with smtputf8_enable = yes (dict_inline:
    'bad UTF-8 syntax: "inline:{...}"; need "inline:{name=value...}"', postmap's fatal);
    without, its bytes are a value like any other."""
    spec = os.fsdecode(b"inline:{k=caf\xe9, b=c}")
    ours, theirs = _byte_answers(work, smtputf8, spec, [b"k", b"b"])
    assert ours == theirs
    if smtputf8 == "yes":
        assert theirs[0][2] == (
            b'postmap: fatal: bad UTF-8 syntax: "inline:{k=caf?, b=c}";'
            b' need "inline:{name=value...}"\n'
        ), theirs[0]
    else:
        assert theirs[0][1] == b"caf\xe9\n", theirs[0]


def _built_and_answers(
    work: Path, smtputf8: str, tool: str, spec: str, source: bytes, keys: list[bytes]
) -> list[list[tuple]]:
    """Ours and theirs: each tool builds its own copy of `source` as `spec` (TYPE:NAME)
    with and without -u, then answers the keys (-uq -); (exit, stdout, stderr) of each,
    the copy's name as NAME and Berkeley DB's .db as our .cdb."""
    conf = work / f"conf-utf8-{smtputf8}"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(f"smtputf8_enable = {smtputf8}\n")
    kind, _, name = spec.partition(":")
    path = {"postmap": POSTMAP, "postalias": POSTALIAS}[tool]
    answers = []
    for side, cmd in (("ours", [sys.executable, "-m", f"oxipost.cli.{tool}"]), ("theirs", [path])):
        copy = f"{name}-{side}"
        (work / copy).write_bytes(source)
        out = []
        for flags in ([], ["-u"]):
            for args, stdin in (
                ([*flags, f"{kind}:{copy}"], b""),
                (["-uq", "-", f"{kind}:{copy}"], b"\n".join(keys) + b"\n"),
            ):
                p = subprocess.run(
                    [*cmd, "-c", str(conf), *args], cwd=work, input=stdin, capture_output=True
                )
                err = p.stderr.replace(copy.encode(), b"NAME").replace(b"NAME.cdb", b"NAME.db")
                out.append((p.returncode, p.stdout, err))
        answers.append(out)
    return answers


@pytest.mark.parametrize("kind", ["hash", "cdb"])
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_postmap_skips_source_lines_not_utf8_as_postfix(work, smtputf8, kind):
    """With smtputf8_enable = yes (and no -u) postmap leaves out each logical line of its
    source that is not UTF-8, warning 'FILE, line N: non-UTF-8 input "LINE" -- ignoring
    this line' (N its first line) among its other warnings, and exits 0; the keys of those
    lines are then not found. Without, the bytes are kept."""
    keys = [b"a", b"b", b"d", b"k", b"x", b"u", b"caf\xe9", b"caf\xc3\xa9"]
    ours, theirs = _built_and_answers(work, smtputf8, "postmap", f"{kind}:u8", NOT_UTF8, keys)
    assert ours == theirs
    built, answered, built_u, _ = theirs
    assert built[0] == 0 and built_u[0] == 0, theirs
    warned = b'postmap: warning: NAME, line 4: non-UTF-8 input "d caf\xc3\xa9 e cont?"'
    assert (warned in built[2]) == (smtputf8 == "yes"), built
    assert warned not in built_u[2], built_u
    assert (b"a\tcaf\xe9\n" in answered[1]) == (smtputf8 == "no"), answered


def test_postmap_skips_stdin_lines_not_utf8_as_postfix(work):
    """postmap -i reads standard input as a source: its skipped lines are "stdin, line N"."""
    conf = work / "conf-utf8-yes"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("smtputf8_enable = yes\n")
    answers = []
    for side, cmd in (
        ("ours", [sys.executable, "-m", "oxipost.cli.postmap"]),
        ("theirs", [POSTMAP]),
    ):
        copy = f"stdin-{side}"
        (work / copy).write_bytes(b"z y\n")
        built = subprocess.run(
            [*cmd, "-c", str(conf), "-i", f"hash:{copy}"],
            cwd=work,
            input=NOT_UTF8,
            capture_output=True,
        )
        q = subprocess.run(
            [*cmd, "-c", str(conf), "-q", "-", f"hash:{copy}"],
            cwd=work,
            input=b"z\na\nb\nd\nx\nu\n",
            capture_output=True,
        )
        err = built.stderr.replace(copy.encode(), b"NAME").replace(b"NAME.cdb", b"NAME.db")
        answers.append([(built.returncode, err), (q.returncode, q.stdout, q.stderr)])
    assert answers[0] == answers[1]
    assert b'warning: stdin, line 1: non-UTF-8 input "a caf?"' in answers[1][0][1], answers


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_diagnostics_not_ascii_as_postfix(work, smtputf8):
    """msg_text() printable()s every warning and fatal text: with smtputf8_enable = no
    (util_utf8_enable off) each byte that is not printable ASCII is '?' ("é" is "??"),
    with yes UTF-8 stays: a duplicate key's warning and a fatal open of a missing file."""
    conf = work / f"conf-diag-{smtputf8}"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(f"smtputf8_enable = {smtputf8}\n")
    answers = []
    for side, cmd in (
        ("ours", [sys.executable, "-m", "oxipost.cli.postmap"]),
        ("theirs", [POSTMAP]),
    ):
        source = work / f"diag-{smtputf8}-{side}"
        source.write_bytes(b"k\xc3\xa9y a\nk\xc3\xa9y b\n")
        runs = [[f"hash:{source.name}"], ["-q", "k", "regexp:missing-caf\u00e9"]]
        for args in runs:
            p = subprocess.run([*cmd, "-c", str(conf), *args], cwd=work, capture_output=True)
            err = p.stderr.replace(source.name.encode(), b"NAME").replace(b"NAME.cdb", b"NAME.db")
            answers.append((side, p.returncode, err))
    ours, theirs = answers[:2], answers[2:]
    assert [a[1:] for a in ours] == [a[1:] for a in theirs]
    shown = "k\u00e9y" if smtputf8 == "yes" else "k??y"
    assert theirs[0][2] == f'postmap: warning: NAME.db: duplicate entry: "{shown}"\n'.encode()


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_postalias_skips_lines_not_utf8_as_postfix(work, smtputf8):
    """postalias skips an aliases(5) logical line that is not UTF-8 as postmap does."""
    source = b"a: b\ncaf\xe9: x\nc: d\xff\n  cont\xfe\ne: f\ng: caf\xc3\xa9\n"
    keys = [b"a", b"c", b"e", b"g", b"caf\xe9"]
    ours, theirs = _built_and_answers(work, smtputf8, "postalias", "hash:al", source, keys)
    assert ours == theirs
    warned = b'postalias: warning: NAME, line 3: non-UTF-8 input "c: d?  cont?"'
    assert (warned in theirs[0][2]) == (smtputf8 == "yes"), theirs[0]
