"""XVERP (VERP_README): smtpd's EHLO keyword for smtpd_authorized_verp_clients, MAIL FROM's
XVERP and XVERP=xy parameters and the delimiters the queue file keeps, compared with real
Postfix 3.7."""

from __future__ import annotations

import pytest

from tests.smtpd.test_postfix_differential import (
    MESSAGE,
    Played,
    _envelope_view,
    _queued_on_both,
    _without_queue_ids,
)
from tests.smtpd.test_xclient import XCLIENT_MAIN_CF

pytestmark = pytest.mark.postfix

# Postfix's smtpd_authorized_verp_clients is $authorized_verp_clients, empty: not
# $mynetworks, which has the client here.
MAIN_CF = XCLIENT_MAIN_CF + "mynetworks = 127.0.0.0/8\n"
VERP_CF = MAIN_CF + "smtpd_authorized_verp_clients = 127.0.0.2\n"


@pytest.mark.slow
def test_xverp_replies_and_queue_file_as_postfix(start_smtpd) -> None:
    """An authorized client: EHLO announces XVERP (after AUTH's place, before XCLIENT);
    XVERP= needs two characters of verp_delimiter_filter, XVERP its default delimiters,
    a null sender none (503 once the parameters are good), a longer name is an unknown
    option, the last XVERP counts; and the queue file's verp_delimiters record, where
    postcat -e shows it."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org> XVERP=ab"]
    dialogue += ["MAIL FROM:<a@example.org> XVERP=+", "MAIL FROM:<> XVERP"]
    dialogue += ["MAIL FROM:<> XVERP=ab", "MAIL FROM:<a@example.org> XVERPfoo"]
    dialogue += ["MAIL FROM:<a@example.org> xverp=-=", "RCPT TO:<postmaster@localhost>"]
    dialogue += [*MESSAGE, "MAIL FROM:<b@example.org> XVERP XVERP=+-"]
    dialogue += ["RCPT TO:<postmaster@localhost>", *MESSAGE]
    dialogue += ["MAIL FROM:<c@example.org> XVERP", "RCPT TO:<postmaster@localhost>", *MESSAGE]
    replies = {}

    def play(raw, mail_name: str) -> None:
        replies[mail_name] = [raw.reply()] + [raw.cmd(c) for c in [*dialogue, "QUIT"]]

    theirs, ours = _queued_on_both(start_smtpd, VERP_CF, play, 3, "-e")
    assert _without_queue_ids(replies["oxipost"]) == _without_queue_ids(replies["Postfix"])
    assert "250-XVERP" in replies["Postfix"][1], replies["Postfix"][1]
    their_views = [_envelope_view(q) for q in theirs]
    assert [_envelope_view(q) for q in ours] == their_views
    delims = [[ln for ln in view if ln.startswith("verp_delimiters:")] for view in their_views]
    assert delims == [["verp_delimiters: -="], ["verp_delimiters: +-"], ["verp_delimiters: +="]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [MAIN_CF, VERP_CF + "smtpd_discard_ehlo_keywords = verp\n"],
    ids=["denied", "discarded"],
)
def test_xverp_for_other_clients_as_postfix(start_smtpd, main_cf: str) -> None:
    """A client not in smtpd_authorized_verp_clients (by default nobody) is not told of
    XVERP and its XVERP is an unknown option; smtpd_discard_ehlo_keywords' "verp" leaves
    XVERP out of EHLO (and logs so) but an authorized client may still use it."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org> XVERP", "RSET"]
    dialogue += ["MAIL FROM:<a@example.org> XVERP=ab", "QUIT"]
    both = Played(start_smtpd, dialogue, main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert "XVERP" not in both.their_replies[1]
    wanted = "discarding EHLO keywords"
    their_lines = [ln[ln.index(wanted) :] for ln in both.theirs if wanted in ln]
    assert [ln[ln.index(wanted) :] for ln in both.ours if wanted in ln] == their_lines
