"""oxipost._core.spool: segment writers with group commit, and segment scans."""

class Writer:
    """Appends framed records to `<directory>/<name>-<seq>.seg`, one fdatasync per batch."""

    def __init__(
        self,
        directory: str,
        name: str,
        seq: int,
        segment_limit: int,
        owner: tuple[int, int] | None = None,
    ) -> None: ...
    def submit(self, payload: bytes) -> int:
        """Queue a record for the next group commit; return its ticket."""
    def set_linger(self, seconds: float) -> None:
        """The least seconds between the starts of two commits (0: commit at once)."""
    def fileno(self) -> int:
        """The eventfd that is readable when completions wait in poll()."""
    def poll(self) -> list[tuple[int, int, int, tuple[int, str] | None]]:
        """(ticket, seq, offset, error) for each record completed since the last poll."""
    def wait(self, ticket: int) -> list[tuple[int, int, int, tuple[int, str] | None]]:
        """Block (GIL released) until `ticket` completed; return completions seen."""
    def close(self) -> None:
        """Commit what is pending and stop the committer thread."""

def scan(
    path: str,
    start: int = 0,
) -> tuple[list[tuple[int, bytes]], tuple[int, int, str] | None, list[tuple[int, int, str]]]:
    """(records [(offset, payload)], tail or None, corrupt [damage]), each damage
    (offset, length, why), reading from `start`: 0, or the end of a record an earlier scan
    returned. The tail has no good record after it: a torn write, a commit in progress, or
    a committed record damaged since."""

def read_record(path: str, offset: int) -> bytes:
    """The payload of the record at `offset`; CorruptError when it fails its checks."""

def frame(payload: bytes) -> bytes:
    """A payload framed as stored: [u32 len][u32 crc32c][payload]."""
