"""smtpd_milter - what smtpd(8) tells its Milter applications, and what it does with
their replies

SessionMilters(session) is a session's oxipost.milter.Milters with Postfix's macro values
(smtpd_milter.c: i, j, _, v, {daemon_name}, {daemon_addr}, {daemon_port}, {client_addr},
{client_port}, {client_name}, {client_ptr}, {tls_version}, {cipher}, {cipher_bits},
{auth_type}, {auth_authen}, {auth_author}, {mail_addr}, {mail_host}, {mail_mailer},
{rcpt_addr}, {rcpt_host}, {rcpt_mailer}: an address, host and mailer are the address
trivial-rewrite resolves to (its local part quoted as RFC 5321 wants), its next hop and its
transport; for a recipient smtpd refused, which
rejected_rcpt() tells the applications that ask for those (SMFIP_RCPT_REJ), the refusal's
code and text and the mailer "error"), and verdict() is Postfix's check_milter_reply():
the line it logs and the reply the client gets.

Diagnostics: "milter-reject: STAGE from CLIENT: REPLY; from=<..> to=<..> proto=.. helo=<..>",
"milter-discard: ...: milter triggers DISCARD action; ..." and "milter-hold: ...: milter
triggers HOLD action; ..." as Postfix logs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oxipost.delivery.address import quote_local
from oxipost.milter import MilterConf, Milters
from oxipost.rewrite.resolve import resolve

if TYPE_CHECKING:
    from oxipost.smtpd.server import Session

SHUTDOWN = "421 4.7.0 Server closing connection"


class SessionMilters(Milters):
    """The smtpd_milters of one session."""

    def __init__(self, session: Session, conf: MilterConf) -> None:
        self.session = session
        # The recipient a RCPT event is about ({rcpt_addr} and friends).
        self.rcpt = ""
        # smtpd's refusal of that recipient, for an application that asked to see refused
        # recipients (SMFIP_RCPT_REJ): its macros describe the refusal instead.
        self.rcpt_reject = ""
        super().__init__(conf, self.macro, session.srv.log)

    def _resolved(self, addr: str, what: str) -> str | None:
        if not addr:
            return None
        try:
            res = resolve(addr, self.session.cfg)
        except Exception:
            return None
        if what == "addr":
            return quote_local(res.recipient) if res.recipient else ""
        return res.nexthop if what == "host" else res.transport

    def macro(self, name: str) -> str | None:
        """A macro's value for this session now; None when it has none."""
        s = self.session
        st = s.state
        cfg = s.cfg
        if name == "i":
            return st.queue_id or None
        if name == "j":
            return str(s.srv.hostname)
        if name == "_":
            return f"{st.reverse_name} [{s.addr}]"
        if name == "v":
            return str(cfg.get("milter_macro_v"))
        if name == "{daemon_name}":
            return str(cfg.get("milter_macro_daemon_name"))
        if name in ("{daemon_addr}", "{daemon_port}"):
            server: Any = s.conn.get_extra_info("sockname")
            if not server:
                return None
            return str(server[0] if name == "{daemon_addr}" else server[1])
        if name == "{client_addr}":
            return s.addr
        if name == "{client_port}":
            return str(s.port)
        if name == "{client_name}":
            return str(st.name)
        if name == "{client_ptr}":
            return str(st.reverse_name)
        if name in ("{tls_version}", "{cipher}", "{cipher_bits}"):
            ssl_obj: Any = s.conn.get_extra_info("ssl_object") if s.tls_active else None
            if ssl_obj is None:
                return None
            cipher = ssl_obj.cipher()
            if name == "{tls_version}":
                return str(ssl_obj.version())
            return str(cipher[0] if name == "{cipher}" else cipher[2])
        if name == "{auth_type}":
            return s.sasl_method or None
        if name == "{auth_authen}":
            return st.sasl_username or None
        if name == "{auth_author}":
            return s.sasl_sender or None
        if name == "{mail_addr}":
            # The null sender is not resolved (Sendmail does not externalize it).
            return self._resolved(st.sender, "addr") if st.sender else st.sender
        if name in ("{mail_host}", "{mail_mailer}"):
            return self._resolved(st.sender or "", "host" if name == "{mail_host}" else "")
        if name in ("{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}") and self.rcpt_reject:
            return self._rejected_macro(name)
        if name == "{rcpt_addr}":
            return self._resolved(self.rcpt, "addr")
        if name in ("{rcpt_host}", "{rcpt_mailer}"):
            return self._resolved(self.rcpt, "host" if name == "{rcpt_host}" else "")
        return None

    def _rejected_macro(self, name: str) -> str | None:
        """A refused recipient's macros, as Postfix's smtpd_milter_eval cuts them from the
        reply "554 5.7.1 <user@example.com>: Relay access denied": {rcpt_mailer} is
        "error", {rcpt_host} the word after the code (5.7.1), {rcpt_addr} what follows
        the word after that (Relay access denied; none when nothing does)."""
        if name == "{rcpt_mailer}":
            return "error"
        words = self.rcpt_reject[4:].split(" ", 2)
        if name == "{rcpt_host}":
            return words[0]
        return words[2] if len(words) == 3 else None

    async def rejected_rcpt(self, reply: str, rcpt: str, args: list[str]) -> None:
        """RCPT for a recipient smtpd refused with `reply`, to the applications that want
        it (Postfix's rcpt_cmd): what they answer changes nothing."""
        self.rcpt, self.rcpt_reject = rcpt, reply
        try:
            await self.rcpt_event(args, rejected=True)
        finally:
            self.rcpt = self.rcpt_reject = ""

    def verdict(self, resp: str, recipient: str = "") -> str | None:
        """Postfix's check_milter_reply: log the application's decision; the reply for
        the client, None when the command goes on (a hold or discard is remembered for
        the message)."""
        st = self.session.state
        if resp[0] == "H":
            st.actions.setdefault("HOLD", "milter triggers HOLD action")
            action, text, reply = "milter-hold", "milter triggers HOLD action", None
        elif resp[0] == "D":
            st.actions["DISCARD"] = "milter triggers DISCARD action"
            action, text, reply = "milter-discard", "milter triggers DISCARD action", None
        elif resp[0] == "S":
            action, text, reply = "milter-reject", SHUTDOWN, SHUTDOWN
        else:
            action, text, reply = "milter-reject", resp, resp
        self.session.srv.log.info(st.whatsup(action, text, recipient))
        return reply


__all__ = ["SessionMilters"]
