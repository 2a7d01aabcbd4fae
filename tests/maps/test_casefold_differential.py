"""Table keys folded as Postfix 3.7 folds them, beside Debian's postmap and postalias.

With smtputf8_enable = yes a table of exact keys folds them, as postmap stores them and as
a lookup asks, with casefold_utf8 (ICU's full case folding: `Straße` is `strasse`); with
no, and with -u, in ASCII only; with -f not at all. regexp: and pcre: never fold the key
(their rules' own case-insensitivity is ASCII only). Each tool builds its own copy of a
source (hash: is Berkeley DB for Postfix, cdb for us) and both answer the same questions.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests.maps.test_postmap_differential import POSTALIAS, POSTMAP, _byte_answers, work

pytestmark = pytest.mark.postfix
__all__ = ["work"]

OURS = {"postmap": "oxipost.cli.postmap", "postalias": "oxipost.cli.postalias"}
THEIRS = {"postmap": POSTMAP, "postalias": POSTALIAS}

SOURCE = "Straße ok1\nΣΊΣΥΦΟΣ ok2\nİstanbul ok3\nÉTÉ ok4\nﬁle ok5\nMixED ok6\n".encode()
KEYS = [
    k.encode()
    for k in (
        "Straße STRASSE strasse straße ÉTÉ été ÉtÉ ΣΊΣΥΦΟΣ σίσυφος σίσυφοσ İstanbul "
        "i̇stanbul İSTANBUL ﬁle FILE file MixED mixed"
    ).split()
]


def _conf(work: Path, smtputf8: str) -> Path:
    conf = work / f"conf-utf8-{smtputf8}"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(f"smtputf8_enable = {smtputf8}\n")
    return conf


def _tool(side: str, tool: str, conf: Path, work: Path, *args: str, stdin: bytes = b""):
    cmd = [sys.executable, "-m", OURS[tool]] if side == "ours" else [THEIRS[tool]]
    p = subprocess.run(
        [*cmd, "-c", str(conf), *args], cwd=work, input=stdin, capture_output=True, timeout=120
    )
    return p.returncode, p.stdout, p.stderr


def _cased_characters() -> str:
    """Every character Python's Unicode database knows a case of: the fold's whole domain
    (taken from Python, not from the table under test)."""
    chars = []
    for cp in range(0x80, 0x110000):
        ch = chr(cp)
        if unicodedata.category(ch) == "Cs":
            continue
        if ch.casefold() != ch or ch.lower() != ch or ch.upper() != ch:
            chars.append(ch)
    return "".join(chars)


@pytest.mark.parametrize("flags", [[], ["-f"], ["-u"]])
@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_every_cased_character_is_stored_as_postfix_stores_it(work, smtputf8, flags):
    """hash: lists (postmap -s) the same folded keys; lmdb: files are byte-identical; each
    key is found again in its other cases."""
    conf = _conf(work, smtputf8)
    chars = _cased_characters()
    assert len(chars) > 2800
    # One key per character, told apart by its code point: several fold alike (K, K).
    source = "".join(f"{ord(c):x}{c}X {ord(c):x}\n" for c in chars).encode()
    probes = "".join(f"{ord(c):x}{c.upper()}x\n{ord(c):x}{c.casefold()}X\n" for c in chars)
    tag = f"{smtputf8}{''.join(flags)}"
    answers = []
    for side in ("ours", "theirs"):
        name = f"cased-{tag}-{side}"
        (work / name).write_bytes(source)
        built = [
            _tool(side, "postmap", conf, work, *flags, f"{k}:{name}") for k in ("hash", "lmdb")
        ]
        listed = _tool(side, "postmap", conf, work, *flags, "-s", f"hash:{name}")
        asked = _tool(
            side, "postmap", conf, work, *flags, "-q", "-", f"hash:{name}", stdin=probes.encode()
        )
        asked_lmdb = _tool(
            side, "postmap", conf, work, *flags, "-q", "-", f"lmdb:{name}", stdin=probes.encode()
        )
        answers.append(
            (
                built,
                sorted(listed[1].splitlines()),
                asked,
                asked_lmdb,
                (work / f"{name}.lmdb").read_bytes(),
            )
        )
    assert answers[0][:4] == answers[1][:4]
    assert answers[0][4] == answers[1][4], "lmdb files differ"
    listed = answers[1][1]
    # ß (U+DF) and Σ (U+3A3): full folding with yes, ASCII only without, none with -f.
    if "-f" in flags:
        assert b"3a3\xce\xa3X\t3a3" in listed
    elif smtputf8 == "yes" and "-u" not in flags:
        assert b"dfssx\tdf" in listed and b"3a3\xcf\x83x\t3a3" in listed
    else:
        assert b"df\xc3\x9fx\tdf" in listed and b"3a3\xce\xa3x\t3a3" in listed


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
@pytest.mark.parametrize("kind", ["hash", "lmdb", "cdb", "texthash", "regexp", "pcre", "inline"])
def test_lookups_fold_the_key_as_postfix(work, smtputf8, kind):
    """postmap -q KEY, -uq KEY and -q - of keys in other cases: the table's own fold of
    the key (cdb: and lmdb: as Postfix's postmap built them), none for regexp: and pcre:."""
    conf = _conf(work, smtputf8)
    name = f"fold-{kind}-{smtputf8}"
    if kind in ("regexp", "pcre"):
        (work / name).write_bytes(
            b"/^stra\xc3\x9fe$/ ok1\n/^\xc3\x89T\xc3\x89$/ ok4\n/mixed/ ok6\n"
        )
    else:
        (work / name).write_bytes(SOURCE)
    spec = f"{kind}:{name}"
    if kind == "inline":
        spec = "inline:{" + SOURCE.decode().replace(" ", "=").replace("\n", ", ") + "}"
    elif kind in ("hash", "lmdb", "cdb"):
        # hash: each its own (Berkeley DB and cdb); lmdb: and cdb: shared, built by Postfix.
        if kind == "hash":
            assert _tool("ours", "postmap", conf, work, spec)[0] == 0
        assert _tool("theirs", "postmap", conf, work, spec)[0] == 0
    ours, theirs = _byte_answers(work, smtputf8, spec, KEYS)
    assert ours == theirs
    found = [out for _, out, _ in theirs[: len(KEYS)]]
    unicode_folds = kind not in ("regexp", "pcre") and smtputf8 == "yes"
    assert (found[KEYS.index(b"STRASSE")] == b"ok1\n") == unicode_folds, found


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_postalias_folds_names_as_postfix(work, smtputf8):
    """postalias stores `Straße:` as `strasse` with yes and `straße` with no; -d deletes
    a key given in another case."""
    conf = _conf(work, smtputf8)
    answers = []
    for side in ("ours", "theirs"):
        name = f"al-{smtputf8}-{side}"
        (work / name).write_bytes("Straße: a1\nÉTÉ: a2\nΣΊΣΥΦΟΣ: a3\n".encode())
        out = [_tool(side, "postalias", conf, work, f"{k}:{name}") for k in ("hash", "lmdb")]
        for key in ("STRASSE", "straße", "été", "ÉtÉ", "σίσυφοσ"):
            out.append(_tool(side, "postalias", conf, work, "-q", key, f"lmdb:{name}"))
            out.append(_tool(side, "postalias", conf, work, "-uq", key, f"hash:{name}"))
        out.append(_tool(side, "postalias", conf, work, "-d", "ÉTÉ", f"hash:{name}"))
        out.append(_tool(side, "postalias", conf, work, "-d", "STRASSE", f"lmdb:{name}"))
        for key in ("strasse", "straße", "été", "ÉtÉ"):
            for kind in ("hash", "lmdb"):
                out.append(_tool(side, "postalias", conf, work, "-uq", key, f"{kind}:{name}"))
        answers.append(out)
    assert answers[0] == answers[1]
    assert (answers[1][2][1] == b"a1\n") == (smtputf8 == "yes"), answers[1]


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_sqlite_queries_with_the_key_folded_as_postfix(work, smtputf8):
    """sqlite: (DICT_FLAG_FIXED) puts the key in its query folded as the other tables of
    exact keys fold it."""
    db = work / f"fold-{smtputf8}.db"
    db.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE m (k TEXT, v TEXT)")
        rows = [("strasse", "ss"), ("straße", "sz"), ("été", "e"), ("ÉtÉ", "E2"), ("σίσυφοσ", "s")]
        c.executemany("INSERT INTO m VALUES (?, ?)", rows)
        c.commit()
    cf = work / f"fold-{smtputf8}.cf"
    cf.write_text(f"dbpath = {db}\nquery = SELECT v FROM m WHERE k='%s'\n")
    ours, theirs = _byte_answers(work, smtputf8, f"sqlite:{cf}", KEYS)
    assert ours == theirs
    found = theirs[KEYS.index("Straße".encode())][1]
    assert found == (b"ss\n" if smtputf8 == "yes" else b"sz\n"), theirs
