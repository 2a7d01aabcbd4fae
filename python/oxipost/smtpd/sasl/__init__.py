"""smtpd SASL - AUTH PLAIN and LOGIN against Dovecot or a built-in password file

make_authenticator(cfg) picks the backend from smtpd_sasl_type:
  dovecot      Dovecot's auth protocol over the unix socket smtpd_sasl_path (relative
               paths resolve under $queue_directory, as in Postfix). Only base64 that was
               decoded and re-encoded here is sent on, so a client cannot inject TAB or LF
               into the protocol; "secured" is sent only under TLS; lip/rip always.
  passwd-file  oxipost's built-in backend: smtpd_sasl_path names a file of
               "user:{SCHEME}hash" lines (Dovecot's passwd-file syntax), schemes {PLAIN},
               {SSHA256} and {SSHA512} (salted SHA-2, base64 of digest+salt).
The exchange (334 challenges, "*" to abort, smtpd_sasl_response_limit) is the session's.

Diagnostics: "535 5.7.8 Error: authentication failed: ..." to the client and a
"warning: ...: SASL <mech> authentication failed: ..." log line.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any

from oxipost.smtpd import replies as R
from oxipost.smtpd.check import CheckConfigError

if TYPE_CHECKING:
    from oxipost.smtpd.server import Session

_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")

# Postfix's words (xsasl_dovecot_server.c) when the auth server cannot be reached or hangs up.
CONNECTION_LOST = "Temporary authentication failure: Connection lost to authentication server"


def decode_b64(text: str) -> bytes | None:
    """Strict base64; None for anything else (TAB, LF, spaces, bad padding)."""
    raw = text.encode("utf-8", "surrogateescape")
    if any(c not in _B64 for c in raw):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return None


class Backend(abc.ABC):
    """A password checker: the built-in passwd-file or Dovecot's auth server."""

    @abc.abstractmethod
    async def check(self, session: Session, user: str, password: str) -> str | None:
        """None on success, else the failure reason shown after "authentication failed:"."""


class PasswdFile(Backend):
    def __init__(self, path: str) -> None:
        self.path = path

    def _entry(self, user: str) -> str | None:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.startswith("#"):
                    continue
                name, _, rest = line.partition(":")
                if name == user:
                    return rest.split(":", 1)[0]
        return None

    async def check(self, session: Session, user: str, password: str) -> str | None:
        try:
            stored = self._entry(user)
        except OSError as e:
            session.srv.log.warning(f"SASL passwd-file {self.path}: {e}")
            return "Temporary authentication failure"
        if stored is None or not verify_password(stored, password):
            return "authentication failure"
        return None


def verify_password(stored: str, password: str) -> bool:
    scheme = "PLAIN"
    if stored.startswith("{") and "}" in stored:
        scheme, stored = stored[1:].split("}", 1)
        scheme = scheme.upper()
    pw = password.encode("utf-8")
    if scheme in ("PLAIN", "CLEAR", "CLEARTEXT"):
        return hmac.compare_digest(stored.encode("utf-8"), pw)
    algo = {"SSHA256": ("sha256", 32), "SSHA512": ("sha512", 64)}.get(scheme)
    if algo is None:
        return False
    try:
        blob = base64.b64decode(stored, validate=True)
    except ValueError:
        return False
    name, size = algo
    digest, salt = blob[:size], blob[size:]
    return hmac.compare_digest(hashlib.new(name, pw + salt).digest(), digest)


def hash_password(password: str, scheme: str = "SSHA512") -> str:
    """A salted hash line value for the built-in passwd-file backend."""
    name = {"SSHA256": "sha256", "SSHA512": "sha512"}[scheme]
    salt = os.urandom(16)
    digest = hashlib.new(name, password.encode("utf-8") + salt).digest()
    return f"{{{scheme}}}" + base64.b64encode(digest + salt).decode()


class Dovecot(Backend):
    def __init__(self, path: str) -> None:
        self.path = path
        self.counter = 0

    async def check(self, session: Session, user: str, password: str) -> str | None:
        self.counter += 1
        resp = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        local: Any = session.conn.get_extra_info("sockname") or ("", 0)
        fields = [
            "AUTH",
            str(self.counter),
            "PLAIN",
            "service=" + session.cfg.get("smtpd_sasl_service"),
            "nologin",
            f"lip={local[0]}",
            f"rip={session.addr}",
            f"lport={local[1]}",
            f"rport={session.port}",
        ]
        if session.tls_active:
            fields.append("secured")
        fields.append(f"resp={resp}")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 10)
        except (TimeoutError, OSError) as e:
            session.srv.log.warning(f"SASL: Connect to {self.path} failed: {e}")
            return CONNECTION_LOST
        try:
            writer.write(f"VERSION\t1\t1\nCPID\t{os.getpid()}\n".encode())
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return CONNECTION_LOST
                if line.startswith(b"VERSION\t") and not line.startswith(b"VERSION\t1\t"):
                    return "Temporary authentication failure"
                if line.rstrip(b"\n") == b"DONE":
                    break
            writer.write(("\t".join(fields) + "\n").encode())
            answer = (await asyncio.wait_for(reader.readline(), 30)).decode("utf-8", "replace")
        except (TimeoutError, OSError) as e:
            session.srv.log.warning(f"SASL: {self.path}: {e}")
            return CONNECTION_LOST
        finally:
            writer.close()
        parts = answer.rstrip("\n").split("\t")
        if parts[0] == "OK":
            return None
        if "temp" in parts or "code=temp_fail" in parts:
            return "Temporary authentication failure"
        reason = "authentication failure"
        for part in parts[2:]:
            if part.startswith("reason="):
                reason = part[7:]
        return reason


class Authenticator:
    """Runs the AUTH exchange for a session and asks the backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def authenticate(
        self, session: Session, mechanism: str, initial: str | None
    ) -> str | None:
        from oxipost.smtpd.server import SaslError

        try:
            if mechanism == "PLAIN":
                what = "initial response" if initial is not None else "client response"
                text = initial if initial is not None else await session.sasl_challenge("")
                data = b"" if text == "=" else decode_b64(text or "")
                if data is None:
                    raise SaslError(R.AUTH_BASE64.format(what=what))
                parts = data.split(b"\0")
                if len(parts) != 3:
                    raise SaslError(R.AUTH_FAILED.format(reason="Invalid authentication data"))
                user_b, pass_b = parts[1], parts[2]
            else:  # LOGIN
                if initial is not None:
                    user_raw = decode_b64(initial)
                    if user_raw is None:
                        raise SaslError(R.AUTH_BASE64.format(what="initial response"))
                else:
                    text = await session.sasl_challenge("VXNlcm5hbWU6")
                    user_raw = decode_b64(text or "")
                    if user_raw is None:
                        raise SaslError(R.AUTH_BASE64.format(what="client response"))
                text = await session.sasl_challenge("UGFzc3dvcmQ6")
                pass_raw = decode_b64(text or "")
                if pass_raw is None:
                    raise SaslError(R.AUTH_BASE64.format(what="client response"))
                user_b, pass_b = user_raw, pass_raw
            try:
                user, password = user_b.decode("utf-8"), pass_b.decode("utf-8")
            except UnicodeDecodeError:
                raise SaslError(
                    R.AUTH_FAILED.format(reason="Invalid authentication data")
                ) from None
            if any(ord(c) < 32 for c in user + password):
                raise SaslError(R.AUTH_FAILED.format(reason="Invalid authentication data"))
            reason = await self.backend.check(session, user, password)
            if reason is not None:
                session.srv.log.warning(
                    f"{session.state.namaddr}: SASL {mechanism} authentication failed: {reason}"
                )
                code = R.AUTH_FAILED.format(reason=reason)
                if reason.startswith("Temporary"):
                    code = f"454 4.7.0 {reason}"
                raise SaslError(code)
            return user
        except SaslError as e:
            await session.reply(str(e))
            return None


# smtpd_sasl_type's values (postconf -a).
SASL_SERVER_TYPES = ("dovecot", "passwd-file")


def make_authenticator(cfg: Any) -> Authenticator:
    kind = cfg.get("smtpd_sasl_type").strip().lower()
    path = cfg.get("smtpd_sasl_path").strip()
    if kind == "dovecot":
        if not os.path.isabs(path):
            path = os.path.join(cfg.path("queue_directory"), path)
        return Authenticator(Dovecot(path))
    if kind == "passwd-file":
        return Authenticator(PasswdFile(path))
    raise CheckConfigError(f"unsupported SASL server implementation: {kind}")
