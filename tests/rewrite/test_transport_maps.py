"""trivial-rewrite's transport_maps: opened with DICT_FLAG_NO_REGSUB (transport(5): "The
trivial-rewrite(8) server disallows regular expression substitution of $1 etc. in
regular expression lookup tables, because that could open a security hole")."""

from __future__ import annotations

import pytest
from oxipost import maps
from oxipost.config import load_config
from oxipost.rewrite.resolve import resolve


def test_a_substituting_transport_rule_is_skipped_with_postfix_warning(tmp_path):
    seen: list[str] = []
    maps.set_warning_sink(seen.append)
    try:
        table = tmp_path / "transport"
        table.write_text(
            "/^(.*)@example\\.com$/ smtp:[$1.example.net]\n/@example\\.com$/ relay:[hub]\n"
        )
        (tmp_path / "main.cf").write_text(
            f"mydestination = localhost\ntransport_maps = regexp:{table}\n"
        )
        (tmp_path / "master.cf").write_text("")
        r = resolve("evil.attacker@example.com", load_config(str(tmp_path)))
    finally:
        maps.set_warning_sink(maps._stderr_warning)
    assert (r.transport, r.nexthop) == ("relay", "[hub]")
    assert seen == [
        f"regexp map {table}, line 1: regular expression substitution is not allowed: "
        "skipping this rule"
    ]


def _resolve_with(tmp_path, tables: str, *addresses: str) -> list[tuple[str, str]]:
    (tmp_path / "main.cf").write_text(
        "mydestination = localhost\nrelayhost =\nrecipient_delimiter = +\n"
        f"parent_domain_matches_subdomains =\ntransport_maps = {tables}\n"
    )
    (tmp_path / "master.cf").write_text("")
    cfg = load_config(str(tmp_path))
    return [(r.transport, r.nexthop) for r in (resolve(a, cfg) for a in addresses)]


def test_regexp_transport_table_sees_the_full_address_and_the_wildcard_only(tmp_path):
    """transport(5): "some.domain.hierarchy is not looked up via its parent domains, nor
    is user+foo@domain looked up as user@domain" in a regexp table; transport_lookup()
    asks every table for the `*` wild-card (FULL), and a fixed table for the rest."""
    (tmp_path / "transport.re").write_text(
        "/^example\\.com$/ relay:[domain.hub]\n"
        "/^\\.example\\.com$/ relay:[parent.hub]\n"
        "/^tag@example\\.org$/ relay:[unextended.hub]\n"
        "/^full@example\\.net$/ relay:[full.hub]\n"
    )
    assert _resolve_with(
        tmp_path,
        f"regexp:{tmp_path}/transport.re",
        "u@example.com",
        "u@sub.example.com",
        "tag+x@example.org",
        "full@example.net",
    ) == [
        ("smtp", "example.com"),
        ("smtp", "sub.example.com"),
        ("smtp", "example.org"),
        ("relay", "[full.hub]"),
    ]
    (tmp_path / "wild.re").write_text("/^\\*$/ relay:[wild.hub]\n")
    assert _resolve_with(tmp_path, f"regexp:{tmp_path}/wild.re", "u@example.com") == [
        ("relay", "[wild.hub]")
    ]


def test_fixed_transport_table_address_without_extension_domain_and_parents(tmp_path):
    (tmp_path / "transport").write_text(
        "tag@example.org relay:[unextended.hub]\n"
        ".example.com relay:[parent.hub]\n"
        "example.net :[same.transport]\n"
    )
    assert _resolve_with(
        tmp_path,
        f"texthash:{tmp_path}/transport",
        "tag+x@example.org",
        "u@sub.example.com",
        "u@example.com",
        "u@example.net",
    ) == [
        ("relay", "[unextended.hub]"),
        ("relay", "[parent.hub]"),
        ("smtp", "example.com"),
        ("smtp", "[same.transport]"),
    ]


def test_a_transport_table_that_does_not_open_as_postfix(tmp_path):
    """As Postfix 3.7's trivial-rewrite (compared through smtpd in
    tests/smtpd/test_postfix_differential.py): "error: open database FILE.db: REASON" when
    it opens its tables as it starts, then at each resolve the table's "is unavailable",
    maps_find's "lookup error" for the full address and resolve.c's "transport_maps
    lookup failure", and a failure the caller makes temporary (smtpd's 451 4.3.0, qmgr's
    retry)."""
    from oxipost.rewrite.resolve import open_rewrite_tables

    lines: list[str] = []

    class Log:
        def warning(self, text: str) -> None:
            lines.append(f"warning: {text}")

        def error(self, text: str) -> None:
            lines.append(f"error: {text}")

    previous_warn = maps.set_warning_sink(Log().warning)
    previous_error = maps.allow_surrogates(Log().error)
    try:
        (tmp_path / "main.cf").write_text(
            f"mydestination = localhost\ntransport_maps = hash:{tmp_path}/transport\n"
        )
        (tmp_path / "master.cf").write_text("")
        cfg = load_config(str(tmp_path))
        open_rewrite_tables(cfg, Log())
        reason = f"open database {tmp_path}/transport.db: No such file or directory"
        assert lines == [f"error: {reason}"]
        for _ in range(2):
            with pytest.raises(maps.TableError):
                resolve("u@example.com", cfg)
        assert lines[1:] == 2 * [
            f"warning: hash:{tmp_path}/transport is unavailable. {reason}",
            f'warning: hash:{tmp_path}/transport lookup error for "u@example.com"',
            "warning: transport_maps lookup failure",
        ]
    finally:
        maps.allow_surrogates(previous_error)
        maps.set_warning_sink(previous_warn)
