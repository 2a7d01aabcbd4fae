"""postfix tls: Postfix 3.7's postfix-tls-script (postfix-tls(1)).

    postfix tls enable-client [-r randsource]
    postfix tls enable-server [-r randsource] [-a algorithm] [-b bits] [hostname ...]
    postfix tls new-server-key [-a algorithm] [-b bits] [hostname ...]
    postfix tls new-server-cert [-a algorithm] [-b bits] [hostname ...]
    postfix tls deploy-server-cert certfile keyfile
    postfix tls output-server-csr [-k keyfile] [hostname ...]
    postfix tls output-server-tlsa [-h hostname] [keyfile ...]
    postfix tls all-default-client | all-default-server

enable-client and enable-server change main.cf only when none of the script's client
(server) TLS settings is in main.cf, and otherwise log the settings they would suggest.
Keys and self-signed (100-year) certificates are made by openssl(1) (openssl_path) with the
script's commands, as `key-YYYYMMDD-HHMMSS.pem` and `cert-...pem` (`eckey-`/`eccert-` for
ecdsa, UTC) in config_directory, keys mode 0600 (umask 077), certificates 0644; what a
deployment sets is smtpd_tls_key_file/smtpd_tls_cert_file (the ecdsa pair for ecdsa), in
one postconf -e edit. output-server-tlsa writes `_25._tcp.HOST. IN TLSA 3 1 1 SHA256` (the
SPKI digest) after a `; KEYFILE` line, on stdout; output-server-csr writes the CSR there.

Diagnostics: the script's, word for word, as postfix/postfix-tls-script in the log (and on
stderr when it is a terminal, see oxipost.cli.postfix.Script): what it tells (the
commands to deploy, the CSR and TLSA hints) is info, its refusals `fatal: usage: postfix tls
CMD ...`, `fatal: no private key found in file: K`, `fatal: Certificate in C does not match
key in K`, an unknown subcommand `error: unknown tls command: 'X'` then the usage; each
fatal exits 1. Its quirks are kept: the TLSA hint after a deployment names no key file (the
line ends in a space), output-server-tlsa fails silently (exit 1) when a key's digest cannot
be computed.

openssl_path is the default instance's (/etc/postfix/main.cf), which every instance of a
multi-instance setup shares, as the script reads it: a default main.cf that cannot be read
is postconf's fatal error on stderr and `fatal: No working openssl(1) command found with
'openssl_path = '`, whatever the instance's main.cf says.
"""

from __future__ import annotations

import getopt
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from oxipost.config import DEFAULT_CONFIG_DIR, Config, ConfigError, load_config, maincf
from oxipost.maps import TABLE_TYPES

if TYPE_CHECKING:
    from oxipost.cli.postfix import Script

RSA_BITS = "2048"
EC_CURVE = "secp256r1"
# The settings that enable-client / enable-server require at their defaults (absent from
# main.cf or empty there: `postconf -nh`).
CLIENT_SETTINGS = (
    "smtp_use_tls",
    "smtp_enforce_tls",
    "smtp_tls_enforce_peername",
    "smtp_tls_security_level",
    "smtp_tls_cert_file",
    "smtp_tls_dcert_file",
    "smtp_tls_eccert_file",
)
SERVER_SETTINGS = (
    "smtpd_use_tls",
    "smtpd_enforce_tls",
    "smtpd_tls_security_level",
    "smtpd_tls_cert_file",
    "smtpd_tls_dcert_file",
    "smtpd_tls_eccert_file",
)
# Per algorithm: file name prefixes (key, certificate), main.cf parameters (key,
# certificate), the openssl subcommand that reads its keys.
ALGORITHMS = {
    "rsa": ("key", "cert", "smtpd_tls_key_file", "smtpd_tls_cert_file", "rsa"),
    "ecdsa": ("eckey", "eccert", "smtpd_tls_eckey_file", "smtpd_tls_eccert_file", "ec"),
}
DEFAULT_BITS = {"rsa": RSA_BITS, "ecdsa": EC_CURVE}
# SHA-256 of nothing: what a digest of a failed openssl pipeline is.
NULL256 = hashlib.sha256(b"").hexdigest()
# openssl's -passin for keys: a password-protected key fails rather than prompting.
PASSIN = ("-passin", "pass:umask 077")
USAGE = (
    "usage: postfix tls enable-client (or enable-server, new-server-key, new-server-cert,"
    " deploy-server-cert, output-server-csr, output-server-tlsa, all-default-client,"
    " all-default-server)"
)
# What enable-client logs when it changes nothing (then the session cache line, when a
# table type can hold one), and enable-server likewise.
_CLIENT_HINT = (
    "*** Non-default SMTP client TLS settings detected, no changes made.",
    "For opportunistic TLS in the Postfix SMTP client, the below settings",
    "are typical:",
    "  smtp_tls_security_level = may",
    "  smtp_tls_loglevel = 1",
)
_SERVER_HINT = (
    "*** Non-default SMTP server TLS settings detected, no changes made.",
    "For opportunistic TLS in the Postfix SMTP server, the below settings",
    "are typical:",
    "  smtpd_tls_security_level = may",
    "  smtpd_tls_loglevel = 1",
    'You can use "postfix tls new-server-cert" to create a new certificate.',
    'Or, "postfix tls new-server-key" to also force a new private key.',
    "If you publish DANE TLSA records, see:",
    "  https://tools.ietf.org/html/rfc7671#section-8",
    "  https://tools.ietf.org/html/rfc7671#section-5.1",
    "  https://tools.ietf.org/html/rfc7671#section-5.2",
    "  https://community.letsencrypt.org/t/please-avoid-3-0-1-and-3-0-2-dane-tlsa-records"
    "-with-le-certificates/7022",
)
_RELOAD = (
    "Run the command:",
    "  # postfix reload",
    "if you want the new settings to take effect immediately.",
)


class Fatal(Exception):
    """A fatal message of the script (exit status 1); empty: exit 1 without one."""


class Tls:
    """One `postfix tls` run on cfg; say is the script's logger (postfix/postfix-tls-script)."""

    def __init__(self, cfg: Config, say: Script, openssl: str) -> None:
        self.cfg = cfg
        self.say = say
        self.openssl = openssl
        self.confdir = cfg.config_dir
        self.random_source = ""

    # ----- openssl -----

    def _openssl(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.openssl, *args], input=stdin, capture_output=True, check=False)

    def read_key(self, path: str) -> tuple[str, bytes] | None:
        """The key in path as openssl rewrites it, and its algorithm; None if none is."""
        if not path or not os.path.isfile(path):
            return None
        for algo in ALGORITHMS:
            out = self._openssl(ALGORITHMS[algo][4], *PASSIN, "-in", path).stdout
            # The script's `| grep .`: the lines that are not empty.
            lines = [ln for ln in out.splitlines(keepends=True) if ln.strip(b"\n")]
            if lines:
                return algo, b"".join(lines)
        return None

    def _spki_digest(self, pem_of: Callable[[str], bytes]) -> str | None:
        """SHA-256 of the DER public key that pem_of(cmd) gives as PEM (ec, then rsa)."""
        for cmd in ("ec", "rsa"):
            pem = pem_of(cmd)
            der = self._openssl(cmd, "-pubin", "-outform", "DER", stdin=pem).stdout
            digest = hashlib.sha256(der).hexdigest()
            if digest != NULL256:
                return digest
        return None

    def pubkey_digest(self, path: str) -> str | None:
        if not path or not os.path.isfile(path):
            return None
        return self._spki_digest(
            lambda cmd: self._openssl(cmd, *PASSIN, "-in", path, "-pubout").stdout
        )

    def cert_pubkey_digest(self, path: str) -> str | None:
        if not path or not os.path.isfile(path):
            return None
        pem = self._openssl("x509", "-pubkey", "-noout", "-in", path).stdout
        return self._spki_digest(lambda _cmd: pem)

    def _alts(self, names: list[str]) -> str:
        return "".join(f"DNS.{i} = {name}\n" for i, name in enumerate(names, 1))

    def create_key(self, algo: str, bits: str, path: str) -> None:
        if algo == "rsa":
            args = ["genrsa", "-out", path, bits]
        else:
            args = ["ecparam", "-param_enc", "named_curve", "-genkey", "-out", path, "-name", bits]
        old = os.umask(0o077)
        try:
            proc = subprocess.run(
                [self.openssl, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
        finally:
            os.umask(old)
        if proc.returncode != 0:
            for line in (proc.stdout + proc.stderr).rstrip("\n").split("\n"):
                self.say.warning(line)
            raise Fatal(f"error generating new {algo} {bits} private key")

    def copy_key(self, algo: str, old: str, new: str) -> None:
        umask = os.umask(0o077)
        try:
            # The shell's redirection: the new file is made whether the key reads or not.
            with open(new, "wb") as f:
                read = self.read_key(old)
                if read is not None:
                    f.write(read[1])
        finally:
            os.umask(umask)
        if read is None:
            raise Fatal(f"Error copying private key from '{old}' to '{new}'")
        if read[0] != algo:
            raise Fatal(f"Key algorithm '{read[0]}' of '{old}' is not '{algo}'")

    def create_cert(self, key: str, cert: str, names: list[str]) -> None:
        fqdn = self.fqdn(names[0] if names else "")
        names = [fqdn, *names[1:]]
        if os.access(cert, os.R_OK):
            raise Fatal(f"New certificate file already exists: {cert}")
        config = (
            "default_md = sha256\nx509_extensions = v3\nprompt = yes\ndistinguished_name = dn\n"
            "[dn]\n[v3]\nbasicConstraints = CA:false\nsubjectKeyIdentifier = hash\n"
            "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = @alts\n[alts]\n"
        ) + self._alts(names)
        args = ["-new", "-key", key, "-subj", f"/CN={fqdn}", "-days", "36525", "-out", cert]
        # openssl's complaints reach stderr, as the script leaves them.
        done = subprocess.run(
            [self.openssl, "req", "-x509", "-config", "/dev/stdin", *args],
            input=config.encode(),
            stdout=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            for path in (cert, key):
                if os.path.exists(path):
                    os.unlink(path)
            raise Fatal("error generating self-signed SSL certificate")

    # ----- configuration -----

    def explicit(self, name: str) -> str:
        """`postconf -nh name`: main.cf's value as written, empty if it is not there."""
        return self.cfg.settings.get(name, "")

    def all_default(self, names: tuple[str, ...]) -> bool:
        return not any(self.explicit(name) for name in names)

    def fqdn(self, name: str) -> str:
        """name, or myhostname (a /file's contents, as the script's cat reads them)."""
        if name:
            return name
        fqdn = self.cfg.get("myhostname")
        if fqdn.startswith("/"):
            with open(fqdn) as f:
                fqdn = f.read().rstrip("\n")
        return fqdn

    def keyfile(self, name: str) -> str:
        """set_keyfile: an algorithm's configured key (main.cf's, expanded), a path (relative
        to config_directory), or empty for none."""
        if name in ALGORITHMS:
            explicit = self.explicit(ALGORITHMS[name][2])
            path = self.cfg.expand(explicit) if explicit else ""
        elif name in ("", "none") or name.startswith("/"):
            path = name
        else:
            path = f"{self.confdir}/{name}"
        return "" if path == "none" else path

    def cache_db_type(self) -> str | None:
        """The read-write table type for TLS session caches: lmdb, else btree."""
        for dbtype in ("lmdb", "btree"):
            if dbtype in TABLE_TYPES:
                return dbtype
        return None

    def init_random_source(self, source: str) -> None:
        self.random_source = source or self.cfg.get("tls_random_source")
        if not self.random_source:
            if not os.access("/dev/urandom", os.R_OK):
                raise Fatal("no default TLS random source defined and no /dev/urandom")
            self.random_source = "dev:/dev/urandom"

    # ----- subcommands -----

    def enable_client(self) -> None:
        dbtype = self.cache_db_type()
        if not self.all_default(CLIENT_SETTINGS):
            lines = list(_CLIENT_HINT)
            if dbtype:
                cache = f"{dbtype}:${{data_directory}}/smtp_scache"
                lines.append(f"  smtp_tls_session_cache_database = {cache}")
            self.info(lines)
            return
        updates = {"smtp_tls_security_level": "may", "smtp_tls_loglevel": "1"}
        if dbtype:
            data = self.cfg.get("data_directory")
            updates["smtp_tls_session_cache_database"] = f"{dbtype}:{data}/smtp_scache"
        self._edit(updates)
        self.info(["Enabled opportunistic TLS in the Postfix SMTP client.", *_RELOAD])

    def new_server_cert(
        self, algo: str, bits: str, oldkey: str, deploy: str, names: list[str]
    ) -> None:
        """A new key (oldkey's copy if given) and its certificate, deployed if deploy."""
        key, cert = self.ensure_key(algo, bits, oldkey)
        self.create_cert(key, cert, names)
        if deploy:
            self.deploy(cert, key, deploy)
            lines = self.deployed(deploy)
        else:
            lines = [
                "New private key and self-signed certificate created. To deploy run:",
                f"  # postfix tls deploy-server-cert {cert} {key}",
            ]
        lines += [
            "To generate a CSR run:",
            f"  # postfix tls output-server-csr -k {key} [<hostname> ...]",
        ]
        if deploy:
            lines.append(f"Save the signed certificate chain in {cert}.")
        else:
            lines.append(f"Save the signed certificate chain in {cert}, and deploy as above.")
        # The script's info_tlsa shifts its arguments away once deployed: no key named.
        tlsa_key = "" if deploy else key
        lines += [
            "To generate TLSA records run:",
            f"  # postfix tls output-server-tlsa [-h <hostname>] {tlsa_key}",
        ]
        if not oldkey and deploy:
            lines += [
                "(If you have DANE TLSA RRs, update them as soon as possible to match",
                "the newly deployed keys).",
            ]
        elif not oldkey:
            lines.append("(deploy after updating the DNS and waiting for stale RRs to expire).")
        self.info(lines)

    def ensure_key(self, algo: str, bits: str, oldkey: str) -> tuple[str, str]:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        key_prefix, cert_prefix = ALGORITHMS[algo][:2]
        key = f"{self.confdir}/{key_prefix}-{stamp}.pem"
        cert = f"{self.confdir}/{cert_prefix}-{stamp}.pem"
        if os.access(key, os.R_OK):
            raise Fatal(f"New private key file already exists: {key}")
        if os.access(cert, os.R_OK):
            raise Fatal(f"New certificate file already exists: {cert}")
        try:
            if oldkey:
                self.copy_key(algo, oldkey, key)
            else:
                self.create_key(algo, bits, key)
        except Fatal:
            if os.path.exists(key):
                os.unlink(key)
            raise
        return key, cert

    def check_key(self, path: str) -> tuple[str, bytes]:
        read = self.read_key(path)
        if read is None:
            raise Fatal(f"no private key found in file: {path}")
        return read

    def deploy(self, cert: str, key: str, deploy: str = "") -> None:
        """deploy_server_cert: cert and key (which must match) into main.cf, with
        enable-server's settings when deploy is "enable"."""
        algo = self.check_key(key)[0]
        cert_digest = self.cert_pubkey_digest(cert)
        if cert_digest is None:
            raise Fatal("error computing certificate public key digest")
        key_digest = self.pubkey_digest(key)
        if key_digest is None:
            raise Fatal("error computing public key digest")
        if cert_digest != key_digest:
            raise Fatal(f"Certificate in {cert} does not match key in {key}")
        key_param, cert_param = ALGORITHMS[algo][2:4]
        updates = {key_param: key, cert_param: cert}
        if deploy == "enable":
            updates |= {
                "smtpd_tls_security_level": "may",
                "smtpd_tls_received_header": "yes",
                "smtpd_tls_loglevel": "1",
            }
        self._edit(updates)

    def deployed(self, deploy: str) -> list[str]:
        first = (
            ["Enabled opportunistic TLS in the Postfix SMTP server"] if deploy == "enable" else []
        )
        return [*first, "New TLS private key and certificate deployed.", *_RELOAD]

    def _edit(self, updates: dict[str, str]) -> None:
        """One postconf -e of updates (and of an enable command's tls_random_source)."""
        if self.random_source:
            updates = {**updates, "tls_random_source": self.random_source}
        for warning in maincf.edit(self.cfg.main_cf, dict(updates)):
            print(f"postconf: warning: {warning}", file=sys.stderr)

    def info(self, lines: list[str]) -> None:
        for line in lines:
            self.say.info(line)

    def output_csr(self, key: str, names: list[str]) -> None:
        # The script resolves the key file a second time here (relative names twice).
        key = self.keyfile(key)
        fqdn = self.fqdn(names[0] if names else "")
        config = (
            "default_md = sha256\nreq_extensions = v3\nprompt = yes\ndistinguished_name = dn\n"
            "[dn]\n[v3]\nsubjectKeyIdentifier = hash\nextendedKeyUsage = serverAuth, clientAuth\n"
            "subjectAltName = @alts\n[alts]\n"
        ) + self._alts([fqdn, *names[1:]])
        sys.stdout.flush()
        done = subprocess.run(
            [self.openssl, "req", "-config", "/dev/stdin", "-new", "-key", key, "-subj", "/"],
            input=config.encode(),
        )
        if done.returncode != 0:
            raise Fatal("")

    def output_tlsa(self, hostname: str, keys: list[str]) -> None:
        found = False
        for name in keys or list(ALGORITHMS):
            key = self.keyfile(name)
            if not key:
                continue
            print(f"; {key}", flush=True)
            self.check_key(key)
            digest = self.pubkey_digest(key)
            if digest is None:
                raise Fatal("")
            print(f"_25._tcp.{hostname}. IN TLSA 3 1 1 {digest}", flush=True)
            found = True
        if not found:
            raise Fatal("No usable keyfiles specified or configured")


def default_openssl(cfg: Config) -> str:
    """The default instance's openssl_path; empty, after postconf's complaint on stderr,
    when its main.cf cannot be read."""
    try:
        return load_config(DEFAULT_CONFIG_DIR, master_cf=False).get("openssl_path")
    except ConfigError as e:
        postconf = os.path.join(cfg.get("command_directory"), "postconf")
        print(f"{postconf}: fatal: {e}", file=sys.stderr)
        return ""


def _options(args: list[str], spec: str, usage: str) -> tuple[dict[str, str], list[str]]:
    """The script's getopts: options up to the first operand (or --); any other is usage."""
    try:
        opts, rest = getopt.getopt(args, spec)
    except getopt.GetoptError:
        raise Fatal(usage) from None
    return {opt[1]: value for opt, value in opts}, rest


def _algorithm(opts: dict[str, str], unsupported: str, empty: str) -> tuple[str, str]:
    algo = opts.get("a", "rsa")
    if not algo:
        raise Fatal(empty)
    if algo not in ALGORITHMS:
        raise Fatal(f"{unsupported}: {algo}")
    return algo, opts.get("b") or DEFAULT_BITS[algo]


def run(cfg: Config, say: Script, args: list[str]) -> int:
    """`postfix tls ARGS` on cfg; the exit status."""
    os.umask(0o022)
    openssl = default_openssl(cfg)
    try:
        probe = subprocess.run([openssl, "version"], capture_output=True, stdin=subprocess.DEVNULL)
        working = probe.returncode == 0
    except OSError:
        working = False
    if not working:
        return say.fatal(f"No working openssl(1) command found with 'openssl_path = {openssl}'")
    tls = Tls(cfg, say, openssl)
    command = args[0] if args else ""
    rest = args[1:]
    key_usage = f"usage: postfix tls {command} [-a algorithm] [-b bits ] [hostname ...]"
    try:
        if command == "enable-client":
            opts, rest = _options(rest, "r:", f"usage: postfix tls {command} [-r devrandom]")
            if rest:
                raise Fatal(f"usage: postfix tls {command} [-r devrandom]")
            tls.init_random_source(opts.get("r", ""))
            tls.enable_client()
        elif command == "enable-server":
            usage = (
                f"usage: postfix tls {command} [-a algorithm] [-b bits ] [-r devrandom]"
                " [hostname ...]"
            )
            opts, rest = _options(rest, "a:b:r:", usage)
            algo, bits = _algorithm(
                opts, "Unsupported private key algorithm", "Internal error: empty algorithm "
            )
            tls.init_random_source(opts.get("r", ""))
            if tls.all_default(SERVER_SETTINGS):
                tls.new_server_cert(algo, bits, "", "enable", rest)
            else:
                tls.info(list(_SERVER_HINT))
        elif command == "new-server-key":
            opts, rest = _options(rest, "a:b:", key_usage)
            algo, bits = _algorithm(
                opts, "Unsupported public key algorithm", "Internal error: empty algorithm "
            )
            tls.new_server_cert(algo, bits, "", "", rest)
        elif command == "new-server-cert":
            opts, rest = _options(rest, "a:b:", key_usage)
            algo, bits = _algorithm(
                opts, "Unsupported private key algorithm", "Invalid empty key algorithm"
            )
            oldkey = tls.keyfile(algo)
            if oldkey and not os.path.isfile(oldkey):
                say.warning(f"Key file: {oldkey} not found, creating new keys")
                oldkey = ""
            tls.new_server_cert(algo, bits, oldkey, "", rest)
        elif command == "deploy-server-cert":
            if len(rest) != 2:
                raise Fatal(f"usage: postfix tls {command} certfile keyfile")
            cert, key = (p if p.startswith("/") else f"{tls.confdir}/{p}" for p in rest)
            tls.deploy(cert, key)
            tls.info(tls.deployed("deploy"))
        elif command == "output-server-csr":
            opts, rest = _options(
                rest, "k:", f"usage: postfix tls {command} [-k keyfile] [hostname ...]"
            )
            if "k" in opts:
                key = tls.keyfile(opts["k"])
            else:
                key = next((k for k in map(tls.keyfile, ALGORITHMS) if k), "")
            if not key or not os.access(key, os.R_OK):
                raise Fatal("No usable keyfile specified or configured")
            tls.output_csr(key, rest or [tls.fqdn("")])
        elif command == "output-server-tlsa":
            opts, rest = _options(
                rest, "h:", f"usage: postfix tls {command} [-h hostname] [keyfile ...]"
            )
            tls.output_tlsa(tls.fqdn(opts.get("h", "")), rest)
        elif command in ("all-default-client", "all-default-server"):
            if rest:
                raise Fatal(f"usage: postfix tls {command}")
            names = CLIENT_SETTINGS if command == "all-default-client" else SERVER_SETTINGS
            return 0 if tls.all_default(names) else 1
        else:
            say.error(f"unknown tls command: '{command}'")
            raise Fatal(USAGE)
    except Fatal as e:
        return say.fatal(str(e)) if str(e) else 1
    return 0
