"""authorized_*_users are Postfix string lists: whole names, type:table lookups of the
name, !negation, the first match wins; never a domain list's parent-domain forms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from oxipost.user_acl import login_name, refused, string_list_match

from tests.delivery.conftest import make_config


@pytest.mark.parametrize(
    ("items", "name", "matched"),
    [
        (["john.doe"], "john.doe", True),
        (["nobody", "john.doe"], "john.doe", True),
        (["!john.doe", "static:anyone"], "john.doe", False),
        (["static:anyone"], "john.doe", True),
        (["inline:{ john.doe=yes }"], "john.doe", True),
        (["inline:{ doe=yes, .doe=yes }"], "john.doe", False),
        # A domain list's parent-domain forms match nothing in a user list.
        ([".doe"], "john.doe", False),
        (["doe"], "john.doe", False),
        ([], "john.doe", False),
    ],
)
def test_user_list_matches_whole_names(
    tmp_path: Path, items: list[str], name: str, matched: bool
) -> None:
    cfg = make_config(tmp_path)
    assert string_list_match(cfg, items, name) is matched


def test_refused_names_the_user(tmp_path: Path) -> None:
    me = login_name(os.getuid())
    cfg = make_config(tmp_path, main=f"authorized_submit_users = !{me}, static:anyone\n")
    assert refused(cfg, "authorized_submit_users", os.getuid()) == me
    cfg = make_config(tmp_path / "b", main=f"authorized_submit_users = nobody, {me}\n")
    assert refused(cfg, "authorized_submit_users", os.getuid()) is None
