#!/usr/bin/python3
"""dns_server: a small authoritative DNS server for Postern's tests.

Run with the system python (it needs python3-dnslib):

    /usr/bin/python3 tests/tools/dns_server.py --port 0 --zone zone.json [--log queries.log]

It listens on UDP and TCP 127.0.0.1:<port> (--port 0 picks a free port that
is free for both), prints "READY <port>" on stdout once both are bound, and
answers every query from the JSON file. The file is re-read whenever its
mtime, size or inode changes (checked on each query), so a test can change
answers on the fly; write it to a temporary name and rename() it over.

Every query is logged as one line "<name> <TYPE>" (name lower-cased, no
trailing dot) to --log (appended and flushed at once) or to stderr, so a
test can count what reached the server (e.g. to check caching).

JSON format:

    {
      "zone": "test",                  SOA owner for negative answers [test]
      "soa": {"ttl": 3600, "minimum": 60},   [ttl 3600, minimum 60]
      "names": {
        "host.test": {
          "ttl": 300,                  default TTL of this name's records [300]
          "A":     ["192.0.2.1", {"value": "192.0.2.2", "ttl": 5}],
          "AAAA":  ["2001:db8::1"],
          "MX":    ["10 mx1.test", "20 mx2.test"],   "0 ." is a null MX
          "PTR":   ["host.test"],
          "TXT":   ["v=spf1 -all", ["two", "strings"]], a list = several
                                       character-strings of one record;
                                       strings over 255 octets are split
          "CNAME": "target.test",      answered for every type, followed
                                       inside this file
          "rcode": "NXDOMAIN",         or "SERVFAIL", "REFUSED" (all types)
          "drop": true,                never answer (client timeout)
          "delay_ms": 500,             answer after a delay; other queries
                                       are not held up (a thread per query)
          "no_soa": true,              negative answers without SOA
          "types": {"AAAA": {"rcode": "SERVFAIL", "drop": ..., "delay_ms": ...}}
                                       per-type overrides of rcode/drop/delay_ms
        }
      }
    }

Answers: a listed name without records of the asked type gets NOERROR with
no answer (NODATA) and the SOA in authority; a name not listed gets
NXDOMAIN with the SOA in authority (minimum 60 by default). UDP answers
larger than 512 octets (or the EDNS size the query offered) are truncated
(TC set), so clients retry over TCP.
"""

import argparse
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

RTYPES = {"A": QTYPE.A, "AAAA": QTYPE.AAAA, "MX": QTYPE.MX, "PTR": QTYPE.PTR, "TXT": QTYPE.TXT}
RCODES = {"NXDOMAIN": RCODE.NXDOMAIN, "SERVFAIL": RCODE.SERVFAIL, "REFUSED": RCODE.REFUSED,
          "NOERROR": RCODE.NOERROR, "FORMERR": RCODE.FORMERR}
MAX_CNAME = 8  # chains in test data are short; stops a CNAME loop in the file


class Zone:
    """The JSON file, reloaded when it changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.data = {}
        self.lock = threading.Lock()

    def get(self):
        with self.lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp != self.stamp:
                    with open(self.path, encoding="utf-8") as f:
                        self.data = json.load(f)
                    self.stamp = stamp
            except (OSError, ValueError) as e:
                print(f"dns_server: {self.path}: {e}", file=sys.stderr, flush=True)
            return self.data


class QueryLog:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", encoding="utf-8") if path else sys.stderr

    def write(self, name, qtype):
        with self.lock:
            self.f.write(f"{name} {qtype}\n")
            self.f.flush()


def norm(name):
    return str(name).rstrip(".").lower()


def make_rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, host = value.split(None, 1)
        return MX(host, int(pref))
    if rtype == "PTR":
        return PTR(value)
    strings = value if isinstance(value, list) else [value]
    chunks = []
    for s in strings:
        b = s.encode("utf-8")
        chunks += [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
    return TXT(chunks)


def add_records(reply, owner, node, rtype):
    """Append node's records of rtype; returns how many."""
    count = 0
    for rec in node.get(rtype, []):
        value, ttl = rec, node.get("ttl", 300)
        if isinstance(rec, dict):
            value, ttl = rec["value"], rec.get("ttl", ttl)
        reply.add_answer(RR(owner, RTYPES[rtype], rdata=make_rdata(rtype, value), ttl=ttl))
        count += 1
    return count


def add_soa(reply, data, node):
    if node is not None and node.get("no_soa"):
        return
    soa = data.get("soa", {})
    zone = data.get("zone", "test")
    times = (1, 3600, 600, 86400, soa.get("minimum", 60))
    reply.add_auth(RR(zone, QTYPE.SOA, rdata=SOA("ns." + zone, "hostmaster." + zone, times),
                      ttl=soa.get("ttl", 3600)))


def setting(node, qtype, key):
    per_type = node.get("types", {}).get(qtype, {})
    return per_type.get(key, node.get(key))


def resolve(data, request):
    """Build the reply; None means drop. Also returns the delay in seconds."""
    names = data.get("names", {})
    q = request.q
    qname, qtype = norm(q.qname), QTYPE.get(q.qtype)
    node = names.get(qname)
    reply = request.reply()
    if node is None:
        reply.header.rcode = RCODE.NXDOMAIN
        add_soa(reply, data, None)
        return reply, 0
    if setting(node, qtype, "drop"):
        return None, 0
    delay = (setting(node, qtype, "delay_ms") or 0) / 1000.0
    rcode = setting(node, qtype, "rcode")
    if rcode:
        reply.header.rcode = RCODES[rcode]
        if rcode == "NXDOMAIN":
            add_soa(reply, data, node)
        return reply, delay
    owner = q.qname
    for _ in range(MAX_CNAME):
        if "CNAME" not in node or qtype == "CNAME":
            break
        target = node["CNAME"]
        reply.add_answer(RR(owner, QTYPE.CNAME, rdata=CNAME(target), ttl=node.get("ttl", 300)))
        owner, node = target, names.get(norm(target))
        if node is None:
            reply.header.rcode = RCODE.NXDOMAIN
            add_soa(reply, data, None)
            return reply, delay
    if qtype not in RTYPES or add_records(reply, owner, node, qtype) == 0:
        add_soa(reply, data, node)
    return reply, delay


class Handler:
    """Shared by the UDP and TCP servers."""

    zone = None
    log = None

    @classmethod
    def answer(cls, packet, udp):
        try:
            request = DNSRecord.parse(packet)
        except Exception as e:  # malformed query: ignore, like a real server would
            print(f"dns_server: bad query: {e}", file=sys.stderr, flush=True)
            return None
        cls.log.write(norm(request.q.qname), QTYPE.get(request.q.qtype))
        reply, delay = resolve(cls.zone.get(), request)
        if reply is None:
            return None
        if delay:
            time.sleep(delay)
        wire = reply.pack()
        if udp:
            limit = 512
            for rr in request.ar:
                if rr.rtype == QTYPE.OPT:
                    limit = max(512, rr.rclass)
            if len(wire) > limit:
                # dnslib's truncate() drops the question, which c-ares
                # (rightly) refuses as not matching its query
                short = request.reply()
                short.header.tc = 1
                wire = short.pack()
        return wire


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        wire = Handler.answer(data, True)
        if wire is not None:
            sock.sendto(wire, self.client_address)


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            head = self.recv_exact(2)
            if head is None:
                return
            data = self.recv_exact(struct.unpack("!H", head)[0])
            if data is None:
                return
            wire = Handler.answer(data, False)
            if wire is not None:
                self.request.sendall(struct.pack("!H", len(wire)) + wire)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def bind_both(port):
    """UDP and TCP servers on the same port; with port 0, retry until a
    port free for both is found."""
    for _ in range(50):
        udp = UDPServer(("127.0.0.1", port), UDPHandler)
        real = udp.server_address[1]
        try:
            tcp = TCPServer(("127.0.0.1", real), TCPHandler)
            return udp, tcp, real
        except OSError:
            udp.server_close()
            if port != 0:
                raise
    raise OSError("no port free for both UDP and TCP")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--zone", required=True, help="JSON records file")
    ap.add_argument("--log", help="append one line per query here (default stderr)")
    args = ap.parse_args()

    Handler.zone = Zone(args.zone)
    Handler.log = QueryLog(args.log)
    Handler.zone.get()
    udp, tcp, port = bind_both(args.port)
    for srv in (udp, tcp):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"READY {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
