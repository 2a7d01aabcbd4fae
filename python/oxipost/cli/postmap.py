"""postmap(1): build and query lookup tables.

    postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file...

Builds `<file>.cdb` for `hash:` (the default_database_type) and `cdb:` atomically, and
`<file>.lmdb` for `lmdb:` in one transaction (oxipost.maps.lmdb); `-q key` and `-q -`
(keys on stdin, `key<TAB>value` out) query any table type; `-s` dumps; `-d` and `-i`
rewrite a `hash:` table and update an `lmdb:` one (cdb files are write-once, as Postfix's
cdb: says). With `-b`
and/or `-h`, `-q -` reads a message and checks its body lines and/or logical headers, as
cleanup's body_checks/header_checks would. Exit status as Postfix's: 0 found (or built),
1 not found, and fatal errors print `postmap: fatal: ...` and exit 1. As Postfix's
msg_text(), each byte of a diagnostic that is not printable ASCII shows as "?", UTF-8 kept
only with smtputf8_enable = yes.

postalias(1) is the same program with aliases(5) syntax; `run` is shared.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence

from oxipost._core import maps as _core
from oxipost.config import Config, ConfigError, load_config
from oxipost.log import maillog_file_refused
from oxipost.maps import (
    BUILT_TYPES,
    TABLE_TYPES,
    CdbTable,
    DictTable,
    Table,
    TableError,
    fold,
    lookup_many,
    open_table,
    os_reason,
    read_file,
    set_warning_sink,
    warn,
    without_non_utf8_lines,
)
from oxipost.printable import printable

USAGE = "[-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file..."
OPTIONS = "bc:d:fFhimnNopq:rsuUvw"


class Fatal(Exception):
    """A postmap/postalias fatal error: the text after `prog: fatal: `."""


# A builder writes a table from its source file (prog, type, name, fold_keys, duplicates,
# utf8, configuration) and returns its warnings.
Builder = Callable[[str, str, str, bool, str, bool, Config], list[str]]


def warning_label(kind: str, name: str) -> str:
    """How build warnings name the table: Postfix's cdb: uses the name given; our hash:
    says which file it writes (Postfix's names its Berkeley DB file, `<name>.db`)."""
    return name if kind == "cdb" else f"{name}.cdb"


def source_text(name: str, utf8: bool) -> tuple[bytes, list[tuple[int, str]]]:
    """The source file `name`; with `utf8` (smtputf8_enable, no -u), without the logical
    lines that are not UTF-8, which Postfix's postmap and postalias skip with a warning
    each, as (line, warning)."""
    text = read_file(name, "open")
    return without_non_utf8_lines(text, name) if utf8 else (text, [])


def by_line(warnings: list[tuple[int, str]]) -> list[str]:
    """Warnings in the order of the lines they are about, as Postfix warns as it reads."""
    return [w for _, w in sorted(warnings, key=lambda lw: lw[0])]


def write_lmdb(
    name: str,
    entries: list[tuple[bytes, bytes, int]],
    dups: str,
    cfg: Config,
    truncate: bool = True,
    plain: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[int, str]]:
    """Store `entries` in `<name>.lmdb` (oxipost.maps.lmdb.write, with lmdb_map_size)."""
    from oxipost.maps import lmdb

    return lmdb.write(name, entries, dups, cfg.get_int("lmdb_map_size"), truncate, plain)


def parse_source(text: bytes, name: str, fold_keys: bool, utf8: bool) -> tuple[list, list]:
    """A postmap source's (key, value, line) entries, keys folded (in Unicode with
    `utf8`), and its warnings."""
    entries, warnings = _core.parse_entries(text, name, "expected format: key whitespace value")
    if fold_keys:
        entries = [(_core.fold_key(k, utf8), v, line) for k, v, line in entries]
    return entries, warnings


def build_postmap(
    prog: str, kind: str, name: str, fold_keys: bool, dups: str, utf8: bool, cfg: Config
) -> list[str]:
    """Build `<name>.cdb` (`<name>.lmdb`) from the postmap source `name`; return the
    warnings."""
    text, skipped = source_text(name, utf8)
    if kind == "lmdb":
        entries, warnings = parse_source(text, name, fold_keys, utf8)
        return by_line(warnings + skipped + write_lmdb(name, entries, dups, cfg))
    try:
        warnings = _core.build_cdb(
            text, name, warning_label(kind, name), name + ".cdb", fold_keys, utf8, dups
        )
    except OSError as e:
        raise Fatal(f"open database {name}.cdb: {os_reason(e)}") from None
    return by_line(warnings + skipped)


def split_spec(spec: str, default_type: str) -> tuple[str, str]:
    kind, colon, name = spec.partition(":")
    if not colon or "/" in kind:
        return default_type, spec
    return kind, name


# Table types Postfix's postmap opens for writing, then finds they cannot create a table
# (postmap's build and -i); fail: and proxy: say other things, left to their lookup.
_NOT_BUILT = tuple(k for k in TABLE_TYPES if k not in (*BUILT_TYPES, "fail", "proxy"))
# Of those, the ones that open for update but do not delete (postmap -d).
_NO_DELETE = ("static", "environ")


def _rewrite(kind: str, name: str, insert: bool) -> None:
    """-d and -i (`insert`) need a table that can be updated: hash: and lmdb: here."""
    if kind == "cdb":
        raise Fatal(
            "dict_cdb_open: inappropriate open flags for cdb database - "
            "specify O_RDONLY or O_WRONLY|O_CREAT|O_TRUNC"
        )
    if insert and kind in _NOT_BUILT:
        raise Fatal(f"unsupported dictionary type: {kind} does not support bulk-mode creation.")
    if kind in _NO_DELETE:
        raise Fatal(f"table {kind}:{name}: delete operation is not supported")
    if kind not in BUILT_TYPES:
        raise Fatal(f"{kind}:{name} map requires O_RDONLY access mode")


def _existing_entries(name: str) -> list[tuple[bytes, bytes, int]]:
    if not os.path.exists(name + ".cdb"):
        return []
    return [(k, v, 0) for k, v in _core.Cdb(name + ".cdb").items()]


def query_message(tables: list[Table], body: bool, header: bool) -> int:
    """-b/-h with -q -: the message on stdin, key = logical header or body line."""
    data = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    keys: list[str] = []
    in_headers = True
    for line in lines:
        line = line.removesuffix("\r")
        if in_headers:
            if line == "":
                in_headers = False
                continue
            if line[:1] in (" ", "\t") and keys and header:
                keys[-1] += "\n" + line
                continue
            if header:
                keys.append(line)
            continue
        if body:
            keys.append(line)
    found = 0
    for key in keys:
        for t in tables:
            value = t.lookup(key)
            if value is not None:
                sys.stdout.write(f"{key}\t{value}\n")
                found += 1
                break
    return 0 if found else 1


def empty_result(spec: str, key: str) -> None:
    """postmap's warnings for a table that answers a key with an empty string (which it
    prints all the same)."""
    warn(f"table {spec}: key {key}: empty string result is not allowed")
    warn(f"table {spec} should return NO RESULT in case of NOT FOUND")


class BlockOut:
    """Postfix's VSTREAM_OUT: what is written leaves in 4096-byte blocks, the rest when
    the program ends well (`close`); a fatal error loses what was still buffered, so a
    `postmap -q -` that fails part way prints what Postfix's prints."""

    SIZE = 4096

    def __init__(self) -> None:
        self.pending = bytearray()

    def write(self, text: str) -> None:
        self.pending += text.encode("utf-8", "surrogateescape")
        if len(self.pending) >= self.SIZE:
            n = len(self.pending) // self.SIZE * self.SIZE
            sys.stdout.buffer.write(self.pending[:n])
            del self.pending[:n]

    def close(self) -> None:
        sys.stdout.buffer.write(self.pending)
        self.pending.clear()


def query_stdin(tables: list[Table], specs: list[str], key_suffix: str) -> int:
    if len(tables) == 1 and type(tables[0]) is CdbTable:
        # The common bulk case stays in Rust from stdin's bytes to stdout's.
        lines, found = tables[0].query_lines(sys.stdin.buffer.read(), key_suffix.encode())
        sys.stdout.buffer.write(lines)
        return 0 if found else 1
    keys = [k.removesuffix("\r") for k in sys.stdin.read().split("\n")]
    if keys and keys[-1] == "":
        keys.pop()
    out = BlockOut()
    found = 0
    if not all(hasattr(t, "lookup_many") for t in tables):
        # A table that asks a server sees the keys as Postfix's postmap asks them: each
        # in every table before the next key.
        for key in keys:
            for t, spec in zip(tables, specs, strict=True):
                value = t.lookup(key)
                if value is not None:
                    found += 1
                    if not value:
                        empty_result(spec, key)
                    out.write(f"{key}{key_suffix}\t{value}\n")
                    break
        out.close()
        return 0 if found else 1
    values: list[str | None] = [None] * len(keys)
    by: list[str] = [""] * len(keys)
    for t, spec in zip(tables, specs, strict=True):
        pending = [i for i, v in enumerate(values) if v is None]
        if not pending:
            break
        answers = lookup_many(t, [keys[i] for i in pending])
        for i, v in zip(pending, answers, strict=True):
            values[i], by[i] = v, spec
    for key, value, spec in zip(keys, values, by, strict=True):
        if value is not None:
            if not value:
                empty_result(spec, key)
            out.write(f"{key}{key_suffix}\t{value}\n")
            found += 1
    out.close()
    return 0 if found else 1


def parse_options(args: list[str], options: str) -> tuple[list[tuple[str, str]], list[str]]:
    """POSIX getopt(3) as getopt.getopt does it, without importing getopt (it pulls in
    gettext: several milliseconds of every `postmap -q` run). ValueError(letter) for an
    unknown option or a missing argument."""
    opts: list[tuple[str, str]] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        i += 1
        if arg == "--":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            at = options.find(letter)
            if at < 0 or letter == ":":
                raise ValueError(letter)
            if options[at + 1 : at + 2] == ":":
                value = arg[j + 1 :]
                if not value:
                    if i >= len(args):
                        raise ValueError(letter)
                    value = args[i]
                    i += 1
                opts.append((f"-{letter}", value))
                break
            opts.append((f"-{letter}", ""))
            j += 1
    return opts, args[i:]


def run(
    prog: str,
    argv: Sequence[str] | None,
    usage: str,
    options: str,
    builder: Builder,
    key_suffix: str = "",
) -> int:
    """The common body of postmap and postalias (whose `-q -` prints `key:<TAB>value`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Postfix's util_utf8_enable, off until main.cf turns it on (smtputf8_enable): what
    # msg_text()'s printable() keeps of a diagnostic's text, each other byte shown as "?".
    utf8_enable = False

    def say(severity: str, text: str) -> None:
        print(f"{prog}: {severity}{printable(text, '?', utf8_enable)}", file=sys.stderr)

    try:
        opts, specs = parse_options(args, options)
    except ValueError as e:
        say("", f"invalid option -- '{e}'")
        say("fatal: ", f"usage: {prog} {usage}")
        return 1
    flags = {o for o, _ in opts}
    # Keys and results are bytes, as in the tables, whatever the locale says: a latin-1
    # key or result is read and printed as such, not a traceback.
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(encoding="utf-8", errors="surrogateescape")
    set_warning_sink(lambda text: say("warning: ", text))
    config_dir = None
    query = delete = None
    for o, a in opts:
        if o == "-c":
            config_dir = a
        elif o == "-q":
            query = a
        elif o == "-d":
            delete = a
    try:
        if sum(x is not None for x in (query, delete)) + ("-s" in flags) > 1:
            raise Fatal("specify only one of -s -q or -d")
        try:
            cfg = load_config(config_dir, master_cf=False, stderr_as=prog)
            utf8_enable = cfg.get_bool("smtputf8_enable")
            default_type = cfg.get("default_database_type") or "hash"
        except ConfigError as e:
            raise Fatal(str(e)) from None
        # Postfix's reads main.cf, and sets up its logging, before it looks for a table.
        refused = maillog_file_refused(cfg)
        if refused is not None:
            raise Fatal(refused)
        if not specs:
            raise Fatal(f"usage: {prog} {usage}")
        fold_keys = "-f" not in flags
        dups = "replace" if "-r" in flags else "ignore" if "-w" in flags else "warn"
        parsed = [split_spec(s, default_type) for s in specs]

        # Postfix's DICT_FLAG_UTF8_REQUEST, which smtputf8_enable = yes makes a check of
        # keys: -u drops it; so do -b and -h (a message's lines), unless -U.
        utf8 = "-u" not in flags and ("-U" in flags or not flags & {"-b", "-h"})
        if query is not None:
            tables = [open_table(f"{k}:{n}", cfg, fold_keys, utf8=utf8) for k, n in parsed]
            if query == "-":
                if "-b" in flags or "-h" in flags:
                    return query_message(tables, "-b" in flags, "-h" in flags)
                return query_stdin(tables, [f"{k}:{n}" for k, n in parsed], key_suffix)
            for kind, name in parsed:
                value = open_table(f"{kind}:{name}", cfg, fold_keys, utf8=utf8).lookup(query)
                if value is not None:
                    if not value:
                        empty_result(f"{kind}:{name}", query)
                    print(value)
                    return 0
            return 1
        if "-s" in flags:
            for kind, name in parsed:
                table = open_table(f"{kind}:{name}", None, fold_keys)
                if kind == "cdb" or not isinstance(table, CdbTable | DictTable):
                    label = f"{name}.cdb" if kind == "cdb" else name
                    raise Fatal(f"table {kind}:{label}: sequence operation is not supported")
                sys.stdout.write("".join(f"{k}{key_suffix}\t{v}\n" for k, v in table.items()))
            return 0
        # DICT_FLAG_UTF8_ACTIVE for a build or an update: its source lines must be UTF-8,
        # its keys fold in Unicode.
        build_utf8 = "-u" not in flags and cfg.get_bool("smtputf8_enable")
        if delete is not None:
            status = 1
            for kind, name in parsed:
                _rewrite(kind, name, insert=False)
                if delete == "-":
                    # Each line is one key, blanks and all, as Postfix's postmap reads them.
                    keys = sys.stdin.read().split("\n")
                    gone = {fold(k, build_utf8) if fold_keys else k for k in keys if k}
                else:
                    gone = {fold(delete, build_utf8) if fold_keys else delete}
                if kind == "lmdb":
                    from oxipost.maps import lmdb

                    lmdb.warn_if_older(name, name + lmdb.SUFFIX)
                    if lmdb.delete(
                        name, sorted(k.encode("utf-8", "surrogateescape") for k in gone)
                    ):
                        status = 0
                    continue
                pairs = _existing_entries(name)
                kept = [e for e in pairs if e[0].decode() not in gone]
                if len(kept) != len(pairs):
                    status = 0
                    _core.write_cdb(name + ".cdb", kept, warning_label(kind, name), "ignore")
            return status
        if "-i" in flags:
            for kind, name in parsed:
                _rewrite(kind, name, insert=True)
                text = sys.stdin.buffer.read()
                skipped: list[tuple[int, str]] = []
                if build_utf8:
                    text, skipped = without_non_utf8_lines(text, "stdin")
                new, warnings = parse_source(text, "stdin", fold_keys, build_utf8)
                if kind == "lmdb":
                    warnings += write_lmdb(name, new, dups, cfg, truncate=False)
                else:
                    pairs = _existing_entries(name) + new
                    warnings += _core.write_cdb(
                        name + ".cdb", pairs, warning_label(kind, name), dups
                    )
                for w in by_line(warnings + skipped):
                    say("warning: ", w)
            return 0
        for kind, name in parsed:
            if kind not in BUILT_TYPES:
                # Postfix's postmap opens the source before the table it cannot build.
                read_file(name, "open")
                if kind in _NOT_BUILT:
                    raise Fatal(
                        f"unsupported dictionary type: {kind} does not support bulk-mode creation."
                    )
                raise Fatal(f"unsupported dictionary type: {kind}")
            for w in builder(prog, kind, name, fold_keys, dups, build_utf8, cfg):
                say("warning: ", w)
        return 0
    except (Fatal, TableError) as e:
        sys.stdout.flush()
        say("fatal: ", str(e))
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run postmap with argv (default sys.argv[1:]); return the exit status."""
    return run("postmap", argv, USAGE, OPTIONS, build_postmap)


if __name__ == "__main__":
    sys.exit(main())
