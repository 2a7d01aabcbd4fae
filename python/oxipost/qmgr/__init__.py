"""qmgr(8): drives the Rust scheduler and the delivery agents."""
