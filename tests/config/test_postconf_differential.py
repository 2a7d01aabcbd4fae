"""postconf against real Postfix 3.7 (Debian's package): the same question, the same answer.

Every registry default that does not depend on the host must print exactly as Postfix's
`postconf -d` prints it; the only exceptions are registry.DEVIATIONS (each with its reason).
-n, -e, -X, -#, -M, -Mf and -P must leave and print the same on the same files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oxipost.config import registry

from tests.conftest import POSTFIX_POSTCONF, postconf_as_postfix, run_ours, run_postfix

pytestmark = pytest.mark.postfix

COMPARABLE = sorted(
    set(registry.parameters())
    - set(registry.DEVIATIONS)
    - set(registry.EXTRA)
    - registry.HOST_DEPENDENT
)


def parse_listing(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" =")
        out[name] = value.strip()
    return out


def both(confdir: Path, *args: str) -> tuple[str, str, str, str]:
    ours = run_ours("postconf", "-c", str(confdir), *args)
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), *args)
    return ours.stdout, real.stdout, ours.stderr, real.stderr


def test_every_default_matches_postfix(confdir):
    ours, real, _, _ = both(confdir, "-d")
    ours_d, real_d = parse_listing(ours), parse_listing(real)
    mismatched = {
        n: (ours_d.get(n), real_d.get(n)) for n in COMPARABLE if ours_d.get(n) != real_d.get(n)
    }
    assert not mismatched
    # Postfix knows nothing we lack (beyond per-host values we compute).
    assert set(real_d) - set(ours_d) == set()


@pytest.mark.parametrize(
    "name",
    [
        "append_dot_mydomain",
        "smtpd_relay_restrictions",
        "relay_domains",
        "alias_maps",
        "maximal_queue_lifetime",
        "smtpd_banner",
        "mynetworks_style",
        "proxy_read_maps",
    ],
)
def test_single_default_matches_postfix(confdir, name):
    ours, real, ours_err, real_err = both(confdir, "-d", name)
    assert (ours, ours_err) == (real, real_err)


def test_deviations_are_real_deviations(confdir):
    # A deviation that Postfix agrees with would be a stale entry in the list.
    ours, real, _, _ = both(confdir, "-d", *registry.DEVIATIONS)
    ours_d, real_d = parse_listing(ours), parse_listing(real)
    for name in registry.DEVIATIONS:
        assert ours_d[name] == registry.DEVIATIONS[name][0]
        assert ours_d[name] != real_d.get(name)


def test_host_dependent_defaults_match_on_this_host(confdir):
    ours, real, _, _ = both(confdir, "-d", "myhostname", "mydomain", "mynetworks")
    assert ours == real


MAIN_CF = """\
# a comment
myhostname = mx.example.org
mydestination = $myhostname, localhost.$mydomain
  , localhost
compatibility_level = 3.6
a = hello
b =
t1 = $undefined_thing end
t2 = ${a?yes} ${b?yes} ${a:no} ${b:no}
t3 = ${a?{X $a}:{Y}} ${b?{X}:{Y $a}}
t4 = $$a $(a) ${a}
t5 = ${{$a} == {hello} ? {eq} : {ne}}
t6 = ${{10} < {9} ? {lt} : {ge}} ${{abc} < {abd} ? {lt} : {ge}}
t7 = ${{$compatibility_level} <level {3.6} ? {old} : {new}}
t8 = $a.foo $a_x ${a}_x
smtpd_banner = $t1 $t2 $t3 $t4 $t5 $t6 $t7 $t8
unused_thing = 1
"""


@pytest.mark.parametrize(
    "args",
    [
        ("-n",),
        ("-nh",),
        ("-x", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "mydestination"),
        ("smtpd_banner", "mydomain", "myhostname", "relay_domains", "no_such_parameter"),
        ("-x", "smtpd_banner", "append_dot_mydomain", "smtpd_relay_restrictions"),
    ],
)
def test_show_matches_postfix(confdir, args):
    (confdir / "main.cf").write_text(MAIN_CF)
    ours, real, ours_err, real_err = both(confdir, *args)
    assert ours == real
    # Postfix may repeat a warning; the set of warnings is what must agree.
    assert set(ours_err.splitlines()) == set(real_err.splitlines())


def test_full_listing_matches_postfix(confdir):
    (confdir / "main.cf").write_text(MAIN_CF)
    ours, real, _, _ = both(confdir)
    ours_d, real_d = parse_listing(ours), parse_listing(real)
    assert {n: ours_d.get(n) for n in COMPARABLE} == {n: real_d.get(n) for n in COMPARABLE}


@pytest.mark.parametrize(
    "args",
    [("-M",), ("-Mf",), ("-P",), ("-M", "smtp/inet", "relay"), ("-M", "nosuch/unix")],
)
def test_master_listing_matches_postfix(confdir, debian_master_cf, args):
    (confdir / "master.cf").write_text(
        debian_master_cf + "submission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
    )
    ours, real, ours_err, real_err = both(confdir, *args)
    assert ours == real
    assert set(ours_err.splitlines()) == set(real_err.splitlines())


def test_per_transport_parameters_follow_master_cf(confdir, debian_master_cf):
    (confdir / "master.cf").write_text(debian_master_cf)
    names = [
        "relay_destination_concurrency_limit",
        "maildrop_time_limit",
        "uucp_destination_recipient_limit",
        "retry_initial_destination_concurrency",
    ]
    ours, real, ours_err, real_err = both(confdir, "-d", *names)
    assert (ours, ours_err) == (real, real_err)


EDITS = [
    ("-e", "myhostname=new.example.org", "relayhost=[smtp.example.org]:587"),
    ("-e", "mydestination=a, b,   c"),
    ("-e", "zz_new=1", "myhostname=x.example"),
    ("-X", "a", "unused_thing"),
    ("-#", "myhostname", "mydestination"),
]


@pytest.mark.parametrize("args", EDITS)
def test_edit_leaves_the_same_file_as_postfix(tmp_path, args):
    files = {}
    for who in ("ours", "real"):
        d = tmp_path / who
        d.mkdir()
        (d / "main.cf").write_text(MAIN_CF)
        (d / "master.cf").write_text("")
        runner = run_ours if who == "ours" else None
        if runner:
            proc = run_ours("postconf", "-c", str(d), *args)
        else:
            proc = run_postfix(POSTFIX_POSTCONF, "-c", str(d), *args)
        assert proc.returncode == 0, proc.stderr
        files[who] = (d / "main.cf").read_text()
    assert files["ours"] == files["real"]


@pytest.mark.parametrize(
    "main_cf",
    ["a=1\nfoo bar\n", "= 1\n", "x y = 1\n", "  leading = 1\n"],
    ids=["missing-equals", "missing-name", "space-in-name", "leading-whitespace"],
)
def test_bad_main_cf_gets_postfix_message(confdir, main_cf):
    (confdir / "main.cf").write_text(main_cf)
    ours = run_ours("postconf", "-c", str(confdir), "-n")
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-n")
    assert ours.returncode == real.returncode
    assert set(ours.stderr.splitlines()) == set(real.stderr.splitlines())
    assert "Traceback" not in ours.stderr


def test_bad_edit_argument_gets_postfix_message(confdir):
    ours = run_ours("postconf", "-c", str(confdir), "-e", "bad")
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-e", "bad")
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)
    assert (confdir / "main.cf").read_text() == ""


def test_missing_config_dir_gets_postfix_message(tmp_path):
    missing = str(tmp_path / "nowhere")
    ours = run_ours("postconf", "-c", missing, "-n")
    real = run_postfix(POSTFIX_POSTCONF, "-c", missing, "-n")
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)


def test_bad_master_cf_gets_postfix_message(confdir):
    (confdir / "master.cf").write_text("bad line\n")
    ours = run_ours("postconf", "-c", str(confdir), "-M")
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-M")
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)


@pytest.mark.parametrize(
    ("main_cf", "master_cf", "args"),
    [
        ("bi\u00e9ff n\n".encode(), b"", ["-n"]),
        (" bi\u00e9ff = n\n".encode(), b"", ["-n"]),
        (b"biff\xff n\n", b"", ["-n"]),
        (b"", "sm\u00e9tp inet n - n 1\u00e9 - smtpd\n".encode(), ["-M"]),
        (b"", b"", ["b\u00efff"]),
        (b"", b"smtp inet n - n - - smtpd\n", ["-M", "sm\u2603tp"]),
        (b"", b"smtp inet n - n - - smtpd\n", ["-F", "sm\u00e9"]),
        (b"", b"", ["-e", "x\u00e9"]),
    ],
    ids=["main-cf", "main-cf-warning", "not-utf8", "master-cf", "name", "-M", "-F", "-e"],
)
def test_non_ascii_in_a_message_shows_as_postfix_shows_it(confdir, main_cf, master_cf, args):
    # postconf leaves UTF-8 off: each byte outside printable ASCII is "?" ("é" is "??").
    (confdir / "main.cf").write_bytes(main_cf)
    (confdir / "master.cf").write_bytes(master_cf)
    ours = run_ours("postconf", "-c", str(confdir), *args)
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), *args)
    assert ours.returncode == real.returncode
    # Postfix reads main.cf more than once and repeats its warnings.
    assert set(ours.stderr.splitlines()) == set(real.stderr.splitlines())
    assert "?" in ours.stderr and ours.stderr.isascii()


names = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
values = st.from_regex(r"[a-zA-Z0-9.,:/@\[\] -]{0,30}", fullmatch=True).map(str.strip)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(names, values, min_size=1, max_size=6))
def test_generated_main_cf_lists_as_postfix_lists_it(confdir, defs):
    # Every generated name is referenced from smtpd_banner, so both treat them as used.
    text = "".join(f"{n} = {v}\n" for n, v in defs.items())
    text += "smtpd_banner = " + " ".join(f"${n}" for n in defs) + "\n"
    (confdir / "main.cf").write_text(text)
    ours, real, _, _ = both(confdir, "-n")
    assert ours == real


# Postfix 3.0's "{ }" groups in master.cf, with what postconf warns about: a "{" without its
# "}", text after a "}", and a long-form -o that is not name = value.
BRACED_MASTER_CF = """\
mailman unix - n n - - pipe flags=FRX user=list
  argv=/usr/lib/mailman/bin/postfix-to-mailman.py ${nexthop} ${user}
submission inet n - y - - smtpd -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -o {   syslog_name   =   postfix/sub   mission   }
  -o { a=b } -o {x=} -o{d = e} -vo{f = g} -o {  smtpd_banner = x   y  }
foo unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hello > /tmp/x }
bar unix - n n - - pipe user=nobody argv=/bin/sh -c {echo   hello}x { } {} {  a  }
baz unix - n n - - pipe user=nobody argv=/bin/sh -c a{b}c {a{b}c} {{a}} } x
joined unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hi \t
 \t x\x20

 y
#c
  # d
 w }
first unix - - - - - x { a   b } { c d }
opts unix - - - - - x -v { -o } t=u { -v x } -o { c d } -o { = e } -o
unbalanced unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hi
"""


@pytest.mark.parametrize(
    "args",
    [
        ("-M",),
        ("-Mf",),
        ("-P",),
        ("-F",),
        ("-Ff",),
        ("-Fh", "foo"),
        ("-F", "submission/inet/command", "*/unix/type", "bar/*", "nosuch"),
        ("-M", "*/unix", "first", "x/y"),
        ("-F", "foo/unix/bogus"),
        ("-M", "a/b/c"),
    ],
)
def test_braced_master_cf_shows_as_postfix_shows_it(confdir, args):
    (confdir / "master.cf").write_text(BRACED_MASTER_CF)
    ours = run_ours("postconf", "-c", str(confdir), *args)
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), *args)
    assert (ours.returncode, ours.stdout) == (real.returncode, real.stdout)
    assert set(ours.stderr.splitlines()) == set(real.stderr.splitlines())


words = st.one_of(
    st.sampled_from(["-o", "-v", "{}", "{ a", "}", "{ -o } x=y", "--"]),
    st.from_regex(r"-?[abxy=]{1,30}", fullmatch=True),
    st.from_regex(r"\{ ?[abxy=]{1,20} [abxy=]{1,20} ?\}", fullmatch=True),
    st.from_regex(r"-o ?\{ ?smtpd_banner ?= ?[abxy=]{1,30} +x ?\}", fullmatch=True),
)
entries = st.tuples(
    st.sampled_from([" ", "\n  ", "\n\t", " \n  "]), st.lists(words, max_size=9)
).map(lambda e: e[0] + " ".join(e[1]))


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(entries, min_size=1, max_size=6))
def test_generated_master_cf_shows_as_postfix_shows_it(confdir, commands):
    text = "".join(f"s{n} unix - n n - - pipe{c}\n" for n, c in enumerate(commands))
    (confdir / "master.cf").write_text(text)
    for args in (("-M",), ("-Mf",), ("-P",), ("-Ff",)):
        ours = run_ours("postconf", "-c", str(confdir), *args)
        real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), *args)
        assert ours.stdout == real.stdout, text
        assert set(ours.stderr.splitlines()) == set(real.stderr.splitlines()), text


@pytest.mark.parametrize(
    "args",
    [
        ("-P", "nosuch/unix/x"),
        ("-P", "pickup"),
        ("-P", "submission"),
        ("-P", "submission/inet/syslog_name", "*/*/nosuch"),
        ("-P", "submission/inet/syslog_name", "submission/inet/syslog_name"),
        ("-P", "submission//syslog_name"),
        ("-P", "submission/inet/"),
        ("-P", "*/*/smtpd_tls_security_level", "submission/inet/*"),
        ("-Ph", "submission/inet/syslog_name"),
        ("-P", "a/b/c/d"),
        ("-P", "/submission"),
        ("-P", "sub*"),
        ("-M", "smtp/"),
        ("-M", "sm*"),
        ("-F", "smtp//command"),
    ],
)
def test_service_selectors_match_postfix(confdir, debian_master_cf, args):
    # A selector that matches no -o parameter is warned of ("unmatched request"); its empty
    # parts are skipped, a "*" stands alone, a leading "/" or a fourth part is fatal.
    (confdir / "master.cf").write_text(
        debian_master_cf + "submission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
    )
    postconf_as_postfix(confdir, *args)


@pytest.mark.parametrize(
    "main_cf",
    [
        "relayhost = $\u00e9{x}\n",
        "relayhost = a$\u00e9{x}b\n",
        "relayhost = $\u00e9(x)\n",
        "smtpd_banner = a$\n",
        "relayhost = $-{x}\n",
        "mydomain = $\u00e9{x}\n",
        "foo = $\u00e9{x}\n",
        "foo = $-x\nbar = $foo\n",
        "relayhost = $$-x $$$$\n",
    ],
)
@pytest.mark.parametrize(
    "args", [("relayhost",), ("-n",), ("-h", "foo"), ("-x", "foo"), ("-M",), ("-d", "relayhost")]
)
def test_empty_macro_name_as_postfix(confdir, debian_master_cf, main_cf, args):
    # A "$" before anything but a name, "{", "(" or "$" is an empty macro name: warned of
    # for every main.cf value that has one, and fatal to a parameter postconf knows (or
    # reads as it starts: mydomain), whatever was asked but -d.
    (confdir / "main.cf").write_text(main_cf)
    (confdir / "master.cf").write_text(debian_master_cf)
    postconf_as_postfix(confdir, *args)


SUBMISSION = (
    "submission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n"
    "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_banner=$myhostname  x\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ("-Pn",),
        ("-Pd",),
        ("-Pnx",),
        ("-Px",),
        ("-Pxh",),
        ("-Pxf", "submission"),
        ("-PH",),
        ("-Mx",),
        ("-Mn",),
        ("-Mh",),
        ("-Fx", "relay", "submission/inet/command"),
        ("-Fd",),
        ("-FX",),
        ("-MP",),
        ("-mM",),
        ("-nd",),
        ("-Pe",),
        ("-e",),
        ("-X",),
        ("-M#",),
        ("-eX", "a"),
        ("-X#", "a"),
        ("-fe", "a=1"),
        ("-xe", "a=1"),
        ("-he", "a=1"),
        ("-ne", "a=1"),
        ("-P#", "submission/inet/syslog_name"),
        ("-PX", "submission/inet/syslog_name=x"),
        ("-H", "myhostname", "relayhost"),
        # -o name=value: main.cf settings for this command's output.
        ("-o", "myhostname=foo.example", "myhostname", "mydomain"),
        ("-o", "myhostname=foo.example", "-n"),
        ("-o", "myorigin=x", "-omydomain=d.example", "-x", "myorigin", "mydomain"),
        ("-o", "bogus_param=1", "-n"),
        ("-o", "noequals", "myhostname"),
        ("-o", "myhostname=q", "-d", "myhostname"),
    ],
)
def test_option_combinations_as_postfix(confdir, debian_master_cf, args):
    # Postfix's compatibility matrix: one major mode, modifiers that go with it (-x
    # expands master.cf's -o values as the service sees them, $service_name its name).
    (confdir / "main.cf").write_text("myhostname = mx.example.org\n")
    (confdir / "master.cf").write_text(debian_master_cf + SUBMISSION)
    postconf_as_postfix(confdir, *args)
    assert (confdir / "main.cf").read_text() == "myhostname = mx.example.org\n"


def edited_by_both(
    tmp_path: Path, main_cf: str, master_cf: str, args: tuple[str, ...], edited: str
) -> list[tuple[int, str, str, str]]:
    """Our postconf and Postfix's, each on its own copy of main_cf and master_cf, with
    args: (status, output, errors with the directory as DIR, the edited file) of each."""
    results = []
    for who in ("ours", "real"):
        d = tmp_path / who
        d.mkdir()
        (d / "main.cf").write_text(main_cf)
        (d / "master.cf").write_text(master_cf)
        if who == "ours":
            proc = run_ours("postconf", "-c", str(d), *args)
        else:
            proc = run_postfix(POSTFIX_POSTCONF, "-c", str(d), *args)
        err = proc.stderr.replace(str(d), "DIR")
        results.append((proc.returncode, proc.stdout, err, (d / edited).read_text()))
    return results


EDIT_MAIN_CF = """\
myhostname = mx.example.org
foo = bar
foo = again
# a comment
bar = 1
  continued
    again
#x
baz=2
"""


@pytest.mark.parametrize(
    "args",
    [
        ("zz_new=",),
        ("foo=new", "bar = x  y ", "foo=newer"),
        ("bar=7",),
        ("-e", " bar=7"),
        ("-X", "bar", "foo"),
        ("-#", "bar", "foo", "baz"),
        ("-X", "bar=1"),
        ("-X", " "),
        ("-e", "x"),
        ("-e", "#x=1"),
        ("-e", " = 1"),
        ("foo=1", "bar"),
        ("myhostname=a\nb",),
    ],
)
def test_main_cf_edit_as_postfix(tmp_path, args):
    # name=value edits as -e does (Postfix 2.8 and later): every definition of the name
    # replaced, a second one warned of, a name given twice warned of, one not found added.
    # (Postfix 3.7 adds several new names in its hash table's order, which varies from
    # one run to the next; each case here adds at most one.)
    ours, real = edited_by_both(tmp_path, EDIT_MAIN_CF, "", args, "main.cf")
    assert ours == real


@pytest.mark.parametrize(
    "args",
    [
        ("-P", "submission/inet/syslog_name=NEW"),
        ("-P", "submission/inet/newp=a b   c"),
        ("-P", "smtp/inet/x=1"),
        ("-Pe", "relay/unix/syslog_name="),
        ("-P", "nosuch/unix/x=1"),
        ("-P", "submission/inet/a=1", "submission/inet/b=2", "submission/inet/a=3"),
        ("-P", "*/*/x=1"),
        ("-P", "*/*/*=1"),
        ("-P", "submission=1"),
        ("-P", "submission/inet/x=$myhostname"),
        ("-P", "submission/inet/ x =1"),
        ("-P", "relay/unix/syslog_name=", "smtp/inet/x=1", "smtp/unix/wakeup=1"),
        ("-PX", "submission/inet/syslog_name"),
        ("-PX", "submission/inet/nosuch"),
        ("-PX", "submission/inet"),
        ("-PX", "relay/unix/syslog_name", "smtp/inet/x"),
        ("-MX", "relay/unix"),
        ("-M#", "relay/unix", "submission/inet"),
        ("-M#", "relay/unix=x"),
        ("-MX", "nosuch/unix"),
        ("-MX", "nosuch"),
        ("-M", "foo/unix=foo unix - n n - - pipe a b"),
        ("-M", "relay/unix=foo unix - n n - - pipe a b"),
        ("-M", "relay/unix=smtp inet n - n - - smtpd -o a=b"),
        ("-M", "submission/inet=submission inet n - y - - smtpd -o { a = b c } x"),
        ("-M", "foo/unix=foo unix - n"),
        ("-M", "foo/unix=bar unix x n n - - pipe"),
        ("-F", "relay/unix/command=smtp -o a=b  {x y} {z}  {a b c} q{ r}"),
        ("-F", "relay/unix/command=-o a=b"),
        ("-F", "relay/unix/chroot=n", "smtp/unix/wakeup=5?"),
        ("-F", "relay/unix/type=fifo"),
        ("-F", "relay/unix/chroot=x"),
        ("-F", "relay/unix/bogus=x"),
        ("-F", "relay/unix/*=x"),
        ("-F", "relay/unix/chroot=a b"),
        ("-F", "nosuch/unix/chroot=n"),
        ("-P", "smtp/inet/x=1\n"),
        ("-P", "#smtp/inet/x=1"),
    ],
)
def test_master_cf_edit_as_postfix(tmp_path, debian_master_cf, args):
    # An entry a request names is printed anew as -Mf shows it, after the comment lines
    # among its continuation lines; -X removes, -# comments out, -Me adds what it does
    # not find; bad requests are Postfix's fatal errors, with master.cf left as it was.
    ours, real = edited_by_both(tmp_path, "", debian_master_cf + SUBMISSION, args, "master.cf")
    assert ours == real
    assert "Traceback" not in ours[2]


@pytest.mark.parametrize("args", [("a=1",), ("-X", "a"), ("-P", "a/b/c=1"), ("-MX", "a/b")])
def test_edit_of_a_missing_file_as_postfix(tmp_path, args):
    # An edit reads only the file it changes, and says so when that file is missing.
    postconf_as_postfix(tmp_path, *args)
    assert list(tmp_path.iterdir()) == []


def test_edit_ignores_a_bad_main_cf_as_postfix(tmp_path):
    (tmp_path / "main.cf").write_text("bad line\n")
    (tmp_path / "master.cf").write_text("bad line\n")
    postconf_as_postfix(tmp_path, "a=1")
    assert (tmp_path / "main.cf").read_text() == "bad line\na = 1\n"


@pytest.mark.parametrize(
    ("main_cf", "master_cf"),
    [
        # A -o value's $name that nothing defines is master.cf's, and comes first.
        ("foo = $bar\n", "smtp inet n - n - - smtpd -o smtpd_banner=$undefined_x\n"),
        # Each time a value mentions it, in every branch of a conditional; "$$" is no name.
        (
            "smtpd_banner = ${myhostname?$u6}${u9?$u7}$$u8 ${{$u10} == {x}?{$u11}:{$u12}}\n",
            "smtp inet n - n - - smtpd -o smtpd_banner=$u2$u2\n",
        ),
        # A -o name defines it for its own service and for main.cf, not for another service;
        # it is used where its own service or main.cf mentions it (or a restriction class).
        (
            "smtpd_restriction_classes = cls\nsmtpd_banner = $w\n",
            "smtp inet n - n - - smtpd -o cls=permit -o a=$b -o b=1 -o w=2\n"
            "x unix - - n - - smtpd -o smtpd_restriction_classes=k -o k=1 -o c=$b\n",
        ),
        ("", "smtp inet n - n - - smtpd -o y=$undefined_y\n"),
    ],
)
@pytest.mark.parametrize("args", [("-n",), ("-M",), ("-P",)])
def test_undefined_and_unused_names_warned_as_postfix(confdir, main_cf, master_cf, args):
    """Postfix's postconf_user.c: which $names are undefined and which names unused, in which
    file, how often and in what order (at most one undefined name of main.cf and one unused
    name of a service per case: Postfix lists those in its hash tables' order)."""
    (confdir / "main.cf").write_text("compatibility_level = 3.6\n" + main_cf)
    (confdir / "master.cf").write_text(master_cf)
    postconf_as_postfix(confdir, *args)


# What postconf refuses as it starts (all but -d and the edits): computing mynetworks'
# default where main.cf does not set it (inet_protocols, mynetworks_style, whose own default
# compares compatibility_level, and inet_interfaces), and each main.cf value's compatibility
# level comparisons, after the undefined names it mentions.
START_REFUSALS = [
    "inet_protocols = ipv5",
    "mynetworks_style = hostx",
    "mynetworks_style = host subnet",
    "inet_interfaces = 203.0.113.7",
    "inet_protocols = ipv4\ninet_interfaces = ::1",
    "compatibility_level = level",
    "compatibility_level = 3.6.x\nmynetworks = 127.0.0.0/8",
    "inet_protocols = ipv5\nsmtpd_banner = $undef",
    "x = a\nmynetworks = 127.0.0.0/8\nsmtpd_banner = ${{$x} <level {3}?{p}:{q}}",
    "mynetworks = 127.0.0.0/8\nsmtpd_banner = ${{$nonexist} <level {3}?{p}:{q}}",
    "compatibility_level = level\nsmtpd_banner = ${{a} <level {3}?{p}:{q}}",
]
# Let through: mynetworks set, so none of its inputs is read.
START_PASSES = [
    "inet_protocols = ipv5\nmynetworks = 127.0.0.0/8",
    "mynetworks_style = hostx\nmynetworks = 127.0.0.0/8",
    "inet_interfaces = 203.0.113.7\nmynetworks = 127.0.0.0/8",
    "compatibility_level = level\nmynetworks = 127.0.0.0/8",
    "smtpd_banner = ${{3} <level {3.6}?{p}:{q}}",
]


@pytest.mark.parametrize("main_cf", START_REFUSALS + START_PASSES)
@pytest.mark.parametrize("args", [("-n",), ("-M",), ("-x", "append_dot_mydomain")])
def test_start_checks_as_postfix(confdir, main_cf, args):
    (confdir / "main.cf").write_text(main_cf + "\n")
    (confdir / "master.cf").write_text("smtp inet n - n - - smtpd -o smtpd_banner=$mundef\n")
    postconf_as_postfix(confdir, *args)


@pytest.mark.parametrize(
    "main_cf",
    [*START_REFUSALS[:5], "mail_owner = nosuch", "myhostname = a b", "soft_bounce = maybe"],
)
def test_map_types_check_every_parameter_as_postfix(confdir, main_cf):
    """postconf -m reads main.cf as every program does (mail_conf_read): what
    mail_params_init refuses ends it (the accounts too: the suite runs as root)."""
    (confdir / "main.cf").write_text(main_cf + "\n")
    postconf_as_postfix(confdir, "-m")


LEGACY_MAIN_CF = """\
authorized_verp_clients = 127.0.0.1
virtual_maps = hash:/etc/postfix/virtual
foo_unused = 1
bar = $fallback_relay $smtp_per_record_deadline
"""


@pytest.mark.parametrize(
    "args",
    [
        ("-n",),
        (),
        ("-d", "authorized_verp_clients", "virtual_maps", "fallback_relay", "home", "rbl_code"),
        ("authorized_verp_clients", "fallback_relay", "lmtp_per_record_deadline", "extension"),
    ],
)
def test_legacy_parameters_as_postfix(confdir, args):
    """Names the defaults mention that are no parameter of their own (authorized_verp_clients
    in smtpd_authorized_verp_clients', virtual_maps, fallback_relay): Postfix's postconf
    knows them, empty by default, lists one main.cf sets and does not call it unused; not
    those of the values expanded per delivery or reply (forward_path's $home,
    default_rbl_reply's $rbl_code). Ours called them unknown and unused."""
    (confdir / "main.cf").write_text(LEGACY_MAIN_CF)
    ours, real, ours_err, real_err = both(confdir, *args)
    if not args:
        # The full listing: ours has parameters of its own (EXTRA); these lines must agree.
        names = ("authorized_verp_clients ", "virtual_maps ", "fallback_relay ", "bar ", "foo_")
        ours, real = (
            [ln for ln in out.splitlines() if ln.startswith(names)] for out in (ours, real)
        )
        assert len(real) == 2, real
    assert ours == real
    assert set(ours_err.splitlines()) == set(real_err.splitlines())
