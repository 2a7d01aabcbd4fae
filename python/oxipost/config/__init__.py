"""Configuration: main.cf and master.cf, read the way Postfix reads them.

`load_config(dir)` reads `dir/main.cf` and `dir/master.cf` (dir defaults to $MAIL_CONFIG,
then /etc/postfix). A `Config` answers a parameter's value, fully `$`-expanded, from (in
order) a master.cf `-o` override of the service it was narrowed to, main.cf, and the registry
default; host-dependent defaults (myhostname, mynetworks, ...) are computed as Postfix
computes them.

Diagnostics: `ConfigError` carries Postfix's fatal message text (without "fatal: ");
`Config.warnings()` lists the warnings Postfix prints for the same files (unused and
undefined parameters, misplaced whitespace).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from oxipost.config import maincf, mastercf, params, registry
from oxipost.config.expand import Expander, ExpandError, LevelError, TruncatedError, references
from oxipost.config.mastercf import Service
from oxipost.printable import printable

__all__ = ["Config", "ConfigError", "Service", "load_config"]

DEFAULT_CONFIG_DIR = "/etc/postfix"


class ConfigError(Exception):
    """A configuration Postfix would refuse; str() is Postfix's message without 'fatal: '.
    in_master_cf: the refusal is of master.cf (which postfix(1) learns from postconf).
    warnings: what Postfix warns of just before that fatal line."""

    def __init__(
        self, text: str, *, in_master_cf: bool = False, warnings: tuple[str, ...] = ()
    ) -> None:
        super().__init__(text)
        self.in_master_cf = in_master_cf
        self.warnings = warnings


def split_list(value: str) -> list[str]:
    """Split a list value on commas and whitespace, keeping {...} groups whole (as Postfix's
    mystrtok_cw does for e.g. `inline:{a=b, c=d}`)."""
    items: list[str] = []
    word: list[str] = []
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        if depth == 0 and (ch in ", \t\r\n"):
            if word:
                items.append("".join(word))
                word = []
            continue
        word.append(ch)
    if word:
        items.append("".join(word))
    return items


# The parameters of a table configured in main.cf (sqlite_table(5): `sqlite:NAME`, NAME
# not a path, reads NAME_dbpath, ...), which Postfix's postconf counts as used when set.
DBMS_PARAMETERS = {
    "sqlite": (
        "dbpath",
        "query",
        "result_format",
        "domain",
        "expansion_limit",
        "table",
        "select_field",
        "where_field",
        "additional_conditions",
    ),
}


def dbms_parameters(value: str) -> set[str]:
    """The main.cf parameters of the tables a value names (Postfix's
    pcf_register_dbms_parameters): `sqlite:sq` gives sq_dbpath, sq_query, ...; through
    proxy: and inside braces too."""
    names: set[str] = set()
    for item in split_list(value):
        if item.startswith("{"):
            names |= dbms_parameters(item.strip("{}"))
            continue
        kind, colon, name = item.partition(":")
        while kind == "proxy":
            kind, colon, name = name.partition(":")
        if name.startswith("{"):
            names |= dbms_parameters(name.strip("{}"))
        elif colon and name and name[0] not in "/." and kind in DBMS_PARAMETERS:
            names.update(f"{name}_{suffix}" for suffix in DBMS_PARAMETERS[kind])
    return names


class Config:
    """Parameters of one configuration directory, optionally narrowed to one service."""

    def __init__(
        self,
        config_dir: str,
        settings: dict[str, str],
        services: list[Service],
        overrides: dict[str, str] | None = None,
        warnings: list[str] | None = None,
        explicit_dir: bool = False,
    ) -> None:
        self.config_dir = config_dir
        self.settings = settings
        self.services = services
        self.overrides = dict(overrides or {})
        self._warnings = list(warnings or [])
        # postconf -c shows config_directory as if main.cf had set it.
        self.explicit_dir = explicit_dir
        self._per_service: dict[str, str] = {}
        for svc in services:
            self._per_service.update(registry.per_service_parameters(svc.name, svc.command))
        self._cache: dict[str, str] = {}
        self._lists: dict[str, tuple[str, ...]] = {}
        self._bools: dict[str, bool] = {}
        self._ints: dict[str, int] = {}
        self._times: dict[str, float] = {}
        self._keywords: dict[str, frozenset[str]] = {}
        # What a role works out from these values once (cleanup's CleanupConfig), by the
        # role's name: it lives as long as this configuration, which never changes.
        self.derived: dict[str, object] = {}
        self.master_cf_text = ""  # as load_config read it
        # The configuration a service's view (for_service) was made from: what another
        # service's view is made from in turn (local(8) passing mail to lmtp(8)).
        self.base: Config = self

    # Raw values --------------------------------------------------------------------------

    def default(self, name: str) -> str | None:
        """The default of a known parameter (unexpanded), or None for an unknown name."""
        if name == "config_directory":
            return DEFAULT_CONFIG_DIR
        if name in registry.HOST_DEPENDENT:
            return registry.host_default(name, self._host_inputs(name))
        param = registry.parameters().get(name)
        if param is not None:
            return param.default
        if name in registry.legacy_parameters():
            return ""
        return self._per_service.get(name)

    def has_default(self, name: str) -> bool:
        """Whether default(name) is not None, without working it out (mynetworks' would
        read mynetworks_style and the host's interfaces)."""
        return (
            name == "config_directory"
            or name in registry.HOST_DEPENDENT
            or name in registry.parameters()
            or name in registry.legacy_parameters()
            or name in self._per_service
        )

    def _host_inputs(self, name: str) -> dict[str, str]:
        if name == "mynetworks":
            return {
                "mynetworks_style": self.get("mynetworks_style"),
                "inet_protocols": self.get("inet_protocols"),
                "inet_interfaces": self.get("inet_interfaces"),
            }
        if name == "mydomain" and ("myhostname" in self.settings or "myhostname" in self.overrides):
            return {"myhostname": self.get("myhostname")}
        if name == "myhostname" and ("mydomain" in self.settings or "mydomain" in self.overrides):
            return {"mydomain": self.get("mydomain")}
        return {}

    def raw(self, name: str) -> str | None:
        """The unexpanded value: -o override, then main.cf, then the default."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.settings:
            return self.settings[name]
        if name == "config_directory":
            return self.config_dir
        return self.default(name)

    def is_known(self, name: str) -> bool:
        """A registry parameter, a master.cf per-service one, or one main.cf defines."""
        return (
            name in self.settings
            or name in self.overrides
            or name == "config_directory"
            or name in registry.HOST_DEPENDENT
            or name in registry.parameters()
            or name in registry.legacy_parameters()
            or name in self._per_service
        )

    def names(self) -> list[str]:
        """Every parameter name this configuration knows, sorted as postconf sorts."""
        names = set(registry.parameters()) | set(self._per_service) | {"config_directory"}
        return sorted(names)

    # Expanded values ---------------------------------------------------------------------

    def expand(self, value: str) -> str:
        """Expand a raw value against this configuration."""
        try:
            return Expander(self.raw).expand(value)
        except (LevelError, TruncatedError) as e:
            raise ConfigError(str(e), warnings=(e.warning,)) from None
        except ExpandError as e:
            raise ConfigError(f"{self.main_cf}: {e}") from None

    def get(self, name: str) -> str:
        """The fully expanded value; KeyError for a name that is not a parameter."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        raw = self.raw(name)
        if raw is None:
            raise KeyError(name)
        value = self.expand(raw)
        self._cache[name] = value
        return value

    def get_bool(self, name: str) -> bool:
        """yes or no (any case); anything else is Postfix's "bad boolean configuration"."""
        known = self._bools.get(name)
        if known is not None:
            return known
        known = self._bools[name] = params.parse_bool(name, self.get(name))
        return known

    def get_int(self, name: str) -> int:
        """A C int (long for Postfix's long parameters), as Postfix reads it; cached, as
        get_bool (smtpd asks for limits on every message)."""
        known = self._ints.get(name)
        if known is not None:
            return known
        known = self._ints[name] = params.parse_int(name, self.get(name))
        return known

    def get_time(self, name: str) -> float:
        """Seconds; a bare number takes the unit of the parameter's default (as Postfix).
        Cached: the smtp client asks for a timeout per reply."""
        known = self._times.get(name)
        if known is not None:
            return known
        # The default's unit ("5d", "${stress?{10}:{300}}s"), seconds where it has none.
        unit = (self.default(name) or "").strip()[-1:]
        if unit not in ("s", "m", "h", "d", "w"):
            unit = "s"
        known = self._times[name] = float(params.parse_time(name, self.get(name), unit))
        return known

    def get_list(self, name: str) -> list[str]:
        # Cached like get(): smtpd asks for the same lists (restrictions, mynetworks, ...)
        # on every command; a fresh list each time, so a caller may change its copy.
        items = self._lists.get(name)
        if items is None:
            items = self._lists[name] = tuple(split_list(self.get(name)))
        return list(items)

    def get_keywords(self, name: str) -> frozenset[str]:
        """A list of keywords (classes, options) as a set, in lower case, as Postfix
        compares them; cached, as get_list (cleanup asks per address)."""
        words = self._keywords.get(name)
        if words is None:
            words = self._keywords[name] = frozenset(w.lower() for w in self.get_list(name))
        return words

    def path(self, name: str) -> str:
        """An absolute path: relative values resolve against the current directory."""
        return os.path.abspath(self.get(name))

    @property
    def main_cf(self) -> str:
        return os.path.join(self.config_dir, "main.cf")

    @property
    def master_cf(self) -> str:
        return os.path.join(self.config_dir, "master.cf")

    # Services ----------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        """The master.cf entry "name" or "name/type" (without a type, the type of the first
        entry of that name); of a service entered twice, the last entry, which master
        runs. Where a private and a public one share the name and type (two services to
        master), the private one: the one a client of the service (qmgr handing mail
        to transport NAME) connects to. KeyError if there is none."""
        svc_name, _, svc_type = name.partition("/")
        found: Service | None = None
        for svc in self.services:
            if svc.name == svc_name and (not svc_type or svc.type == svc_type):
                if found is None or svc.is_private or not found.is_private:
                    found = svc
                svc_type = svc.type
        if found is None:
            raise KeyError(name)
        return found

    def entry(self, ident: str) -> Service:
        """The master.cf entry whose Service.ident is ident (of several, the last, which
        master runs); KeyError if there is none."""
        found = [svc for svc in self.services if svc.ident == ident]
        if not found:
            raise KeyError(ident)
        return found[-1]

    def for_service(self, name: str) -> Config:
        """This configuration with the -o overrides of master.cf service `name` applied."""
        return self.for_entry(self.service(name))

    def for_entry(self, svc: Service) -> Config:
        """This configuration with the -o overrides of master.cf entry svc applied."""
        overrides = dict(self.overrides)
        overrides.update(svc.overrides)
        overrides.setdefault("service_name", svc.name)
        view = Config(
            self.config_dir,
            self.settings,
            self.services,
            overrides,
            self._warnings,
            self.explicit_dir,
        )
        view.base = self.base
        return view

    # Diagnostics -------------------------------------------------------------------------

    def _known(self) -> set[str]:
        known = set(registry.parameters()) | set(self._per_service) | registry.HOST_DEPENDENT
        return known | {"config_directory"}

    def _raw_values(self) -> list[str]:
        values = list(self.settings.values())
        for svc in self.services:
            values.extend(svc.overrides.values())
            values.extend(svc.args)
        return values

    def user_defined(self) -> tuple[list[str], list[str]]:
        """main.cf names that are not parameters: (used ones, unused ones).

        Postfix counts a name as used when some value refers to it ($name), it is listed
        in smtpd_restriction_classes, it is a parameter of a table a value names
        (dbms_parameters), or a default refers to it (registry.legacy_parameters).
        """
        used: set[str] = set()
        for value in self._raw_values():
            used.update(references(value))
            if ":" in value:
                used.update(dbms_parameters(value))
        used.update(split_list(self.settings.get("smtpd_restriction_classes", "")))
        used.update(registry.legacy_parameters())
        known = self._known()
        extra = [n for n in self.settings if n not in known]
        return [n for n in extra if n in used], [n for n in extra if n not in used]

    def warnings(self) -> list[str]:
        """Postfix's warnings for these files: parse warnings, unused and undefined names."""
        return self.read_warnings() + self.usage_warnings()

    def read_warnings(self) -> list[str]:
        """What reading main.cf and master.cf warned about (Postfix warns as it reads)."""
        return list(self._warnings)

    def usage_warnings(self) -> list[str]:
        """Undefined and unused names, in Postfix's order: the $names of master.cf's -o
        values that nothing defines (in master.cf), then main.cf's, each time a value
        mentions one; then main.cf's unused names, then master.cf's."""
        out = self.undefined_in_master()
        for value in self.settings.values():
            out.extend(self.undefined_in(value))
        return out + self.unused_warnings()

    def undefined_in_master(self) -> list[str]:
        """The $names of master.cf's -o values that nothing defines: neither the registry,
        main.cf nor a -o of the same service (command arguments, $sender or ${recipient}
        of pipe, are not parameters)."""
        known = self._known()
        return [
            f"{self.master_cf}: undefined parameter: {name}"
            for svc in self.services
            for value in svc.overrides.values()
            for name in references(value)
            if name not in known and name not in self.settings and name not in svc.overrides
        ]

    def undefined_in(self, value: str) -> list[str]:
        """The $names of a main.cf value that nothing defines (a -o of any service defines
        one for main.cf, as postconf_user.c has it), each time the value mentions one."""
        known = self._known()
        in_master = {name for svc in self.services for name in svc.overrides}
        return [
            f"{self.main_cf}: undefined parameter: {name}"
            for name in references(value)
            if name not in known
            and name not in self.settings
            and name not in in_master
            and name not in registry.legacy_parameters()
        ]

    def unused_warnings(self, master_only: bool = False) -> list[str]:
        """main.cf's names that no value uses, then master.cf's -o names that neither main.cf
        nor their own service mentions (master_only: those alone)."""
        used, unused = self.user_defined()
        out: list[str] = []
        if not master_only:
            out.extend(f"{self.main_cf}: unused parameter: {n}={self.settings[n]}" for n in unused)
        known = self._known() | set(used)
        in_main = {name for value in self.settings.values() for name in references(value)}
        classes = set(split_list(self.settings.get("smtpd_restriction_classes", "")))
        for svc in self.services:
            mentioned = {n for value in svc.overrides.values() for n in references(value)}
            mentioned |= set(split_list(svc.overrides.get("smtpd_restriction_classes", "")))
            for name, value in svc.overrides.items():
                if name in known or name in self.settings or name in in_main | classes:
                    continue
                if name not in mentioned:
                    out.append(f"{self.master_cf}: unused parameter: {name}={value}")
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def config_directory(config_dir: str | None = None) -> str:
    """The configuration directory: config_dir (-c), else $MAIL_CONFIG, else Postfix's."""
    directory = config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR
    return directory.rstrip("/") or "/"


def sendmail_config_dir(given: str) -> str:
    """sendmail -C's (mailq's) configuration directory: the one named, or the parent of a
    main.cf named, as Postfix's sendmail takes a path whose base name is main.cf."""
    path = given.rstrip("/")
    if os.path.basename(path) == "main.cf":
        return os.path.dirname(path) or "."
    return given


def load_config(
    config_dir: str | None = None,
    *,
    as_master: bool = False,
    master_cf: bool = True,
    master_cf_copy: str | None = None,
    main_cf_overrides: dict[str, str] | None = None,
    stderr_as: str | None = None,
    main_cf: bool = True,
    master_cf_open_errors: list[str] | None = None,
    master_cf_first: bool = False,
) -> Config:
    """Read main.cf and master.cf of config_dir ($MAIL_CONFIG, then /etc/postfix).

    as_master: read master.cf as Postfix's master does, to which a "{" without its "}" is
    fatal; to everything else (postconf, postfix check) it is a warning. The columns are
    judged as master or as postconf judges them (mastercf). master_cf=False: main.cf
    alone, for the logger that reports a master.cf error and for the commands that, in
    Postfix, never read master.cf. master_cf_copy: master.cf's text from this file
    instead (master's copy of what it last loaded: a service process sees the master.cf
    of the last start or reload, as Postfix's daemons get their -o options from master,
    not the file an administrator may be editing); messages still name master.cf.
    The text read is kept as `Config.master_cf_text`. main_cf_overrides: settings that
    replace main.cf's as if it had them (postconf -o name=value). stderr_as: a command's
    name, under which what reading main.cf warns of goes to stderr, before a fatal error
    of a later line, as Postfix's commands print it ("postqueue: warning: ..."); the
    daemons log `Config.read_warnings()` instead. main_cf=False: master.cf alone, every
    parameter at its default (postconf -d, which never opens main.cf, so that a broken
    main.cf does not stop it). master_cf_open_errors: a master.cf that cannot be opened
    (missing too) is a configuration without services, its "open PATH: REASON" appended
    there, for postconf to warn of or refuse as Postfix's does. master_cf_first: master.cf
    is read (and what it warns of goes to stderr_as) before main.cf, as postconf -M, -F and
    -P read them, and one that cannot be opened is fatal (the first open error, as
    ConfigError).
    """
    explicit = config_dir is not None
    directory = config_directory(config_dir)
    main_path = os.path.join(directory, "main.cf")
    master_path = os.path.join(directory, "master.cf")
    warnings: list[str] = []
    entries: list[maincf.Entry] = []
    text = ""
    services: list[Service] = []

    def say(new: list[str]) -> None:
        if stderr_as:
            for w in new:
                print(f"{stderr_as}: warning: {printable(w, utf8=False)}", file=sys.stderr)

    def read_master() -> None:
        nonlocal text, services
        source = master_cf_copy or master_path
        try:
            with open(source, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
            services = mastercf.parse_text(text, master_path, None if as_master else warnings)
        except IsADirectoryError:
            # Postfix opens it and reads nothing from it: no services, no complaint.
            pass
        except OSError as e:
            # No master.cf at all is a configuration without services; master's copy
            # must be there.
            if master_cf_open_errors is not None:
                master_cf_open_errors.append(f"open {source}: {e.strerror}")
            elif not isinstance(e, FileNotFoundError) or master_cf_copy:
                raise ConfigError(f"open {source}: {e.strerror}") from None
        except mastercf.MasterCfError as e:
            raise ConfigError(str(e), in_master_cf=True) from None

    if master_cf and master_cf_first:
        read_master()
        if master_cf_open_errors:
            raise ConfigError(master_cf_open_errors[0], in_master_cf=True)
        say(warnings)
    read_before = len(warnings)
    try:
        # Postfix sets config_directory before it reads main.cf: a main.cf that sets
        # another one overrides it.
        if main_cf:
            entries = maincf.read(main_path, warnings, {"config_directory": directory})
    except OSError as e:
        # Postfix opens a directory and fails only as it reads it.
        verb = "read" if isinstance(e, IsADirectoryError) else "open"
        raise ConfigError(f"{verb} {main_path}: {e.strerror}") from None
    except maincf.MainCfError as e:
        raise ConfigError(str(e)) from None
    finally:
        say(warnings[read_before:])
    if master_cf and not master_cf_first:
        read_master()
    settings = maincf.settings(entries)
    settings.update(main_cf_overrides or {})
    cfg = Config(
        directory,
        settings,
        services,
        warnings=warnings,
        explicit_dir=explicit or "MAIL_CONFIG" in os.environ,
    )
    cfg.master_cf_text = text
    return cfg
