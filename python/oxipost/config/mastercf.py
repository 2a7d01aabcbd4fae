"""master.cf: one service per logical line, eight columns, then the command's arguments.

Columns (master(5)): service, type (inet, unix, unix-dgram, fifo, pass), private, unpriv,
chroot, wakeup, maxproc, command + args. "-" means the default. Continuation lines start with
whitespace; "#" lines are comments. `-o name=value` (or `-o name=` to clear) in the
arguments overrides a main.cf parameter for that service only.

Diagnostics, worded as Postfix's: `fatal: file FILE: line N: bad field count`, `fatal: file
FILE: line N: bad transport type: X`, `... bad wakeup time`, `... bad process limit`.
"""

from __future__ import annotations

from typing import NamedTuple

SERVICE_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})


class MasterCfError(Exception):
    """A master.cf that Postfix would refuse (Postfix's message, without the prefix)."""


class Service(NamedTuple):
    """One master.cf entry. Columns keep their text ("-" for default) for `postconf -M`.
    (A NamedTuple, not a dataclass: every command reads master.cf, and importing
    dataclasses costs a short command like `postmap -q` a tenth of its run time.)"""

    name: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: list[str]
    overrides: dict[str, str]
    lineno: int = 0

    @property
    def key(self) -> str:
        """ "name/type", how postconf -M and -P name a service."""
        return f"{self.name}/{self.type}"

    @property
    def is_private(self) -> bool:
        return self.private != "n"

    @property
    def is_unprivileged(self) -> bool:
        return self.unpriv != "n"

    @property
    def wakeup_seconds(self) -> int:
        """0 means never; a trailing '?' (wake only if used) is ignored, as master does."""
        text = self.wakeup.rstrip("?")
        return 0 if text in ("-", "") else int(text)

    def process_limit(self, default: int) -> int:
        """maxproc, with '-' meaning default_process_limit; 0 means no limit."""
        return default if self.maxproc == "-" else int(self.maxproc)

    def columns(self) -> list[str]:
        return [
            self.name,
            self.type,
            self.private,
            self.unpriv,
            self.chroot,
            self.wakeup,
            self.maxproc,
            self.command,
            *self.args,
        ]


def parse_text(text: str, path: str) -> list[Service]:
    """All services in file order; raise MasterCfError where Postfix's master would."""
    logical: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and logical:
            start, prev = logical[-1]
            logical[-1] = (start, prev + " " + line.strip())
        else:
            logical.append((lineno, line.strip()))
    return [_service(words.split(), path, lineno) for lineno, words in logical]


def _service(words: list[str], path: str, lineno: int) -> Service:
    where = f"file {path}: line {lineno}"
    if len(words) < 8:
        raise MasterCfError(f"{where}: bad field count")
    name, typ, private, unpriv, chroot, wakeup, maxproc, command, *args = words
    if typ not in SERVICE_TYPES:
        raise MasterCfError(f"{where}: bad transport type: {typ}")
    for value, what in ((private, "private"), (unpriv, "unprivileged"), (chroot, "chroot")):
        if value not in ("-", "y", "n"):
            raise MasterCfError(f"{where}: bad {what} field: {value}")
    if wakeup != "-" and not wakeup.rstrip("?").isdigit():
        raise MasterCfError(f"{where}: bad wakeup time: {wakeup}")
    if maxproc != "-" and not maxproc.isdigit():
        raise MasterCfError(f"{where}: bad process limit: {maxproc}")
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-o" and i + 1 < len(args):
            opt_name, eq, opt_value = args[i + 1].partition("=")
            if eq:
                overrides[opt_name] = opt_value
            i += 2
        elif arg.startswith("-o") and len(arg) > 2 and "=" in arg:
            opt_name, _, opt_value = arg[2:].partition("=")
            overrides[opt_name] = opt_value
            i += 1
        else:
            i += 1
    return Service(
        name, typ, private, unpriv, chroot, wakeup, maxproc, command, args, overrides, lineno
    )


def read(path: str) -> list[Service]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_text(f.read(), path)
