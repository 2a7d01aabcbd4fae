"""verify(8): address verification (reject_unverified_recipient, reject_unverified_sender).

See oxipost.verify.service (the server and its cache) and oxipost.verify.client (what smtpd
and qmgr ask it). routing(cfg) is the configuration a probe is routed with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from oxipost.config import Config

# What trivial-rewrite resolves a probe with instead (Postfix's resolve_verify): each
# address_verify_* parameter in place of the routing parameter it overrides.
ROUTING = {
    "local_transport": "address_verify_local_transport",
    "virtual_transport": "address_verify_virtual_transport",
    "relay_transport": "address_verify_relay_transport",
    "default_transport": "address_verify_default_transport",
    "sender_dependent_default_transport_maps": (
        "address_verify_sender_dependent_default_transport_maps"
    ),
    "relayhost": "address_verify_relayhost",
    "sender_dependent_relayhost_maps": "address_verify_sender_dependent_relayhost_maps",
    "transport_maps": "address_verify_transport_maps",
}


def routing(cfg: Config) -> Config:
    """cfg as a probe is routed: with the address_verify_* routing parameters' values (by
    default the very parameters they override), made once per configuration."""
    view = cfg.derived.get("verify-routing")
    if view is None:
        from oxipost.config import Config

        overrides = dict(cfg.overrides)
        overrides.update((name, cfg.get(probe)) for name, probe in ROUTING.items())
        view = Config(cfg.config_dir, cfg.settings, cfg.services, overrides)
        cfg.derived["verify-routing"] = view
    return cast("Config", view)
