"""bounce(5) templates: the text, subject and sender of bounce(8)'s notices.

The built-in failure, delay, success and verify templates, and the ones a
bounce_template_file replaces them with, read as Postfix 3.7's bounce_templates_load():
`NAME_template = <<MARKER` up to a line that is MARKER alone (or a one-line value), "#"
lines and blank lines ignored outside. A template is judged when first used, as Postfix's
bounce_template_parse_buffer(): its Charset:, From:, Subject: and Postmaster-Subject:
headers, a blank line, then the text, whose $names expand as main.cf's do, besides
$delay_warning_time_UNIT and $maximal_queue_lifetime_UNIT (seconds, minutes, hours, days,
weeks) and, with smtputf8_enable, $myhostname and $mydomain with their ACE labels in
UTF-8. postconf -t shows the templates (dump_templates), postconf -b their text expanded
(expand_templates).

Diagnostics, in Postfix's words. Warnings, and the built-in template used instead: an
unknown template name, an empty, non-ASCII, unknown or inapplicable header, missing text,
8-bit text under Charset: us-ascii, a missing end marker; a time value that converts to
zero or to more than 999 of a unit below days. Fatal (TemplateError): a line that is not
"name = value", a bad end marker, an undefined $name, bad $name syntax, an unknown time
unit.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from oxipost.config.expand import Expander, ExpandError, TruncatedError, empty_macro
from oxipost.config.mastercf import split_nameval
from oxipost.is_header import header_length

if TYPE_CHECKING:
    from oxipost.config import Config

__all__ = ["KINDS", "Template", "TemplateError", "Templates"]

Warn = Callable[[str], None]

KINDS = ("failure", "delay", "success", "verify")
BUILT_IN = "[built-in]"


class TemplateError(Exception):
    """A template error that is fatal to Postfix's bounce daemon (and postconf -b/-t)."""


_FOOTER = ("", "                   The mail system")
_HELP = (
    "",
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can",
    "delete your own text from the attached returned message.",
)
_HELLO = ("This is the mail system at host $myhostname.", "")
_TEXTS = {
    "failure": (
        *_HELLO,
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        *_HELP,
        *_FOOTER,
    ),
    "delay": (
        *_HELLO,
        "####################################################################",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
        "####################################################################",
        "",
        "Your message could not be delivered for more than $delay_warning_time_hours hour(s).",
        "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
        *_HELP,
        *_FOOTER,
    ),
    "success": (
        *_HELLO,
        "Your message was successfully delivered to the destination(s)",
        "listed below. If the message was delivered to mailbox you will",
        "receive no further notifications. Otherwise you may still receive",
        "notifications of mail delivery errors from other systems.",
        *_FOOTER,
    ),
    "verify": (
        *_HELLO,
        "Enclosed is the mail delivery report that you requested.",
        *_FOOTER,
    ),
}
_SUBJECTS = {
    "failure": ("Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail"),
    "delay": ("Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail"),
    "success": ("Successful Mail Delivery Report", None),
    "verify": ("Mail Delivery Status Report", None),
}

# The parameters Postfix 3.7's bounce daemon knows (the global ones and its own), those
# of our registry whose $name its postconf -b expands; any other is undefined there
# unless main.cf sets it (found by asking Debian's Postfix 3.7 for each).
_BOUNCE_PARAMETERS = frozenset(
    """
    2bounce_notice_recipient address_verify_negative_cache address_verify_service_name
    alias_database alternate_config_directories application_event_drain_time
    backwards_bounce_logfile_compatibility berkeley_db_create_buffer_size
    berkeley_db_read_buffer_size bounce_notice_recipient bounce_service_name
    bounce_size_limit bounce_template_file cleanup_service_name command_directory
    compatibility_level config_directory daemon_directory daemon_table_open_error_is_fatal
    daemon_timeout data_directory debug_peer_level debug_peer_list default_database_type
    default_delivery_status_filter default_privs default_process_limit
    default_verp_delimiters defer_service_name delay_logging_resolution_limit
    delay_notice_recipient delay_warning_time deliver_lock_attempts deliver_lock_delay
    disable_dns_lookups disable_mime_input_processing disable_mime_output_conversion
    dns_ncache_ttl_fix_enable dnssec_probe dont_remove double_bounce_sender
    enable_idna2003_compatibility enable_long_queue_ids enable_original_recipient
    enable_threaded_bounces error_service_name export_environment fast_flush_domains
    fault_injection_code flush_service_name fork_attempts fork_delay hash_queue_depth
    hash_queue_names header_address_token_limit header_from_format header_size_limit
    helpful_warnings import_environment in_flow_delay inet_interfaces inet_protocols
    info_log_address_format internal_mail_filter_classes ipc_idle ipc_timeout ipc_ttl
    known_tcp_ports line_length_limit lmdb_map_size mail_name mail_owner mail_release_date
    mail_version maillog_file maillog_file_compressor maillog_file_prefixes
    maillog_file_rotate_suffix max_idle max_use maximal_queue_lifetime message_drop_headers
    message_size_limit meta_directory mime_boundary_length_limit mime_nesting_limit
    multi_instance_directories multi_instance_enable multi_instance_group
    multi_instance_name multi_instance_wrapper mydestination mydomain myhostname mynetworks
    mynetworks_style myorigin notify_classes owner_request_special
    parent_domain_matches_subdomains pickup_service_name postlog_service_name process_id
    process_id_directory process_name proxy_interfaces proxymap_service_name
    proxywrite_service_name queue_directory queue_service_name recipient_delimiter
    relay_domains relayhost respectful_logging rewrite_service_name send_cyrus_sasl_authzid
    service_name setgid_group shlib_directory showq_service_name smtputf8_autodetect_classes
    smtputf8_enable soft_bounce stale_lock_time strict_7bit_headers strict_8bitmime
    strict_8bitmime_body strict_mime_encoding_domain strict_smtputf8 syslog_facility
    syslog_name tcp_windowsize trace_service_name trigger_timeout verp_delimiter_filter
    """.split()
)

# $NAME_UNIT of these parameters is their time in UNIT, truncated (bounce_template.c).
_TIME_PARAMETERS = ("delay_warning_time", "maximal_queue_lifetime")
_TIME_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
# What a $name's value may put into the text; any other byte becomes "_" (UTF-8 text too
# with smtputf8_enable).
_FILTER = frozenset("\t" + "".join(chr(c) for c in range(32, 127)))


@dataclass(slots=True, frozen=True)
class Template:
    kind: str
    # Where it came from: "[built-in]" or the template file's name.
    origin: str
    charset: str
    # "8bit" when the text is not ASCII, else "7bit".
    encoding: str
    sender: str
    subject: str
    # None for the templates that have no postmaster copy (success, verify).
    postmaster_subject: str | None
    text: tuple[str, ...]


def built_in(kind: str, cfg: Config) -> Template:
    """The built-in template of a kind; its From: in header_from_format's form."""
    subject, pm_subject = _SUBJECTS[kind]
    obsolete = cfg.get("header_from_format").strip().lower() == "obsolete"
    sender = (
        "MAILER-DAEMON (Mail Delivery System)"
        if obsolete
        else "Mail Delivery System <MAILER-DAEMON>"
    )
    return Template(kind, BUILT_IN, "us-ascii", "7bit", sender, subject, pm_subject, _TEXTS[kind])


def _parse(base: Template, origin: str, buffer: str, warn: Warn) -> Template:
    """A template file's text for one kind as bounce_template_parse_buffer() takes it; the
    built-in template, after a warning, when Postfix ignores the text."""
    kind = base.kind
    lines = buffer.split("\n")
    fields: dict[str, str | None] = {
        "charset": base.charset,
        "from": base.sender,
        "subject": base.subject,
        "postmaster-subject": base.postmaster_subject,
    }
    i = 0
    while i < len(lines) and (hlen := header_length(lines[i])) > 0:
        label = lines[i][:hlen]
        value = lines[i][hlen:].lstrip(": \t\n\v\f\r")
        problem = ""
        if not value:
            problem = f'empty "{label}" header value'
        elif not value.isascii():
            problem = f'non-ASCII "{label}" header value'
        elif label.lower() not in fields:
            problem = f'unknown "{label}" header label'
        elif label.lower() == "postmaster-subject" and base.postmaster_subject is None:
            problem = f'inapplicable "{label}" header label'
        if problem:
            warn(f"{origin}: {problem} in {kind} template -- ignoring this template")
            return base
        fields[label.lower()] = value
        i += 1
    while i < len(lines) and not lines[i].strip(" \t\n\v\f\r"):
        i += 1
    if i == len(lines):
        warn(f"{origin}: missing message text in {kind} template -- ignoring this template")
        return base
    text = tuple(lines[i:])
    encoding = "7bit"
    if not all(line.isascii() for line in text):
        if str(fields["charset"]).lower() == "us-ascii":
            warn(f"{origin}: 8-bit message text in {kind} template")
            warn("please specify a charset value other than us-ascii")
            warn("-- ignoring this template for now")
            return base
        encoding = "8bit"
    return replace(
        base,
        origin=origin,
        charset=str(fields["charset"]),
        encoding=encoding,
        sender=str(fields["from"]),
        subject=str(fields["subject"]),
        postmaster_subject=fields["postmaster-subject"],
        text=text,
    )


def _read(path: str, warn: Warn) -> dict[str, str]:
    """Each kind's text in a template file (bounce_templates_load()), the last one given."""
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise TemplateError(f"open {path}: {e.strerror}") from None
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    found: dict[str, str] = {}
    # Postfix counts from one before the first line is read: each is named one past.
    lineno = 1
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        lineno += 1
        first = line.lstrip(" \t\n\v\f\r")
        if not first or first.startswith("#"):
            continue
        try:
            name, value = split_nameval(line)
        except ValueError as e:
            raise TemplateError(f'{path}, line {lineno}: {e}: "{line}"') from None
        if value.startswith("<<"):
            marker = value[2:].lstrip(" \t\n\v\f\r")
            if not marker:
                raise TemplateError(f"{path}, line {lineno}: missing end marker after <<")
            if not (marker[0].isascii() and marker[0].isalnum()):
                raise TemplateError(f"{path}, line {lineno}: malformed end marker after <<")
            body: list[str] = []
            ended = False
            while i < len(lines):
                line = lines[i]
                i += 1
                lineno += 1
                if line == marker:
                    ended = True
                    break
                # Lines are joined once there is text: blank lines before it go.
                if body or line:
                    body.append(line)
            if not ended:
                warn(f'{path}, line {lineno}: missing "{marker}" end marker')
            value = "\n".join(body)
        kind = name[: -len("_template")] if name.endswith("_template") else ""
        if kind in KINDS:
            found[kind] = value
        else:
            warn(f"{path}, line {lineno}: unknown template name: {name} -- ignoring this template")
    return found


class Templates:
    """The four templates of a configuration: bounce_template_file's, or the built-in ones.
    Each is judged once, when first asked for (warnings then)."""

    def __init__(self, cfg: Config, path: str | None = None, warn: Warn | None = None) -> None:
        self.cfg = cfg
        self.warn: Warn = warn or (lambda _text: None)
        path = cfg.get("bounce_template_file") if path is None else path
        self.path = path
        self._texts = _read(path, self.warn) if path else {}
        self._judged: dict[str, Template] = {}

    def get(self, kind: str) -> Template:
        tp = self._judged.get(kind)
        if tp is None:
            base = built_in(kind, self.cfg)
            text = self._texts.get(kind)
            tp = base if text is None else _parse(base, self.path, text, self.warn)
            self._judged[kind] = tp
        return tp

    def _lookup(self, tp: Template) -> Callable[[str], str | None]:
        cfg = self.cfg
        utf8 = cfg.get_bool("smtputf8_enable")

        def clean(value: str) -> str:
            out = []
            for ch in value:
                if ch in _FILTER or (utf8 and ord(ch) > 127 and not 0xDC80 <= ord(ch) <= 0xDCFF):
                    out.append(ch)
                else:
                    out.append("_" * len(ch.encode("utf-8", "surrogateescape")))
            return "".join(out)

        def lookup(key: str) -> str | None:
            for param in _TIME_PARAMETERS:
                if key.startswith(param + "_"):
                    unit = key[len(param) + 1 :]
                    return self._time(tp, param, unit)
            named = key in cfg.settings or key in cfg.overrides
            if not (named or key in _BOUNCE_PARAMETERS) or cfg.raw(key) is None:
                return None
            value = cfg.get(key)
            if utf8 and key in ("myhostname", "mydomain"):
                value = _ace_to_utf8(value)
            # Expanded already: a "$" in the result is text, as mac_expand's lookups give.
            return clean(value).replace("$", "$$")

        return lookup

    def _time(self, tp: Template, param: str, unit: str) -> str:
        divisor = _TIME_UNITS.get(unit)
        key = f"{param}_{unit}"
        if divisor is None:
            raise TemplateError(f'{tp.origin}: unrecognized suffix "{unit}" in parameter "{key}"')
        seconds = int(self.cfg.get_time(param))
        result = seconds // divisor
        if result > 999 and divisor < 86400:
            self.warn(
                f'{tp.origin}: excessive result "{result}" in {tp.kind} template conversion '
                f'of parameter "{key}"'
            )
            self.warn(f'please increase time unit "{unit}" of "{key}" in {tp.kind} template')
            self.warn("for instructions see the bounce(5) manual")
        elif result == 0 and seconds and divisor > 1:
            self.warn(
                f'{tp.origin}: zero result in {tp.kind} template conversion of parameter "{key}"'
            )
            self.warn(f'please reduce time unit "{unit}" of "{key}" in {tp.kind} template')
            self.warn("for instructions see the bounce(5) manual")
        return str(result)

    def expand(self, kind: str) -> list[str]:
        """The text of a kind's template with its $names expanded."""
        tp = self.get(kind)
        lookup = self._lookup(tp)
        out = []
        for line in tp.text:
            if empty_macro(line):
                self.warn(f'empty macro name: "{line}"')
                raise TemplateError(f"{tp.origin}: bad $name syntax in {kind} template: {line}")
            expander = Expander(lookup)
            try:
                out.append(expander.expand(line))
            except ExpandError as e:
                if isinstance(e, TruncatedError):
                    self.warn(e.warning)
                raise TemplateError(
                    f"{tp.origin}: bad $name syntax in {kind} template: {line}"
                ) from None
            if expander.used_undefined:
                raise TemplateError(f"{tp.origin}: undefined $name in {kind} template: {line}")
        return out

    def dump(self) -> str:
        """postconf -t: every template as a template file gives it (bounce_templates_dump)."""
        parts = []
        for kind in KINDS:
            tp = self.get(kind)
            head = [f"Charset: {tp.charset}", f"From: {tp.sender}", f"Subject: {tp.subject}"]
            if tp.postmaster_subject is not None:
                head.append(f"Postmaster-Subject: {tp.postmaster_subject}")
            parts.append("\n".join([f"{kind}_template = <<EOF", *head, "", *tp.text, "EOF\n"]))
        return "\n".join(parts)

    def expand_all(self) -> str:
        """postconf -b: every template's text expanded (bounce_templates_expand)."""
        parts = []
        for kind in KINDS:
            text = self.expand(kind)
            parts.append("\n".join([f"expanded_{kind}_text = <<EOF", *text, "EOF\n"]))
        return "\n".join(parts)


def _ace_to_utf8(domain: str) -> str:
    """A domain with its xn-- labels in UTF-8 (a label that does not decode stays)."""
    labels = []
    for label in domain.split("."):
        if label.lower().startswith("xn--"):
            try:
                label = codecs.decode(label.encode("ascii"), "idna")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)
