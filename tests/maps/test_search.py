"""The key search orders of virtual(5)/canonical(5), aliases(5), access(5) and
transport(5), and which of their keys are partial (never given to a pattern table)."""

from __future__ import annotations

from oxipost.config import Config
from oxipost.maps import open_table
from oxipost.maps.search import (
    FULL,
    PARTIAL,
    access_address_keys,
    access_client_keys,
    access_domain_keys,
    alias_keys,
    maps_find,
    split_extension,
    transport_keys,
    virtual_keys,
)


def cfg(**params: str) -> Config:
    return Config("/nonexistent", params, [])


def test_virtual_order_with_extension_local_and_remote():
    assert virtual_keys("User+Ext@Example.COM", "+", local_domain=True) == [
        ("user+ext@example.com", FULL),
        ("user@example.com", PARTIAL),
        ("user+ext", PARTIAL),
        ("user", PARTIAL),
        ("@example.com", PARTIAL),
    ]
    assert virtual_keys("user+ext@example.com", "+", local_domain=False) == [
        ("user+ext@example.com", FULL),
        ("user@example.com", PARTIAL),
        ("@example.com", PARTIAL),
    ]
    assert virtual_keys("user@example.com", "", local_domain=False) == [
        ("user@example.com", FULL),
        ("@example.com", PARTIAL),
    ]
    # A bare local part is the whole address: FULL.
    assert virtual_keys("user+ext", "+", local_domain=True) == [
        ("user+ext", FULL),
        ("user", PARTIAL),
    ]


def test_transport_order_address_without_extension_domain_parents_then_wildcard():
    dotted = cfg(recipient_delimiter="+", parent_domain_matches_subdomains="")
    assert transport_keys("U+x@A.Example.com", dotted) == [
        ("u+x@a.example.com", FULL),
        ("u@a.example.com", PARTIAL),
        ("a.example.com", PARTIAL),
        (".example.com", PARTIAL),
        (".com", PARTIAL),
        ("*", FULL),
    ]
    bare = cfg(recipient_delimiter="+", parent_domain_matches_subdomains="transport_maps")
    assert [k for k, _ in transport_keys("u@a.example.com", bare)] == [
        "u@a.example.com",
        "a.example.com",
        "example.com",
        "com",
        "*",
    ]


def test_maps_find_gives_pattern_tables_the_full_keys_only():
    """Postfix's maps_find(..., DICT_FLAG_FIXED) skips a table without DICT_FLAG_FIXED."""
    domain_rule = open_table("regexp:{{/^example\\.com$/ pattern}, {/^\\*$/ star}}")
    fixed = open_table("inline:{example.com=fixed}")
    keys = [("u@example.com", FULL), ("example.com", PARTIAL), ("*", FULL)]
    assert maps_find([domain_rule], keys) == ("star", "*")
    assert maps_find([domain_rule, fixed], keys) == ("fixed", "example.com")
    # A plain string is a FULL key; every table is asked for one key before the next.
    assert maps_find([domain_rule, fixed], ["example.com"]) == ("pattern", "example.com")
    assert maps_find([fixed, domain_rule], [("x", FULL), ("example.com", PARTIAL)]) == (
        "fixed",
        "example.com",
    )
    assert maps_find([domain_rule], [("", FULL)]) is None


def test_unionmap_and_pipemap_take_their_first_table_kind():
    assert open_table("unionmap:{regexp:{{/x/ y}}, inline:{a=b}}").fixed is False
    assert open_table("pipemap:{inline:{a=b}, regexp:{{/x/ y}}}").fixed is True
    assert open_table("cidr:{{10.0.0.0/8 ok}}").fixed is False
    assert open_table("static:{x}").fixed is True


def test_extension_rules_of_split_addr():
    assert split_extension("a+b+c", "+") == ("a", "b+c")
    assert split_extension("a-b", "+-") == ("a", "b")
    assert split_extension("+a", "+") == ("+a", None)
    assert split_extension("owner-list", "-") == ("owner-list", None)
    assert split_extension("list-request", "-") == ("list-request", None)
    assert split_extension("MAILER-DAEMON", "-") == ("MAILER-DAEMON", None)


def test_alias_keys_use_the_local_part_only():
    assert alias_keys("Joe+Folder@host.example", "+") == ["joe+folder", "joe"]
    assert alias_keys("joe@host.example", "+") == ["joe"]


def test_access_address_domain_and_parents():
    c = cfg(parent_domain_matches_subdomains="smtpd_access_maps", recipient_delimiter="+")
    assert [k for k, _ in access_address_keys("u+x@a.b.example", c)] == [
        "u+x@a.b.example",
        "u@a.b.example",
        "a.b.example",
        "b.example",
        "example",
        "u+x@",
        "u@",
    ]
    dotted = cfg(parent_domain_matches_subdomains="")
    assert [k for k, _ in access_domain_keys("a.b.example", dotted)] == [
        "a.b.example",
        ".b.example",
        ".example",
    ]
    assert access_address_keys("", cfg(smtpd_null_access_lookup_key="<>")) == [("<>", FULL)]
    # Only the address itself is FULL (check_mail_access); a numerical host name has no
    # parent domains (check_domain_access).
    assert [p for _, p in access_address_keys("u+x@a.b.example", c)] == [FULL] + [PARTIAL] * 6
    assert access_domain_keys("192.0.2.1", c) == [("192.0.2.1", FULL)]


def test_access_client_name_then_address_prefixes():
    c = cfg(parent_domain_matches_subdomains="smtpd_access_maps")
    assert access_client_keys("Mail.Example.com", "192.0.2.7", c) == [
        ("mail.example.com", FULL),
        ("example.com", PARTIAL),
        ("com", PARTIAL),
        ("192.0.2.7", FULL),
        ("192.0.2", PARTIAL),
        ("192.0", PARTIAL),
        ("192", PARTIAL),
    ]
    dotted = cfg(parent_domain_matches_subdomains="")
    assert [k for k, _ in access_client_keys("mail.example.com", "192.0.2.7", dotted)][:3] == [
        "mail.example.com",
        ".example.com",
        ".com",
    ]
    assert [k for k, _ in access_client_keys("Mail.Example.com", "192.0.2.7", c)] == [
        "mail.example.com",
        "example.com",
        "com",
        "192.0.2.7",
        "192.0.2",
        "192.0",
        "192",
    ]
    # A client without a name is looked up as "unknown" first, as Postfix 3.7 does.
    assert [k for k, _ in access_client_keys("unknown", "2001:db8:1:2:3:4:5:6", c)][:4] == [
        "unknown",
        "2001:db8:1:2:3:4:5:6",
        "2001:db8:1:2:3:4:5",
        "2001:db8:1:2:3:4",
    ]
