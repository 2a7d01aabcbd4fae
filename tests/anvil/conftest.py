"""The smtpd fixtures the anvil tests use: a running smtpd (with its anvil) and a TLS
certificate."""

from tests.smtpd.conftest import start_smtpd  # noqa: F401
from tests.smtpd.test_tls import cert  # noqa: F401
