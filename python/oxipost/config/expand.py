"""Postfix's parameter expansion (mac_expand): $name, ${name}, $(name), ${name?v}, ${name:v},
${name?{v1}:{v2}}, relational ${{a} OP {b} ? {x} : {y}}, and $$.

Expansion is lazy: values are kept raw and expanded when read, so a parameter may refer to
one defined later in main.cf. Names that are not defined expand to the empty string and are
reported through `undefined` so postconf can warn as Postfix does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NAME = re.compile(r"[A-Za-z0-9_]+")
# Postfix gives up at this depth ("unreasonable macro call nesting").
MAX_DEPTH = 100

Lookup = Callable[[str], str | None]


class ExpandError(ValueError):
    """A value that cannot be expanded (unbalanced braces, runaway recursion)."""


class LevelError(ExpandError):
    """An operand of <level, >level and the like that is no compatibility level: Postfix's
    compat_relop_eval warns of it (`warning`) and the expansion fails ('macro processing
    error')."""

    def __init__(self, operand: str) -> None:
        super().__init__("macro processing error")
        self.warning = f'malformed compatibility level syntax: "{operand}"'


class TruncatedError(ExpandError):
    """A $( or ${ that is never closed: Postfix's mac_parse warns of the whole value
    (`warning`) and the expansion fails ('dictionary mail_dict: macro processing error'
    where main.cf's values are expanded)."""

    def __init__(self, value: str) -> None:
        super().__init__("dictionary mail_dict: macro processing error")
        self.warning = f'truncated macro reference: "{value}"'


# What strtol reads: optional white space and sign, then decimal digits (ASCII only).
NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
# compat_level_from_string's bounds: the major number fills what a long leaves above the
# minor and patch numbers (10 bits each).
_COMPAT_MAJOR_MAX = (2**63 - 1) >> 20
_COMPAT_MINOR_MAX = 1023


def compat_level(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a compatibility level as Postfix's compat_level_from_string
    reads it: one to three strtol numbers joined by dots, nothing else; None if malformed."""
    parts = text.split(".")
    if len(parts) > 3:
        return None
    numbers: list[int] = []
    for i, part in enumerate(parts):
        m = NUMBER.fullmatch(part)
        most = _COMPAT_MAJOR_MAX if i == 0 else _COMPAT_MINOR_MAX
        if m is None or not 0 <= int(m.group(1)) <= most:
            return None
        numbers.append(int(m.group(1)))
    major, minor, patch = [*numbers, 0, 0][:3]
    return major, minor, patch


def _matching(s: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at s[i], counting nesting."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == open_ch:
            depth += 1
        elif s[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    raise ExpandError(f"unbalanced '{open_ch}' in: {s}")


def _braced(s: str) -> tuple[str, str] | None:
    """Split "{value} rest" into (value, rest); None if s does not start with '{'."""
    s = s.lstrip()
    if not s.startswith("{"):
        return None
    end = _matching(s, 0, "{", "}")
    return s[1:end], s[end + 1 :]


_RELOPS = ("<=level", ">=level", "<level", ">level", "==", "!=", "<=", ">=", "<", ">")


def _compare(left: str, op: str, right: str) -> bool:
    if op.endswith("level"):
        # The left operand is judged first: of two bad ones, Postfix names that one.
        a: object = compat_level(left)
        if a is None:
            raise LevelError(left)
        b: object = compat_level(right)
        if b is None:
            raise LevelError(right)
        op = op[: -len("level")]
    elif left.isdigit() and right.isdigit():
        a, b = int(left), int(right)
    else:
        a, b = left, right
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,  # type: ignore[operator]
        "<=": a <= b,  # type: ignore[operator]
        ">": a > b,  # type: ignore[operator]
        ">=": a >= b,  # type: ignore[operator]
    }[op]


class Expander:
    """Expands raw values against a lookup of raw values by name."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self.undefined: list[str] = []
        # Names without a value used for their value, not only tested by ${name?...} or
        # ${name:...} (mac_expand's MAC_PARSE_UNDEF, which local(8) skips a path for).
        self.used_undefined: list[str] = []

    def expand(self, value: str, depth: int = 0) -> str:
        if depth > MAX_DEPTH:
            raise ExpandError(f"unreasonable macro call nesting: {value}")
        if "$" not in value:
            return value
        out: list[str] = []
        i = 0
        n = len(value)
        while i < n:
            c = value[i]
            if c != "$" or i + 1 >= n:
                out.append(c)
                i += 1
                continue
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt in "{(":
                close = "}" if nxt == "{" else ")"
                try:
                    end = _matching(value, i + 1, nxt, close)
                except ExpandError:
                    raise TruncatedError(value) from None
                out.append(self._expand_call(value[i + 2 : end], depth))
                i = end + 1
            else:
                m = _NAME.match(value, i + 1)
                if not m:
                    out.append(c)
                    i += 1
                    continue
                out.append(self._value_of(m.group(0), depth))
                i = m.end()
        return "".join(out)

    def _value_of(self, name: str, depth: int, used: bool = True) -> str:
        raw = self._lookup(name)
        if raw is None:
            if name not in self.undefined:
                self.undefined.append(name)
            if used and name not in self.used_undefined:
                self.used_undefined.append(name)
            return ""
        return self.expand(raw, depth + 1)

    def _expand_call(self, body: str, depth: int) -> str:
        """The inside of ${...}: a name or relational test, then ?value / :value."""
        stripped = body.lstrip()
        if stripped.startswith("{"):
            truth, rest = self._relational(stripped, depth)
        else:
            m = _NAME.match(body)
            if not m:
                raise ExpandError(f"bad parameter name in: ${{{body}}}")
            rest = body[m.end() :]
            if not rest:
                return self._value_of(m.group(0), depth)
            truth = self._value_of(m.group(0), depth, used=False) != ""
        rest = rest.lstrip()
        if not rest:
            raise ExpandError(f"missing '?' or ':' in: ${{{body}}}")
        op, rest = rest[0], rest[1:]
        if op not in "?:":
            raise ExpandError(f"unexpected '{op}' in: ${{{body}}}")
        first = _braced(rest)
        if first is None:
            # Plain "${name?value}" / "${name:value}": the value runs to the end.
            chosen = rest if (truth if op == "?" else not truth) else ""
            return self.expand(chosen, depth + 1)
        v1, tail = first
        tail = tail.strip()
        if op == "?" and tail.startswith(":"):
            second = _braced(tail[1:])
            v2 = second[0] if second else tail[1:].strip()
            return self.expand(v1 if truth else v2, depth + 1)
        if tail:
            raise ExpandError(f"unexpected text after value in: ${{{body}}}")
        return self.expand(v1 if (truth if op == "?" else not truth) else "", depth + 1)

    def _relational(self, body: str, depth: int) -> tuple[bool, str]:
        left = _braced(body)
        assert left is not None
        lval, rest = left
        rest = rest.lstrip()
        for op in _RELOPS:
            if rest.startswith(op):
                right = _braced(rest[len(op) :])
                if right is None:
                    break
                rval, tail = right
                a = self.expand(lval, depth + 1).strip()
                b = self.expand(rval, depth + 1).strip()
                return _compare(a, op, b), tail
        raise ExpandError(f"bad relational expression in: ${{{body}}}")


def expand(value: str, lookup: Lookup) -> str:
    """Expand one raw value; undefined names become empty."""
    return Expander(lookup).expand(value)


def macro_name_at(value: str, i: int) -> str | None:
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


def empty_macro(value: str) -> bool:
    """Whether value has a "$" that Postfix's mac_parse calls an empty macro name."""
    i = value.find("$")
    while i >= 0:
        if macro_name_at(value, i) is None:
            return True
        i = value.find("$", i + 2 if value[i + 1 : i + 2] == "$" else i + 1)
    return False


def references(value: str) -> list[str]:
    """The parameter names a raw value mentions ($name, ${name...}, $(name...)), each time
    it does, in order, in every branch of a conditional (as mac_expand's scan finds them);
    "$$" is a dollar sign."""
    names = []
    for m in re.finditer(r"\$\$|\$(?:([A-Za-z0-9_]+)|[{(]([A-Za-z0-9_]+))", value):
        if m.group(0) != "$$":
            names.append(m.group(1) or m.group(2))
    return names
