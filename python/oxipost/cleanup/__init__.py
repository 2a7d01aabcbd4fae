"""cleanup(8) as a library: header and envelope processing before the spool."""

from oxipost.cleanup.message import cleanup_message
from oxipost.cleanup.state import Cleaned

__all__ = ["Cleaned", "cleanup_message"]
