"""cleanup(8) as a library: header and envelope processing before the spool."""
