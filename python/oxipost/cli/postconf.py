"""postconf(1): show or change the configuration, as Postfix's postconf does.

postconf [-c dir] [-dhnx] [name ...]      show parameters (-d defaults, -n only main.cf's,
                                          -h values only, -x expand $names)
postconf [-c dir] [-e] name=value ...    edit main.cf in place (atomically; -e is implied
                                          by a first argument with "=", as since Postfix 2.8)
postconf [-c dir] -X name ... | -# name   remove / comment out main.cf parameters
postconf [-c dir] [-e] -M name/type="entry" | -MX name/type | -M# name/type
postconf [-c dir] [-e] -F name/type/field=value
postconf [-c dir] [-e] -P name/type/parameter=value | -PX name/type/parameter
                                          edit master.cf (an entry edited is written anew
                                          as -Mf shows it)
postconf [-c dir] -M[f] [name[/type]]     show master.cf services (-f folds long lines;
                                          "*" in a selector matches any name or type)
postconf [-c dir] -F[fh] [name[/type[/field]]]
                                          show master.cf fields as name/type/field = value
postconf [-c dir] -P [service/type/name]  show master.cf -o parameters
postconf -m                               list the lookup table types

Options combine as Postfix's compatibility matrix allows (one major mode: -p, the default,
-M, -F, -P, -m, ...; modifiers that go with it), else `fatal: specify one of -d -n` or
`fatal: with option -P, do not specify -n`. -x with -M, -F or -P expands the values of the
leading -o options as their service sees them ($service_name is its name); -H shows names
without values.

Diagnostics go to stderr as `postconf: warning: ...` / `postconf: fatal: ...` with Postfix's
wording; fatal errors exit 1, as Postfix's do. Each byte outside printable ASCII shows as
"?" ("é" is "??"): postconf leaves Postfix's UTF-8 support off, so its printable() does not
spare UTF-8 sequences. A "$" that starts no macro ("$é{x}") is `warning: empty macro name:
"VALUE"`, and `fatal: macro processing error` where a parameter postconf knows expands
through it (see _check_macros). A main.cf name that nothing refers to is no parameter:
asked for by name it is `warning: NAME: unknown parameter`, and it is warned of as unused
by the main.cf listings only (-M, -F and -P judge master.cf's -o names alone).
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Sequence

from oxipost.config import (
    Config,
    ConfigError,
    config_directory,
    load_config,
    maincf,
    mastercf,
    params,
)
from oxipost.config.expand import empty_macro as _empty_macro
from oxipost.config.expand import macro_name_at as _macro_name_at
from oxipost.config.mastercf import Service
from oxipost.printable import printable

PROG = "postconf"
LINE_LIMIT = 80


class Fatal(Exception):
    """Ends the command with `postconf: fatal: MESSAGE` and exit status 1."""


def _say(severity: str, text: str) -> None:
    print(f"{PROG}: {severity}: {printable(text, utf8=False)}", file=sys.stderr)


def _warn(text: str) -> None:
    _say("warning", text)


# Parameters postconf reads as it starts, through Postfix's "mail_dict" (mail_conf_eval):
# a macro error in one of these fails there, before any value is scanned.
_READ_AT_START = ("myhostname", "mydomain", "inet_interfaces", "inet_protocols")


def _first_empty_macro(cfg: Config, value: str, seen: set[str]) -> str | None:
    """The first value, value itself or one its $names bring in from main.cf (as expanding
    it reads them, left to right), with an empty macro name; None if there is none."""
    i = value.find("$")
    while i >= 0:
        name = _macro_name_at(value, i)
        if name is None:
            return value
        if value[i + 1 : i + 2] in ("{", "("):
            name = _macro_name_at(value, i + 1) or ""
        if name and name in cfg.settings and name not in seen:
            seen.add(name)
            inner = _first_empty_macro(cfg, cfg.settings[name], seen)
            if inner is not None:
                return inner
        i = value.find("$", i + 2 if value[i + 1 : i + 2] == "$" else i + 1)
    return None


def _check_macros(cfg: Config) -> None:
    """Postfix's postconf on a "$" that starts no macro ("a$", "$-x", "$é{x}"): each main.cf
    value that has one is warned of (`empty macro name: "VALUE"`) as postconf scans it, and
    a parameter postconf knows, whose value expands through such a value, is fatal (`macro
    processing error`), whatever was asked but -d and the edits. Postfix goes through
    main.cf in its hash table's order, seeded afresh at each run, and stops at the first
    fatal: where several values are at fault, which lines come before the fatal varies from
    one of its runs to the next. Here it is main.cf's order; one value at fault gives
    Postfix's lines exactly."""
    for name in _READ_AT_START:
        bad = _first_empty_macro(cfg, f"${name}", set())
        if bad is not None:
            _warn(f'empty macro name: "{bad}"')
            raise Fatal("dictionary mail_dict: macro processing error")
    for name, value in cfg.settings.items():
        if _empty_macro(value):
            _warn(f'empty macro name: "{value}"')
        if cfg.has_default(name):
            _expandable(cfg, name, value)


def _expandable(cfg: Config, name: str, value: str) -> None:
    """Fatal, as Postfix's expansion of a value, where expanding it meets an empty macro."""
    bad = _first_empty_macro(cfg, value, {name})
    if bad is not None:
        _warn(f'empty macro name: "{bad}"')
        raise Fatal("macro processing error")


def _scan(cfg: Config) -> None:
    """postconf_user.c's scan, before anything is shown: master.cf's undefined names; the
    defaults, which computes mynetworks' where main.cf does not set it (so that a bad
    inet_protocols, mynetworks_style or inet_interfaces is fatal here); then each main.cf
    value, its undefined names and then its value, whose compatibility level comparisons
    are judged ('malformed compatibility level syntax: "X"', then fatal)."""
    for w in cfg.undefined_in_master():
        _warn(w)
    params.check_mynetworks(cfg)
    for value in cfg.settings.values():
        for w in cfg.undefined_in(value):
            _warn(w)
        try:
            cfg.expand(value)
        except ConfigError as e:
            # Other expansion errors are judged where a value is shown (-x).
            if e.warnings:
                raise


def _normalize(value: str) -> str:
    """postconf prints a value with each run of white space as one space."""
    return " ".join(value.split())


def _line(name: str, value: str, names_only: bool, values_hidden: bool = False) -> str:
    if names_only:
        return value
    if values_hidden:
        return name
    return f"{name} = {value}" if value else f"{name} ="


# The column where each master.cf field starts in postconf -M output; a field that overflows
# its column pushes the next one right by one space, and later fields return to their stops.
_MASTER_STOPS = (0, 11, 17, 25, 33, 41, 49, 57)
_INDENT = "    "


def _grouped(arg: str) -> str:
    """An argument as master.cf must spell it: in "{ }" when it holds white space."""
    return "{" + arg + "}" if any(c in mastercf.BLANKS for c in arg) else arg


def _command_text(line: str, args: Sequence[str], fold: bool) -> str:
    """line, then the command's arguments as Postfix's postconf lays them out: an option
    with a value (-o name=value) on a line of its own when folding, other words wrapped
    before 80 columns. An argument with white space is shown in "{ }", except the one that
    ends the leading options, which Postfix shows bare."""
    line_len = len(line.rpartition("\n")[2])
    in_options = True
    i = 0
    while i < len(args):
        text = args[i]
        # Postfix leaves the braces out when it measures whether a word still fits.
        width = len(text)
        value = None
        if not in_options:
            text = _grouped(text)
        elif not text.startswith("-") or text == "--":
            in_options = False
        elif mastercf.expects_value(text) and i + 1 < len(args):
            value = args[i + 1]
            text += " " + _grouped(value)
            line_len = LINE_LIMIT
        if line_len > len(_INDENT):
            if not fold or line_len + 1 + width < LINE_LIMIT:
                line += " "
                line_len += 1
            else:
                line += "\n" + _INDENT
                line_len = len(_INDENT)
        line += text
        line_len += len(text)
        if value is not None:
            i += 1
            line_len = LINE_LIMIT
        i += 1
    return line


def _service_line(svc: Service, fold: bool) -> str:
    head = ""
    for stop, text in zip(_MASTER_STOPS, svc.columns()[:8], strict=True):
        if head:
            head += " " * max(1, stop - len(head))
        head += text
    return _command_text(head, svc.args, fold)


# postconf -F's names for the eight master.cf columns, in column order.
_FIELDS = (
    "service",
    "type",
    "private",
    "unprivileged",
    "chroot",
    "wakeup",
    "process_limit",
    "command",
)


def _service_pattern(text: str, least: int, most: int) -> list[str] | None:
    """A "name/type/..." selector of `least` to `most` parts, the missing ones "*" (matches
    anything), or None if it is none. As Postfix's pcf_parse_service_pattern: empty parts
    are skipped ("smtp/" is "smtp", "a//b" is "a/b"), but not a leading "/", and "*" must be
    a part by itself."""
    pattern = [part for part in text.split("/") if part]
    wildcards = any("*" in part and part != "*" for part in pattern)
    if text.startswith("/") or not least <= len(pattern) <= most or wildcards:
        return None
    return pattern + ["*"] * (most - len(pattern))


def _pattern(text: str, parts: int, option: str, syntax: str) -> list[str]:
    """A selector of -M, -F or -P (one to `parts` parts); fatal if it is none."""
    pattern = _service_pattern(text, 1, parts)
    if pattern is None:
        raise Fatal(f"-{option} option requires {syntax}")
    return pattern


def _matches(pattern: list[str], name: str, typ: str) -> bool:
    return pattern[0] in ("*", name) and pattern[1] in ("*", typ)


def _field_number(name: str) -> int:
    """The column that -F's field name names; fatal for a name that is none."""
    if name not in _FIELDS:
        raise Fatal(f'invalid service attribute name: "{name}"')
    return _FIELDS.index(name)


def _show_services(cfg: Config, selectors: Sequence[str], fold: bool) -> None:
    patterns = [_pattern(s, 2, "M", "service_name[/type]") for s in selectors]
    hits = [0] * len(patterns)
    for svc in cfg.services:
        if not patterns:
            print(_service_line(svc, fold))
        for n, pattern in enumerate(patterns):
            if _matches(pattern, svc.name, svc.type):
                hits[n] += 1
                print(_service_line(svc, fold))
    for selector, hit in zip(selectors, hits, strict=True):
        if not hit:
            _warn(f'unmatched request: "{selector}"')


def _field_line(
    svc: Service, field: int, fold: bool, names_only: bool, values_hidden: bool = False
) -> str:
    """One "name/type/field = value" line of postconf -F (the value alone with -h, the
    name alone with -H)."""
    if values_hidden:
        return f"{svc.key}/{_FIELDS[field]}"
    line = "" if names_only else f"{svc.key}/{_FIELDS[field]} = "
    value = svc.columns()[field]
    # Postfix puts a value that would overflow on a line of its own, folding or not.
    if line and len(line) + len(value) > LINE_LIMIT:
        line += "\n" + _INDENT
    if field < len(_FIELDS) - 1:
        return line + value
    return _command_text(line + value, svc.args, fold)


def _show_service_fields(
    cfg: Config, selectors: Sequence[str], fold: bool, names_only: bool, values_hidden: bool
) -> None:
    syntax = "service_name[/type[/field]]"
    patterns = [_pattern(s, 3, "F", syntax) for s in selectors]
    for pattern in patterns:
        if pattern[2] != "*":
            _field_number(pattern[2])
    everything = range(len(_FIELDS))
    hits = [0] * len(patterns)
    for svc in cfg.services:
        if not patterns:
            for field in everything:
                print(_field_line(svc, field, fold, names_only, values_hidden))
        for n, pattern in enumerate(patterns):
            if not _matches(pattern, svc.name, svc.type):
                continue
            hits[n] += 1
            wanted = pattern[2]
            for field in everything if wanted == "*" else [_FIELDS.index(wanted)]:
                print(_field_line(svc, field, fold, names_only, values_hidden))
    for selector, hit in zip(selectors, hits, strict=True):
        if not hit:
            _warn(f'unmatched request: "{selector}"')


def _show_service_params(
    cfg: Config, selectors: Sequence[str], names_only: bool, values_hidden: bool
) -> None:
    """postconf -P: each service's -o parameters, sorted, as "name/type/parameter = value".
    As Postfix's: a service without any is skipped; each selector prints what it matches
    (two that match the same line print it twice) and warns `unmatched request` if none."""
    patterns = [_pattern(s, 3, "P", "service_name[/type[/parameter]]") for s in selectors]
    hits = [0] * len(patterns)

    def show(svc: Service, name: str) -> None:
        shown = _normalize(svc.overrides[name])
        print(_line(f"{svc.key}/{name}", shown, names_only, values_hidden))

    for svc in cfg.services:
        if not svc.overrides:
            continue
        if not patterns:
            for name in sorted(svc.overrides):
                show(svc, name)
        for n, pattern in enumerate(patterns):
            if not _matches(pattern, svc.name, svc.type):
                continue
            wanted = pattern[2]
            if wanted == "*":
                for name in sorted(svc.overrides):
                    show(svc, name)
            elif wanted in svc.overrides:
                show(svc, wanted)
            else:
                continue
            hits[n] += 1
    for selector, hit in zip(selectors, hits, strict=True):
        if not hit:
            _warn(f'unmatched request: "{selector}"')


def _show_parameters(cfg: Config, names: Sequence[str], opts: set[str]) -> None:
    defaults, non_default, hide, expand = ("d" in opts, "n" in opts, "h" in opts, "x" in opts)
    values_hidden = "H" in opts
    # A main.cf name nothing refers to is no parameter to Postfix: left out of listings
    # (and warned about) and, asked for by name, an unknown parameter.
    used_user, unused = cfg.user_defined()
    if names:
        selected = list(names)
    elif non_default:
        shown = set(cfg.settings) - set(unused)
        selected = sorted(shown | ({"config_directory"} if cfg.explicit_dir else set()))
    else:
        selected = sorted(set(cfg.names()) | set(used_user))
    for name in selected:
        if defaults:
            value = cfg.default(name)
        elif non_default and name not in cfg.settings and name != "config_directory":
            continue
        else:
            value = None if name in unused else cfg.raw(name)
        if value is None:
            _warn(f"{name}: unknown parameter")
            continue
        if expand and not values_hidden:
            _expandable(cfg, name, value)
            value = cfg.expand(value)
        print(_line(name, _normalize(value), hide, values_hidden))


def _edit_request(arg: str, mode: set[str], opts: str) -> tuple[str, str | None]:
    """One edit argument as (pattern, value), value None for -X and -#, with Postfix's
    complaints (opts names the options in them)."""
    if "\n" in arg:
        raise Fatal(f"{opts} no multi-line input")
    text = arg.lstrip(maincf.SPACE)
    if text.startswith("#"):
        raise Fatal(f"{opts} no comment input")
    if "e" in mode:
        try:
            return mastercf.split_nameval(text)
        except ValueError as e:
            raise Fatal(f'{e}: "{text if opts.startswith("-e,") else arg}"') from None
    return text, None


def _edit_main(path: str, args: Sequence[str], mode: set[str]) -> None:
    """postconf -e, -X and -# on main.cf (see maincf.edit)."""
    requests: dict[str, str | None] = {}
    for arg in args:
        name, value = _edit_request(arg, mode, "-e, -X, or -# accepts")
        if value is None:
            if not name:
                raise Fatal("-X or -# requires non-blank parameter names")
            if "=" in name:
                raise Fatal("-X or -# requires parameter names without value")
            name = name.rstrip(maincf.SPACE)
        if name in requests:
            _warn(f"ignoring earlier request: '{name} = {requests[name]}'")
            del requests[name]
        requests[name] = value
    try:
        warnings = maincf.edit(path, requests, comment_out="#" in mode)
    except maincf.MainCfError as e:
        raise Fatal(str(e)) from None
    for warning in warnings:
        _warn(warning)


_MASTER_EDIT_OPTS = "-Me, -Fe, -Pe, -X, or -#"


class _MasterEdit:
    """One master.cf edit request (Postfix's PCF_MASTER_EDIT_REQ)."""

    def __init__(self, arg: str, mode: set[str]) -> None:
        self.raw = arg
        self.matches = 0
        pattern, self.value = _edit_request(arg, mode, f"{_MASTER_EDIT_OPTS} accept")
        if self.value is None:
            if "=" in pattern:
                raise Fatal("-X or -# requires names without value")
            pattern = pattern.rstrip(maincf.SPACE)
        self.field = -1
        self.param = ""
        value = self.value or ""
        if "M" in mode:
            words = _service_pattern(pattern, 2, 2)
            if words is None:
                raise Fatal("-Me, -MX or -M# requires service_name/type")
        elif "F" in mode:
            words = _service_pattern(pattern, 3, 3)
            if words is None:
                raise Fatal("-Fe or -FX requires service_name/type/field_name")
            if words[2] == "*":
                raise Fatal("-Fe does not accept wild-card field name")
            self.field = _field_number(words[2])
            if self.field < len(_FIELDS) - 1 and any(c in mastercf.BLANKS for c in value):
                raise Fatal("-Fe does not accept whitespace in non-command field")
        else:
            words = _service_pattern(pattern, 3, 3)
            if words is None:
                raise Fatal("-Pe or -PX requires service_name/type/parameter")
            self.param = words[2]
            if self.param == "*":
                raise Fatal("-Pe does not accept wild-card parameter name")
            if any(c in mastercf.BLANKS for c in value):
                raise Fatal("-Pe does not accept whitespace in parameter value")
        self.pattern = words


def _edit_param(svc: Service, name: str, value: str | None) -> Service:
    """svc with its leading "-o name=..." set to value (added after the leading options
    when missing) or, value None, removed, as Postfix's pcf_edit_master_param."""
    args = list(svc.args)
    matched = False
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        if mastercf.expects_value(args[i]) and i + 1 < len(args):
            if args[i] == "-o" and args[i + 1].startswith(name + "="):
                matched = True
                if value is None:
                    del args[i : i + 2]
                    continue
                args[i + 1] = f"{name}={value}"
            i += 1
        i += 1
    if value is not None and not matched:
        args[i:i] = ["-o", f"{name}={value}"]
    return svc._replace(args=args)


def _edit_field(svc: Service, field: int, value: str, path: str) -> Service:
    """svc with one column set to value, as Postfix's pcf_edit_master_field; the command
    column takes the arguments too, read as master.cf reads them ("{ }" groups)."""
    columns = svc.columns()[:7]
    if field == len(_FIELDS) - 1:
        return _new_entry(" ".join([*columns, value]), path, svc.lineno)
    columns[field] = value
    try:
        mastercf.check_columns([*columns, svc.command], value)
    except mastercf.MasterCfError as e:
        raise Fatal(str(e)) from None
    name, typ, private, unpriv, chroot, wakeup, maxproc = columns
    return svc._replace(
        name=name,
        type=typ,
        private=private,
        unpriv=unpriv,
        chroot=chroot,
        wakeup=wakeup,
        maxproc=maxproc,
    )


def _edit_master(path: str, args: Sequence[str], mode: set[str]) -> None:
    """postconf -Me, -MX, -M#, -Fe, -Pe and -PX on master.cf, as Postfix's pcf_edit_master:
    an entry that a request names is printed anew as postconf -Mf shows it (after the
    comment lines among its continuation lines), removed, or commented out; -Me adds an
    entry it finds nowhere at the end, -F and -P warn of it."""
    reqs = [_MasterEdit(arg, mode) for arg in args]
    try:
        lines = maincf.read_lines(path)
    except maincf.MainCfError as e:
        raise Fatal(str(e)) from None
    out: list[str] = []
    matched = False
    lineno = 0
    whole = "M" in mode and "e" in mode
    while lineno < len(lines):
        line = lines[lineno]
        lineno += 1
        if not maincf.is_content(line):
            out.append(line)
            continue
        if line[0] in maincf.SPACE:
            if not matched:
                out.append(line)
            elif "#" in mode:
                out.append("#" + line)
            continue
        matched = False
        words = line.split(None, 2)
        where = f"file {path}: line {lineno}"
        if len(words) < 2:
            raise Fatal(f"{where}: specify service name and type on the same line")
        name, typ = words[0], words[1]
        if "=" in name:
            raise Fatal(
                f'{where}: service name syntax "{name}" is unsupported with {_MASTER_EDIT_OPTS}'
            )
        if "=" in typ or "/" in typ:
            raise Fatal(
                f'{where}: service type syntax "{typ}" is unsupported with {_MASTER_EDIT_OPTS}'
            )
        new: Service | None = None
        for req in reqs:
            tentative = _new_entry(req.value or "", path, 0, req.raw) if whole else None
            if _matches(req.pattern, name, typ):
                matched = True
                req.matches += 1
                if "M" in mode:
                    if tentative is not None and req.matches == 1:
                        new = tentative
                elif "e" in mode or "X" in mode:
                    if new is None:
                        text, first = line, lineno
                        # The continuation lines go with it; comments among them stay.
                        while lineno < len(lines) and lines[lineno][0] in "#" + maincf.SPACE:
                            if maincf.is_content(lines[lineno]):
                                text += lines[lineno]
                            else:
                                out.append(lines[lineno])
                            lineno += 1
                        new = _new_entry(text, path, first)
                    if "F" in mode:
                        new = _edit_field(new, req.field, req.value or "", path)
                    else:
                        new = _edit_param(new, req.param, req.value)
            elif tentative is not None and _matches([tentative.name, tentative.type], name, typ):
                matched = True
                req.matches += 1
                if req.matches == 1:
                    new = tentative
        if new is not None:
            out.append(_service_line(new, fold=True) + "\n")
        elif not matched:
            out.append(line)
        elif "#" in mode:
            out.append("#" + line)
    for req in reqs:
        if req.matches:
            continue
        if whole:
            entry = _new_entry(req.value or "", path, 0, req.raw)
            out.append(_service_line(entry, fold=True) + "\n")
        elif "M" not in mode:
            _warn(f'unmatched service_name/type: "{req.raw}"')
    maincf.replace(path, out)


def _new_entry(text: str, path: str, lineno: int, request: str = "") -> Service:
    """The entry text describes, judged as postconf judges master.cf; a short one is fatal
    with the request it came from (`postconf -M name/type="entry"`) or the file's line."""
    try:
        return mastercf.parse_entry(text, path, lineno, [])
    except mastercf.MasterCfError as e:
        if str(e) != mastercf.BAD_FIELD_COUNT:
            raise Fatal(str(e)) from None
        if request:
            raise Fatal(f'{e}: "{request}"') from None
        raise Fatal(f"file {path}: line {lineno}: {e}") from None


def _parse_args(
    argv: Sequence[str],
) -> tuple[str | None, set[str], list[str], dict[str, str]]:
    config_dir: str | None = None
    opts: set[str] = set()
    args: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            args.extend(argv[i + 1 :])
            break
        if arg.startswith("-") and len(arg) > 1 and not args:
            j = 1
            while j < len(arg):
                flag = arg[j]
                if flag in "bt" and ("t" if flag == "b" else "b") in opts:
                    raise Fatal("specify one of -b and -t")
                if flag in "coCT":
                    value = arg[j + 1 :] or (argv[i + 1] if i + 1 < len(argv) else None)
                    if value is None:
                        raise Fatal(f"option requires an argument -- '{flag}'")
                    if not arg[j + 1 :]:
                        i += 1
                    if flag == "c":
                        config_dir = value
                    elif flag == "T":
                        opts.add("T")
                        overrides["-T"] = value
                    elif flag == "o":
                        opts.add("o")
                        name, eq, setting = value.partition("=")
                        if not eq:
                            raise Fatal(
                                f"invalid parameter override: {value}: "
                                "missing '=' after attribute name"
                            )
                        overrides[name.strip()] = setting.strip()
                    break
                if flag not in "dhHnpxeX#MmPfFvlbtTaA":
                    raise Fatal(f"invalid option -- '{flag}'")
                if flag != "v":
                    opts.add(flag)
                j += 1
        else:
            args.append(arg)
        i += 1
    return config_dir, opts, args, overrides


# postconf's option names in the order Postfix lists them in its complaints
# (pcf_compat_names); -C, -c and -v take no part in the checks.
_OPTION_ORDER = "aAbdefFhHlmMnopPtTxX#"
# Its major modes: exactly one applies (-p, main.cf parameters, when none is given).
_MAJOR = "aAblmtTpMFP"
# Each group holds options of which at most one may be given (pcf_incompat_options).
_EXCLUSIVE = (_MAJOR, "den#X", "fe#X", "xe#X", "ode#X", "he#XH")
# Each major mode, and the only options that may go with it (pcf_compat_options).
_COMPATIBLE = {
    **dict.fromkeys("aAbTtlm", ""),
    "p": "eX#fhxdnoH",
    "M": "eX#fox",
    "F": "efhoxH",
    "P": "eXfhoxH",
}


def _names(options: set[str]) -> str:
    return " ".join(f"-{o}" for o in _OPTION_ORDER if o in options)


def _mode(opts: set[str], args: Sequence[str]) -> set[str]:
    """The options with the implicit ones made explicit, judged as Postfix's postconf
    judges them: -p when no major mode is given, -e when the first argument has an "="
    (Postfix 2.8 and later); conflicting and useless combinations are fatal."""
    mode = set(opts)
    if not mode & set(_MAJOR):
        mode.add("p")
    if mode & set("pMFP") and args and "=" in args[0]:
        mode.add("e")
    for group in _EXCLUSIVE:
        given = mode & set(group)
        if len(given) > 1:
            raise Fatal(f"specify one of {_names(given)}")
    for major in _MAJOR:
        excess = mode - {major} - set(_COMPATIBLE[major])
        if major in mode and excess:
            raise Fatal(f"with option -{major}, do not specify {_names(excess)}")
    if "e" in mode and not args:
        raise Fatal("-e requires name=value argument")
    return mode


def _tls_version(info: tuple[int, ...]) -> str:
    """An OpenSSL version tuple as "openssl version" names it, without the release date
    Python does not keep: 3.0.16, or 1.1.1w (the patch a letter before OpenSSL 3)."""
    major, minor, fix, patch = info[:4]
    if major >= 3:
        return f"OpenSSL {major}.{minor}.{patch}"
    return f"OpenSSL {major}.{minor}.{fix}{chr(96 + patch) if patch else ''}"


# The public-key algorithms of the certificates our TLS loads (smtpd_tls_cert_file,
# smtpd_tls_chain_files), as Postfix 3.7 lists its own.
_PUBLIC_KEY_ALGORITHMS = ("dsa", "ecdsa", "rsa")


def _listing(mode: set[str], tls_mode: str) -> list[str] | None:
    """What -a, -A, -l, -m and -T show, one item a line; None for the other modes. An
    unknown -T mode is warned of and shows nothing. (The modules that serve each are
    imported only when asked: postconf's other modes stay light.)"""
    if "a" in mode:
        from oxipost.smtpd.sasl import SASL_SERVER_TYPES

        return list(SASL_SERVER_TYPES)
    if "A" in mode:
        from oxipost.delivery.smtp import SASL_CLIENT_TYPES

        return list(SASL_CLIENT_TYPES)
    if "l" in mode:
        from oxipost.delivery.mailstore import LOCK_METHODS

        return list(LOCK_METHODS)
    if "m" in mode:
        from oxipost.maps import TABLE_TYPES

        return sorted(TABLE_TYPES)
    if "T" not in mode:
        return None
    if tls_mode == "compile-version":
        return [_tls_version(ssl._OPENSSL_API_VERSION)]
    if tls_mode == "run-version":
        return [ssl.OPENSSL_VERSION]
    if tls_mode == "public-key-algorithms":
        return list(_PUBLIC_KEY_ALGORITHMS)
    _warn(f"unknown 'postconf -T' mode: {tls_mode}")
    return []


def _templates(config_dir: str | None, mode: set[str], args: Sequence[str]) -> int:
    """postconf -b / -t [template_file]: the bounce templates (bounce_template_file's
    when none is named) expanded or as written. As Postfix's postconf runs bounce(8) for
    it, the diagnostics are the bounce daemon's ("postfix/bounce: warning: ...")."""
    if len(args) > 1:
        raise Fatal("options -b and -t require at most one template file")
    from oxipost.bounce.template import TemplateError, Templates

    cfg = load_config(config_dir, master_cf=False)
    prog = f"{cfg.get('syslog_name')}/bounce"

    def warn(text: str) -> None:
        print(f"{prog}: warning: {text}", file=sys.stderr)

    try:
        templates = Templates(cfg, args[0] if args else None, warn)
        out = templates.expand_all() if "b" in mode else templates.dump()
    except TemplateError as e:
        print(f"{prog}: fatal: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


def _expanded(cfg: Config) -> None:
    """postconf -x on master.cf: the value of each leading -o option expanded as that
    service sees it (its own -o values, then main.cf; $service_name is its name). The
    command's other arguments ($recipient of pipe) are left as they are."""
    for n, svc in enumerate(cfg.services):
        if not svc.overrides:
            continue
        scope = cfg.for_entry(svc)
        args = list(svc.args)
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            if mastercf.expects_value(args[i]) and i + 1 < len(args):
                i += 1
                if args[i - 1] == "-o":
                    try:
                        name, value = mastercf.split_nameval(args[i])
                    except ValueError:
                        pass
                    else:
                        args[i] = f"{name}={scope.expand(value)}"
            i += 1
        overrides = {name: scope.expand(value) for name, value in svc.overrides.items()}
        cfg.services[n] = svc._replace(args=args, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run postconf with argv (default sys.argv[1:]); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config_dir, opts, args, overrides = _parse_args(argv)
        mode = _mode(opts, args)
        tls_mode = overrides.pop("-T", "")
        if "m" in mode:
            # As Postfix's (mail_conf_read, which reads main.cf for dynamicmaps.cf before it
            # lists them): main.cf alone, and what every program checks.
            cfg = load_config(
                config_dir, master_cf=False, main_cf_overrides=overrides, stderr_as=PROG
            )
            params.check_startup(cfg, _warn)
        listed = _listing(mode, tls_mode)
        if listed is not None:
            for item in listed:
                print(item)
            return 0 if listed or "T" not in mode else 1
        if mode & {"b", "t"}:
            return _templates(config_dir, mode, args)
        editing = bool(mode & {"e", "X", "#"})
        master = bool(mode & {"M", "F", "P"})
        if editing and not args:
            raise Fatal("missing service argument")
        if editing:
            # As Postfix's: the edit reads nothing but the file it changes, so a bad
            # main.cf does not stop an edit of it or of master.cf.
            directory = config_directory(config_dir)
            if master:
                _edit_master(os.path.join(directory, "master.cf"), args, mode)
            else:
                _edit_main(os.path.join(directory, "main.cf"), args, mode)
            return 0
        # Defaults do not depend on main.cf: as Postfix's, -d never opens it (a broken
        # main.cf does not stop it) and judges nothing but what reading master.cf warns of.
        judge = "d" not in mode
        open_errors: list[str] = []
        # The warnings come as the files are read, before a fatal error of a later line:
        # master.cf first when it is shown (there is nothing to show without it), else
        # main.cf first.
        cfg = load_config(
            config_dir,
            main_cf_overrides=overrides,
            stderr_as="postconf" if judge else None,
            main_cf=judge,
            master_cf_open_errors=open_errors,
            master_cf_first=master,
        )
        for error in open_errors:
            _warn(error)
        for w in cfg.read_warnings():
            if not (master or w.startswith(cfg.main_cf)):
                _warn(w)
        if judge:
            _check_macros(cfg)
            _scan(cfg)
        if master and "x" in mode:
            _expanded(cfg)
        if "M" in mode:
            _show_services(cfg, args, "f" in mode)
        elif "F" in mode:
            _show_service_fields(cfg, args, "f" in mode, "h" in mode, "H" in mode)
        elif "P" in mode:
            _show_service_params(cfg, args, "h" in mode, "H" in mode)
        else:
            _show_parameters(cfg, args, mode)
        if judge:
            # Showing master.cf, Postfix judges only master.cf's names as unused.
            for w in cfg.unused_warnings(master_only=master):
                _warn(w)
        return 0
    except (Fatal, ConfigError) as e:
        sys.stdout.flush()
        for w in getattr(e, "warnings", ()):
            _warn(w)
        _say("fatal", str(e))
        return 1
    except OSError as e:
        _say("fatal", f"{e.filename or ''}: {e.strerror}")
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
