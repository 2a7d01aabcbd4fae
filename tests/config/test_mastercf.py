"""master.cf parsing: "{ }" groups, continuation lines, -o overrides, brace errors.

The expected values are what Postfix 3.7 showed for the same lines (postconf -M and -P; the
fatal texts are those its master logged); test_postconf_differential.py asks Postfix itself.
"""

from __future__ import annotations

import pytest
from oxipost.config import ConfigError, load_config, mastercf


def parse(text: str, warn: list[str] | None = None) -> list[mastercf.Service]:
    return mastercf.parse_text(text, "/etc/postfix/master.cf", [] if warn is None else warn)


def test_group_is_one_argument_without_braces():
    (svc,) = parse("foo unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hello > /tmp/x }")
    assert svc.args == ["user=nobody", "argv=/bin/sh", "-c", "echo hello > /tmp/x"]


def test_long_form_override_loses_white_space_around_equals_only():
    (svc,) = parse(
        "submission inet n - y - - smtpd"
        " -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n"
        "  -o {   syslog_name   =   postfix/sub   mission   }\n"
        "  -o smtpd_tls_security_level=encrypt -o {x=}\n"
    )
    assert svc.args == [
        "-o",
        "smtpd_client_restrictions=permit_sasl_authenticated, reject",
        "-o",
        "syslog_name=postfix/sub   mission",
        "-o",
        "smtpd_tls_security_level=encrypt",
        "-o",
        "x=",
    ]
    assert svc.overrides == {
        "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
        "syslog_name": "postfix/sub   mission",
        "smtpd_tls_security_level": "encrypt",
        "x": "",
    }


def test_pipe_macros_need_no_group():
    line = (
        "mailman unix - n n - - pipe flags=FRX user=list"
        " argv=/usr/lib/mailman/bin/postfix-to-mailman.py ${nexthop} ${user}"
    )
    (svc,) = parse(line)
    assert svc.args[-3:] == [
        "argv=/usr/lib/mailman/bin/postfix-to-mailman.py",
        "${nexthop}",
        "${user}",
    ]


def test_continuation_lines_join_with_their_own_white_space():
    # Postfix drops the newline and keeps each line's white space, skipping blank and
    # comment lines inside the entry.
    text = "foo unix - n n - - pipe argv=/bin/sh -c { echo hi \t\n \t x \n\n y\n#c\n  # d\n w }\n"
    (svc,) = parse(text)
    assert svc.args[-1] == "echo hi \t \t x  y w"
    assert svc.lineno == 1


def test_nested_and_inner_braces():
    (svc,) = parse("baz unix - n n - - pipe a{b c}d {a{b}c} {{a}} {} { } } x")
    assert svc.args == ["a{b c}d", "a{b}c", "{a}", "", "", "}", "x"]


def test_options_are_normalized_as_postconf_does():
    (svc,) = parse("c1 unix - - - - - x -vo i=j -ok=l -o{d = e} -o a = b")
    assert svc.args == ["-v", "-o", "i=j", "-o", "k=l", "-o", "d=e", "-o", "a", "=", "b"]
    # "-o a" is not name=value, and "=" ends the options as any non-option word does.
    assert svc.overrides == {"i": "j", "k": "l", "d": "e"}


def test_overrides_only_among_the_leading_options():
    (svc,) = parse("c2 unix - - - - - x y -o m=n")
    assert svc.overrides == {}
    (c3,) = parse("c3 unix - - - - - x -- -o p=q\n")
    assert c3.overrides == {}
    # A group can make the "-o" itself, as in Postfix: `{ -o } t=u` sets t.
    (c5,) = parse("c5 unix - - - - - x -v { -o } t=u")
    assert c5.overrides == {"t": "u"}


@pytest.mark.parametrize(
    ("line", "args", "warning"),
    [
        (
            "foo unix - n n - - pipe argv=/bin/sh -c { echo hi",
            ["argv=/bin/sh", "-c", "echo hi"],
            "master.cf: missing '}' in \"{ echo hi\"",
        ),
        (
            "foo unix - n n - - pipe argv=/bin/sh -c { echo hi }x",
            ["argv=/bin/sh", "-c", "echo hi"],
            "master.cf: syntax error after '}' in \"{ echo hi }x\"",
        ),
        (
            "foo unix - n n - - smtpd -o { a b }",
            ["-o", "a b"],
            "master.cf: missing '=' after attribute name: \"a b\"",
        ),
        (
            "foo unix - n n - - smtpd -o { = b }",
            ["-o", "= b"],
            'master.cf: missing attribute name: "= b"',
        ),
    ],
)
def test_postconf_warns_and_keeps_the_entry(line, args, warning):
    warn: list[str] = []
    (svc,) = parse(line, warn)
    assert svc.args == args
    assert warn == [warning]
    assert svc.overrides == {}


@pytest.mark.parametrize(
    ("text", "fatal"),
    [
        (
            "# c\n\nfoo unix - n n - - pipe user=nobody\n  argv=/bin/sh -c { echo hi\n  x\n",
            "/etc/postfix/master.cf: line 3: missing '}' in \"{ echo hi  x\"",
        ),
        (
            "foo unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hi }x\n",
            "/etc/postfix/master.cf: line 1: syntax error after '}' in \"{ echo hi }x\"",
        ),
    ],
)
def test_master_dies_of_a_brace_error(text, fatal):
    with pytest.raises(mastercf.MasterCfError, match=f"^{fatal}$"):
        mastercf.parse_text(text, "/etc/postfix/master.cf")


def test_master_reading_is_strict_postconf_reading_is_not(tmp_path):
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("foo unix - n n - - pipe argv=/bin/sh -c { echo hi\n")
    cfg = load_config(str(tmp_path))
    assert "master.cf: missing '}' in \"{ echo hi\"" in cfg.warnings()
    with pytest.raises(ConfigError, match=r"master\.cf: line 1: missing '}'"):
        load_config(str(tmp_path), as_master=True)


def test_split_nameval():
    assert mastercf.split_nameval("  a  =  b  c  ") == ("a", "b  c")
    assert mastercf.split_nameval("a=b=c") == ("a", "b=c")
    with pytest.raises(ValueError, match="missing attribute name"):
        mastercf.split_nameval("  = b")
    with pytest.raises(ValueError, match="missing '=' after attribute name"):
        mastercf.split_nameval("f g = h")
