"""anvil(8): session count and request rate control, shared by every smtpd process.

service.py is the server master runs for `anvil unix - - n - 1 anvil`; client.py is what
smtpd uses to talk to it (Postfix's anvil_clnt). The protocol is Postfix's plain attribute
stream on $queue_directory/private/anvil: a request is `request=NAME`, `ident=SERVICE:ADDR`
and an empty line; a reply is `status=0` with count/rate attributes and an empty line.
"""
