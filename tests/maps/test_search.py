"""The key search orders of virtual(5)/canonical(5), aliases(5) and access(5)."""

from __future__ import annotations

from oxipost.config import Config
from oxipost.maps.search import (
    access_address_keys,
    access_client_keys,
    access_domain_keys,
    alias_keys,
    split_extension,
    virtual_keys,
)


def cfg(**params: str) -> Config:
    return Config("/nonexistent", params, [])


def test_virtual_order_with_extension_local_and_remote():
    assert virtual_keys("User+Ext@Example.COM", "+", local_domain=True) == [
        "user+ext@example.com",
        "user@example.com",
        "user+ext",
        "user",
        "@example.com",
    ]
    assert virtual_keys("user+ext@example.com", "+", local_domain=False) == [
        "user+ext@example.com",
        "user@example.com",
        "@example.com",
    ]
    assert virtual_keys("user@example.com", "", local_domain=False) == [
        "user@example.com",
        "@example.com",
    ]


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
    assert access_address_keys("", cfg(smtpd_null_access_lookup_key="<>")) == [("<>", False)]


def test_access_client_name_then_address_prefixes():
    assert [k for k, _ in access_client_keys("Mail.Example.com", "192.0.2.7")] == [
        "mail.example.com",
        "example.com",
        "com",
        "192.0.2.7",
        "192.0.2",
        "192.0",
        "192",
    ]
    assert [k for k, _ in access_client_keys("unknown", "2001:db8:1:2:3:4:5:6")][:3] == [
        "2001:db8:1:2:3:4:5:6",
        "2001:db8:1:2:3:4:5",
        "2001:db8:1:2:3:4",
    ]
