"""user_acl: which local users may submit mail, view or flush the queue (Postfix's
global/user_acl.c).

`refused(cfg, param, uid)` matches the login name of uid against the user list in the
parameter param (authorized_submit_users, authorized_mailq_users, authorized_flush_users):
user names, `!name`, and type:table lookups such as the default `static:anyone`, first
match wins, no match refuses. A uid without a password entry is matched as "unknown", as
Postfix does, so that `static:anyone` still admits it and `!unknown` can refuse it.

`deny(cfg, prog, text)` reports a refusal as Postfix's set-gid commands do: "PROG: fatal:
TEXT" on stderr, and the same line in the log when this process may write it.
"""

from __future__ import annotations

import pwd
from collections.abc import Sequence

from oxipost import match_list
from oxipost.config import Config
from oxipost.log import command_message
from oxipost.maps import TableError, fold, folds_utf8


def login_name(uid: int) -> str:
    """uid's login name, "unknown" without a password entry (user_acl.c)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "unknown"


def refused(cfg: Config, param: str, uid: int) -> str | None:
    """None when the user uid is in the list param; else its name, for the message."""
    name = login_name(uid)
    if string_list_match(cfg, cfg.get_list(param), name, param):
        return None
    return name


def string_list_match(cfg: Config, items: list[str], name: str, pname: str = "") -> bool:
    """Postfix's string_list_match() on the list `pname` (its value `items`): each item
    the name itself or a type:table asked for it (static:anyone matches all), !negation,
    /file/name (oxipost.match_list), the first match wins. Names match whole: a user
    "john.doe" is not matched by ".doe" (a domain list's parent-domain form)."""
    return string_patterns_match(cfg, match_list.patterns(cfg, pname, items), name, pname)


def string_patterns_match(
    cfg: Config | None, patterns: Sequence[match_list.Pattern], name: str, pname: str
) -> bool:
    """string_list_match() on a list already expanded (match_list.patterns); names
    folded as match_string() folds them (maps.fold)."""
    utf8 = folds_utf8(cfg)
    folded = fold(name, utf8)
    for result, item in patterns:
        if ":" in item:
            try:
                hit = match_list.table(cfg, item).lookup(name) is not None
            except TableError:
                match_list.lookup_problem(pname, item)
                raise
        else:
            hit = fold(item, utf8) == folded
        if hit:
            return result
    return False


def deny(cfg: Config, prog: str, text: str) -> None:
    """Say "PROG: fatal: TEXT" on stderr and in the log, as a Postfix command's msg_fatal."""
    command_message(cfg, prog, text, "fatal")
