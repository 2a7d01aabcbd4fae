"""A milter built on Sendmail's libmilter (Debian's python3-milter), for the tests.

Run by Debian's /usr/bin/python3 (the venv has no libmilter): `libmilter_app.py SOCKET
RULES RECORD`. SOCKET is libmilter's form (unix:/path or inet:PORT@127.0.0.1); RULES a JSON
file of what to answer; RECORD a file where each callback appends one JSON line: the
event, its arguments and the macros the MTA sent for it, so that a test can compare what
Postfix and oxipost tell a milter.

RULES keys (each optional): "connect", "helo", "mail", "rcpt", "data", "eom": a decision
for that stage, ["reject"|"tempfail"|"discard"|"accept"] or [CODE, XCODE, TEXT] (a
setreply and REJECT/TEMPFAIL by the code's first digit); "rcpt" and "mail" take a dict of
address -> decision instead, "connect" one of client name -> decision. "edits": a list of
end-of-message modifications, each [ACTION, ARGS...] with ACTION one of addheader,
insheader, chgheader, addrcpt, delrcpt, chgfrom, replacebody, quarantine (addrcpt and
chgfrom take ESMTP parameters as a second argument: SMFIR_ADDRCPT_PAR and CHGFROM's).
"rcpt_rej": true asks the MTA for the recipients it refused too (SMFIP_RCPT_REJ).
"""

import json
import sys

import Milter

MACROS = {
    "connect": ["j", "{daemon_name}", "{daemon_addr}", "v", "_", "{client_addr}"],
    "helo": ["{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"],
    "mail": [
        "i",
        "{auth_type}",
        "{auth_authen}",
        "{auth_author}",
        "{mail_addr}",
        "{mail_host}",
        "{mail_mailer}",
    ],
    "rcpt": ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
    "data": ["i"],
    "eoh": ["i"],
    "eom": ["i"],
}

socket_name, rules_path, record_path = sys.argv[1:4]
with open(rules_path) as f:
    RULES = json.load(f)


def record(event, *args):
    with open(record_path, "a") as f:
        f.write(json.dumps([event, *args]) + "\n")


class App(Milter.Base):
    def __init__(self):
        self.id = Milter.uniqueID()

    def _macros(self, stage):
        out = {}
        for name in MACROS[stage]:
            value = self.getsymval(name)
            if value is not None:
                out[name] = value
        return out

    def _decide(self, stage, key=None):
        rule = RULES.get(stage)
        if isinstance(rule, dict):
            rule = rule.get(key)
        if not rule:
            return Milter.CONTINUE
        if len(rule) == 3:
            self.setreply(*rule)
            return Milter.TEMPFAIL if rule[0].startswith("4") else Milter.REJECT
        return {
            "reject": Milter.REJECT,
            "tempfail": Milter.TEMPFAIL,
            "discard": Milter.DISCARD,
            "accept": Milter.ACCEPT,
        }[rule[0]]

    def connect(self, hostname, family, hostaddr):
        record("connect", hostname, str(hostaddr[0]) if hostaddr else None, self._macros("connect"))
        return self._decide("connect", hostname)

    def hello(self, name):
        record("helo", name, self._macros("helo"))
        return self._decide("helo")

    def envfrom(self, sender, *params):
        record("mail", sender, list(params), self._macros("mail"))
        return self._decide("mail", sender)

    def envrcpt(self, rcpt, *params):
        record("rcpt", rcpt, list(params), self._macros("rcpt"))
        return self._decide("rcpt", rcpt)

    def data(self):
        record("data", self._macros("data"))
        return self._decide("data")

    def header(self, name, value):
        record("header", name, value)
        return Milter.CONTINUE

    def eoh(self):
        record("eoh", self._macros("eoh"))
        return Milter.CONTINUE

    def body(self, chunk):
        record("body", chunk.decode("utf-8", "replace"))
        return Milter.CONTINUE

    def eom(self):
        record("eom", self._macros("eom"))
        for action, *args in RULES.get("edits", []):
            if action == "replacebody":
                self.replacebody(args[0].encode())
            else:
                getattr(self, action)(*args)
        return self._decide("eom")

    def abort(self):
        record("abort")
        return Milter.CONTINUE

    def close(self):
        record("close")
        return Milter.CONTINUE


if __name__ == "__main__":
    if RULES.get("rcpt_rej"):
        App = Milter.enable_protocols(App, Milter.P_RCPT_REJ)
    Milter.factory = App
    Milter.set_flags(
        Milter.ADDHDRS
        | Milter.CHGHDRS
        | Milter.ADDRCPT
        | Milter.DELRCPT
        | Milter.CHGBODY
        | Milter.QUARANTINE
        | Milter.CHGFROM
        | Milter.ADDRCPT_PAR
    )
    print("ready", flush=True)
    Milter.runmilter("oxipost-test", socket_name, 30)
