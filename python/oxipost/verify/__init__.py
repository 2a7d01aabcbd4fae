"""verify(8): address verification (reject_unverified_recipient, reject_unverified_sender).

See oxipost.verify.service (the server and its cache) and oxipost.verify.client (what smtpd
and qmgr ask it).
"""
