"""A private Dovecot (Debian's dovecot-lmtpd) serving LMTP on one unix socket: the server
that local(8) passes mail to with mailbox_transport = lmtp:unix:private/dovecot-lmtp, as
a site hands mailboxes to Dovecot. Its users are the names given (passwd-file, the local
part only, as auth_username_format = %Ln), with Maildirs under its own directory, written
as nobody; any other recipient is refused at RCPT with Dovecot's 550 5.1.1."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_dir

DOVECOT = "/usr/sbin/dovecot"
LMTP = "/usr/lib/dovecot/lmtp"

CONF = """\
base_dir = {d}/run
state_dir = {d}/run
protocols = lmtp
ssl = no
log_path = {d}/dovecot.log
auth_username_format = %Ln
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  unix_listener {sock} {{
    mode = 0666
  }}
}}
"""


@contextlib.contextmanager
def dovecot_lmtp(sock: Path, users: list[str]) -> Iterator[Path]:
    """Dovecot listening for LMTP on sock until the block ends; yields its mail directory
    (one USER/Maildir per user)."""
    if not os.path.exists(LMTP):
        pytest.fail("dovecot lmtp is missing: `make sysdeps` installs dovecot-lmtpd")
    with shared_dir("oxipost-dovecot-lmtp-") as d:
        (d / "run").mkdir()
        mail = d / "mail"
        mail.mkdir(mode=0o1777)
        mail.chmod(0o1777)
        (d / "users").write_text("".join(f"{u}::65534:65534::{mail}/{u}::\n" for u in users))
        (d / "dovecot.conf").write_text(CONF.format(d=d, sock=sock))
        proc = subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")])
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None, f"dovecot exited: {proc.returncode}"
                assert time.monotonic() < deadline, "dovecot does not listen"
                time.sleep(0.1)
            yield mail
        finally:
            proc.terminate()
            proc.wait(timeout=30)
