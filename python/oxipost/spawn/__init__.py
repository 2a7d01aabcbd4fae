"""spawn(8): run an external command for each connection, its stdin/stdout the socket."""
