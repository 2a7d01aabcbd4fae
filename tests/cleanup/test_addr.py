"""cleanup's address processing: canonical(5), masquerading, virtual(5) alias expansion,
append_at_myorigin/append_dot_mydomain, with the semantics of Postfix's cleanup(8)."""

from __future__ import annotations

from tests.cleanup.conftest import Run, envelope, header

CANONICAL = """\
    joe@example.test Joe.Bloggs@example.test
    @old.example @new.example
"""

FROM_TO = (
    b"From: Joe <joe@example.test>\r\nTo: x@old.example, Other <y@old.example>\r\n"
    b"Cc: nobody@elsewhere.example\r\nSubject: hi\r\n\r\nbody\r\n"
)


def rcpts(result) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r.address, r.original) for r in result.envelope.recipients]


def test_canonical_maps_envelope_and_headers_of_a_local_client(run: Run) -> None:
    env = envelope("joe@example.test", "x@old.example", client="127.0.0.1")
    res = run("canonical_maps = texthash:{dir}/canonical\n", {"canonical": CANONICAL}, env, FROM_TO)
    assert res.reply is None
    assert res.envelope.sender == "Joe.Bloggs@example.test"
    assert rcpts(res) == [("x@new.example", "x@old.example")]
    assert header(res.content, "From") == ["From: Joe <Joe.Bloggs@example.test>"]
    assert header(res.content, "To") == ["To: x@new.example, Other <y@new.example>"]
    assert header(res.content, "Cc") == ["Cc: nobody@elsewhere.example"]


def test_headers_of_a_remote_client_are_left_alone_by_default(run: Run) -> None:
    # local_header_rewrite_clients = permit_inet_interfaces; remote_header_rewrite_domain empty.
    env = envelope("joe@example.test", "x@old.example")
    res = run("canonical_maps = texthash:{dir}/canonical\n", {"canonical": CANONICAL}, env, FROM_TO)
    assert res.envelope.sender == "Joe.Bloggs@example.test"
    assert header(res.content, "From") == ["From: Joe <joe@example.test>"]


def test_remote_header_rewrite_domain(run: Run) -> None:
    env = envelope("joe@example.test", "x@old.example")
    content = b"From: joe@example.test\r\nTo: bare, x@old.example\r\n\r\nbody\r\n"
    res = run(
        "canonical_maps = texthash:{dir}/canonical\n"
        "remote_header_rewrite_domain = domain.invalid\n",
        {"canonical": CANONICAL},
        env,
        content,
    )
    assert header(res.content, "From") == ["From: Joe.Bloggs@example.test"]
    assert header(res.content, "To") == ["To: bare@domain.invalid, x@new.example"]


def test_sender_and_recipient_canonical_with_classes(run: Run) -> None:
    env = envelope("joe@example.test", "x@old.example", client="127.0.0.1")
    res = run(
        """\
        sender_canonical_maps = texthash:{dir}/canonical
        sender_canonical_classes = envelope_sender
        recipient_canonical_maps = inline:{ x@old.example=renamed@example.test }
        recipient_canonical_classes = header_recipient
        """,
        {"canonical": CANONICAL},
        env,
        FROM_TO,
    )
    assert res.envelope.sender == "Joe.Bloggs@example.test"
    assert header(res.content, "From") == ["From: Joe <joe@example.test>"]
    assert rcpts(res) == [("x@old.example", "x@old.example")]
    assert header(res.content, "To") == ["To: renamed@example.test, Other <y@old.example>"]


def test_masquerade_domains_exceptions_and_classes(run: Run) -> None:
    main_cf = """\
        masquerade_domains = !sub.example.test, example.test
        masquerade_exceptions = root
        """
    content = (
        b"From: user@host.a.example.test\r\nSender: root@host.example.test\r\n"
        b"To: u@x.sub.example.test, v@sub.example.test, w@mail.example.test\r\n\r\nbody\r\n"
    )
    env = envelope("user@host.a.example.test", "rcpt@mail.example.test", client="127.0.0.1")
    res = run(main_cf, None, env, content)
    assert res.envelope.sender == "user@example.test"
    # envelope_recipient is not in the default masquerade_classes.
    assert rcpts(res) == [("rcpt@mail.example.test", "rcpt@mail.example.test")]
    assert header(res.content, "From") == ["From: user@example.test"]
    assert header(res.content, "Sender") == ["Sender: root@host.example.test"]
    assert header(res.content, "To") == [
        "To: u@x.sub.example.test, v@sub.example.test, w@example.test"
    ]
    res = run(
        main_cf + "masquerade_classes = envelope_recipient\n",
        None,
        envelope("user@host.a.example.test", "rcpt@mail.example.test"),
    )
    assert res.envelope.sender == "user@host.a.example.test"
    assert rcpts(res) == [("rcpt@example.test", "rcpt@mail.example.test")]


VIRTUAL = """\
    a@example.test b@example.test
    b@example.test c@example.test, d@other.example
    @catch.example catchall@example.test
    @alias.example @example.test
    self@example.test self@example.test, copy@other.example
    loop1@example.test loop2@example.test
    loop2@example.test loop1@example.test
    localonly bob@other.example
    short carol
"""


def virtual(run: Run, *rcpt: str, extra: str = ""):  # type: ignore[no-untyped-def]
    return run(
        "virtual_alias_maps = texthash:{dir}/virtual\n" + extra,
        {"virtual": VIRTUAL},
        envelope("s@example.test", *rcpt),
    )


def test_virtual_alias_recursive_expansion_keeps_the_original_recipient(run: Run) -> None:
    res = virtual(run, "a@example.test")
    assert rcpts(res) == [
        ("c@example.test", "a@example.test"),
        ("d@other.example", "a@example.test"),
    ]


def test_virtual_alias_catch_all_and_domain_rewrite(run: Run) -> None:
    res = virtual(run, "anyone@catch.example", "jim+x@alias.example")
    assert rcpts(res) == [
        ("catchall@example.test", "anyone@catch.example"),
        # @domain -> @domain keeps the whole local part, extension included.
        ("jim+x@example.test", "jim+x@alias.example"),
    ]


def test_virtual_alias_to_itself_is_kept(run: Run) -> None:
    res = virtual(run, "self@example.test")
    assert rcpts(res) == [
        ("self@example.test", "self@example.test"),
        ("copy@other.example", "self@example.test"),
    ]


def test_virtual_alias_extension_propagates(run: Run) -> None:
    res = virtual(run, "a+tag@example.test")
    assert rcpts(res) == [
        ("c+tag@example.test", "a+tag@example.test"),
        ("d+tag@other.example", "a+tag@example.test"),
    ]
    res = virtual(run, "a+tag@example.test", extra="propagate_unmatched_extensions = canonical\n")
    assert rcpts(res) == [
        ("c@example.test", "a+tag@example.test"),
        ("d@other.example", "a+tag@example.test"),
    ]


def test_bare_user_keys_only_for_local_domains_and_results_qualified(run: Run) -> None:
    res = virtual(run, "localonly@example.test", "localonly@remote.example", "short@example.test")
    assert rcpts(res) == [
        ("bob@other.example", "localonly@example.test"),
        ("localonly@remote.example", "localonly@remote.example"),
        # A result without a domain gets @$myorigin, as trivial-rewrite's local context.
        ("carol@example.test", "short@example.test"),
    ]


# Rules that would match only a key derived from the address: Postfix gives a regexp
# table the whole address only (virtual(5), canonical(5): "REGULAR EXPRESSION TABLES").
PARTIAL_RULES = """\
    /^catch\\.example$/ domain@wrong.example
    /^@catch\\.example$/ at-domain@wrong.example
    /^tag@example\\.test$/ unextended@wrong.example
    /^who$/ localpart@wrong.example
    /^full@catch\\.example$/ full@right.example
"""


def test_virtual_alias_regexp_table_sees_the_full_address_only(run: Run) -> None:
    res = run(
        "virtual_alias_maps = regexp:{dir}/virtual.re, texthash:{dir}/virtual\n",
        {"virtual.re": PARTIAL_RULES, "virtual": VIRTUAL},
        envelope("s@ex.test", "anyone@catch.example", "tag+x@example.test", "who@example.test"),
    )
    assert rcpts(res) == [
        # The fixed table still answers @domain after the regexp table missed.
        ("catchall@example.test", "anyone@catch.example"),
        ("tag+x@example.test", "tag+x@example.test"),
        ("who@example.test", "who@example.test"),
    ]
    res = run(
        "virtual_alias_maps = regexp:{dir}/virtual.re\n",
        {"virtual.re": PARTIAL_RULES},
        envelope("s@example.test", "full@catch.example", "anyone@catch.example"),
    )
    assert rcpts(res) == [
        ("full@right.example", "full@catch.example"),
        ("anyone@catch.example", "anyone@catch.example"),
    ]


def test_canonical_regexp_table_sees_the_full_address_only(run: Run) -> None:
    env = envelope("who@example.test", "anyone@catch.example", "full@catch.example")
    res = run(
        "canonical_maps = pcre:{dir}/canonical.re\n",
        {"canonical.re": PARTIAL_RULES},
        env,
        b"Subject: canonical\r\n\r\nbody\r\n",
    )
    assert res.envelope.sender == "who@example.test"
    assert rcpts(res) == [
        ("anyone@catch.example", "anyone@catch.example"),
        ("full@right.example", "full@catch.example"),
    ]


def test_duplicates_of_one_original_are_dropped(run: Run) -> None:
    res = virtual(run, "a@example.test", "a@example.test", "b@example.test")
    assert rcpts(res) == [
        ("c@example.test", "a@example.test"),
        ("d@other.example", "a@example.test"),
        ("c@example.test", "b@example.test"),
        ("d@other.example", "b@example.test"),
    ]


def test_virtual_alias_recursion_limit(run: Run) -> None:
    res = virtual(run, "loop1@example.test")
    assert res.reply == "451 4.6.0 Alias expansion error"
    assert res.notes == [
        (
            "warning",
            "unreasonable virtual_alias_maps map nesting for loop1@example.test -- "
            "message not accepted, try again later",
        )
    ]
    res = virtual(run, "a@example.test", extra="virtual_alias_recursion_limit = 1\n")
    assert res.reply == "451 4.6.0 Alias expansion error"


def test_virtual_alias_expansion_limit(run: Run) -> None:
    res = virtual(run, "a@example.test", extra="virtual_alias_expansion_limit = 1\n")
    assert res.reply == "451 4.6.0 Alias expansion error"
    assert res.notes == [
        (
            "warning",
            "unreasonable virtual_alias_maps map expansion size for a@example.test -- "
            "message not accepted, try again later",
        )
    ]
    assert rcpts(virtual(run, "a@example.test", extra="virtual_alias_expansion_limit = 2\n"))


def test_unreadable_table_tempfails(run: Run) -> None:
    res = run(
        "virtual_alias_maps = hash:{dir}/missing\n", None, envelope("s@example.test", "r@x.example")
    )
    assert res.reply == "451 4.3.0 Error: queue file write error"
    assert res.notes[0][0] == "warning"
    assert res.notes[0][1].startswith("virtual_alias_maps map lookup problem for r@x.example")
    res = run("canonical_maps = hash:{dir}/missing\n", None, envelope("s@example.test", "r@x.ex"))
    assert res.reply == "451 4.3.0 Error: queue file write error"


def test_append_at_myorigin_and_dot_mydomain(run: Run) -> None:
    env = envelope("joe@host", "bob", client="127.0.0.1")
    content = b"From: joe@host\r\nTo: bob\r\n\r\nbody\r\n"
    res = run("append_dot_mydomain = yes\n", None, env, content)
    assert res.envelope.sender == "joe@host.example.test"
    assert rcpts(res) == [("bob@example.test", "bob")]
    assert header(res.content, "From") == ["From: joe@host.example.test"]
    assert header(res.content, "To") == ["To: bob@example.test"]
    res = run("append_at_myorigin = no\n", None, envelope("joe@host", "bob"))
    assert res.envelope.sender == "joe@host"
    assert rcpts(res) == [("bob", "bob")]


def test_no_address_mappings(run: Run) -> None:
    res = run(
        "virtual_alias_maps = texthash:{dir}/virtual\n"
        "receive_override_options = no_address_mappings\n",
        {"virtual": VIRTUAL},
        envelope("s@example.test", "a@example.test"),
    )
    assert rcpts(res) == [("a@example.test", "a@example.test")]


def test_canonical_result_is_looked_up_again_until_it_stays(run: Run) -> None:
    # cleanup_map11_external: a -> b -> c, then c maps to nothing; c -> C is c again.
    chain = "a@example.test b@example.test\nb@example.test c@example.test\n"
    chain += "c@example.test C@example.test\n"
    env = envelope("a@example.test", "x@example.test", client="127.0.0.1")
    res = run("canonical_maps = texthash:{dir}/canonical\n", {"canonical": chain}, env, FROM_TO)
    assert res.reply is None
    assert res.envelope.sender == "C@example.test"
    loop = "a@example.test b@example.test\nb@example.test a@example.test\n"
    res = run("canonical_maps = texthash:{dir}/canonical\n", {"canonical": loop}, env, FROM_TO)
    # Accepted in spite of its words, as real Postfix 3.7.11 does.
    assert res.reply is None
    assert res.envelope.sender == "a@example.test"
    assert [note for note in res.notes if note[0] == "warning"] == [
        (
            "warning",
            "unreasonable canonical_maps map nesting for a@example.test -- "
            "message not accepted, try again later",
        )
    ]
