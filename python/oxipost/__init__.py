"""oxipost: a Postfix-compatible mail transfer agent with a Rust core.

The package mirrors Postfix's daemons, one subpackage per role: config (main.cf,
master.cf, the parameter registry), master, smtpd, cleanup, rewrite
(trivial-rewrite), qmgr, delivery (local, virtual, smtp, lmtp, pipe, error,
discard), bounce, pickup, maps (dict_*), cli (the administrator's commands).
"""

__version__ = "0.1.0"
