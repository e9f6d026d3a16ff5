#!/usr/bin/python3
"""Banner latency under slow DNS: does one client's hanging PTR lookup hold
up anyone else's banner?

    /usr/bin/python3 bench/banner_latency.py
    BANNER_CLIENTS=1000 BANNER_RUNS=3 BANNER_DEADLINE=2 /usr/bin/python3 bench/banner_latency.py

Two scenarios, each against a fresh posternd (empty DNS cache) and a fresh
tests/tools/dns_server.py:

  fast     every client's PTR and forward (A) lookup is answered after 1 ms;
  hanging  the same, except that for 10% of the clients the PTR query is
           never answered (drop), so their lookups end at
           connection_dns.deadline (2 s).

In each, BANNER_CLIENTS (1000) asyncio clients connect, in waves of
BANNER_WAVE (50) every BANNER_WAVE_MS (50 ms), or all at once with
BANNER_WAVE=0, each from its own loopback address (127.1.x.y, so every one
is a distinct host with its own PTR record), and time connect() start ->
first banner line.
The connections are held until every banner has arrived, then closed. The
gateway puts 127.0.0.0/8 in WHITELIST (TRUSTED: 600 connections per IP) and
max_connections 5000, so only the lookups stand between connect and banner.

Reported per scenario: p50 / p99 / max of the banner latency (for
"hanging": of the 90% whose lookups answer, and separately of the hanging
ones), the gateway's own view (its "DNS lookups took N ms" log lines), and
the test DNS server's own latency for the same burst of 1000 PTR queries
without the gateway in between (the server is Python, a thread per query:
it is the likely bottleneck). The comparison is p99 of the non-hanging
clients against p99 of the fast run; the last line is

    RESULT banner_latency p99_fast_ms=<a> p99_with_hanging_ms=<b>

(medians over BANNER_RUNS runs). A benchmark reports; it never fails
because the machine is slow. See docs/performance.md, "Banner latency under
slow DNS".
"""
import asyncio
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
N = int(os.environ.get("BANNER_CLIENTS", "1000"))
RUNS = int(os.environ.get("BANNER_RUNS", "3"))
DEADLINE_S = float(os.environ.get("BANNER_DEADLINE", "2"))
HANG_EVERY = 10  # every 10th client hangs: 10%
# Clients start in waves: WAVE clients every WAVE_MS ms (0 = all at once).
# The default (50 every 50 ms: all 1000 within 1 s, all of them connected
# at the same time at the end) is what the Python test DNS server takes
# without overflowing its UDP receive buffer; all at once, it loses most
# queries (see the dns_server line of the output with BANNER_WAVE=0).
WAVE = int(os.environ.get("BANNER_WAVE", "50"))
WAVE_MS = float(os.environ.get("BANNER_WAVE_MS", "50"))
BUILD_DIR = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-bench"))
POSTERND = os.environ.get("POSTERND", "")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_posternd():
    global POSTERND
    if POSTERND:
        return
    if not os.path.exists(os.path.join(BUILD_DIR, "build.ninja")):
        subprocess.run(["meson", "setup", BUILD_DIR, ROOT, "--buildtype=release"], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", BUILD_DIR, "posternd"], check=True, stdout=subprocess.DEVNULL)
    POSTERND = os.path.join(BUILD_DIR, "posternd")


def buildtype():
    try:
        with open(os.path.join(BUILD_DIR, "meson-info", "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
        return f"{opts.get('buildtype')}, sanitize={opts.get('b_sanitize')}"
    except (OSError, ValueError):
        return "?"


def client_addr(i):
    return f"127.1.{i // 250}.{1 + i % 250}"


def hangs(i):
    return i % HANG_EVERY == 0


def make_zone(with_hanging):
    names = {}
    for i in range(N):
        ip = client_addr(i)
        name = f"c{i}.bench.test"
        ptr = ipaddress.ip_address(ip).reverse_pointer
        if with_hanging and hangs(i):
            names[ptr] = {"drop": True}
        else:
            names[ptr] = {"PTR": [name], "delay_ms": 1}
        names[name] = {"A": [ip], "delay_ms": 1}
    return {"zone": "test", "names": names}


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs):
    return f"n={len(xs)} p50={pct(xs, 50):.1f} p99={pct(xs, 99):.1f} max={max(xs):.1f} ms"


def read_ready(proc, what, timeout=30):
    import select
    deadline = time.time() + timeout
    buf = b""
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            buf += os.read(proc.stdout.fileno(), 4096)
            m = re.search(rb"READY (\d+)", buf)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"{what} never printed READY")


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Env:
    """One test DNS server and one posternd in a temporary directory."""

    def __init__(self, tmp, with_hanging):
        self.dir = tempfile.mkdtemp(dir=tmp)
        zone = os.path.join(self.dir, "zone.json")
        with open(zone, "w") as f:
            json.dump(make_zone(with_hanging), f)
        self.dns_err = open(os.path.join(self.dir, "dns.stderr"), "wb")
        self.dns = subprocess.Popen([PY, os.path.join(ROOT, "tests", "tools", "dns_server.py"),
                                     "--port", "0", "--zone", zone,
                                     "--log", os.path.join(self.dir, "queries.log")],
                                    stdout=subprocess.PIPE, stderr=self.dns_err)
        self.dns_port = read_ready(self.dns, "dns_server")
        self.port = free_port()
        self.gw = None

    def start_gateway(self):
        cfg = os.path.join(self.dir, "postern.yaml")
        user = "root" if os.geteuid() == 0 else "nobody"
        with open(cfg, "w") as f:
            f.write(f"""hostname: gw.bench
user: {user}
paths:
  spool: {self.dir}/spool
  logs: {self.dir}/log
listeners:
  - name: InboundMail
    type: public
    address: 127.0.0.1
    port: {self.port}
    hostname: mx.gw.bench
limits:
  max_connections: 5000
spool:
  min_free_space: 1
sender_groups:
  - name: WHITELIST
    members: ["127.0.0.0/8"]
resolver:
  servers: ["127.0.0.1:{self.dns_port}"]
  timeout: 5s
  attempts: 1
connection_dns:
  deadline: {int(DEADLINE_S * 1000)}ms
""")
        self.gw_err = open(os.path.join(self.dir, "posternd.stderr"), "wb")
        self.gw = subprocess.Popen([POSTERND, "-c", cfg], stdout=self.gw_err,
                                   stderr=self.gw_err, cwd=self.dir)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("posternd did not start: " + open(self.gw_err.name).read())

    def gateway_dns_ms(self):
        """ICID -> (address, total DNS ms) from mail_logs."""
        with open(os.path.join(self.dir, "log", "mail_logs"), errors="replace") as f:
            text = f.read()
        addr = dict(re.findall(r"New SMTP ICID (\d+) interface \S+ \(\S+\) address (\S+) ", text))
        took = dict(re.findall(r"ICID (\d+) DNS lookups took (\d+) ms", text))
        return [(addr[i], int(ms)) for i, ms in took.items() if i in addr]

    def close(self, keep=False):
        stop(self.gw)
        stop(self.dns)
        if self.dns.stdout:
            self.dns.stdout.close()
        self.dns_err.close()
        if self.gw:
            self.gw_err.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


async def clients(port):
    """N clients at once; returns {address: connect->banner ms}."""
    out = {}
    writers = []
    all_in = asyncio.Event()
    left = [N]

    async def one(i):
        src = client_addr(i)
        if WAVE:
            await asyncio.sleep((i // WAVE) * WAVE_MS / 1000)
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                          local_addr=(src, 0))
            writers.append(writer)
            line = await asyncio.wait_for(reader.readline(), DEADLINE_S + 20)
            if line.startswith(b"220"):
                out[src] = (time.perf_counter() - t0) * 1000
            else:
                log(f"client {src}: {line!r}")
        except (OSError, asyncio.TimeoutError) as e:
            log(f"client {src}: {e!r}")
        finally:
            left[0] -= 1
            if left[0] == 0:
                all_in.set()
        await all_in.wait()  # hold the connection until every banner is in

    await asyncio.gather(*(one(i) for i in range(N)))
    for w in writers:
        w.close()
    for w in writers:
        try:
            await w.wait_closed()
        except OSError:
            pass
    return out


async def dns_burst(port):
    """The gateway's queries for the fast scenario (PTR, then A of the name,
    for every client), paced like the clients, straight at the DNS server
    over UDP: per-client PTR+A time (ms) and how many got no answer."""
    loop = asyncio.get_running_loop()

    class Proto(asyncio.DatagramProtocol):
        def __init__(self):
            self.waiting = {}

        def datagram_received(self, data, addr):
            fut = self.waiting.pop(struct.unpack("!H", data[:2])[0], None)
            if fut and not fut.done():
                fut.set_result(data)

    transport, proto = await loop.create_datagram_endpoint(
        Proto, remote_addr=("127.0.0.1", port))
    qids = iter(range(1, 65536))

    async def query(name, qtype):
        qid = next(qids)
        q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
        q += struct.pack("!HH", qtype, 1)
        fut = loop.create_future()
        proto.waiting[qid] = fut
        transport.sendto(q)
        await asyncio.wait_for(fut, 5)

    async def one(i):
        if WAVE:
            await asyncio.sleep((i // WAVE) * WAVE_MS / 1000)
        t0 = time.perf_counter()
        try:
            await query(ipaddress.ip_address(client_addr(i)).reverse_pointer, 12)  # PTR
            await query(f"c{i}.bench.test", 1)  # A
        except asyncio.TimeoutError:
            return None
        return (time.perf_counter() - t0) * 1000

    res = await asyncio.gather(*(one(i) for i in range(N)))
    transport.close()
    return [r for r in res if r is not None], sum(r is None for r in res)


def run_scenario(tmp, with_hanging):
    env = Env(tmp, with_hanging)
    try:
        env.start_gateway()
        lat = asyncio.run(clients(env.port))
        time.sleep(0.3)  # the last log lines
        gwdns = env.gateway_dns_ms()
    finally:
        env.close()
    fast = [ms for a, ms in lat.items() if not (with_hanging and hangs(int_index(a)))]
    hung = [ms for a, ms in lat.items() if with_hanging and hangs(int_index(a))]
    gw_fast = [ms for a, ms in gwdns
               if a.startswith("127.1.") and not (with_hanging and hangs(int_index(a)))]
    return {"fast": fast, "hung": hung, "gw_fast_dns": gw_fast, "missing": N - len(lat)}


def int_index(addr):
    _, _, x, y = addr.split(".")
    return int(x) * 250 + int(y) - 1


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    build_posternd()
    cmd = "/usr/bin/python3 bench/banner_latency.py"
    env_s = " ".join(f"{k}={os.environ[k]}" for k in ("BANNER_CLIENTS", "BANNER_RUNS",
                                                     "BANNER_DEADLINE", "BANNER_WAVE",
                                                     "BANNER_WAVE_MS") if k in os.environ)
    print(f"command: {env_s + ' ' if env_s else ''}{cmd}")
    print(f"posternd: {POSTERND} ({buildtype()}); {os.cpu_count()} CPUs; "
          f"RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    pacing = (f"in waves of {WAVE} every {WAVE_MS:g} ms" if WAVE else "all at once")
    print(f"{N} clients connecting {pacing}, each from its own 127.1.x.y; PTR and A answered "
          f"after 1 ms; hanging run: every {HANG_EVERY}th PTR dropped, "
          f"connection_dns.deadline {DEADLINE_S:g} s; {RUNS} runs each, alternating")
    tmp = tempfile.mkdtemp(prefix="postern-banner-")
    try:
        # the DNS server alone, same burst, no gateway in between
        env = Env(tmp, False)
        try:
            dns_lat, lost = asyncio.run(dns_burst(env.dns_port))
        finally:
            env.close()
        print(f"dns_server alone, PTR then A for {N} clients, same pacing: {summary(dns_lat)}"
              f"{f', {lost} unanswered' if lost else ''}")
        p99_fast, p99_hang = [], []
        for r in range(RUNS):
            for with_hanging in (False, True):
                res = run_scenario(tmp, with_hanging)
                name = "hanging" if with_hanging else "fast"
                line = f"run {r + 1} {name:8s}: banner {summary(res['fast'])}"
                if with_hanging:
                    line += f"; hanging 10%: {summary(res['hung'])}"
                line += f"; gateway DNS time of the answered: {summary(res['gw_fast_dns'])}"
                if res["missing"]:
                    line += f"; {res['missing']} clients got no banner"
                print(line, flush=True)
                (p99_hang if with_hanging else p99_fast).append(pct(res["fast"], 99))
        a, b = statistics.median(p99_fast), statistics.median(p99_hang)
        print(f"p99 banner latency, median of {RUNS} runs: fast {a:.1f} ms; with 10% hanging "
              f"(the other 90%) {b:.1f} ms; ratio {b / a:.2f}, difference {b - a:+.1f} ms")
        print(f"RESULT banner_latency p99_fast_ms={a:.1f} p99_with_hanging_ms={b:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
