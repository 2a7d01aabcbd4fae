"""oxipost._core.mailbox: Maildir and mbox writes; outcomes are (status, permanent, text,
warning), warning "" when the write got past nothing worth one."""

def maildir_deliver(
    path: str,
    prefix: bytes,
    content: bytes,
    hostname: str,
    uid: int | None = None,
    gid: int | None = None,
) -> tuple[str, bool, str, str]:
    """Deliver into the Maildir `path`: tmp (O_EXCL) → fsync → link into new → fsync."""

def mbox_deliver(
    path: str,
    sender: str,
    prefix: bytes,
    content: bytes,
    *,
    fcntl: bool = True,
    flock: bool = False,
    dotlock: bool = True,
    attempts: int = 20,
    delay: float = 1.0,
    stale: float = 500.0,
    char_devices: bool = False,
    dotlock_may_fail: bool = False,
    uid: int | None = None,
    gid: int | None = None,
) -> tuple[str, bool, str, str]:
    """Append to the mbox `path` (From_ line, >From quoting, locks, truncate on error); with
    char_devices, a character device (/dev/null) is written as it is (local's /file); with
    dotlock_may_fail, a dotlock that cannot be made is the warning (local's /file)."""

class MboxLock:
    """The mbox `path` opened and locked as a delivery would (OSError(reason) when it
    cannot be), held until release()."""

    def __init__(
        self,
        path: str,
        *,
        fcntl: bool = True,
        flock: bool = False,
        dotlock: bool = True,
        attempts: int = 20,
        delay: float = 1.0,
        stale: float = 500.0,
    ) -> None: ...
    def release(self) -> None: ...

def resolve_under(base: str, rel: str) -> str:
    """Join a lookup result onto `base`; ValueError(status, text) if it would leave it."""

def maildir_unique_name(hostname: str) -> str:
    """The next unique Maildir base name, time.M<usec>P<pid>Q<n>.host."""

class Pool:
    """Mailbox writes for an event loop: submitted, done by threads, reported by poll()
    when fileno() is readable. Maildir writes go in batches that share one sync; at most
    `threads` mbox writes and `threads` Maildir batches run at once. uid/gid are taken
    only when the process runs as root."""

    def __init__(self, threads: int) -> None: ...
    def submit_maildir(
        self,
        path: str,
        prefix: bytes,
        content: bytes,
        hostname: str,
        uid: int | None = None,
        gid: int | None = None,
    ) -> int:
        """Queue maildir_deliver's write; returns its ticket."""

    def submit_mbox(
        self,
        path: str,
        sender: str,
        prefix: bytes,
        content: bytes,
        *,
        fcntl: bool = True,
        flock: bool = False,
        dotlock: bool = True,
        attempts: int = 20,
        delay: float = 1.0,
        stale: float = 500.0,
        char_devices: bool = False,
        dotlock_may_fail: bool = False,
        uid: int | None = None,
        gid: int | None = None,
    ) -> int:
        """Queue mbox_deliver's write; returns its ticket."""

    def fileno(self) -> int: ...
    def poll(self) -> list[tuple[int, str, bool, str, str]]:
        """(ticket, status, permanent, text, warning) of every write finished since the last
        poll."""

    def close(self) -> None:
        """Finish the writes queued and stop the threads."""
