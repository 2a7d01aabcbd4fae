"""Which master.cf commands oxipost runs as processes, and which it folds into others.

SERVICES maps a master.cf command name to the entry point of the process master starts for
it (`main(ctx: ServiceContext) -> int`). Each service's owner adds its line here.
FOLDED names the Postfix daemons whose work oxipost does inside another process; an entry
for one of them in master.cf is accepted and noted once in the log, never refused.
"""

from __future__ import annotations

# The delivery agents that need root (catalogue 50): master runs them as processes of their
# own, started when qmgr first connects, and an unprivileged qmgr sends them its requests.
PRIVILEGED_AGENTS = ("local", "virtual", "pipe")
# The services master starts when a client first waits on their socket, as Postfix's
# master starts every daemon; each ends after max_idle without work.
ON_DEMAND = (*PRIVILEGED_AGENTS, "showq")

SERVICES: dict[str, str] = {
    "spawn": "oxipost.spawn.service:main",
    "qmgr": "oxipost.qmgr.service:main",
    "smtpd": "oxipost.smtpd.service:main",
    "pickup": "oxipost.pickup.service:main",
    # The privileged delivery agents (catalogue 50): an unprivileged qmgr sends them its
    # requests for these transports; the other agents run inside qmgr. Every pipe service
    # (maildrop, mailman, ...) is a process of its own.
    "local": "oxipost.delivery.service:main",
    "virtual": "oxipost.delivery.service:main",
    "pipe": "oxipost.delivery.service:main",
    # mailq for local users, who cannot read the queue (see oxipost.qmgr.showq).
    "showq": "oxipost.qmgr.showq:main",
    # Connection counts and rates shared by every smtpd process (smtpd_client_*_limit).
    "anvil": "oxipost.anvil.service:main",
    # Address verification (reject_unverified_*): its cache is shared by every smtpd
    # process and fed by qmgr with the outcome of each probe.
    "verify": "oxipost.verify.service:main",
}

# command → where its work happens in oxipost.
FOLDED: dict[str, str] = {
    "cleanup": "smtpd, pickup and qmgr (cleanup is a library)",
    "trivial-rewrite": "smtpd and qmgr (rewrite is a library)",
    "bounce": "qmgr",
    "flush": "qmgr",
    "scache": "qmgr (smtp connection reuse)",
    "tlsmgr": "smtpd and the smtp client (TLS session caching in process)",
    "proxymap": "every process (tables are opened in process)",
    "proxywrite": "every process (tables are opened in process)",
    "postlogd": "every process (each writes maillog_file itself)",
    "dnsblog": "smtpd",
    "tlsproxy": "smtpd",
    "oqmgr": "qmgr",
    # Delivery agents qmgr runs as tasks, threads or subprocesses.
    "smtp": "qmgr (delivery agent)",
    "lmtp": "qmgr (delivery agent)",
    "error": "qmgr (delivery agent)",
    "discard": "qmgr (delivery agent)",
}
