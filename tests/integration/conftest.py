"""Shared fixtures for the integration tests.

Every test starts its own posternd on 127.0.0.1 with a free port, a
temporary configuration, spool and log directory, and stops it at the end.
Stopping checks that the daemon exited cleanly and that its sanitizers
(the suite runs against the ASan/UBSan build) reported nothing: a leak or
an undefined-behaviour report fails the test that caused it.

Nothing here touches the network beyond loopback.
"""
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POSTERND = os.environ.get("POSTERND", os.path.join(ROOT, "build", "posternd"))
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yaml_lines(v, indent=0):
    """Render nested dicts/lists as block YAML lines (enough for our configs)."""
    pad = " " * indent
    lines = []
    if isinstance(v, dict):
        for k, val in v.items():
            if isinstance(val, (dict, list)) and val:
                lines.append(f"{pad}{k}:")
                lines += yaml_lines(val, indent + 2)
            else:
                lines.append(f"{pad}{k}: {yaml_scalar(val)}")
    else:
        for item in v:
            if isinstance(item, dict) and item:
                sub = yaml_lines(item, indent + 2)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                lines += sub
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    return lines


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list) and not v:
        return "[]"
    if isinstance(v, dict) and not v:
        return "{}"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def to_yaml(cfg):
    return "\n".join(yaml_lines(cfg)) + "\n"


def deep_update(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


class Gateway:
    """One posternd process with its own directory."""

    def __init__(self, tmpdir, overrides=None, listeners=None):
        self.dir = str(tmpdir)
        self.port = free_port()
        self.cfg_path = os.path.join(self.dir, "postern.yaml")
        self.spool_dir = os.path.join(self.dir, "spool")
        self.log_dir = os.path.join(self.dir, "log")
        self.cfg = {
            "hostname": "gw.test",
            "user": "root" if os.geteuid() == 0 else "nobody",
            "paths": {"spool": self.spool_dir, "logs": self.log_dir},
            "relay_domains": ["example.com", ".sub.example.net"],
            "listeners": listeners or [{
                "name": "InboundMail", "type": "public", "address": "127.0.0.1",
                "port": self.port, "hostname": "mx.gw.test"}],
            "limits": {"max_errors": 20},
            "spool": {"min_free_space": 1},
            # The test clients all come from loopback: give them the TRUSTED
            # policy so the ACCEPTED defaults (10 messages per connection,
            # 10 connections per IP) do not cap protocol tests. Policy tests
            # override sender_groups.
            "sender_groups": [{"name": "WHITELIST", "members": ["127.0.0.0/8", "::1"]}],
            # Never the system resolver: a loopback port where nothing
            # answers, so that nothing ever leaves the machine.
            "resolver": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s",
                         "attempts": 1},
        }
        if overrides:
            deep_update(self.cfg, overrides)
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.write_config()

    def write_config(self, cfg=None):
        with open(self.cfg_path, "w") as f:
            f.write(to_yaml(cfg if cfg is not None else self.cfg))

    def start(self, wait=True):
        self.stderr = open(self.stderr_path, "ab")
        env = dict(os.environ)
        for k, v in SAN_ENV.items():
            env.setdefault(k, v)
        self.proc = subprocess.Popen([POSTERND, "-c", self.cfg_path], stdout=self.stderr,
                                     stderr=self.stderr, cwd=self.dir, env=env)
        if wait:
            self.wait_port()
        return self

    def wait_port(self, port=None, timeout=20):
        port = port or self.port
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"posternd exited {self.proc.returncode}: {self.stderr_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(5)
                    s.recv(512)  # the banner: the daemon is up
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("posternd did not start listening")

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def check_sanitizers(self):
        text = self.stderr_text()
        for m in SANITIZER_MARKERS:
            assert m not in text, f"sanitizer report from posternd:\n{text[-6000:]}"

    def stop(self, timeout=30):
        """SIGTERM and require a clean exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("posternd did not stop on SIGTERM")
        rc = self.proc.returncode
        self.proc = None
        self.stderr.close()
        self.check_sanitizers()
        assert rc == 0, f"posternd exit status {rc}: {self.stderr_text()[-4000:]}"

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self.stderr.close()

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    @property
    def pid(self):
        return self.proc.pid

    # ---- logs ----
    def log(self):
        try:
            with open(os.path.join(self.log_dir, "mail_logs"), "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10, start=0):
        deadline = time.time() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            text = self.log()
            m = rx.search(text, start)
            if m:
                return m
            if time.time() > deadline:
                raise AssertionError(f"log never matched {pattern!r}; log:\n{text[-4000:]}")
            time.sleep(0.05)

    # ---- spool ----
    def spool_messages(self):
        """Every queued message: dict(mid, sender, rcpts, body, ...)."""
        db = sqlite3.connect(os.path.join(self.spool_dir, "queue.db"), timeout=30)
        try:
            db.row_factory = sqlite3.Row
            out = []
            for row in db.execute("SELECT * FROM msg ORDER BY mid"):
                m = dict(row)
                if m["body"] is None:
                    with open(os.path.join(self.spool_dir, m["body_file"]) if not
                              os.path.isabs(m["body_file"]) else m["body_file"], "rb") as f:
                        m["body"] = f.read()
                else:
                    m["body"] = bytes(m["body"])
                m["rcpts"] = [r[0] for r in db.execute(
                    "SELECT addr FROM rcpt WHERE mid=? ORDER BY rid", (m["mid"],))]
                out.append(m)
            return out
        finally:
            db.close()


@pytest.fixture
def make_gateway(tmp_path):
    gws = []

    def make(overrides=None, start=True, **kw):
        d = tmp_path / f"gw{len(gws)}"
        d.mkdir()
        gw = Gateway(d, overrides, **kw)
        gws.append(gw)
        if start:
            gw.start()
        return gw

    yield make
    errors = []
    for gw in gws:
        try:
            gw.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def gateway(make_gateway):
    return make_gateway()


class RawSMTP:
    """A byte-exact SMTP client for protocol tests."""

    def __init__(self, port, host="127.0.0.1", timeout=10, banner=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.banner = self.reply() if banner else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server; pending: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", errors="replace")

    def reply(self):
        """One (possibly multi-line) reply as (code, [texts])."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), [l[4:] for l in lines]

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True once the server has closed the connection."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def expect(self, text, code, enhanced=None):
        """Send one command and assert its reply code (and enhanced code)."""
        got, lines = self.cmd(text) if text is not None else self.reply()
        assert got == code, f"{text!r}: expected {code}, got {got} {lines}"
        if enhanced is not None:
            assert lines[-1].startswith(enhanced + " "), \
                f"{text!r}: expected {enhanced}, got {got} {lines}"
        return lines

    def ehlo(self, name="client.test"):
        return self.expect(f"EHLO {name}", 250)

    def message(self, sender, rcpts, content, helo="client.test", stuffed=False):
        """One whole DATA transaction; content is sent dot-stuffed and must end
        with CRLF. Returns the final (code, lines)."""
        if helo:
            self.ehlo(helo)
        self.expect(f"MAIL FROM:<{sender}>", 250, "2.1.0")
        for r in rcpts:
            self.expect(f"RCPT TO:<{r}>", 250, "2.1.5")
        self.expect("DATA", 354)
        self.send((content if stuffed else dot_stuff(content)) + b".\r\n")
        return self.reply()


def dot_stuff(content):
    """RFC 5321 4.5.2 transparency for CRLF text."""
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


RECEIVED_RE = re.compile(
    rb"Received: from (?P<helo>\S+) \((?P<rdns>unknown|[a-z0-9.-]+) \[127\.0\.0\.1\]\)\r\n"
    rb"\tby mx\.gw\.test \(Postern\)(?:\r\n\t\((?P<tls>using [^)\r\n]*)\))?"
    rb" with (?P<proto>[A-Z0-9]+) id (?P<mid>\d+)"
    rb"(?:\r\n\tfor <(?P<rcpt>[^>\r\n]*)>)?"
    rb"; (?P<date>[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4})\r\n")


def split_received(body):
    """(match of our Received header, the bytes after it); fails if the body
    does not start with exactly our header."""
    m = RECEIVED_RE.match(body)
    assert m, f"spooled body does not start with our Received header: {body[:400]!r}"
    return m, body[m.end():]


def assert_spooled(msg, content, helo="client.test", rcpt=None, proto="ESMTP"):
    """msg (a spool_messages() row) holds our Received header then exactly content."""
    m, rest = split_received(msg["body"])
    assert rest == content, f"spooled content differs:\n{rest[:600]!r}\n!=\n{content[:600]!r}"
    assert m.group("helo") == helo.encode()
    assert m.group("proto") == proto.encode()
    assert int(m.group("mid")) == msg["mid"]
    if rcpt is None:
        assert m.group("rcpt") is None, "Received names a recipient of a multi-recipient message"
    else:
        assert m.group("rcpt") == rcpt.encode()
    assert msg["size"] == len(msg["body"])
    assert msg["crc32"] & 0xffffffff == zlib.crc32(msg["body"])
    return m


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate and key for mx.gw.test."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=mx.gw.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


# ---- delivery test servers (smtp_peer.py, dns_server.py) ----------------------
# Added for the delivery tests; nothing above depends on them.

SYS_PYTHON = "/usr/bin/python3"  # has dnslib and aiosmtpd; the PATH python may not
TOOLS = os.path.join(ROOT, "tests", "tools")


def _read_ready(proc, what, timeout=20):
    """Wait for the "READY <port>" line of a test server; returns the port."""
    import select
    deadline = time.time() + timeout
    buf = b""
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode} before READY")
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            m = re.search(rb"READY (\d+)", buf)
            if m:
                return int(m.group(1))
    raise AssertionError(f"{what} never printed READY")


class SmtpPeer:
    """One tests/tools/smtp_peer.py process; its record file parsed on demand."""

    def __init__(self, tmpdir, name, opts):
        import json
        self.dir = str(tmpdir)
        self.name = name
        self.record_path = os.path.join(self.dir, f"{name}.jsonl")
        self.opts = dict(opts)
        self.opts.setdefault("record", self.record_path)
        self.record_path = self.opts["record"]
        self.err_path = os.path.join(self.dir, f"{name}.stderr")
        self.proc = None
        self.port = self.opts.get("port", 0) or None
        self._json = json

    def start(self):
        self.err = open(self.err_path, "ab")
        self.proc = subprocess.Popen([SYS_PYTHON, os.path.join(TOOLS, "smtp_peer.py"),
                                      "--json", self._json.dumps(self.opts)],
                                     stdout=subprocess.PIPE, stderr=self.err)
        self.port = _read_ready(self.proc, f"smtp_peer {self.name}")
        self.opts["port"] = self.port
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            self.err.close()
            self.proc = None

    def records(self, kind=None):
        try:
            with open(self.record_path, encoding="utf-8") as f:
                recs = [self._json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []
        return [r for r in recs if kind is None or r["type"] == kind]

    def messages(self):
        import base64
        out = []
        for r in self.records("message"):
            r = dict(r)
            r["body"] = base64.b64decode(r.pop("body_b64"))
            out.append(r)
        return out

    def connections(self):
        return len(self.records("connect"))

    def wait_messages(self, n, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            time.sleep(0.05)
        raise AssertionError(f"smtp_peer {self.name}: expected {n} messages, got "
                             f"{len(self.messages())}: {self.records()}")


@pytest.fixture
def smtp_peer(tmp_path):
    """Factory: smtp_peer(name="peer", start=True, **options) -> SmtpPeer."""
    peers = []

    def make(name=None, start=True, **opts):
        p = SmtpPeer(tmp_path, name or f"peer{len(peers)}", opts)
        peers.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in peers:
        p.stop()


class DnsServer:
    """tests/tools/dns_server.py on 127.0.0.1, answering from a JSON zone."""

    def __init__(self, tmpdir, zone):
        import json
        self._json = json
        self.dir = str(tmpdir)
        self.zone_path = os.path.join(self.dir, "zone.json")
        self.log_path = os.path.join(self.dir, "dns-queries.log")
        self.set(zone)
        self.err = open(os.path.join(self.dir, "dns.stderr"), "ab")
        self.proc = subprocess.Popen([SYS_PYTHON, os.path.join(TOOLS, "dns_server.py"),
                                      "--port", "0", "--zone", self.zone_path,
                                      "--log", self.log_path],
                                     stdout=subprocess.PIPE, stderr=self.err)
        self.port = _read_ready(self.proc, "dns_server")

    def set(self, zone):
        """Replace the answers (atomically: write then rename)."""
        tmp = self.zone_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            self._json.dump(zone, f)
        os.replace(tmp, self.zone_path)

    def queries(self):
        try:
            with open(self.log_path, encoding="utf-8") as f:
                return [l.split() for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.err.close()


@pytest.fixture
def dns_server(tmp_path):
    """Factory: dns_server(zone_dict) -> DnsServer (one per test)."""
    servers = []

    def make(zone):
        d = tmp_path / f"dns{len(servers)}"
        d.mkdir()
        s = DnsServer(d, zone)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


# ---- delivery test helpers ----------------------------------------------------

DELIVERY_RELAY_DOMAINS = ["example.com", ".example.com", "example.net", ".example.net",
                          ".sub.example.net", "example.org", ".test"]


def delivery_overrides(routes=(), dns_port=None, profile=None, dest=None, delivery=None,
                       extra_dests=(), relay_domains=None):
    """Gateway overrides for delivery tests: short bounce profile "fast" used by
    every destination, short delivery timeouts, no TLS, the given routes, and
    the resolver pointed at dns_port (else at an unused port)."""
    prof = {"name": "fast", "max_retries": 100, "max_queue_time": "1h",
            "initial_retry": "1s", "max_retry": "2s"}
    prof.update(profile or {})
    dc = {"domain": "default", "tls": "none", "bounce_profile": "fast"}
    dc.update(dest or {})
    dly = {"connect_timeout": "2s", "command_timeout": "3s", "data_block_timeout": "3s",
           "data_done_timeout": "3s"}
    dly.update(delivery or {})
    cfg = {
        "relay_domains": relay_domains or DELIVERY_RELAY_DOMAINS,
        "smtp_routes": list(routes),
        "destination_controls": [dc] + [dict({"tls": "none", "bounce_profile": "fast"}, **e)
                                        for e in extra_dests],
        "bounce_profiles": [prof],
        "delivery": dly,
    }
    if not cfg["smtp_routes"]:
        del cfg["smtp_routes"]
    if dns_port is not None:
        cfg["resolver"] = {"servers": [f"127.0.0.1:{dns_port}"], "timeout": "1s", "attempts": 1}
    return cfg


def route(domain, *hosts):
    """An smtp_routes entry; hosts are (host, port[, priority]) or a string
    (USEDNS, /dev/null)."""
    if len(hosts) == 1 and isinstance(hosts[0], str):
        return {"domain": domain, "hosts": hosts[0]}
    return {"domain": domain, "hosts": [
        {"host": h[0], "port": h[1], "priority": h[2] if len(h) > 2 else 0} for h in hosts]}


def make_content(subject="test", body=b"Hello.\r\n", extra=b""):
    return (b"From: Sender <sender@example.org>\r\nTo: rcpt@example.com\r\nSubject: "
            + subject.encode() + b"\r\nMessage-ID: <" + subject.encode().replace(b" ", b"-")
            + b"@client.test>\r\n" + extra + b"\r\n" + body)


def send_message(gw, sender, rcpts, content, port=None):
    """One message through the gateway's listener; returns its MID."""
    c = RawSMTP(port or gw.port)
    try:
        code, lines = c.message(sender, rcpts, content)
        assert code == 250, f"DATA answered {code} {lines}"
        c.cmd("QUIT")
    finally:
        c.close()
    m = re.search(r"Message (\d+) accepted", lines[-1])
    assert m, lines
    return int(m.group(1))


def assert_relayed(body, content, mid=None):
    """A delivered body is exactly our Received header + the original content."""
    m, rest = split_received(body)
    assert rest == content, f"delivered content differs:\n{rest[:600]!r}\n!=\n{content[:600]!r}"
    if mid is not None:
        assert int(m.group("mid")) == mid
    return m


def spool_counts(gw):
    db = sqlite3.connect(os.path.join(gw.spool_dir, "queue.db"), timeout=30)
    try:
        msgs = db.execute("SELECT count(*) FROM msg").fetchone()[0]
        rcpts = db.execute("SELECT count(*) FROM rcpt").fetchone()[0]
    finally:
        db.close()
    bodies_dir = os.path.join(gw.spool_dir, "bodies")
    bodies = os.listdir(bodies_dir) if os.path.isdir(bodies_dir) else []
    return msgs, rcpts, bodies


def wait_spool_empty(gw, timeout=10):
    deadline = time.time() + timeout
    while True:
        got = spool_counts(gw)
        if got == (0, 0, []):
            return
        if time.time() > deadline:
            raise AssertionError(f"spool not empty (msgs, rcpts, bodies) = {got}")
        time.sleep(0.05)


def rcpt_rows(gw):
    db = sqlite3.connect(os.path.join(gw.spool_dir, "queue.db"), timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM rcpt ORDER BY mid, rid")]
    finally:
        db.close()


# ---- connection policy tests (test_policy*.py) --------------------------------
# Added for the host access table tests; nothing above depends on them.

class SourcedSMTP(RawSMTP):
    """RawSMTP that connects from a chosen local address (127.0.0.2, ...,
    "::1"), so one test can act as several hosts. t_connect / t_banner are
    monotonic times of connect() returning and of the banner arriving;
    banner=False leaves reading the banner to the test (read_banner())."""

    def __init__(self, port, source=None, host="127.0.0.1", timeout=10, banner=True):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            if source:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.t_connect = time.monotonic()
        self.t_banner = None
        self.buf = b""
        self.banner = self.read_banner() if banner else None

    def read_banner(self):
        self.banner = self.reply()
        self.t_banner = time.monotonic()
        return self.banner


def ptr_owner(ip):
    """The reverse DNS owner name of an IPv4/IPv6 literal (no trailing dot)."""
    import ipaddress
    return ipaddress.ip_address(ip).reverse_pointer


def dnsbl_owner(ip, zone):
    """The DNS list query name of an IPv4 address in zone (RFC 5782)."""
    return ".".join(reversed(ip.split("."))) + "." + zone


def policy_overrides(dns_port, sender_groups=(), policies=(), reputation=None, deadline=None,
                     timeout="2s", listeners=None):
    """Gateway overrides for policy tests: the resolver at the test DNS
    server, the given sender groups (replacing the suite's default loopback
    WHITELIST), mail flow policies, reputation lists and DNS deadline."""
    cfg = {
        "sender_groups": list(sender_groups) or [{"name": "WHITELIST", "members": []}],
        "resolver": {"servers": [f"127.0.0.1:{dns_port}"], "timeout": timeout, "attempts": 1},
    }
    if policies:
        cfg["mail_flow_policies"] = list(policies)
    if reputation is not None:
        cfg["reputation"] = reputation
    if deadline is not None:
        cfg["connection_dns"] = {"deadline": deadline}
    if listeners is not None:
        cfg["listeners"] = listeners
    return cfg


def policy_gateway(make_gateway, dns_port, hat=None, **kw):
    """A started gateway with policy_overrides(); hat, if given, is set on
    its InboundMail listener (which needs the port, hence the two steps)."""
    gw = make_gateway(policy_overrides(dns_port, **kw), start=False)
    if hat is not None:
        gw.cfg["listeners"][0]["hat"] = list(hat)
    gw.write_config()
    gw.start()
    return gw


def session_log(gw, ip, timeout=10, start=0):
    """The ICID and the policy log lines of the first connection from ip
    (after offset start): dict(icid, new, decision, dns)."""
    m = gw.wait_log(r"^.*New SMTP ICID (\d+) interface \S+ \(\S+\) address "
                    + re.escape(ip) + r" reverse dns host .*$", timeout, start)
    icid = m.group(1)
    d = gw.wait_log(rf"^.*ICID {icid} (ACCEPT|REJECT|TCPREFUSE|RELAY|CONTINUE) SG .*$", timeout)
    t = gw.wait_log(rf"^.*ICID {icid} DNS lookups took .*$", timeout)
    return {"icid": int(icid), "new": m.group(0), "decision": d.group(0), "dns": t.group(0),
            "end": m.end()}
