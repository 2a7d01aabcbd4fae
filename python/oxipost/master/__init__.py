"""master(8): reads master.cf, binds listeners, forks and supervises the services."""
