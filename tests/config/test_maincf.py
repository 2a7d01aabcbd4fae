"""main.cf parsing, expansion and in-place editing (catalogue: bad input never half-written)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oxipost.config import ConfigError, load_config, maincf, split_list
from oxipost.config.expand import ExpandError, expand


def test_continuation_lines_join_and_comments_end_nothing(tmp_path):
    (tmp_path / "main.cf").write_text("a = one\n# note\n  two\n\tthree\nb=x\n")
    cfg = load_config(str(tmp_path))
    assert cfg.get("a").split() == ["one", "two", "three"]
    assert cfg.get("b") == "x"


def test_last_definition_wins(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = a.example\nmyhostname = b.example\n")
    assert load_config(str(tmp_path)).get("myhostname") == "b.example"


def test_lazy_expansion_sees_later_definitions(tmp_path):
    (tmp_path / "main.cf").write_text("smtpd_banner = $myhostname ready\nmyhostname = z.example\n")
    assert load_config(str(tmp_path)).get("smtpd_banner") == "z.example ready"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$$", "$"),
        ("${a}${a}", "hihi"),
        ("$(a)", "hi"),
        ("${e?x}${a?x}", "x"),
        ("${e:x}${a:x}", "x"),
        ("${a?{1}:{2}}${e?{1}:{2}}", "12"),
        ("${{$a} != {hi} ? {n} : {y}}", "y"),
        ("${{2} <= {10} ? {num} : {lex}}", "num"),
        ("${{3.10} >level {3.9} ? {newer} : {older}}", "newer"),
        ("$nothing-there", "-there"),
    ],
)
def test_expansion_forms(value, expected):
    assert expand(value, {"a": "hi", "e": ""}.get) == expected


@pytest.mark.parametrize("value", ["${a", "${{a} ~ {b} ? {x}}", "${a!x}"])
def test_bad_expansion_raises(value):
    with pytest.raises(ExpandError):
        expand(value, {"a": "hi"}.get)


def test_self_reference_is_an_error_not_a_hang(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = $myhostname.x\n")
    with pytest.raises(ConfigError):
        load_config(str(tmp_path)).get("myhostname")


def test_unknown_parameter_is_keyerror(tmp_path):
    (tmp_path / "main.cf").write_text("")
    with pytest.raises(KeyError):
        load_config(str(tmp_path)).get("no_such_parameter_at_all")


def test_typed_getters(tmp_path):
    (tmp_path / "main.cf").write_text(
        "maximal_queue_lifetime = 2\nqueue_run_delay = 5m\nsmtpd_recipient_limit = 7\n"
        "disable_vrfy_command = yes\nmydestination = a, b c,{x, y}\nqueue_directory = var/q\n"
    )
    cfg = load_config(str(tmp_path))
    assert cfg.get_time("maximal_queue_lifetime") == 2 * 86400  # the default's unit: days
    assert cfg.get_time("queue_run_delay") == 300
    assert cfg.get_int("smtpd_recipient_limit") == 7
    assert cfg.get_bool("disable_vrfy_command") is True
    assert cfg.get_list("mydestination") == ["a", "b", "c", "{x, y}"]
    assert cfg.path("queue_directory") == os.path.abspath("var/q")


def test_service_view_applies_overrides(tmp_path):
    (tmp_path / "main.cf").write_text("smtpd_tls_security_level = may\n")
    (tmp_path / "master.cf").write_text(
        "submission inet n - n - - smtpd\n  -o smtpd_tls_security_level=encrypt\n"
        "  -o syslog_name=postfix/submission\n"
    )
    cfg = load_config(str(tmp_path))
    sub = cfg.for_service("submission")
    assert sub.get("smtpd_tls_security_level") == "encrypt"
    assert sub.get("syslog_name") == "postfix/submission"
    assert cfg.get("smtpd_tls_security_level") == "may"


def test_split_list_keeps_braces():
    assert split_list("inline:{a=b, c=d}, hash:/x  static:y") == [
        "inline:{a=b, c=d}",
        "hash:/x",
        "static:y",
    ]


def test_failed_edit_leaves_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "main.cf"
    path.write_text("# keep me\nmyhostname = a\n")

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        maincf.edit(str(path), {"myhostname": "b"})
    assert path.read_text() == "# keep me\nmyhostname = a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.cf"]


_names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="$#"),
    max_size=20,
)
_comments = st.from_regex(r"#[ -~]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_names, _values, max_size=8),
    st.lists(_comments, max_size=4),
    st.dictionaries(_names, _values, max_size=4),
)
def test_edit_round_trip(tmp_path_factory, original, comments, updates):
    d = tmp_path_factory.mktemp("rt")
    path = d / "main.cf"
    lines = [f"{n} = {v}\n" for n, v in original.items()]
    for i, c in enumerate(comments):
        lines.insert(min(i * 2, len(lines)), c + "\n")
    path.write_text("".join(lines))
    maincf.edit(str(path), dict(updates))
    after = maincf.settings(maincf.read(str(path)))
    assert after == {**original, **updates}
    text = path.read_text()
    for c in comments:
        assert c in text
