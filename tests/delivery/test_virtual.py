"""virtual(8): mailbox lookup, Maildir vs mbox, ids, limits, traversal (catalogue 49)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from oxipost import maps
from oxipost.envelope import Outcome

from tests.conftest import shared_dir

from .conftest import make_config, request, run

ROOT = os.geteuid() == 0


@pytest.fixture
def base():
    with shared_dir("oxipost-vmail-", 0o1777) as d:
        yield d


def _cfg(tmp_path: Path, base: Path, table: str, extra: str = ""):
    conf = tmp_path / "c"
    conf.mkdir(parents=True)
    (conf / "vmailbox").write_text(table)
    ids = "virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n"
    return make_config(
        conf,
        main=f"virtual_mailbox_base = {base}\n"
        f"virtual_mailbox_maps = texthash:{conf}/vmailbox\n" + ids + extra,
    )


def test_no_mailbox_maps_is_unknown_user(tmp_path, base):
    cfg = make_config(tmp_path / "c", main=f"virtual_mailbox_base = {base}\n")
    (o,) = run(request(cfg, "virtual", "example.com", ["Who@Example.com"]))
    assert o == Outcome("5.1.1", 'unknown user: "who@example.com"')


def test_maildir_and_mbox_by_trailing_slash(tmp_path, base):
    cfg = _cfg(
        tmp_path, base, "info@example.com example.com/info/\nceo@example.com example.com/ceo\n"
    )
    out = run(request(cfg, "virtual", "example.com", ["info@example.com", "ceo@example.com"]))
    assert out == [
        Outcome("2.0.0", "delivered to maildir"),
        Outcome("2.0.0", "delivered to mailbox"),
    ]
    (name,) = os.listdir(base / "example.com/info/new")
    assert (
        b"Delivered-To: info@example.com\n" in (base / "example.com/info/new" / name).read_bytes()
    )
    assert (base / "example.com/ceo").read_text().startswith("From a@example.org  ")
    if ROOT:
        assert (base / "example.com/ceo").stat().st_uid == 65534


@pytest.mark.parametrize("result", ["../../etc/x/", "a/../../x/", "dom/here/..", "/etc/x/"])
def test_traversal_in_lookup_result_defers(tmp_path, base, result):
    # catalogue 49
    cfg = _cfg(tmp_path, base, f"u@example.com {result}\n")
    (o,) = run(request(cfg, "virtual", "example.com", ["u@example.com"]))
    assert o == Outcome("4.3.5", "mail system configuration error")


def test_raw_address_never_becomes_a_path(tmp_path, base):
    # catalogue 49: the path comes from the table, so "../" in an address finds nothing.
    cfg = _cfg(tmp_path, base, "u@example.com example.com/u/\n")
    (o,) = run(request(cfg, "virtual", "example.com", ["../../etc/x@example.com"]))
    assert o.status == "5.1.1"
    assert os.listdir(base) == []


def test_low_uid_and_limit(tmp_path, base):
    cfg = _cfg(
        tmp_path, base, "u@example.com example.com/u\n", extra="virtual_minimum_uid = 70000\n"
    )
    (o,) = run(request(cfg, "virtual", "example.com", ["u@example.com"]))
    if ROOT:
        assert o == Outcome("4.3.5", "mail system configuration error")
    cfg = _cfg(
        tmp_path / "x", base, "u@example.com example.com/u\n", extra="virtual_mailbox_limit = 10\n"
    )
    (o,) = run(request(cfg, "virtual", "example.com", ["u@example.com"]))
    assert o.status == "5.2.2"


def test_substitution_in_regexp_mailbox_and_id_tables_is_refused(tmp_path, base):
    """virtual(8) opens its maps with DICT_FLAG_PARANOID: a `$1` rule would make a path
    or an id of what the sender wrote; it is skipped with Postfix's warning, and the
    other rules of the same table still answer."""
    seen: list[str] = []
    maps.set_warning_sink(seen.append)
    try:
        conf = tmp_path / "c"
        conf.mkdir()
        (conf / "vmailbox").write_text(
            "/^(.*)@example\\.com$/ example.com/$1/\n/^info@example\\.com$/ example.com/info/\n"
        )
        (conf / "vuid").write_text("/^([0-9]+)@/ $1\n/@/ 65534\n")
        cfg = make_config(
            conf,
            main=f"virtual_mailbox_base = {base}\n"
            f"virtual_mailbox_maps = pcre:{conf}/vmailbox\n"
            f"virtual_uid_maps = regexp:{conf}/vuid\nvirtual_gid_maps = static:65534\n",
        )
        out = run(request(cfg, "virtual", "example.com", ["who@example.com", "info@example.com"]))
    finally:
        maps.set_warning_sink(maps._stderr_warning)
    assert out == [
        Outcome("5.1.1", 'unknown user: "who@example.com"'),
        Outcome("2.0.0", "delivered to maildir"),
    ]
    assert os.listdir(base) == ["example.com"]
    assert os.listdir(base / "example.com") == ["info"]
    refused = "regular expression substitution is not allowed: skipping this rule"
    assert seen == [
        f"pcre map {conf}/vmailbox, line 1: {refused}",
        f"regexp map {conf}/vuid, line 1: {refused}",
    ]
    if ROOT:
        (name,) = os.listdir(base / "example.com/info/new")
        assert (base / "example.com/info/new" / name).stat().st_uid == 65534


def test_regexp_mailbox_table_sees_the_full_address_only(tmp_path, base):
    """virtual(5) "REGULAR EXPRESSION TABLES": a pattern is applied to the entire address,
    never to `@domain` or the address without its extension; a fixed table after it still
    answers those keys, the address first in every table (mail_addr_find)."""
    conf = tmp_path / "c"
    conf.mkdir()
    (conf / "vmailbox.re").write_text(
        "/^@example\\.com$/ example.com/domain/\n"
        "/^tag@example\\.com$/ example.com/unextended/\n"
        "/^example\\.com$/ example.com/bare-domain/\n"
        "/^info@example\\.org$/ example.org/info/\n"
    )
    (conf / "vmailbox").write_text("@example.org example.org/catchall/\n")
    cfg = make_config(
        conf,
        main=f"virtual_mailbox_base = {base}\n"
        f"virtual_mailbox_maps = regexp:{conf}/vmailbox.re, texthash:{conf}/vmailbox\n"
        "virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n",
    )
    rcpts = ["who@example.com", "tag+x@example.com", "info@example.org", "who@example.org"]
    out = run(request(cfg, "virtual", "example.com", rcpts))
    assert out == [
        Outcome("5.1.1", 'unknown user: "who@example.com"'),
        Outcome("5.1.1", 'unknown user: "tag+x@example.com"'),
        Outcome("2.0.0", "delivered to maildir"),
        Outcome("2.0.0", "delivered to maildir"),
    ]
    assert os.listdir(base) == ["example.org"]
    assert sorted(os.listdir(base / "example.org")) == ["catchall", "info"]
