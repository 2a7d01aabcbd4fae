"""printable() as Postfix's src/util/printable.c judges each byte."""

from __future__ import annotations

from oxipost.printable import printable


def latin1(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def test_each_byte_that_is_not_printable_ascii_is_replaced() -> None:
    assert printable("plain text") == "plain text"
    assert printable("a\x01b\x7fc\td\r\ne") == "a?b?c?d??e"
    assert printable("a\x01b", " ") == "a b"
    # Without UTF-8 (smtputf8_enable = no in smtpd) each 8-bit byte, one for one.
    assert printable("caf\u00e9" + latin1(b" \xe9"), " ", utf8=False) == "caf" + " " * 4


def test_utf8_is_kept_as_postfix_loose_test_keeps_it() -> None:
    assert printable("caf\u00e9 \u20ac") == "caf\u00e9 \u20ac"
    # A byte that is not UTF-8, a lone continuation byte, a lead byte with nothing after.
    assert printable(latin1(b"\xe9x \x80 \xc3")) == "?x ? ?"
    # Postfix takes a lead byte and every continuation byte after it as one character.
    assert printable(latin1(b"\xc3\xa9\xa9")) == latin1(b"\xc3\xa9\xa9")
