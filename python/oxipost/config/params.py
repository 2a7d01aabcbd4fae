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
  not contain multiple values: X`

How numbers, times and booleans are read is here too (parse_int, parse_time, parse_bool):
Config.get_int, get_time and get_bool use them, so a daemon that reads its own parameters
later refuses a bad one in the same words.

Not checked (Postfix's are): inet_protocols and mynetworks_style values, the mail_owner,
setgid_group and default_privs accounts, compatibility_level's syntax.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from oxipost.valid import hostname_problem

if TYPE_CHECKING:
    from oxipost.config import Config

__all__ = ["check_startup", "parse_bool", "parse_int", "parse_time"]

# C's int and long, as Postfix's strtol-based conversions bound them.
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1
# What strtol reads: optional white space and sign, then decimal digits (ASCII only).
_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Postfix's long parameters: everything else numeric is a C int.
_LONGS = frozenset({"message_size_limit", "lmdb_map_size", "mailbox_size_limit"})
_FACILITIES = frozenset(
    "auth authpriv cron daemon ftp kern lpr mail news syslog user uucp".split()
    + [f"local{n}" for n in range(8)]
)

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
    m = _NUMBER.fullmatch(value)
    number = int(m.group(1)) if m else None
    limit = _LONG_MAX if name in _LONGS else _INT_MAX
    if number is None or not -limit - 1 <= number <= limit:
        raise _error(f"bad numerical configuration: {name} = {value}")
    return number


def parse_time(name: str, value: str, default_unit: str) -> int:
    """Seconds, as Postfix 3.7's conv_time reads value: a number (strtol, not negative)
    whose first following character is the unit (what comes after it is not looked at:
    "1h30m" is an hour), default_unit without one; at most a C int of seconds."""
    m = _NUMBER.match(value)
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


def check_startup(cfg: Config, warn: Callable[[str], None], command: bool = False) -> None:
    """Postfix's mail_params_init on cfg: ConfigError (Postfix's fatal text) for the first
    value it refuses, after warn() got what valid_hostname warns of. command: also what
    postfix(1) itself reads (the installation paths)."""
    main_cf = cfg.main_cf
    facility = cfg.get("syslog_facility")
    _check_length("syslog_facility", facility, 1, 0)
    if facility not in _FACILITIES:
        raise _error(f"file {main_cf}: parameter syslog_facility: unrecognized value: {facility}")
    cfg.get_bool("daemon_table_open_error_is_fatal")
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
        number = cfg.get_int(name)
        if least and number < least:
            raise _error(f"invalid {name} parameter value {number} < {least}")
        if most and number > most:
            raise _error(f"invalid {name} parameter value {number} > {most}")
    for name in _BOOLS:
        cfg.get_bool(name)
    for name, least, most in _TIMES:
        seconds = int(cfg.get_time(name))
        if least and seconds < least:
            raise _error(f"invalid {name}: {seconds} (min {least})")
        if most and seconds > most:
            raise _error(f"invalid {name}: {seconds} (max {most})")
    host = cfg.get("myhostname")
    if host.lower() == cfg.get("relayhost").lower():
        raise _error(f"myhostname and relayhost parameter settings must not be identical: {host}")
    origin = cfg.get("myorigin")
    if any(c in origin for c in ", \t\r\n"):
        raise _error(f"myorigin parameter setting must not contain multiple values: {origin}")
