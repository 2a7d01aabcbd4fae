"""trivial-rewrite's transport_maps: opened with DICT_FLAG_NO_REGSUB (transport(5): "The
trivial-rewrite(8) server disallows regular expression substitution of $1 etc. in
regular expression lookup tables, because that could open a security hole")."""

from __future__ import annotations

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
