"""cleanup(8) as a library: header and envelope processing before the spool."""

from oxipost.cleanup.message import smtpd_cleanup

__all__ = ["smtpd_cleanup"]
