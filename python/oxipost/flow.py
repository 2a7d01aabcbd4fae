"""mail_flow - global mail flow control (in_flow_delay): tokens that qmgr produces and the
receiving side consumes, one per message.

As Postfix's src/global/mail_flow.c: master creates one pipe before it starts any service
and every service inherits both ends (`--flow-fds R,W`). A token is one byte in the pipe.

- qmgr (FlowProducer.refill, once per turn of its loop, as qmgr_loop does): while mail is
  left in the incoming queue because the active queue is full (qmgr_message_active_limit),
  it adds one token per message it moves into the active queue; once no incoming mail
  waits, it tops the pipe up to default_process_limit tokens. It never lets more than that
  pile up.
- Postfix's cleanup takes one token per message, whatever submitted it; oxipost's runs
  inside the receiving process, which takes the token where cleanup would. smtpd
  (FlowGate.take: when the transaction's queue file would be opened, at the first
  accepted RCPT, or at MAIL when smtpd_delay_open_until_valid_rcpt = no): with none there
  it waits up to in_flow_delay for one, then goes on anyway, so receiving slows down to
  the pace of the queue manager but never stops. pickup (FlowGate.take_blocking, for each
  maildrop file): with none there it sleeps in_flow_delay, as Postfix's single-threaded
  cleanup server does.
- A message cleanup puts on hold never enters the incoming queue that qmgr pays tokens
  for: its receiver gives the token back at once (FlowGate.give_back), as Postfix's
  cleanup does (discarded mail keeps it, as there).

`in_flow_delay = 0` turns the mechanism off on both sides. Without master (a qmgr or smtpd
run alone, the tests' in-process servers) there is no pipe and no flow control.

Diagnostics: none, as in Postfix (nothing is logged per message).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import fcntl
import os
import termios
import time

from oxipost.config import Config

_ZEROS = bytes(4096)


class FlowPipe:
    """Both ends of the token pipe, non-blocking (the flag is shared by every process that
    inherited them: all of them want it)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd

    @classmethod
    def create(cls) -> FlowPipe:
        """A new pipe (master, once at start; reloads keep it)."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return cls(r, w)

    @classmethod
    def from_arg(cls, arg: str) -> FlowPipe:
        """The pipe a service inherited, from its `--flow-fds R,W` argument."""
        r, _, w = arg.partition(",")
        return cls(int(r), int(w))

    @property
    def arg(self) -> str:
        return f"{self.read_fd},{self.write_fd}"

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def count(self) -> int:
        """Tokens in the pipe now."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.read_fd, termios.FIONREAD, buf)
        return buf[0]

    def get(self, n: int) -> int:
        """Take up to n tokens; returns how many were taken (0 when there were none)."""
        try:
            return len(os.read(self.read_fd, n))
        except (BlockingIOError, InterruptedError):
            return 0

    def put(self, n: int) -> int:
        """Add up to n tokens (fewer when the pipe is full); returns how many went in."""
        done = 0
        while done < n:
            try:
                done += os.write(self.write_fd, _ZEROS[: min(n - done, len(_ZEROS))])
            except (BlockingIOError, InterruptedError):
                break
        return done

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class FlowProducer:
    """qmgr's side: keeps tokens coming while the queue manager keeps up."""

    def __init__(self, pipe: FlowPipe | None, cfg: Config) -> None:
        self.pipe = pipe if cfg.get_time("in_flow_delay") > 0 else None
        self.limit = cfg.get_int("default_process_limit")

    def refill(self, fed: int, incoming_waiting: bool) -> None:
        """After a turn of qmgr's loop: `fed` messages moved from the incoming queue into
        the active queue, `incoming_waiting` when incoming mail is left there because the
        active queue is full (Postfix: the incoming scan is not finished)."""
        if self.pipe is None:
            return
        count = self.pipe.count()
        if count < self.limit:
            if incoming_waiting:
                if fed:
                    self.pipe.put(min(fed, self.limit - count))
            else:
                self.pipe.put(self.limit - count)
        elif count > self.limit:
            self.pipe.get(count - self.limit)


class FlowGate:
    """The receiving side (smtpd, pickup): one token per message, waiting at most
    in_flow_delay for it."""

    def __init__(self, pipe: FlowPipe | None, cfg: Config) -> None:
        self.delay = cfg.get_time("in_flow_delay")
        self.pipe = pipe if self.delay > 0 else None
        # Sessions of this process waiting for a token, first come first served.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._watching = False

    async def take(self) -> None:
        """Return when a token was taken, or after in_flow_delay without one."""
        if self.pipe is None or (not self._waiters and self.pipe.get(1)):
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if not self._watching:
            loop.add_reader(self.pipe.read_fd, self._readable)
            self._watching = True
        try:
            async with asyncio.timeout(self.delay):
                await fut
        except TimeoutError:
            pass  # slowed down, never stopped: the message goes on without a token
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            if not self._waiters:
                self._unwatch()

    def take_blocking(self) -> None:
        """take() for a process without an event loop (pickup): a token, or in_flow_delay
        asleep without one (Postfix's cleanup dozes, it does not wait for a token)."""
        if self.pipe is not None and not self.pipe.get(1):
            time.sleep(self.delay)

    def give_back(self) -> None:
        """The token of a message that cleanup put on hold: it never enters the incoming
        queue, so qmgr will not put one back for it (Postfix's cleanup: mail_flow_put)."""
        if self.pipe is not None:
            self.pipe.put(1)

    def _readable(self) -> None:
        assert self.pipe is not None
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            # Other processes watch the same pipe: a token seen may be gone already.
            if not self.pipe.get(1):
                return
            self._waiters.popleft().set_result(None)
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watching and self.pipe is not None:
            asyncio.get_running_loop().remove_reader(self.pipe.read_fd)
            self._watching = False
