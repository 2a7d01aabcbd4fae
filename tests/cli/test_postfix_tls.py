"""`postfix tls` (postfix-tls(1)) as Postfix 3.7's postfix-tls-script: each subcommand run
by real Postfix and by ours on twin configuration directories, compared step by step (exit
status, output, the log's lines, postconf -n, the key and certificate files made), then
our smtpd started with what enable-server deployed."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import shared_dir
from tests.smtpd.conftest import running_smtpd
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

POSTFIX = "/usr/sbin/postfix"
# Real Postfix's script asks the default instance (/etc/postfix/main.cf, which this
# machine need not have) for openssl_path: it runs with a copy of /etc/postfix bound there.
IN_NAMESPACE = 'mount --bind "$1" /etc/postfix && shift && exec "$@"'
OURS = [sys.executable, "-m", "oxipost.cli.postfix"]
STAMP = re.compile(r"\d{8}-\d{6}")
DIGEST = re.compile(r"\b[0-9a-f]{64}$", re.MULTILINE)
KEY_FACTS = re.compile(r"^(Private-Key: .*|ASN1 OID: .*|NIST CURVE: .*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def etc_postfix() -> Iterator[Path]:
    """Copies of /etc/postfix: postfix/ with an empty main.cf, no-main-cf/ without one,
    bad-openssl/ whose main.cf sets an openssl_path that is not there."""
    if os.geteuid() != 0 or not os.path.exists(POSTFIX):
        pytest.skip("real Postfix's postfix tls needs root and Debian's postfix")
    with shared_dir("oxipost-tls-etc-") as d:
        for name, main_cf in (
            ("postfix", ""),
            ("no-main-cf", None),
            ("bad-openssl", "openssl_path = /no/such/openssl\n"),
        ):
            shutil.copytree("/etc/postfix", d / name, symlinks=True)
            if main_cf is not None:
                (d / name / "main.cf").write_text(main_cf)
        yield d / "postfix"


def with_etc(etc: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """argv run with etc as /etc/postfix (the default instance), in a mount namespace."""
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", IN_NAMESPACE]
    return subprocess.run(
        [*namespace, "sh", str(etc), *argv], capture_output=True, text=True, timeout=60
    )


class Twins:
    """A configuration directory for real Postfix and one for ours, the same main.cf."""

    def __init__(self, root: Path, etc: Path, main_cf: str) -> None:
        self.etc = etc
        self.dirs = {"real": root / "real", "ours": root / "ours"}
        for d in self.dirs.values():
            d.mkdir()
            shutil.copy("/etc/postfix/master.cf", d / "master.cf")
            (d / "main.cf").write_text(
                main_cf + f"maillog_file = {d}/maillog\nmaillog_file_prefixes = {root}\n"
            )
        self.logged = dict.fromkeys(self.dirs, 0)

    def run(self, side: str, args: list[str], etc: str) -> subprocess.CompletedProcess:
        command = OURS if side == "ours" else [POSTFIX]
        argv = [*command, "-c", str(self.dirs[side]), "tls", *args]
        return with_etc(self.etc.with_name(etc), argv)

    def normal(self, side: str, text: str) -> str:
        return STAMP.sub("STAMP", text.replace(str(self.dirs[side]), "DIR"))

    def outcome(self, side: str, args: list[str], etc: str) -> dict[str, object]:
        """What one run did: status, output, new log messages, main.cf, the files made."""
        done = self.run(side, args, etc)
        d = self.dirs[side]
        lines = (d / "maillog").read_text().splitlines() if (d / "maillog").exists() else []
        new, self.logged[side] = lines[self.logged[side] :], len(lines)
        postconf = subprocess.run(
            ["/usr/sbin/postconf", "-c", str(d), "-n"], capture_output=True, text=True
        )
        return {
            "status": done.returncode,
            "stdout": self.normal(side, done.stdout),
            "stderr": self.normal(side, done.stderr),
            "log": [self.normal(side, ln.split("]: ", 1)[1]) for ln in new],
            "main.cf": self.normal(side, postconf.stdout),
            "files": [describe(p, self.normal(side, p.name)) for p in sorted(d.glob("*.pem"))],
        }

    def step(
        self,
        args: Callable[[Path], list[str]] | list[str],
        own_keys: bool = False,
        etc: str = "postfix",
    ) -> dict[str, object]:
        """args (or args(directory)) run on both, with etc_postfix's etc as the default
        instance; the outcomes must be the same (but for the digests of the keys each side
        made itself, with own_keys)."""
        # Side by side: most of real Postfix's time is its script's waiting.
        with ThreadPoolExecutor(2) as pool:
            runs = {
                side: pool.submit(self.outcome, side, args(d) if callable(args) else args, etc)
                for side, d in self.dirs.items()
            }
            got = {side: run.result() for side, run in runs.items()}
        if own_keys:
            for outcome in got.values():
                outcome["stdout"] = DIGEST.sub("DIGEST", str(outcome["stdout"]))
        assert got["ours"] == got["real"], args
        return got["ours"]


def describe(path: Path, name: str) -> tuple[object, ...]:
    """A file's normalized name and mode, and what openssl says of its key or certificate."""
    mode = stat.S_IMODE(path.stat().st_mode)
    text = path.read_text()

    def openssl(*args: str) -> str:
        return subprocess.run(
            ["openssl", *args, "-in", str(path), "-noout"], capture_output=True, text=True
        ).stdout

    if "PRIVATE KEY" in text:
        return name, oct(mode), tuple(KEY_FACTS.findall(openssl("pkey", "-text")))
    exts = "subjectAltName,basicConstraints,extendedKeyUsage"
    cert = openssl("x509", "-subject", "-issuer", "-ext", exts)
    sig = re.findall(r"Signature Algorithm: (\S+)", openssl("x509", "-text"))
    start, end = (
        ssl.cert_time_to_seconds(ln.partition("=")[2])
        for ln in openssl("x509", "-startdate", "-enddate").splitlines()
    )
    return name, oct(mode), cert, sig[:1], round((end - start) / 86400)


def newest(d: Path, prefix: str) -> str:
    return sorted(p.name for p in d.glob(f"{prefix}-*.pem"))[-1]


def test_postfix_tls_subcommands_as_postfix(etc_postfix: Path) -> None:
    """enable-client -r, enable-server (with host names), new-server-key -a ecdsa,
    new-server-cert (reusing the deployed key), deploy-server-cert, output-server-tlsa (the
    configured keys, a given one), output-server-csr and all-default-*, then the refusals
    (usage, unknown command, unsupported algorithm, a certificate that is not the key's, no
    key, a default instance without main.cf or openssl): the same on both, step by step."""
    with shared_dir("oxipost-tls-") as root:
        twins = Twins(root, etc_postfix, "compatibility_level = 3.6\nmyhostname = mx.example.com\n")
        assert twins.step(["all-default-client"])["status"] == 0
        enabled = twins.step(["enable-client", "-r", "dev:/dev/random"])
        assert "tls_random_source = dev:/dev/random" in str(enabled["main.cf"])
        assert twins.step(["enable-client"])["log"][0].startswith("*** Non-default SMTP client")
        assert twins.step(["all-default-client"])["status"] == 1
        assert twins.step(["all-default-server"])["status"] == 0
        server = twins.step(["enable-server", "mx1.example", "mx2.example"])
        assert "smtpd_tls_key_file = DIR/key-STAMP.pem" in str(server["main.cf"])
        assert twins.step(["all-default-server"])["status"] == 1
        twins.step(["enable-server"])
        twins.step(["new-server-key", "-a", "ecdsa", "-b", "secp384r1", "ec.example"])
        copied = twins.step(["new-server-cert"])
        assert len(copied["files"]) == 6, copied["files"]  # type: ignore[arg-type]
        for d in twins.dirs.values():
            # The new certificate's key is a copy of the deployed one.
            first, second = (
                subprocess.run(
                    ["openssl", "pkey", "-in", str(d / key), "-pubout"],
                    capture_output=True,
                    check=True,
                ).stdout
                for key in sorted(p.name for p in d.glob("key-*.pem"))
            )
            assert first == second, d
        twins.step(lambda d: ["deploy-server-cert", newest(d, "eccert"), newest(d, "eckey")])
        tlsa = twins.step(["output-server-tlsa", "-h", "h.example"], own_keys=True)
        assert re.fullmatch(
            r"; DIR/key-STAMP.pem\n_25\._tcp\.h\.example\. IN TLSA 3 1 1 DIGEST\n"
            r"; DIR/eckey-STAMP.pem\n_25\._tcp\.h\.example\. IN TLSA 3 1 1 DIGEST\n",
            str(tlsa["stdout"]),
        ), tlsa
        # A given key: the same lines, digest included.
        shared = root / "shared-key.pem"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(shared), "2048"], check=True, capture_output=True
        )
        for d in twins.dirs.values():
            shutil.copy(shared, d / "given.pem")
        given = twins.step(["output-server-tlsa", "given.pem", "none"])
        digest = subprocess.run(
            f"openssl pkey -in {shared} -pubout -outform DER | sha256sum",
            shell=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        assert given["stdout"] == (
            f"; DIR/given.pem\n_25._tcp.mx.example.com. IN TLSA 3 1 1 {digest}\n"
        )
        # The same key on both: the same CSR (a deterministic RSA signature).
        csr = twins.step(["output-server-csr", "-k", "given.pem", "a.example", "b.example"])
        assert str(csr["stdout"]).startswith("-----BEGIN CERTIFICATE REQUEST-----\n")
        twins.step(["bogus"])
        twins.step(["enable-client", "extra"])
        twins.step(["new-server-key", "-a", "dsa"])
        twins.step(["deploy-server-cert", "only-one"])
        twins.step(lambda d: ["deploy-server-cert", newest(d, "cert"), newest(d, "eckey")])
        twins.step(["output-server-tlsa", "none"])
        # openssl_path is the default instance's, which the script must be able to read.
        twins.step(["output-server-tlsa"], etc="bad-openssl")
        twins.step(["output-server-tlsa"], etc="no-main-cf")


def swaks_tls(port: int) -> str:
    """swaks --tls's transcript of a transaction with 127.0.0.1:port, which must succeed."""
    argv = ["swaks", "--server", f"127.0.0.1:{port}", "--tls"]
    argv += ["--to", "postmaster@localhost", "--from", "a@example.org"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "<-  250-STARTTLS" in out.stdout
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as [0-9A-F]+", out.stdout), out.stdout
    return out.stdout


@pytest.mark.parametrize("algorithm", ["rsa", "ecdsa"])
def test_smtpd_starts_with_enable_server_tls(
    tmp_path: Path, etc_postfix: Path, algorithm: str
) -> None:
    """What our enable-server deployed (an RSA pair, or the ECDSA pair alone) is a server
    TLS setup our smtpd offers STARTTLS with, and swaks --tls completes a transaction over
    it; for ECDSA, as real Postfix with the same settings does."""
    with shared_dir("oxipost-tls-smtpd-") as d:
        (d / "main.cf").write_text("compatibility_level = 3.6\nmyhostname = mx.example.test\n")
        (d / "master.cf").write_text("")
        argv = [*OURS, "-c", str(d), "tls", "enable-server", "-a", algorithm]
        done = with_etc(etc_postfix, argv)
        assert done.returncode == 0, done.stderr
        tls = "".join(ln + "\n" for ln in (d / "main.cf").read_text().splitlines() if "tls" in ln)
        assert ("smtpd_tls_eccert_file" in tls) == (algorithm == "ecdsa"), tls
        with running_smtpd(str(tmp_path), tls) as srv:
            swaks_tls(srv.port)
        if algorithm == "ecdsa":
            with running_postfix(tls) as (port, _conf):
                swaks_tls(port)
