"""mail_params: the parameter checks every Postfix program makes as it starts.

Postfix's mail_params_init, run by postfix(1) before any command and by each daemon, reads
the parameters almost every program needs and refuses values it cannot use; postfix(1)
adds the installation paths. The first fault found ends the program, with Postfix 3.7's
words (its get_mail_conf_* functions):

- a value that must not be empty, or is too long: `bad string length 0 < 1: NAME = VALUE`
- an integer that is no number, or out of range: `bad numerical configuration: NAME =
  VALUE`, `invalid NAME parameter value N < MIN` (or `> MAX`)
- a time: `parameter NAME: bad time value or unit: VALUE`, `invalid NAME: N (min MIN)`
- a boolean that is neither yes nor no: `bad boolean configuration: NAME = VALUE`
- myhostname and mydomain that are no host names: valid_hostname's warning (e.g. `warning:
  valid_hostname: invalid character 32(decimal): a b`) then `file DIR/main.cf: parameter
  myhostname: bad parameter value: a b`
- `file DIR/main.cf: parameter syslog_facility: unrecognized value: X`, `myhostname and
  relayhost parameter settings must not be identical: X`, `myorigin parameter setting must
  not contain multiple values: X`, `file DIR/main.cf: parameters default_verp_delimiters and
  verp_delimiter_filter: bad first VERP delimiter character` (or second)

How numbers, times and booleans are read is here too (parse_int, parse_time, parse_bool):
Config.get_int, get_time and get_bool use them, so a daemon that reads its own parameters
later refuses a bad one in the same words.

- compatibility_level first of all, as compat_level_from_string reads it (major[.minor[.patch]],
  each a strtol number, minor and patch at most 1023): `malformed compatibility level
  syntax: "X"`. It is read before any default exists: a $name only main.cf (or a -o) sets
  expands, anything else is empty
- `unknown inet_protocols value "X" in "VALUE"` (ipv4, ipv6, all; in that case)
- the accounts (as root only: see below): `file DIR/main.cf: parameter mail_owner: unknown
  user name value: X`, `... user X has privileged user ID` (or group ID), `... user X has
  same user ID as Y`, the same of default_privs, `parameter setgid_group: unknown group
  name: X`, `... group X has privileged group ID`, and the overlaps of the three
  (`parameters default_privs and mail_owner specify the same user X`, `... have the same
  group ID: N`)
- mynetworks_style, when mynetworks is not set: `unknown mynetworks mask style value "X" in
  "VALUE"`, `bad mynetworks_style value: VALUE; specify exactly one value`
- inet_interfaces: `config variable inet_interfaces: host not found: X` (a name or address
  of no protocol inet_protocols allows), `parameter inet_interfaces: no local interface found
  for ADDRESS` (one that none of this host's interfaces has)

The accounts are checked only by a process running as root: Postfix always runs as root and
switches to them, where an oxipost run by a user switches to nobody and needs none of them
(the embedded configuration works on a host without a postfix account).

check_daemon adds what a daemon reads as it starts beside these (Postfix's per-daemon
tables, daemon_params.tsv): `fatal: bad numerical configuration: smtpd_recipient_limit = x`
in the maillog as that service starts, rather than at the first RCPT TO.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from oxipost.config.expand import NUMBER, Expander, ExpandError, compat_level
from oxipost.config.registry import interface_addresses, local_interfaces
from oxipost.valid import hostname_problem
from oxipost.verp import verp_delims_verify

if TYPE_CHECKING:
    from oxipost.config import Config

__all__ = [
    "LAST_COMPAT_LEVEL",
    "backwards_compatible",
    "check_daemon",
    "check_mynetworks",
    "check_startup",
    "compat_breaks",
    "parse_bool",
    "parse_int",
    "parse_time",
]

# The compatibility_level below which Postfix 3.7 keeps some older defaults (and postfix(1)
# says so at every command).
LAST_COMPAT_LEVEL = "3.6"
_LAST_COMPAT = (3, 6, 0)

# C's int and long, as Postfix's strtol-based conversions bound them.
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Postfix's long parameters: everything else numeric is a C int.
_LONGS = frozenset(
    {
        "message_size_limit",
        "lmdb_map_size",
        "mailbox_size_limit",
        "virtual_mailbox_limit",
        "queue_minfree",
    }
)
_FACILITIES = frozenset(
    "auth authpriv cron daemon ftp kern lpr mail news syslog user uucp".split()
    + [f"local{n}" for n in range(8)]
)

# The keyword parameters of daemon_params.tsv, and how a daemon refuses another word there.
# "code" rows are one word, in any case (name_code): the fatal's format names the setting.
_TEMPFAIL = ("reject", "defer", "defer_if_permit", "defer_if_reject")
_CODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "header_from_format": ('invalid setting: "{} = {}"', ("standard", "obsolete")),
    "smtpd_forbid_bare_newline": (
        "bad parameter value: '{} = {}'",
        ("yes", "no", "normalize", "reject"),
    ),
    "unknown_helo_hostname_tempfail_action": ("bad configuration: {} = {}", _TEMPFAIL),
    "unknown_address_tempfail_action": ("bad configuration: {} = {}", _TEMPFAIL),
    "unverified_recipient_tempfail_action": ("bad configuration: {} = {}", _TEMPFAIL),
    "unverified_sender_tempfail_action": ("bad configuration: {} = {}", _TEMPFAIL),
}
# "mask" rows are lists of words in their exact case (name_mask), refused as _name_mask
# does under the label the daemon gives (virtual(8) names its lock parameter local(8)'s).
_SOURCES = ("alias", "forward", "include")
_MASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "notify_classes": (
        "notify_classes",
        ("bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"),
    ),
    "allow_mail_to_files": ("allow_mail_to_files", _SOURCES),
    "allow_mail_to_commands": ("allow_mail_to_commands", _SOURCES),
    "propagate_unmatched_extensions": (
        "propagate_unmatched_extensions",
        ("canonical", "virtual", "alias", "forward", "include", "generic"),
    ),
    "prepend_delivered_header": ("prepend_delivered_header", ("command", "file", "forward")),
    "mailbox_delivery_lock": ("mailbox_delivery_lock", ("flock", "fcntl", "dotlock")),
    "virtual_mailbox_lock": ("mailbox_delivery_lock", ("flock", "fcntl", "dotlock")),
}

# mail_params_init's tables, in its order: name and (minimum, maximum); 0 means no bound.
_STRINGS = (
    ("mail_name", 1, 0),
    ("syslog_name", 1, 0),
    ("mail_owner", 1, 0),
    ("setgid_group", 1, 0),
    ("myorigin", 1, 0),
    ("daemon_directory", 1, 0),
    ("data_directory", 1, 0),
    ("command_directory", 1, 0),
    ("queue_directory", 1, 0),
    ("process_id_directory", 1, 0),
    ("meta_directory", 1, 0),
    ("shlib_directory", 1, 0),
    ("double_bounce_sender", 1, 0),
    ("default_privs", 1, 0),
    ("mail_version", 1, 0),
    ("mail_release_date", 1, 0),
    ("default_database_type", 1, 0),
    ("hash_queue_names", 1, 0),
    ("mynetworks_style", 1, 0),
    ("default_verp_delimiters", 2, 2),
    ("verp_delimiter_filter", 1, 0),
    ("info_log_address_format", 1, 0),
    ("smtputf8_autodetect_classes", 1, 0),
    ("maillog_file_compressor", 1, 0),
    ("maillog_file_prefixes", 1, 0),
    ("maillog_file_rotate_suffix", 1, 0),
    ("bounce_service_name", 1, 0),
    ("cleanup_service_name", 1, 0),
    ("defer_service_name", 1, 0),
    ("pickup_service_name", 1, 0),
    ("queue_service_name", 1, 0),
    ("rewrite_service_name", 1, 0),
    ("showq_service_name", 1, 0),
    ("error_service_name", 1, 0),
    ("flush_service_name", 1, 0),
    ("address_verify_service_name", 1, 0),
    ("trace_service_name", 1, 0),
    ("proxymap_service_name", 1, 0),
    ("proxywrite_service_name", 1, 0),
    ("postlog_service_name", 1, 0),
)
# What postfix(1) reads beside them (its own table): where the installation put things.
_COMMAND_STRINGS = (
    ("sendmail_path", 1, 0),
    ("mailq_path", 1, 0),
    ("newaliases_path", 1, 0),
    ("manpage_directory", 1, 0),
    ("sample_directory", 1, 0),
    ("readme_directory", 1, 0),
    ("html_directory", 1, 0),
)
_INTS = (
    ("default_process_limit", 1, 0),
    ("max_use", 1, 0),
    ("dont_remove", 0, 0),
    ("line_length_limit", 512, 0),
    ("hash_queue_depth", 1, 0),
    ("fork_attempts", 1, 0),
    ("deliver_lock_attempts", 1, 0),
    ("debug_peer_level", 1, 0),
    ("fault_injection_code", 0, 0),
    ("berkeley_db_create_buffer_size", 1, 0),
    ("berkeley_db_read_buffer_size", 1, 0),
    ("header_size_limit", 1, 0),
    ("header_address_token_limit", 1, 0),
    ("mime_nesting_limit", 1, 0),
    ("mime_boundary_length_limit", 1, 0),
    ("delay_logging_resolution_limit", 0, 6),
    ("tcp_windowsize", 0, 0),
    ("message_size_limit", 0, 0),
    ("lmdb_map_size", 1, 0),
)
_BOOLS = (
    "disable_dns_lookups",
    "soft_bounce",
    "owner_request_special",
    "strict_8bitmime",
    "strict_7bit_headers",
    "strict_8bitmime_body",
    "strict_mime_encoding_domain",
    "strict_smtputf8",
    "disable_mime_input_processing",
    "disable_mime_output_conversion",
    "address_verify_negative_cache",
    "backwards_bounce_logfile_compatibility",
    "helpful_warnings",
    "send_cyrus_sasl_authzid",
    "multi_instance_enable",
    "enable_long_queue_ids",
    "enable_original_recipient",
    "dns_ncache_ttl_fix_enable",
    "enable_idna2003_compatibility",
    "smtputf8_enable",
    "respectful_logging",
)
_TIMES = (
    ("application_event_drain_time", 1, 0),
    ("max_idle", 1, 0),
    ("ipc_timeout", 1, 0),
    ("ipc_idle", 1, 0),
    ("ipc_ttl", 1, 0),
    ("trigger_timeout", 1, 0),
    ("fork_delay", 1, 0),
    ("deliver_lock_delay", 1, 0),
    ("stale_lock_time", 1, 0),
    ("daemon_timeout", 1, 0),
    ("in_flow_delay", 0, 10),
)


def parse_int(name: str, value: str) -> int:
    """value as Postfix's get_mail_conf_int (or _long) reads it: strtol over the whole
    value, within a C int (a long for the few long parameters)."""
    m = NUMBER.fullmatch(value)
    number = int(m.group(1)) if m else None
    limit = _LONG_MAX if name in _LONGS else _INT_MAX
    if number is None or not -limit - 1 <= number <= limit:
        raise _error(f"bad numerical configuration: {name} = {value}")
    return number


def parse_time(name: str, value: str, default_unit: str) -> int:
    """Seconds, as Postfix 3.7's conv_time reads value: a number (strtol, not negative)
    whose first following character is the unit (what comes after it is not looked at:
    "1h30m" is an hour), default_unit without one; at most a C int of seconds."""
    m = NUMBER.match(value)
    if m is None or not value:
        raise _error(f"parameter {name}: bad time value or unit: {value}")
    number = int(m.group(1))
    unit = value[m.end() : m.end() + 1] or default_unit
    scale = _TIME_UNITS.get(unit)
    if scale is None or not 0 <= number <= _INT_MAX or (scale > 1 and number >= _INT_MAX // scale):
        raise _error(f"parameter {name}: bad time value or unit: {value}")
    return number * scale


def parse_bool(name: str, value: str) -> bool:
    """yes or no, in any case, as Postfix's get_mail_conf_bool; nothing else."""
    word = value.lower()
    if word not in ("yes", "no"):
        raise _error(f"bad boolean configuration: {name} = {value}")
    return word == "yes"


def _error(text: str) -> Exception:
    from oxipost.config import ConfigError

    return ConfigError(text)


def _check_length(name: str, value: str, least: int, most: int) -> None:
    if least and len(value) < least:
        raise _error(f"bad string length {len(value)} < {least}: {name} = {value}")
    if most and len(value) > most:
        raise _error(f"bad string length {len(value)} > {most}: {name} = {value}")


def _check_compatibility(cfg: Config) -> tuple[int, int, int]:
    # mail_params_init reads it before it knows any default: a $name that neither main.cf
    # nor a -o sets is empty here ("$mail_version" is "").
    def lookup(name: str) -> str | None:
        if name == "config_directory":
            return cfg.raw(name)
        return cfg.overrides.get(name, cfg.settings.get(name))

    raw = lookup("compatibility_level")
    try:
        text = Expander(lookup).expand(raw) if raw is not None else "0"
    except ExpandError as e:
        raise _error(f"{cfg.main_cf}: {e}") from None
    level = compat_level(text)
    if level is None:
        raise _error(f'malformed compatibility level syntax: "{text}"')
    return level


def backwards_compatible(cfg: Config) -> bool:
    """Whether compatibility_level keeps some of Postfix 3.7's older defaults (below
    LAST_COMPAT_LEVEL), which postfix(1) reminds of at each command."""
    return _check_compatibility(cfg) < _LAST_COMPAT


# The older defaults whose use Postfix 3.7 logs ("using backwards-compatible default setting
# NAME=VALUE to ..."), each below the compatibility_level that changed it (mail_params'
# warn_compat_break_* flags), and only while main.cf and -o leave that parameter unset.
_COMPAT_BREAKS = (
    ("smtputf8_enable", (1, 0, 0)),
    ("smtpd_relay_restrictions", (1, 0, 0)),
    ("mynetworks_style", (2, 0, 0)),
    ("relay_domains", (2, 0, 0)),
    # Its default, $relay_domains, is relay_domains' older one only while that is unset.
    ("fast_flush_domains", (2, 0, 0)),
    ("smtpd_relay_before_recipient_restrictions", (3, 6, 0)),
)


def compat_breaks(cfg: Config) -> frozenset[str]:
    """The parameters of cfg whose backwards-compatible default is in force and logged at
    use; empty at compatibility_level 3.6 (once per Config)."""
    found = cfg.derived.get("compat_breaks")
    if found is None:
        level = _check_compatibility(cfg)
        found = cfg.derived["compat_breaks"] = frozenset(
            name
            for name, changed in _COMPAT_BREAKS
            if level < changed
            and not _is_set(cfg, name)
            # mynetworks' style matters only where mynetworks is not set.
            and not (name == "mynetworks_style" and _is_set(cfg, "mynetworks"))
            and not (name == "fast_flush_domains" and _is_set(cfg, "relay_domains"))
        )
    return found  # type: ignore[return-value]


def _is_set(cfg: Config, name: str) -> bool:
    return name in cfg.settings or name in cfg.overrides


def _name_mask(label: str, value: str, names: tuple[str, ...]) -> set[str]:
    """The words of value, each one of names (exact case), as Postfix's name_mask reads a
    list; the first other word is its fatal 'unknown LABEL value "WORD" in "VALUE"'."""
    words = set()
    for word in re.split(r"[, \t\r\n]+", value):
        if word and word not in names:
            raise _error(f'unknown {label} value "{word}" in "{value}"')
        if word:
            words.add(word)
    return words


def check_mask(cfg: Config, name: str) -> None:
    """ConfigError, in Postfix's words, for a word that list parameter `name` (a "mask" row
    of daemon_params.tsv: mailbox_delivery_lock, ...) may not hold."""
    label, words = _MASKS[name]
    _name_mask(label, cfg.get(name), words)


def _protocols(cfg: Config) -> set[str]:
    """inet_protocols' words (inet_proto_init), refused as Postfix refuses them."""
    return _name_mask("inet_protocols", cfg.get("inet_protocols"), ("ipv4", "ipv6", "all"))


def _privileged(where: str, name: str, what: str, ids: tuple[tuple[str, int], ...]) -> None:
    for kind, number in ids:
        if number == 0:
            raise _error(f"{where}: parameter {name}: {what} has privileged {kind} ID")


def _check_accounts(cfg: Config) -> None:
    """mail_params_init's check_default_privs, check_mail_owner, check_sgid_group and
    check_overlap."""
    where = f"file {cfg.main_cf}"
    users: dict[str, pwd.struct_passwd] = {}
    for name in ("default_privs", "mail_owner"):
        user = cfg.get(name)
        try:
            pw = users[name] = pwd.getpwnam(user)
        except KeyError:
            raise _error(f"{where}: parameter {name}: unknown user name value: {user}") from None
        _privileged(where, name, f"user {user}", (("user", pw.pw_uid), ("group", pw.pw_gid)))
    owner = users["mail_owner"]
    _check_shared(where, "mail_owner", "user", owner.pw_name, lambda: pwd.getpwuid(owner.pw_uid))
    group = cfg.get("setgid_group")
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise _error(f"{where}: parameter setgid_group: unknown group name: {group}") from None
    _privileged(where, "setgid_group", f"group {group}", (("group", gr.gr_gid),))
    _check_shared(where, "setgid_group", "group", group, lambda: grp.getgrgid(gr.gr_gid))
    privs = users["default_privs"]
    if privs.pw_name == owner.pw_name:
        raise _error(
            f"{where}: parameters default_privs and mail_owner specify the same user"
            f" {privs.pw_name}"
        )
    pair = f"{where}: parameters default_privs and mail_owner"
    if privs.pw_uid == owner.pw_uid:
        raise _error(
            f"{pair}: users {privs.pw_name} and {owner.pw_name} have the same user ID:"
            f" {owner.pw_uid}"
        )
    if privs.pw_gid == owner.pw_gid:
        raise _error(
            f"{pair}: users {privs.pw_name} and {owner.pw_name} have the same group ID:"
            f" {owner.pw_gid}"
        )
    for name, account in (("default_privs", privs), ("mail_owner", owner)):
        if account.pw_gid == gr.gr_gid:
            raise _error(
                f"{where}: parameters {name} and setgid_group: user {account.pw_name} and group"
                f" {group} have the same group ID: {gr.gr_gid}"
            )


def _check_shared(
    where: str,
    name: str,
    what: str,
    mine: str,
    entry_of_id: Callable[[], pwd.struct_passwd | grp.struct_group],
) -> None:
    """A user or group whose ID the system lists under another name first: Postfix finds
    only that much sharing (it does not walk the whole passwd or group file)."""
    try:
        entry = entry_of_id()
    except KeyError:
        return
    other = entry.pw_name if isinstance(entry, pwd.struct_passwd) else entry.gr_name
    if other != mine:
        raise _error(f"{where}: parameter {name}: {what} {mine} has same {what} ID as {other}")


def _check_mynetworks_style(cfg: Config) -> None:
    # Postfix computes mynetworks from the style only when main.cf does not set it.
    if "mynetworks" in cfg.settings or "mynetworks" in cfg.overrides:
        return
    style = cfg.get("mynetworks_style")
    words = _name_mask("mynetworks mask style", style, ("host", "subnet", "class"))
    if len(words) > 1:
        raise _error(f"bad mynetworks_style value: {style}; specify exactly one value")


def check_mynetworks(cfg: Config) -> None:
    """What computing mynetworks' default reads, refused as mail_params_init refuses it:
    inet_protocols, mynetworks_style (its own default depends on compatibility_level) and
    inet_interfaces. postconf computes it as it starts, when main.cf does not set it."""
    if "mynetworks" in cfg.settings or "mynetworks" in cfg.overrides:
        return
    _protocols(cfg)
    _check_mynetworks_style(cfg)
    _check_interfaces(cfg)


def _check_interfaces(cfg: Config) -> None:
    """own_inet_addr_list: each inet_interfaces name must resolve, with a protocol
    inet_protocols allows, to addresses this host's interfaces have."""
    value = cfg.get("inet_interfaces")
    if value == "loopback-only":
        return
    try:
        wanted = interface_addresses(value, cfg.get("inet_protocols"))
    except LookupError as e:
        raise _error(f"config variable inet_interfaces: host not found: {e}") from None
    own = {str(iface.ip) for iface in local_interfaces()}
    for address in wanted or ():
        if address not in own:
            raise _error(f"parameter inet_interfaces: no local interface found for {address}")


def _check_bounded(cfg: Config, kind: str, name: str, least: int, most: int) -> None:
    """One parameter of a get_mail_conf_*_table (or a keyword the daemon looks up as it
    starts): its value as that kind, within bounds (0: none), in Postfix's words."""
    if kind == "str":
        _check_length(name, cfg.get(name), least, most)
    elif kind == "raw":
        # get_mail_conf_raw_table (a value read unexpanded) words it in parentheses.
        value = cfg.raw(name) or ""
        if len(value) < least:
            raise _error(f"bad string length ({len(value)} < {least}): {name} = {value}")
    elif kind == "code":
        fatal, words = _CODES[name]
        value = cfg.get(name)
        if value.lower() not in words:
            raise _error(fatal.format(name, value))
    elif kind == "mask":
        check_mask(cfg, name)
    elif kind == "bool":
        cfg.get_bool(name)
    elif kind == "time":
        seconds = int(cfg.get_time(name))
        if least and seconds < least:
            raise _error(f"invalid {name}: {seconds} (min {least})")
        if most and seconds > most:
            raise _error(f"invalid {name}: {seconds} (max {most})")
    else:
        number = cfg.get_int(name)
        if least and number < least:
            raise _error(f"invalid {name} parameter value {number} < {least}")
        if most and number > most:
            raise _error(f"invalid {name} parameter value {number} > {most}")


def check_startup(cfg: Config, warn: Callable[[str], None], command: bool = False) -> None:
    """Postfix's mail_params_init on cfg: ConfigError (Postfix's fatal text) for the first
    value it refuses, after warn() got what valid_hostname warns of. command: also what
    postfix(1) itself reads (the installation paths)."""
    main_cf = cfg.main_cf
    _check_compatibility(cfg)
    facility = cfg.get("syslog_facility")
    _check_length("syslog_facility", facility, 1, 0)
    if facility not in _FACILITIES:
        raise _error(f"file {main_cf}: parameter syslog_facility: unrecognized value: {facility}")
    cfg.get_bool("daemon_table_open_error_is_fatal")
    _protocols(cfg)
    for name in ("myhostname", "mydomain"):
        _check_length(name, cfg.get(name), 1, 0)
    for name in ("myhostname", "mydomain"):
        problem = hostname_problem(cfg.get(name))
        if problem is not None:
            warn(problem)
            raise _error(f"file {main_cf}: parameter {name}: bad parameter value: {cfg.get(name)}")
    for name, least, most in _STRINGS + (_COMMAND_STRINGS if command else ()):
        _check_length(name, cfg.get(name), least, most)
    for name, least, most in _INTS:
        _check_bounded(cfg, "int", name, least, most)
    for name in _BOOLS:
        cfg.get_bool(name)
    for name, least, most in _TIMES:
        _check_bounded(cfg, "time", name, least, most)
    if os.geteuid() == 0:
        _check_accounts(cfg)
    _check_mynetworks_style(cfg)
    _check_interfaces(cfg)
    host = cfg.get("myhostname")
    if host.lower() == cfg.get("relayhost").lower():
        raise _error(f"myhostname and relayhost parameter settings must not be identical: {host}")
    origin = cfg.get("myorigin")
    if any(c in origin for c in ", \t\r\n"):
        raise _error(f"myorigin parameter setting must not contain multiple values: {origin}")
    # The table above has made them two characters.
    problem = verp_delims_verify(cfg, cfg.get("default_verp_delimiters"))
    if problem is not None:
        raise _error(
            f"file {main_cf}: parameters default_verp_delimiters and verp_delimiter_filter:"
            f" {problem}"
        )


@cache
def _daemon_tables() -> dict[str, tuple[tuple[str, str, int, int], ...]]:
    tables: dict[str, list[tuple[str, str, int, int]]] = {}
    path = os.path.join(os.path.dirname(__file__), "daemon_params.tsv")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            daemon, name, kind, least, most = line.split()
            tables.setdefault(daemon, []).append((name, kind, int(least), int(most)))
    return {daemon: tuple(rows) for daemon, rows in tables.items()}


def check_daemon(cfg: Config, command: str) -> None:
    """What Postfix's daemon `command` reads as it starts beside mail_params_init (its own
    int, string, bool and time tables, then its keywords, in its order): ConfigError for the first
    value it refuses."""
    for name, kind, least, most in _daemon_tables().get(command, ()):
        _check_bounded(cfg, kind, name, least, most)
