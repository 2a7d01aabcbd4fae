"""What master hands a service process: its configuration view, its master.cf entry, its
listening socket, its logger, and its share of the service's process limit.

Signals a service must honour (sent by master):
- SIGTERM: exit now (postfix stop; an orderly session may be cut).
- SIGHUP:  drain: stop accepting, finish the sessions in progress, then exit (postfix
  reload; master has already started the next generation on the same socket).
- SIGUSR1: wake up (the master.cf wakeup column; qmgr and pickup rescan their queues).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from oxipost.config import Config, Service
from oxipost.flow import FlowPipe
from oxipost.log import Logger


@dataclass
class ServiceContext:
    cfg: Config  # main.cf with this service's -o overrides applied
    base: Config  # main.cf and the master.cf master loaded, without this service's overrides
    service: Service  # its master.cf entry
    listen_socket: socket.socket | None  # inet services only: shared by all workers
    log: Logger
    worker: int = 0  # 0 .. workers-1 among the processes of this service
    workers: int = 1
    # Sessions this process may hold at once (its share of maxproc); 0 means no limit.
    max_sessions: int = 0
    # in_flow_delay's token pipe, inherited from master (None when run without master).
    flow: FlowPipe | None = None
    # Tells master this process has served a request (Postfix's MASTER_STAT_AVAIL after a
    # job: master's use_count), so that its death is no bad command startup; idempotent.
    used: Callable[[], None] = field(default=lambda: None)
