"""Domain lists that name /file/name items (mydestination = /etc/postfix/local_domains, ...)
resolved beside real Postfix 3.7's trivial-rewrite, asked over its private/rewrite socket
with the same main.cf and files: a file's lines split as the list itself, '#' lines left
out, a file naming another file or a type:table, !/file negating each of its patterns (a
!pattern in it then matching), and a file that does not open failing every lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.maps import TableError
from oxipost.rewrite.resolve import resolve

from tests.conftest import shared_dir
from tests.rewrite.test_sender_dependent import _ask
from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import running_postfix

FILES = {
    # A comment line, a continuation line, two patterns on a line, a nested file.
    "local_domains": "# our names\nlocalhost, mx.example.test\n  local.example\n{dir}/more_local\n",
    "more_local": "nested.example other.example\n",
    # !/file: not these (and under it, !sub.valias.example is one).
    "not_valias": "skip.valias.example\n!sub.valias.example\n",
    "valias": "!{dir}/not_valias\n.valias.example\nvalias.example\n",
    "vmailbox": "inline:{ vbox.example=1 }\n",
    "relay": "relay.example\n",
}

MAIN_CF = """\
mydestination = {dir}/local_domains, also.example
virtual_alias_domains = {dir}/valias
virtual_mailbox_domains = {dir}/vmailbox
relay_domains = !{dir}/nowhere.example, {dir}/relay
"""

DOMAINS = [
    "localhost",
    "mx.example.test",
    "local.example",
    "nested.example",
    "other.example",
    "also.example",
    "valias.example",
    "a.valias.example",
    "skip.valias.example",
    "sub.valias.example",
    "vbox.example",
    "relay.example",
    "sub.relay.example",
    "remote.example",
]


@pytest.mark.postfix
@pytest.mark.slow
def test_domain_list_files_resolve_as_postfix(tmp_path: Path) -> None:
    with shared_dir("oxipost-lists-") as files:
        for name, text in FILES.items():
            (files / name).write_text(text.replace("{dir}", str(files)))
        main_cf = MAIN_CF.replace("{dir}", str(files))
        # The missing file (a relay_domains pattern Postfix's resolve never reaches for a
        # local, virtual or alias domain) makes every relay decision fail, so it is
        # compared apart.
        usable = main_cf.replace(f"!{files}/nowhere.example, ", "")
        with running_postfix(usable) as (_port, d):
            theirs = [_ask(d / "spool" / "private" / "rewrite", "", f"u@{x}") for x in DOMAINS]
        cfg = load_config(write_config(str(tmp_path), usable))
        ours = [(r.transport, r.nexthop) for r in (resolve(f"u@{x}", cfg) for x in DOMAINS)]
        assert list(zip(DOMAINS, ours, strict=True)) == list(zip(DOMAINS, theirs, strict=True))
        # What the comparison rests on, as Postfix answered.
        answers = dict(zip(DOMAINS, theirs, strict=True))
        assert answers["nested.example"][0] == "local"
        assert answers["local.example"][0] == "local"
        assert answers["sub.valias.example"][0] == "error"
        assert answers["skip.valias.example"][0] == "smtp"
        assert answers["vbox.example"][0] == "virtual"
        assert answers["relay.example"][0] == "relay"

        (tmp_path / "missing").mkdir()
        cfg = load_config(write_config(str(tmp_path / "missing"), main_cf))
        with pytest.raises(TableError):
            resolve("u@relay.example", cfg)
        assert resolve("u@nested.example", cfg).transport == "local"


def test_file_is_read_once_per_configuration(tmp_path: Path) -> None:
    """The file is read as the configuration is first asked (Postfix: as its process
    starts), not at each lookup: a change shows in a configuration loaded after it."""
    domains = tmp_path / "domains"
    domains.write_text("first.example\n")
    main_cf = f"mydestination = {domains}\n"
    cfg = load_config(write_config(str(tmp_path), main_cf))
    assert resolve("u@first.example", cfg).transport == "local"
    domains.write_text("second.example\n")
    assert resolve("u@second.example", cfg).transport != "local"
    cfg = load_config(write_config(str(tmp_path), main_cf))
    assert resolve("u@second.example", cfg).transport == "local"
