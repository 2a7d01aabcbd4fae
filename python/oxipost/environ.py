"""The environment of processes: master's import_environment, the commands' export_environment.

Postfix never hands a process the whole environment it was started with. master(8) keeps
only what import_environment names (a `name=value` entry sets the value) and every daemon
inherits that; local(8), pipe(8) and spawn(8) give an external command only what
export_environment names, with PATH reset to the system's default search path, plus what
the agent sets itself (local(8)'s HOME, USER, RECIPIENT...). Both lists work as Postfix's
clean_env(): a bare name keeps its value from the current environment if it has one,
`name=value` (in braces when the value has spaces: `{name=a b}`) sets it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from oxipost.config import Config

# glibc's _PATH_DEFPATH, what Postfix's pipe_command() and spawn_command() set PATH to.
DEFAULT_PATH = "/usr/bin:/bin"

# What the interpreter of an oxipost service needs from its parent's environment beyond
# import_environment: master starts each service as `python -m oxipost.master.child`, and
# an interpreter whose package or standard library is found through these variables (a
# source tree on PYTHONPATH, a relocated Python under PYTHONHOME) could not start without
# them. VIRTUAL_ENV is not kept: the interpreter finds its venv from sys.executable's
# pyvenv.cfg, never from the variable.
INTERPRETER_NEEDS = ("PYTHONPATH", "PYTHONHOME")


def clean_env(entries: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The environment Postfix's clean_env(entries) leaves of environ."""
    kept: dict[str, str] = {}
    for entry in entries:
        if entry.startswith("{") and entry.endswith("}"):
            entry = entry[1:-1].strip()
        name, eq, value = entry.partition("=")
        if eq:
            kept[name] = value
        elif name in environ:
            kept[name] = environ[name]
    return kept


def import_environment(cfg: Config) -> None:
    """Reduce this process's environment to import_environment, as Postfix's master does at
    start: the services it starts inherit only that (and INTERPRETER_NEEDS)."""
    kept = clean_env(cfg.get_list("import_environment"), os.environ)
    for name in INTERPRETER_NEEDS:
        if name in os.environ and name not in kept:
            kept[name] = os.environ[name]
    os.environ.clear()
    os.environ.update(kept)


def command_environment(cfg: Config) -> dict[str, str]:
    """An external command's environment before the agent adds its own variables:
    export_environment, then PATH reset (Postfix's pipe_command: clean_env, setenv PATH)."""
    env = clean_env(cfg.get_list("export_environment"), os.environ)
    env["PATH"] = DEFAULT_PATH
    return env
