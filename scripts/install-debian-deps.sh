#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks talk to, once: a second run
# that finds them all installed does nothing. Needs root (CI and the dev machines are).
# `install-debian-deps.sh python` installs only the interpreter the venv is made from
# (what `make run` needs).
set -euo pipefail

python_packages=(
  python3.11 python3.11-venv         # Debian's PGO/LTO build: the interpreter of the venv
)
packages=(
  "${python_packages[@]}"
  postfix postfix-pcre postfix-cdb   # the reference: postconf -d, postmap -q, smtp-source/sink
  postfix-sqlite                     # sqlite: tables (sqlite_table(5)), compared with postmap -q
  postfix-lmdb                       # the reference for lmdb: tables (files both read)
  swaks                              # the SMTP client a user would type
  libnet-ssleay-perl libio-socket-ssl-perl  # swaks --tls (Debian only recommends them)
  bsd-mailx                          # `mail -s` through our sendmail (issue 6)
  dovecot-core dovecot-imapd         # SASL over its auth socket; IMAP reading our Maildirs
  dovecot-lmtpd                      # the LMTP server local(8) passes mail to (mailbox_transport)
  pflogsumm                          # reads our log lines unchanged
  openssl                            # certificates for the TLS tests
  util-linux                         # flock (build lock), mount (the full-disk tests)
  strace                             # proves fdatasync happens before the 250 (catalogue 1)
  opendkim opendkim-tools            # a real milter: DKIM signing and verifying (tests/milter)
  python3-milter                     # libmilter for Debian's python3: the tests' own milters
)

[ "${1:-}" = python ] && packages=("${python_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-debian-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix's package asks how to configure itself: we want the binaries, not a running system MTA.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
