"""tls - what Postfix's TLS library (src/tls/) logs of a session, for smtpd(8) and smtp(8)

summary() is the "TLSv1.3 with cipher NAME (256/256 bits)" of tls_log_summary()
(tls_misc.c), which the "TLS connection established" lines and smtpd's Received: header
carry. Python's ssl module tells neither the key exchange group nor the peer's signature
algorithm and digest, which Postfix appends ("key-exchange X25519 server-signature
RSA-PSS (2048 bits) server-digest SHA256"): they are left out.

verify_error() is tls_log_verify_error()'s line (tls_verify.c) for a server certificate
that failed OpenSSL's checks, from the X509_V_ERR code and its text.
"""

from __future__ import annotations

from typing import Any

# X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: named
# on their own by tls_log_verify_error; every other code as "num=N:TEXT".
_SELF_SIGNED = (18, 19)


def summary(ssl_object: Any) -> str:
    """ "PROTOCOL with cipher NAME (BITS/BITS bits)" of an ssl.SSLObject or SSLSocket, ""
    when it has no cipher. A handshake that failed (at the server's certificate) has no
    version(): the cipher's own protocol stands in, which is the session's for TLS 1.3."""
    cipher = ssl_object.cipher() if ssl_object is not None else None
    if not cipher:
        return ""
    name, protocol, bits = cipher
    protocol = ssl_object.version() or protocol
    return f"{protocol} with cipher {name} ({bits}/{bits} bits)"


def verify_error(namaddr: str, code: int, text: str) -> str:
    """tls_log_verify_error()'s line for a server certificate (depth 0) that OpenSSL
    refused with X509_V_ERR `code`, whose text is `text`."""
    if code in _SELF_SIGNED:
        return f"certificate verification failed for {namaddr}: self-signed certificate"
    return f"server certificate verification failed for {namaddr}: num={code}:{text}"
