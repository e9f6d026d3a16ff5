#!/usr/bin/python3
"""smtp_peer: a configurable SMTP server for tests of Postern's SMTP client
and delivery code. Loopback only, asyncio with a raw Protocol, stdlib only.

Run:  /usr/bin/python3 tests/tools/smtp_peer.py [--json '{...}'] [flags]
It prints "READY <port>" on stdout (flushed) once listening, and runs until
SIGTERM/SIGINT. Every option can be given in the JSON object (key as below)
or as a flag (--key-with-dashes VALUE); flags win over JSON.

Options (defaults in brackets):
  port           TCP port, 0 picks a free one [0]
  host           listen address [127.0.0.1]
  banner         greeting; "\n" separates lines of a multi-line reply
                 [220 peer.test ESMTP smtp_peer]
                 e.g. "452 4.3.1 Insufficient system resources", or masked
                 by a firewall: "220 ****2***0**"
  ehlo           EHLO keywords, list or comma-separated string
                 [PIPELINING,SIZE 10240000,8BITMIME,SMTPUTF8,DSN,
                 ENHANCEDSTATUSCODES]; "XXXXXXXA" mimics a masked keyword
  ehlo_reply     replace the whole EHLO reply, e.g. "421 4.3.2 busy" or
                 "502 5.5.1 EHLO not supported" [none]
  no_ehlo        true: EHLO gets "502 5.5.2 Error: command not recognized",
                 only HELO works [false]
  helo_reply     [250 peer.test]
  starttls       offer STARTTLS (needs cert and key) [false]
  cert, key      PEM files for STARTTLS
  starttls_reply replace the 220 to STARTTLS, e.g. "454 4.7.0 TLS not
                 available" (then no TLS) [none]
  inject         text sent right after the 220 to STARTTLS, in the same
                 write, before the handshake (CVE-2021-38371 tests); "\n"
                 becomes CRLF [none]
  mail_reply     [250 2.1.0 Ok]
  rcpt_reply     default RCPT reply [250 2.1.5 Ok]
  rcpt_replies   per recipient address: {"a@b": "550 5.1.1 no such user"}
  data_reply     [354 End data with <CR><LF>.<CR><LF>]
  dot_reply      [250 2.0.0 Ok: queued]
  rset_reply     [250 2.0.0 Ok]
  stall          never answer from this stage on (keep reading):
                 banner|ehlo|helo|starttls|mail|rcpt|data|dot|rset|quit
  reset          close the connection (TCP RST) at this stage instead of
                 answering: banner|ehlo|helo|starttls|mail|rcpt|data|body|
                 dot; "body" resets after reset_after bytes of message data
  reset_after    octets of message data before a "body" reset [1000]
  record         JSON-lines file appended to: one {"type":"connect",...}
                 per connection and one {"type":"message",...} per message
                 (envelope and base64 body) [none]
  dump_dir       directory: each message's exact body (after dot-unstuffing,
                 line ends as received) written to msg-<n>.eml [none]

A "message" record: {"type":"message","n":N,"conn":C,"tls":bool,
"helo":"...","mail_from":"...","mail_params":"...","rcpts":[accepted...],
"size":bytes,"bare_lf":bool,"acked":bool,"body_b64":"..."}; "bare_lf"
is true when a data line ended in LF without CR; "acked" is false when
the reply to "." was withheld (stall/reset at dot). Keys are written in this order with
compact separators, so a C test may match substrings.
"""
import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import struct
import sys

DEFAULTS = {
    "port": 0,
    "host": "127.0.0.1",
    "banner": "220 peer.test ESMTP smtp_peer",
    "ehlo": ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN",
             "ENHANCEDSTATUSCODES"],
    "ehlo_reply": None,
    "no_ehlo": False,
    "helo_reply": "250 peer.test",
    "starttls": False,
    "cert": None,
    "key": None,
    "starttls_reply": None,
    "inject": None,
    "mail_reply": "250 2.1.0 Ok",
    "rcpt_reply": "250 2.1.5 Ok",
    "rcpt_replies": {},
    "data_reply": "354 End data with <CR><LF>.<CR><LF>",
    "dot_reply": "250 2.0.0 Ok: queued",
    "rset_reply": "250 2.0.0 Ok",
    "stall": None,
    "reset": None,
    "reset_after": 1000,
    "record": None,
    "dump_dir": None,
}

MAX_LINE = 4096  # a client line longer than this is refused (and ends the session)


def wire(reply):
    """A reply string with "\\n" between lines, as bytes with CRLFs."""
    return b"".join(line.encode("utf-8", "surrogateescape") + b"\r\n"
                    for line in reply.split("\n"))


class Peer:
    """Server-wide state: options, counters, the record file."""

    def __init__(self, opts):
        self.o = opts
        self.conns = 0
        self.messages = 0
        self.tls_ctx = None
        if opts["starttls"]:
            self.tls_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_ctx.load_cert_chain(opts["cert"], opts["key"])

    def record(self, obj):
        if self.o["record"]:
            with open(self.o["record"], "a", encoding="utf-8") as f:
                f.write(json.dumps(obj, separators=(",", ":")) + "\n")


class Session(asyncio.Protocol):
    """One SMTP session: line mode, or data mode between DATA and "."."""

    def __init__(self, peer):
        self.peer = peer
        self.o = peer.o
        self.buf = b""
        self.mode = "cmd"  # cmd | data | tls | dead
        self.stalled = False
        self.tls = False
        self.helo = ""
        self.reset_tx()

    def reset_tx(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []
        self.body = bytearray()
        self.bare_lf = False

    # -- plumbing --------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.peer.conns += 1
        self.conn = self.peer.conns
        self.peer.record({"type": "connect", "conn": self.conn})
        if self.at("banner"):
            return
        self.send(self.o["banner"])

    def connection_lost(self, exc):
        self.mode = "dead"

    def send(self, reply):
        if self.mode != "dead":
            self.transport.write(wire(reply))

    def rst(self):
        """Close with a TCP reset: SO_LINGER 0, then abort."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()
        self.mode = "dead"

    def at(self, stage):
        """Apply stall/reset for a stage; True if the normal reply is off."""
        if self.stalled:
            return True
        if self.o["stall"] == stage:
            self.stalled = True
            return True
        if self.o["reset"] == stage:
            self.rst()
            return True
        return False

    def data_received(self, data):
        if self.mode == "dead":
            return
        if self.mode == "tls":
            # decrypted data that arrived before start_tls() resumed us (a
            # TLS 1.3 client sends EHLO with its Finished): keep it for then.
            # Plain text after STARTTLS never gets here: reading was paused.
            self.buf += data
            return
        self.buf += data
        while self.mode in ("cmd", "data"):
            if self.mode == "data" and self.o["reset"] == "body" and \
                    len(self.body) + len(self.buf) >= int(self.o["reset_after"]):
                self.rst()
                return
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE and self.mode == "cmd":
                    self.send("500 5.5.2 line too long")
                    self.transport.close()
                    self.mode = "dead"
                return
            line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
            if self.mode == "data":
                self.data_line(line)
            else:
                self.command(line.rstrip(b"\r\n"))

    # -- data ---------------------------------------------------------------
    def data_line(self, line):
        if not line.endswith(b"\r\n"):
            self.bare_lf = True
        if line.rstrip(b"\r\n") == b".":
            self.mode = "cmd"
            self.end_of_data()
            return
        if line.startswith(b"."):
            line = line[1:]  # RFC 5321 4.5.2 transparency
        self.body += line

    def end_of_data(self):
        self.peer.messages += 1
        n = self.peer.messages
        body = bytes(self.body)
        if self.o["dump_dir"]:
            with open(os.path.join(self.o["dump_dir"], "msg-%d.eml" % n), "wb") as f:
                f.write(body)
        acked = not self.at("dot")
        self.peer.record({
            "type": "message", "n": n, "conn": self.conn, "tls": self.tls,
            "helo": self.helo, "mail_from": self.mail_from,
            "mail_params": self.mail_params, "rcpts": self.rcpts,
            "size": len(body), "bare_lf": self.bare_lf, "acked": acked,
            "body_b64": base64.b64encode(body).decode("ascii")})
        if acked:
            self.send(self.o["dot_reply"])
        self.reset_tx()

    # -- commands --------------------------------------------------------------
    def command(self, raw):
        text = raw.decode("utf-8", "surrogateescape")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
        if self.stalled:
            return
        if handler is None:
            self.send("502 5.5.2 Error: command not recognized")
            return
        handler(arg)

    def cmd_ehlo(self, arg):
        if self.at("ehlo"):
            return
        if self.o["no_ehlo"]:
            self.send("502 5.5.2 Error: command not recognized")
            return
        if self.o["ehlo_reply"]:
            self.send(self.o["ehlo_reply"])
            return
        self.helo = arg
        self.reset_tx()
        kws = self.o["ehlo"]
        if isinstance(kws, str):
            kws = [k for k in kws.split(",") if k]
        kws = list(kws)
        if self.peer.tls_ctx is not None and not self.tls:
            kws.append("STARTTLS")
        lines = ["peer.test"] + kws
        self.send("\n".join(("250-" if i < len(lines) - 1 else "250 ") + l
                            for i, l in enumerate(lines)))

    def cmd_helo(self, arg):
        if self.at("helo"):
            return
        self.helo = arg
        self.reset_tx()
        self.send(self.o["helo_reply"])

    def cmd_starttls(self, arg):
        if self.at("starttls"):
            return
        if self.peer.tls_ctx is None or self.tls:
            self.send("502 5.5.1 STARTTLS not available")
            return
        if self.o["starttls_reply"]:
            self.send(self.o["starttls_reply"])
            return
        # stop reading first: no byte may reach us between here and TLS
        self.transport.pause_reading()
        self.buf = b""
        out = wire("220 2.0.0 Ready to start TLS")
        if self.o["inject"]:
            out += wire(self.o["inject"])
        self.transport.write(out)
        self.mode = "tls"
        asyncio.get_running_loop().create_task(self.start_tls())

    async def start_tls(self):
        loop = asyncio.get_running_loop()
        try:
            tr = await loop.start_tls(self.transport, self, self.peer.tls_ctx, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError):
            self.mode = "dead"
            return
        if tr is None:
            self.mode = "dead"
            return
        self.transport = tr
        self.tls = True
        self.helo = ""
        self.reset_tx()
        self.mode = "cmd"
        if self.buf:
            self.data_received(b"")

    def cmd_mail(self, arg):
        if self.at("mail"):
            return
        if not arg.upper().startswith("FROM:<"):
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        addr, _, params = arg[6:].partition(">")
        reply = self.o["mail_reply"]
        if reply.startswith("2"):
            self.reset_tx()
            self.mail_from = addr
            self.mail_params = params.strip()
        self.send(reply)

    def cmd_rcpt(self, arg):
        if self.at("rcpt"):
            return
        if not arg.upper().startswith("TO:<"):
            self.send("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        addr = arg[4:].partition(">")[0]
        if self.mail_from is None:
            self.send("503 5.5.1 Error: need MAIL command")
            return
        reply = self.o["rcpt_replies"].get(addr, self.o["rcpt_reply"])
        if reply.startswith("2"):
            self.rcpts.append(addr)
        self.send(reply)

    def cmd_data(self, arg):
        if self.at("data"):
            return
        if self.mail_from is None or not self.rcpts:
            self.send("503 5.5.1 Error: need RCPT command")
            return
        reply = self.o["data_reply"]
        self.send(reply)
        if reply.startswith("354"):
            self.mode = "data"

    def cmd_rset(self, arg):
        if self.at("rset"):
            return
        self.reset_tx()
        self.send(self.o["rset_reply"])

    def cmd_noop(self, arg):
        self.send("250 2.0.0 Ok")

    def cmd_quit(self, arg):
        if self.at("quit"):
            return
        self.send("221 2.0.0 Bye")
        self.transport.close()
        self.mode = "dead"


def parse_options(argv):
    ap = argparse.ArgumentParser(description="configurable test SMTP server")
    ap.add_argument("--json", help="options as one JSON object")
    for key, val in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(val, bool):
            ap.add_argument(flag, dest=key, action="store_const", const=True, default=None)
        elif isinstance(val, dict):
            ap.add_argument(flag, dest=key, type=json.loads, default=None)
        else:
            ap.add_argument(flag, dest=key, default=None)
    ns = ap.parse_args(argv)
    opts = dict(DEFAULTS)
    if ns.json:
        extra = json.loads(ns.json)
        unknown = set(extra) - set(DEFAULTS)
        if unknown:
            ap.error("unknown options: %s" % ", ".join(sorted(unknown)))
        opts.update(extra)
    for key in DEFAULTS:
        v = getattr(ns, key)
        if v is not None:
            opts[key] = v
    opts["port"] = int(opts["port"])
    return opts


async def main(argv):
    opts = parse_options(argv)
    peer = Peer(opts)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Session(peer), opts["host"], opts["port"],
                                      reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print("READY %d" % port, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
