"""showq(8): the queue listing behind mailq / postqueue -p and postqueue -j, in Postfix's
layouts (postqueue(1), showq_compat and showq_json)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from oxipost.qmgr.queue import MessageInfo, QueueState

HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
# Postfix right-aligns a deferral reason to this column and indents recipients to 41.
REASON_COLUMN = 78
RECIPIENT_INDENT = 41
STATUS = {"active": "*", "hold": "!"}
# The order postqueue walks the queues in.
ORDER = ("incoming", "active", "deferred", "hold", "corrupt")


def _sender(info: MessageInfo) -> str:
    return info.sender or "MAILER-DAEMON"


def listed(state: QueueState) -> list[MessageInfo]:
    out: list[MessageInfo] = []
    for queue in ORDER:
        out.extend(sorted(state.in_queue(queue), key=lambda i: (i.arrival_time, i.queue_id)))
    return out


def compat_lines(state: QueueState) -> Iterator[str]:
    """postqueue -p / mailq output, line by line."""
    messages = listed(state)
    if not messages:
        yield "Mail queue is empty"
        return
    yield HEADER
    total = 0
    for info in messages:
        total += info.size
        stamp = time.asctime(time.localtime(info.arrival_time))[:20]
        ident = info.queue_id + STATUS.get(info.state, " ")
        yield f"{ident:<11} {info.size:>7} {stamp} {_sender(info)}"
        if info.reason:
            reason = f"({info.reason})"
            yield " " * max(0, REASON_COLUMN - len(reason)) + reason
        for _i, rcpt in info.pending:
            yield " " * RECIPIENT_INDENT + rcpt.address
        yield ""
    count = len(messages)
    yield f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}."


def json_lines(state: QueueState) -> Iterator[str]:
    """postqueue -j output: one JSON object per message."""
    for info in listed(state):
        recipients: list[dict[str, str]] = []
        for _i, rcpt in info.pending:
            entry = {"address": rcpt.address}
            if info.reason:
                entry["delay_reason"] = info.reason
            recipients.append(entry)
        obj = {
            "queue_name": info.state,
            "queue_id": info.queue_id,
            "arrival_time": int(info.arrival_time),
            "message_size": info.size,
            "forced_expire": False,
            "sender": _sender(info),
            "recipients": recipients,
        }
        yield json.dumps(obj)
