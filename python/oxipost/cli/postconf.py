"""postconf(1): show or change the configuration, as Postfix's postconf does.

postconf [-c dir] [-dhnx] [name ...]      show parameters (-d defaults, -n only main.cf's,
                                          -h values only, -x expand $names)
postconf [-c dir] -e name=value ...       edit main.cf in place (atomically)
postconf [-c dir] -X name ... | -# name   remove / comment out main.cf parameters
postconf [-c dir] -M[f] [name[/type]]     show master.cf services (-f folds long lines;
                                          "*" in a selector matches any name or type)
postconf [-c dir] -F[fh] [name[/type[/field]]]
                                          show master.cf fields as name/type/field = value
postconf [-c dir] -P [service/type/name]  show master.cf -o parameters
postconf -m                               list the lookup table types

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

import sys
from collections.abc import Sequence

from oxipost.config import Config, ConfigError, load_config, maincf, mastercf
from oxipost.config.mastercf import Service

PROG = "postconf"
LINE_LIMIT = 80
# What oxipost's lookup-table layer serves (DESIGN.md, "Lookup tables").
_TABLE_TYPES = (
    "cdb cidr environ fail hash inline internal pcre pgsql pipemap regexp sqlite static "
    "texthash unionmap"
).split()


class Fatal(Exception):
    """Ends the command with `postconf: fatal: MESSAGE` and exit status 1."""


def _say(severity: str, text: str) -> None:
    # encode's "replace" gives one "?" for a byte that was not UTF-8 (one surrogate each).
    shown = "".join(chr(b) if 32 <= b < 127 else "?" for b in text.encode("utf-8", "replace"))
    print(f"{PROG}: {severity}: {shown}", file=sys.stderr)


def _warn(text: str) -> None:
    _say("warning", text)


# Parameters postconf reads as it starts, through Postfix's "mail_dict" (mail_conf_eval):
# a macro error in one of these fails there, before any value is scanned.
_READ_AT_START = ("myhostname", "mydomain", "inet_interfaces", "inet_protocols")


def _macro_name_at(value: str, i: int) -> str | None:
    """The name of the macro whose "$" is value[i] ("" for "$$" and "${"/"$(", whose name
    the caller skips over), or None where Postfix's mac_parse finds an empty macro name: a
    "$" at the end or before any byte but a name character (an ASCII letter, digit or "_":
    "$é" is one)."""
    rest = value[i + 1 : i + 2]
    if rest in ("$", "{", "("):
        return ""
    end = i + 1
    while end < len(value) and value[end].isascii() and (value[end].isalnum() or value[end] == "_"):
        end += 1
    return value[i + 1 : end] or None


def _empty_macro(value: str) -> bool:
    """Whether value has a "$" that Postfix's mac_parse calls an empty macro name."""
    i = value.find("$")
    while i >= 0:
        if _macro_name_at(value, i) is None:
            return True
        i = value.find("$", i + 2 if value[i + 1 : i + 2] == "$" else i + 1)
    return False


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
        if cfg.default(name) is not None:
            _expandable(cfg, name, value)


def _expandable(cfg: Config, name: str, value: str) -> None:
    """Fatal, as Postfix's expansion of a value, where expanding it meets an empty macro."""
    bad = _first_empty_macro(cfg, value, {name})
    if bad is not None:
        _warn(f'empty macro name: "{bad}"')
        raise Fatal("macro processing error")


def _normalize(value: str) -> str:
    """postconf prints a value with each run of white space as one space."""
    return " ".join(value.split())


def _line(name: str, value: str, names_only: bool) -> str:
    if names_only:
        return value
    return f"{name} = {value}" if value else f"{name} ="


def _table_types() -> list[str]:
    try:
        from oxipost import maps  # the maps area registers what it serves
    except ImportError:
        return _TABLE_TYPES
    return sorted(getattr(maps, "TABLE_TYPES", _TABLE_TYPES))


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


def _pattern(text: str, parts: int, option: str, syntax: str) -> list[str]:
    """A "name/type/..." selector of one to `parts` parts, the missing ones "*" (matches
    anything). As Postfix's pcf_parse_service_pattern: empty parts are skipped ("smtp/" is
    "smtp", "a//b" is "a/b"), but not a leading "/", and "*" must be a part by itself."""
    pattern = [part for part in text.split("/") if part]
    wildcards = any("*" in part and part != "*" for part in pattern)
    if text.startswith("/") or not 1 <= len(pattern) <= parts or wildcards:
        raise Fatal(f"-{option} option requires {syntax}")
    return pattern + ["*"] * (parts - len(pattern))


def _matches(pattern: list[str], svc: Service) -> bool:
    return all(p in ("*", v) for p, v in zip(pattern, (svc.name, svc.type), strict=False))


def _show_services(cfg: Config, selectors: Sequence[str], fold: bool) -> None:
    patterns = [_pattern(s, 2, "M", "service_name[/type]") for s in selectors]
    hits = [0] * len(patterns)
    for svc in cfg.services:
        if not patterns:
            print(_service_line(svc, fold))
        for n, pattern in enumerate(patterns):
            if _matches(pattern, svc):
                hits[n] += 1
                print(_service_line(svc, fold))
    for selector, hit in zip(selectors, hits, strict=True):
        if not hit:
            _warn(f'unmatched request: "{selector}"')


def _field_line(svc: Service, field: int, fold: bool, names_only: bool) -> str:
    """One "name/type/field = value" line of postconf -F (the value alone with -h)."""
    line = "" if names_only else f"{svc.key}/{_FIELDS[field]} = "
    value = svc.columns()[field]
    # Postfix puts a value that would overflow on a line of its own, folding or not.
    if line and len(line) + len(value) > LINE_LIMIT:
        line += "\n" + _INDENT
    if field < len(_FIELDS) - 1:
        return line + value
    return _command_text(line + value, svc.args, fold)


def _show_service_fields(
    cfg: Config, selectors: Sequence[str], fold: bool, names_only: bool
) -> None:
    syntax = "service_name[/type[/field]]"
    patterns = [_pattern(s, 3, "F", syntax) for s in selectors]
    for pattern in patterns:
        if pattern[2] not in ("*", *_FIELDS):
            raise Fatal(f'invalid service attribute name: "{pattern[2]}"')
    everything = range(len(_FIELDS))
    hits = [0] * len(patterns)
    for svc in cfg.services:
        if not patterns:
            for field in everything:
                print(_field_line(svc, field, fold, names_only))
        for n, pattern in enumerate(patterns):
            if not _matches(pattern, svc):
                continue
            hits[n] += 1
            wanted = pattern[2]
            for field in everything if wanted == "*" else [_FIELDS.index(wanted)]:
                print(_field_line(svc, field, fold, names_only))
    for selector, hit in zip(selectors, hits, strict=True):
        if not hit:
            _warn(f'unmatched request: "{selector}"')


def _show_service_params(cfg: Config, selectors: Sequence[str], names_only: bool) -> None:
    """postconf -P: each service's -o parameters, sorted, as "name/type/parameter = value".
    As Postfix's: a service without any is skipped; each selector prints what it matches
    (two that match the same line print it twice) and warns `unmatched request` if none."""
    patterns = [_pattern(s, 3, "P", "service_name[/type[/parameter]]") for s in selectors]
    hits = [0] * len(patterns)

    def show(svc: Service, name: str) -> None:
        print(_line(f"{svc.key}/{name}", _normalize(svc.overrides[name]), names_only))

    for svc in cfg.services:
        if not svc.overrides:
            continue
        if not patterns:
            for name in sorted(svc.overrides):
                show(svc, name)
        for n, pattern in enumerate(patterns):
            if not _matches(pattern, svc):
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
        if expand:
            _expandable(cfg, name, value)
            value = cfg.expand(value)
        print(_line(name, _normalize(value), hide))


def _edit(cfg: Config, args: Sequence[str], opts: set[str]) -> None:
    if "e" in opts:
        updates: dict[str, str] = {}
        for arg in args:
            name, eq, value = arg.partition("=")
            name = name.strip()
            if not eq or not name:
                what = "missing attribute name" if eq else "missing '=' after attribute name"
                raise Fatal(f'{what}: "{arg}"')
            updates[name] = value.strip()
        maincf.edit(cfg.main_cf, set_values=updates)
    elif "X" in opts:
        maincf.edit(cfg.main_cf, remove=set(args))
    else:
        maincf.edit(cfg.main_cf, comment_out=set(args))


def _parse_args(argv: Sequence[str]) -> tuple[str | None, set[str], list[str]]:
    config_dir: str | None = None
    opts: set[str] = set()
    args: list[str] = []
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
                if flag in "co":
                    value = arg[j + 1 :] or (argv[i + 1] if i + 1 < len(argv) else None)
                    if value is None:
                        raise Fatal(f"option requires an argument -- '{flag}'")
                    if not arg[j + 1 :]:
                        i += 1
                    if flag == "c":
                        config_dir = value
                    break
                if flag not in "dhnxeX#MmPfFvqlbtTaATs":
                    raise Fatal(f"invalid option -- '{flag}'")
                opts.add(flag)
                j += 1
        else:
            args.append(arg)
        i += 1
    return config_dir, opts, args


def main(argv: Sequence[str] | None = None) -> int:
    """Run postconf with argv (default sys.argv[1:]); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config_dir, opts, args = _parse_args(argv)
        if "m" in opts:
            for t in _table_types():
                print(t)
            return 0
        # Editing main.cf does not read master.cf, so a bad one does not stop it.
        editing = bool(opts & {"e", "X", "#"})
        cfg = load_config(config_dir, master_cf=not editing)
        if editing:
            _edit(cfg, args, opts)
            return 0
        # Defaults do not depend on the files, so -d does not judge them.
        judge = "d" not in opts
        if judge:
            for w in cfg.read_warnings():
                _warn(w)
            _check_macros(cfg)
        if "M" in opts:
            _show_services(cfg, args, "f" in opts)
        elif "F" in opts:
            _show_service_fields(cfg, args, "f" in opts, "h" in opts)
        elif "P" in opts:
            _show_service_params(cfg, args, "h" in opts)
        else:
            _show_parameters(cfg, args, opts)
        if judge:
            # Showing master.cf, Postfix judges only master.cf's names as unused.
            master = bool(opts & {"M", "F", "P"})
            for w in cfg.usage_warnings():
                if not (master and w.startswith(f"{cfg.main_cf}: unused parameter: ")):
                    _warn(w)
        return 0
    except (Fatal, ConfigError) as e:
        sys.stdout.flush()
        _say("fatal", str(e))
        return 1
    except OSError as e:
        _say("fatal", f"{e.filename or ''}: {e.strerror}")
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
