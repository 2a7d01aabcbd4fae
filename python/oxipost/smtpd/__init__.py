"""smtpd(8): the SMTP server, its restrictions, SASL and TLS."""
