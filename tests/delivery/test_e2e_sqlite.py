"""Under master: virtual_mailbox_maps = sqlite:FILE, as sqlite_table(5)'s users write it:
smtpd (as mail_owner) refuses an address the database does not list as active, and
virtual(8) delivers to the Maildir that result_format makes of the row."""

from __future__ import annotations

import sqlite3

from tests.delivery.test_e2e_delivery import oxi  # noqa: F401
from tests.smtpd.conftest import Raw


def test_virtual_mailboxes_from_a_sqlite_database(oxi) -> None:  # noqa: F811
    db = sqlite3.connect(oxi.conf / "mailboxes.sqlite")
    with db:
        db.execute("CREATE TABLE users (email TEXT, active INTEGER)")
        db.executemany(
            "INSERT INTO users VALUES (?, ?)", [("alice@example.com", 1), ("info@example.com", 0)]
        )
    db.close()
    (oxi.conf / "mailboxes.cf").write_text(
        f"dbpath = {oxi.conf}/mailboxes.sqlite\n"
        "query = SELECT email FROM users WHERE email = '%s' AND active = 1\n"
        "result_format = %d/%u/\n"
    )
    oxi.start(f"virtual_mailbox_maps = sqlite:{oxi.conf}/mailboxes.cf\n")
    raw = Raw("127.0.0.1", oxi.port)
    try:
        raw.reply()
        raw.cmd("EHLO client.example.org")
        raw.cmd("MAIL FROM:<joe@example.org>")
        refused = [raw.cmd(f"RCPT TO:<{u}@example.com>") for u in ("info", "o'hara")]
        raw.cmd("QUIT")
    finally:
        raw.close()
    assert all(r.startswith("550 5.1.1 ") for r in refused), refused
    assert "User unknown in virtual mailbox table" in refused[0]
    oxi.swaks("joe@example.org", "alice@example.com", "from sqlite", "hello alice")
    (delivered,) = oxi.wait_mail("alice")
    assert "Subject: from sqlite" in delivered.read_text()
    assert f"warning: sqlite:{oxi.conf}/mailboxes.cf" not in oxi.log()
