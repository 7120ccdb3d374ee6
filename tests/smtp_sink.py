"""A real SMTP server for the email tests (aiosmtpd), on 127.0.0.1.

Usage: python3 tests/smtp_sink.py DIR

Binds a free port and prints `ready PORT`. Each accepted message is saved as
DIR/NNNN.json (envelope, decoded headers and both bodies, plus the raw
message) and announced with a line `saved PATH`. Recipients whose local part
starts with `reject` get `550`, with `tempfail` get `451`. Exits when its
standard input closes (the test holding it ended).
"""

import asyncio
import email
import email.policy
import itertools
import json
import os
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError:
    sys.stderr.write(
        "smtp_sink: the Python package aiosmtpd is missing; "
        "install it with `python3 -m pip install aiosmtpd` (scripts/test does)\n"
    )
    sys.exit(3)


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if local.startswith("tempfail"):
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        plain = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "subject": str(message.get("Subject", "")),
            "message_id": str(message.get("Message-ID", "")),
            "in_reply_to": str(message.get("In-Reply-To", "")),
            "references": str(message.get("References", "")),
            "content_type": message.get_content_type(),
            "text": plain.get_content() if plain is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw.decode("utf-8", "replace"),
        }
        path = os.path.join(self.directory, "%04d.json" % next(self.counter))
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(path + ".tmp", path)
        print("saved " + path, flush=True)
        return "250 2.0.0 Message accepted for delivery"


async def main(directory):
    loop = asyncio.get_running_loop()
    handler = Sink(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp-sink.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print("ready %d" % port, flush=True)
    # Stop when the test closes our stdin (or exits).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: smtp_sink.py DIR\n")
        sys.exit(2)
    asyncio.run(main(sys.argv[1]))
