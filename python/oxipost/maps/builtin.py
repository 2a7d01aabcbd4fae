"""Tables with no file of their own: unix:, environ: and randmap:, as Postfix 3.7's
dict_unix, dict_env and dict_random.

`unix:passwd.byname` answers a user's passwd entry as getpwnam(3) finds it,
`name:passwd:uid:gid:gecos:home:shell`, and `unix:group.byname` a group's entry as
getgrnam(3) finds it, `name:passwd:gid:member,member` (nothing after the last colon for a
group without listed members). Their name is matched exactly ("unix:PASSWD.BYNAME" is no
table); the key is folded to lower case unless the table is opened without folding
(postmap -f), as every Postfix table is asked, so that smtpd's RCPT TO:<ROOT@host> finds
root. Postfix's DEFAULT local_recipient_maps, `proxy:unix:passwd.byname $alias_maps`, asks
the first: a local address is known when its local part is a login name.

`environ:NAME` answers the process's environment variable named by the key (NAME is not
looked at; the key folded as above, so `postmap -f` asks for upper-case names).

`randmap:{a, b, ...}` answers every key with one of its values chosen at random. The values
are separated by commas or white space; a value in braces keeps them and keeps its braces,
as Postfix's mystrtokq does ("randmap:{ {a b}, c }" answers "{a b}" or "c").

unix: and environ: are tables of exact keys (DICT_FLAG_FIXED: an address search gives them
partial keys such as the local part), randmap: is a pattern table (the whole key only).
All three are root's (DICT_OWNER_TRUSTED) and none can be listed (postmap -s), changed or
built.

Diagnostics, Postfix's words (TableError, fatal in commands and a surrogate's reason in
daemons): "unknown table: unix:NAME"; 'bad syntax: "randmap:NAME"; need
"randmap:{value...}"' for a name that is not one balanced brace group holding at least one
value.
"""

from __future__ import annotations

import grp
import os
import pwd
import random

from oxipost.maps import Table, TableError, fold, split_braced, utf8_checked, utf8_refused


def _passwd_entry(name: str) -> str | None:
    try:
        pw = pwd.getpwnam(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the key, which no name holds
        return None
    return (
        f"{pw.pw_name}:{pw.pw_passwd}:{pw.pw_uid}:{pw.pw_gid}:"
        f"{pw.pw_gecos}:{pw.pw_dir}:{pw.pw_shell}"
    )


def _group_entry(name: str) -> str | None:
    try:
        gr = grp.getgrnam(name)
    except (KeyError, ValueError):
        return None
    return f"{gr.gr_name}:{gr.gr_passwd}:{gr.gr_gid}:{','.join(gr.gr_mem)}"


_UNIX_TABLES = {"passwd.byname": _passwd_entry, "group.byname": _group_entry}


class UnixTable:
    """unix:passwd.byname and unix:group.byname (see above)."""

    owner: int | None = 0
    fixed = True
    utf8_name: str | None = None

    def __init__(self, spec: str, name: str, fold_keys: bool) -> None:
        entry = _UNIX_TABLES.get(name)
        if entry is None:
            raise TableError(f"unknown table: {spec}")
        self._entry = entry
        self.fold_keys = fold_keys

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        return utf8_checked(
            self, key, self._entry(fold(key, self.utf8_name is not None) if self.fold_keys else key)
        )


class EnvTable:
    """environ: (see above)."""

    owner: int | None = 0
    fixed = True
    utf8_name: str | None = None

    def __init__(self, fold_keys: bool) -> None:
        self.fold_keys = fold_keys

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        return utf8_checked(
            self,
            key,
            os.environ.get(fold(key, self.utf8_name is not None) if self.fold_keys else key),
        )


def _balpar(text: str) -> int:
    """Postfix's balpar(): the length of the brace group `text` opens, 0 if none."""
    depth = 0
    for i, c in enumerate(text):
        depth += (c == "{") - (c == "}")
        if depth <= 0:
            return i + 1 if depth == 0 and text[0] == "{" else 0
    return 0


def _randmap_values(spec: str, name: str) -> list[str]:
    """The values of `{a, {b c}, d}` as dict_random takes them: the name one balanced
    brace group, split as mystrtokq splits it, inner braces kept."""
    whole = _balpar(name) == len(name)
    values = split_braced(name[1:-1], keep_braces=True) if whole else []
    if not values:
        raise TableError(f'bad syntax: "{spec}"; need "randmap:{{value...}}"')
    return values


class RandomTable:
    """randmap: (see above)."""

    owner: int | None = 0
    fixed = False
    utf8_name: str | None = None

    def __init__(self, spec: str, name: str) -> None:
        self.values = _randmap_values(spec, name)

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        return utf8_checked(self, key, random.choice(self.values))


def open_builtin_table(spec: str, kind: str, name: str, fold_keys: bool) -> Table:
    """The unix:, environ: or randmap: table `spec` (TableError in Postfix's words)."""
    if kind == "unix":
        return UnixTable(spec, name, fold_keys)
    if kind == "environ":
        return EnvTable(fold_keys)
    return RandomTable(spec, name)
