"""trivial-rewrite(8): address rewriting and resolution to transport:nexthop."""
