#!/usr/bin/python3
"""Side-by-side benchmark: Postern against Postfix (the Debian package) as a
relay gateway, smtp-source -> gateway -> smtp-sink, on this machine.

    make bench                    # or: /usr/bin/python3 bench/run.py
    BENCH_QUICK=1 make bench      # a short check (one run, small counts)
    BENCH_RUNS=5 make bench       # more runs per scenario (median reported)
    BENCH_ONLY=4k_1rcpt_20s,idle  # a subset of scenarios (name prefixes)

Each run starts a fresh smtp-sink, a fresh gateway (a private Postfix
instance or a posternd) in a temporary directory on disk, warms it up, then
drives it with smtp-source while a probe session times end-of-DATA -> 250.
Postfix and Postern alternate run by run. Everything is stopped and removed
at the end, also on Ctrl-C or an error. The benchmark reports; it never
fails because the machine is slow or noisy (tests assert, benchmarks
report). See docs/performance.md.
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
RUNS = int(os.environ.get("BENCH_RUNS", "1" if QUICK else "3"))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
BUILD_DIR = os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build-bench"))
POSTERND = os.environ.get("POSTERND", "")
RESULTS_MD = os.environ.get("BENCH_RESULTS", "/tmp/postern-bench-results.md")
IS_ROOT = os.geteuid() == 0
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FROM = "sender@example.org"
TO = "rcpt@example.com"

# scenario: name, message size, recipients, sessions, messages (or seconds)
if QUICK:
    SCENARIOS = [
        dict(name="4k_1rcpt_20s", size=4096, rcpts=1, sessions=20, msgs=1000),
        dict(name="64k_1rcpt_20s", size=65536, rcpts=1, sessions=20, msgs=400),
        dict(name="4k_10rcpt_20s", size=4096, rcpts=10, sessions=20, msgs=500),
        dict(name="4k_1rcpt_200s", size=4096, rcpts=1, sessions=200, msgs=1000),
        dict(name="sustained_4k_20s", size=4096, rcpts=1, sessions=20, seconds=10),
        dict(name="idle", conns=1000),
    ]
else:
    SCENARIOS = [
        dict(name="4k_1rcpt_20s", size=4096, rcpts=1, sessions=20, msgs=8000),
        dict(name="64k_1rcpt_20s", size=65536, rcpts=1, sessions=20, msgs=2000),
        dict(name="4k_10rcpt_20s", size=4096, rcpts=10, sessions=20, msgs=3000),
        dict(name="4k_1rcpt_200s", size=4096, rcpts=1, sessions=200, msgs=8000),
        dict(name="sustained_4k_20s", size=4096, rcpts=1, sessions=20, seconds=60),
        dict(name="idle", conns=10000),
    ]
WARMUP_MSGS = 100 if QUICK else 300
PROBE_GAP_MS = 10


def log(*a):
    print(*a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- cleanup --

class Cleanup:
    """Everything started or created, undone in reverse order at exit."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def push(self, fn):
        with self.lock:
            self.items.append(fn)
        return fn

    def pop(self, fn):
        with self.lock:
            if fn in self.items:
                self.items.remove(fn)
        fn()

    def run_all(self):
        while True:
            with self.lock:
                if not self.items:
                    return
                fn = self.items.pop()
            try:
                fn()
            except Exception as e:  # cleanup must go on
                log(f"bench: cleanup: {e!r}")


CLEAN = Cleanup()


def kill_proc(p, sig=signal.SIGTERM, timeout=10):
    """Stop one Popen we started, by its pid."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass


# ------------------------------------------------------------ /proc reads --

def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def cpu_ticks(pid, children=True):
    f = stat_fields(pid)
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t


def proc_stat_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


def cpu_busy(since):
    total, idle = proc_stat_cpu()
    dt = total - since[0]
    return 100.0 * (1 - (idle - since[1]) / dt) if dt > 0 else float("nan")


def wait_quiet(limit):
    """Wait (up to limit seconds) until the machine is nearly idle, so that a
    build or test running beside the benchmark does not land in a run.
    Returns the busy % seen last: the run goes ahead anyway (benchmarks
    report, they do not fail) and the value is printed with the run."""
    end = time.monotonic() + limit
    while True:
        s0 = proc_stat_cpu()
        time.sleep(0.5)
        busy = cpu_busy(s0)
        if busy < 15 or time.monotonic() >= end:
            return busy
        time.sleep(1.0)


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(stat_fields(d)[1]) == ppid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------ sink --

class Sink:
    """smtp-sink -c on a free port; a thread follows its message counter."""

    def __init__(self, tmp):
        self.port = free_port()
        args = ["smtp-sink", "-c", "-m", "2000"]
        if IS_ROOT:
            args += ["-u", "nobody"]
        args += [f"127.0.0.1:{self.port}", "1000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=tmp)
        self._stop = CLEAN.push(lambda: kill_proc(self.proc))
        self.count = 0
        self.last_change = time.monotonic()
        self.times = []  # times[i]: when the counter reached i + 1
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        # that probe connection counts as a session only, not a message

    def _read(self):
        rx = re.compile(rb"mesg=(\d+)")
        tail = b""
        fd = self.proc.stdout.fileno()
        while True:
            try:
                d = os.read(fd, 65536)
            except OSError:
                return
            if not d:
                return
            now = time.monotonic()
            tail = (tail + d)[-64:]
            m = None
            for m in rx.finditer(tail):
                pass
            if m is None:
                continue
            n = int(m.group(1))
            with self.cond:
                if n > self.count:
                    self.times.extend([now] * (n - self.count))
                    self.count = n
                    self.last_change = now
                    self.cond.notify_all()

    def wait_count(self, target, timeout):
        with self.cond:
            end = time.monotonic() + timeout
            while self.count < target:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
            return True

    def settle(self, quiet=1.0, timeout=30):
        """Wait until the counter has not moved for `quiet` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.cond:
                idle = time.monotonic() - self.last_change
            if idle >= quiet:
                return
            time.sleep(0.1)

    def stop(self):
        CLEAN.pop(self._stop)


# -------------------------------------------------------------- gateways --

def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_yaml(v, indent=0):
    pad = " " * indent
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)):
                out.append(f"{pad}{k}:")
                out += to_yaml(x, indent + 2)
            else:
                out.append(f"{pad}{k}: {yaml_scalar(x)}")
    else:
        for x in v:
            if isinstance(x, dict):
                sub = to_yaml(x, indent + 2)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                out += sub
            else:
                out.append(f"{pad}- {yaml_scalar(x)}")
    return out


class Postern:
    name = "postern"

    def __init__(self, tmp, sink_port, max_conns=1000):
        self.dir = os.path.join(tmp, "postern")
        os.makedirs(self.dir)
        self.port = free_port()
        # Postern looks up every client's PTR (and the name's A) before the
        # banner, with its own resolver; Postfix's smtpd asks the system
        # resolver, which answers 127.0.0.1 from /etc/hosts. The equivalent
        # here: a local DNS server that knows 127.0.0.1, never the network.
        # Positive answers are cached (TTL 1 h), so it is asked once per run.
        self.dns_port, self._dns_stop = start_dns(self.dir)
        cfg = {
            "hostname": "postern.bench.test",
            "user": "root" if IS_ROOT else "nobody",
            "paths": {"spool": os.path.join(self.dir, "spool"),
                      "logs": os.path.join(self.dir, "log")},
            "relay_domains": ["example.com"],
            "listeners": [{"name": "InboundMail", "type": "public", "address": "127.0.0.1",
                           "port": self.port}],
            "limits": {"max_connections": max_conns},
            "spool": {"min_free_space": "100M"},
            "resolver": {"servers": [f"127.0.0.1:{self.dns_port}"], "timeout": "1s",
                         "attempts": 2},
            # loopback is the trusted network, as mynetworks = 127.0.0.0/8
            # for Postfix (which exempts it from its per-client limits)
            "sender_groups": [{"name": "WHITELIST", "members": ["127.0.0.0/8"]}],
            "mail_flow_policies": [{"name": "TRUSTED",
                                    "max_concurrent_connections": max(600, max_conns)}],
            "smtp_routes": [{"domain": "example.com",
                             "hosts": [{"host": "127.0.0.1", "port": sink_port}]}],
            "destination_controls": [{"domain": "default", "max_connections": 20,
                                      "tls": "none"}],
        }
        self.cfg_path = os.path.join(self.dir, "postern.yaml")
        with open(self.cfg_path, "w") as f:
            f.write("\n".join(to_yaml(cfg)) + "\n")
        self.err = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([POSTERND, "-c", self.cfg_path], stdout=self.err,
                                     stderr=self.err, cwd=self.dir)
        self._stop = CLEAN.push(self._kill)
        wait_banner(self.port, self.proc.poll, 20, self._stderr)

    def _stderr(self):
        with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
            return f.read().decode(errors="replace")[-2000:]

    def _kill(self):
        kill_proc(self.proc, signal.SIGTERM, 30)
        self.err.close()
        CLEAN.pop(self._dns_stop)

    def pids(self):
        return [self.proc.pid]

    def cpu(self):
        return cpu_ticks(self.proc.pid) / CLK

    def mem_kb(self):
        """(current, peak) resident kB: VmRSS and VmHWM of the one process."""
        return status_kb(self.proc.pid, "VmRSS"), status_kb(self.proc.pid, "VmHWM")

    def sample_kb(self):
        return status_kb(self.proc.pid, "VmRSS")

    def peak_kb(self):
        return status_kb(self.proc.pid, "VmHWM")

    def stop(self):
        CLEAN.pop(self._stop)


MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance: its own config, queue and data directory.

    Debian's master.cf with chroot turned off (a chroot would need copies of
    /etc files inside the temporary queue directory); every limit is the
    default, fsync is on (Postfix always fsyncs a queue file before 250)."""
    name = "postfix"

    def __init__(self, tmp, sink_port, max_conns=None):
        self.dir = os.path.join(tmp, "postfix")
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        data = os.path.join(self.dir, "data")
        for d in (self.etc, self.queue, data):
            os.makedirs(d)
        shutil.chown(data, "postfix")
        self.port = free_port()
        self.maillog = os.path.join(self.dir, "maillog")
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = example.com
mynetworks = 127.0.0.0/8
transport_maps = inline:{{ example.com=smtp:[127.0.0.1]:{sink_port} }}
smtp_dns_support_level = disabled
maillog_file = {self.maillog}
maillog_file_prefixes = {self.dir}
biff = no
"""
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        r = self._postfix("check")
        if r.returncode != 0:
            raise RuntimeError(f"postfix check failed: {r.stdout.strip()}")
        self._stop = CLEAN.push(self._shutdown)
        r = self._postfix("start")
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout.strip()} {self._maillog()}")
        self.master = None
        deadline = time.time() + 20
        while time.time() < deadline and self.master is None:
            try:
                with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                    self.master = int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        if self.master is None:
            raise RuntimeError("postfix master did not write its pid")
        wait_banner(self.port, lambda: None if os.path.exists(f"/proc/{self.master}") else 1,
                    20, self._maillog)

    def _postfix(self, verb):
        # postfix(1) reports on stderr only when it is a terminal, else to
        # syslog: run it under script(1) so that errors are visible.
        return subprocess.run(["script", "-qec", f"postfix -c {self.etc} {verb}", "/dev/null"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)

    def _maillog(self):
        try:
            with open(self.maillog) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def _shutdown(self):
        master = getattr(self, "master", None)
        try:
            self._postfix("stop")
        except Exception:
            pass
        if master:
            deadline = time.time() + 30
            while time.time() < deadline and os.path.exists(f"/proc/{master}"):
                time.sleep(0.1)
            if os.path.exists(f"/proc/{master}"):
                try:
                    self._postfix("abort")
                except Exception:
                    pass
                time.sleep(1)
                for pid in children_of(master) + [master]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass

    def pids(self):
        return [self.master] + children_of(self.master)

    def cpu(self):
        # master's own time plus what it reaped from exited children, plus
        # the live children: consistent however many processes came and went
        t = cpu_ticks(self.master)
        for pid in children_of(self.master):
            try:
                t += cpu_ticks(pid)
            except OSError:
                pass
        return t / CLK

    def sample_kb(self):
        return sum(pss_kb(p) for p in self.pids())

    def peak_kb(self):
        # Sum of PSS (shared pages split between the processes that map
        # them) over every process, read at the end of the load, when all
        # the smtpd/cleanup/smtp processes forked for it are still alive
        # (they idle out only after max_idle = 100 s). Not sampled during
        # the run: reading smaps of hundreds of processes costs CPU that
        # would be taken from Postfix.
        return self.sample_kb()

    def stop(self):
        CLEAN.pop(self._stop)


def start_dns(d):
    """tests/tools/dns_server.py answering PTR 127.0.0.1 -> localhost.bench.test
    and its A record; returns its port. Stopped by the cleanup."""
    zone = os.path.join(d, "zone.json")
    with open(zone, "w") as f:
        json.dump({"zone": "test", "names": {
            "1.0.0.127.in-addr.arpa": {"ttl": 3600, "PTR": ["localhost.bench.test"]},
            "localhost.bench.test": {"ttl": 3600, "A": ["127.0.0.1"]}}}, f)
    p = subprocess.Popen([PY, os.path.join(ROOT, "tests", "tools", "dns_server.py"), "--port",
                          "0", "--zone", zone, "--log", os.path.join(d, "dns.log")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop = CLEAN.push(lambda: kill_proc(p))
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError(f"dns_server did not start: {line!r}")
    return int(line.split()[1]), stop


def wait_banner(port, dead, timeout, why):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if dead() is not None:
            raise RuntimeError(f"gateway exited: {why()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway did not answer on port {port}: {why()}")


# ------------------------------------------------------------- one run --

def smtp_source(port, sessions, msgs, size, rcpts, timeout):
    args = ["smtp-source", "-4", "-s", str(sessions), "-m", str(msgs), "-l", str(size),
            "-r", str(rcpts), "-C", "5", "-M", "source.example.org", "-f", FROM, "-t", TO,
            f"127.0.0.1:{port}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stop = CLEAN.push(lambda: kill_proc(p, signal.SIGKILL))
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        out = (out or b"") + b" (timed out)"
    CLEAN.pop(stop)
    return p.returncode, out.decode(errors="replace").strip()


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


def one_run(kind, sc, msgs, tmp_root):
    """One measured run of a throughput scenario on a fresh sink + gateway."""
    tmp = tempfile.mkdtemp(prefix=f"{kind.name}-", dir=tmp_root)
    os.chmod(tmp, 0o755)
    sink = Sink(tmp)
    gw = None
    try:
        gw = kind(tmp, sink.port)
        # warm-up: processes forked, caches and connections made
        smtp_source(gw.port, 20, WARMUP_MSGS, sc["size"], sc["rcpts"], 120)
        sink.wait_count(WARMUP_MSGS, 60)
        sink.settle(1.0, 30)
        base = sink.count
        cpu0 = gw.cpu()
        lat_file = os.path.join(tmp, "probe.json")
        probe = subprocess.Popen([PY, os.path.join(ROOT, "bench", "probe.py"), "127.0.0.1",
                                  str(gw.port), str(sc["size"]), str(sc["rcpts"]),
                                  str(PROBE_GAP_MS), lat_file])
        pstop = CLEAN.push(lambda: kill_proc(probe, signal.SIGKILL))
        stat0 = proc_stat_cpu()
        sink_cpu0 = cpu_ticks(sink.proc.pid, False)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        rc, out = smtp_source(gw.port, sc["sessions"], msgs, sc["size"], sc["rcpts"],
                              max(600, msgs / 20))
        t_acc = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kb = gw.peak_kb()  # all of Postfix's processes are alive now
        src_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        kill_proc(probe, signal.SIGTERM, 60)
        CLEAN.pop(pstop)
        try:
            with open(lat_file) as f:
                pr = json.load(f)
        except (OSError, ValueError):
            pr = {"lat": [], "sent": 0, "errors": 1}
        target = base + msgs + pr["sent"]
        ok = sink.wait_count(target, max(60.0, 3 * t_acc))
        sink.settle(1.0, 10)
        with sink.cond:
            delivered = sink.count - base
            t_last = sink.times[min(target, sink.count) - 1] if sink.count > base else t0
        t_e2e = t_last - t0
        cpu = gw.cpu() - cpu0
        gen_cpu = src_cpu + (cpu_ticks(sink.proc.pid, False) - sink_cpu0) / CLK
        peak_kb = max(peak_kb, gw.peak_kb())
        total = msgs + pr["sent"]
        busy = cpu_busy(stat0)
        r = {
            # the probe's messages are part of the load: counted in both rates
            "accepted": total / t_acc if rc == 0 else float("nan"),
            "e2e": (min(delivered, total) / t_e2e) if t_e2e > 0 else float("nan"),
            "machine_busy": busy,
            "gen_cpu_per_1k": gen_cpu / total * 1000.0 if total else float("nan"),
            "complete": ok and rc == 0,
            "cpu_per_1k": cpu / total * 1000.0 if total else float("nan"),
            "peak_mib": peak_kb / 1024.0,
            "p50_ms": pct(pr["lat"], 50) * 1000.0,
            "p99_ms": pct(pr["lat"], 99) * 1000.0,
            "probe_n": len(pr["lat"]),
            "seconds": t_e2e,
            "msgs": msgs,
        }
        if rc != 0:
            r["note"] = f"smtp-source exit {rc}: {out[-300:]}"
        elif not ok:
            r["note"] = f"only {delivered} of {target - base} messages reached the sink"
        return r
    finally:
        if gw is not None:
            gw.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------- idle connections --

def idle_run(kind, n, tmp_root):
    """Open n connections, read each banner, idle; memory per connection."""
    import selectors
    tmp = tempfile.mkdtemp(prefix=f"{kind.name}-idle-", dir=tmp_root)
    os.chmod(tmp, 0o755)
    sink = Sink(tmp)
    gw = None
    socks = []
    try:
        gw = kind(tmp, sink.port, max_conns=max(1000, n + 100))
        time.sleep(1.0)
        before = gw.sample_kb()
        nproc0 = len(gw.pids())
        sel = selectors.DefaultSelector()
        t0 = time.monotonic()
        connected = 0
        pending = {}
        # Open at most WINDOW connections ahead of the banners received: a
        # burst of thousands of SYNs would overflow the listen queue, and an
        # idle client whose handshake ended in a dropped ACK (SYN cookies)
        # never reaches the server at all. Stop when nothing moved for a while
        # (Postfix stops at its process limit).
        window = 64
        quiet = 3.0 if QUICK else 5.0
        last_progress = time.monotonic()
        opened = 0
        while time.monotonic() - last_progress < quiet:
            while opened < n and len(pending) < window:
                s = socket.socket()
                s.setblocking(False)
                opened += 1
                try:
                    s.connect(("127.0.0.1", gw.port))
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                socks.append(s)
                pending[s] = b""
                sel.register(s, selectors.EVENT_READ)
            if opened >= n and not pending:
                break
            for key, _ in sel.select(0.2):
                if _banner_read(sel, key.fileobj, pending):
                    last_progress = time.monotonic()
        t_open = time.monotonic() - t0
        banners = len(socks) - len(pending)
        for s in socks:
            try:
                s.getpeername()
                connected += 1
            except OSError:
                pass
        time.sleep(1.0)
        after = gw.sample_kb()
        nproc1 = len(gw.pids())
        sel.close()
        per = (after - before) * 1024.0 / banners if banners else float("nan")
        return {"asked": n, "banners": banners, "connected": connected,
                "before_kib": before, "after_kib": after, "bytes_per_conn": per,
                "procs": (nproc0, nproc1), "seconds": t_open}
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        if gw is not None:
            gw.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _banner_read(sel, s, pending):
    try:
        d = s.recv(512)
    except BlockingIOError:
        return False
    except OSError:
        d = b""
    if s not in pending:
        return False
    if not d:
        sel.unregister(s)
        del pending[s]  # closed by the server: counts as a banner only if 220 seen
        return False
    pending[s] += d
    if b"\r\n" in pending[s]:
        sel.unregister(s)
        ok = pending.pop(s).startswith(b"220")
        return ok
    return False


# ----------------------------------------------------------------- report --

def med(rs, key):
    xs = [r[key] for r in rs if r.get(key) == r.get(key)]  # drop NaN
    return statistics.median(xs) if xs else float("nan")


def fmt(x, nd=1):
    if x != x:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def ratio(a, b):
    if a != a or b != b or b == 0:
        return float("nan")
    return a / b


METRICS = [
    ("accepted", "accepted msg/s", 0),
    ("e2e", "end-to-end msg/s", 0),
    ("cpu_per_1k", "CPU s / 1,000 msgs", 2),
    ("peak_mib", "peak memory MiB", 1),
    ("p50_ms", "p50 end-of-DATA→250 ms", 2),
    ("p99_ms", "p99 end-of-DATA→250 ms", 2),
    ("gen_cpu_per_1k", "load generator CPU s / 1,000 msgs (smtp-source + smtp-sink)", 2),
    ("machine_busy", "whole machine CPU busy %", 0),
]


def build_posternd():
    global POSTERND
    if POSTERND:
        return
    if not os.path.exists(os.path.join(BUILD_DIR, "build.ninja")):
        # debugoptimized = -O2 -g: optimised, with symbols for profiling;
        # never a sanitizer build for a benchmark
        subprocess.run(["meson", "setup", BUILD_DIR, ROOT, "--buildtype=debugoptimized"],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", BUILD_DIR, "posternd"], check=True,
                   stdout=subprocess.DEVNULL)
    POSTERND = os.path.join(BUILD_DIR, "posternd")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    pf = subprocess.run(["postconf", "-h", "-d", "mail_version"], stdout=subprocess.PIPE,
                        text=True).stdout.strip()
    return f"{os.cpu_count()} CPU ({model}), {mem} MiB RAM, Postfix {pf}"


def main():
    if not IS_ROOT:
        log("bench: needs root (a private Postfix instance runs its master as root)")
        return 1
    for tool in ("smtp-source", "smtp-sink", "postfix", "script"):
        if not shutil.which(tool):
            log(f"bench: {tool} not found (scripts/deps.sh installs postfix)")
            return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        pass
    build_posternd()
    log(f"bench: {machine()}")
    log(f"bench: posternd {POSTERND}; {RUNS} run(s) per scenario, median reported"
        f"{' (QUICK)' if QUICK else ''}")
    tmp_root = tempfile.mkdtemp(prefix="postern-bench-", dir="/var/tmp")
    os.chmod(tmp_root, 0o755)
    CLEAN.push(lambda: shutil.rmtree(tmp_root, ignore_errors=True))

    results = {}   # name -> {"postern": [runs], "postfix": [runs]}
    lines = []     # RESULT lines
    md = [f"# Postern vs Postfix — {time.strftime('%Y-%m-%d %H:%M')}", "",
          f"{machine()}; {RUNS} run(s) per scenario, median"
          f"{' (BENCH_QUICK)' if QUICK else ''}.", ""]
    kinds = [Postfix, Postern]
    started = time.monotonic()
    for sc in SCENARIOS:
        if ONLY and not any(sc["name"].startswith(o) for o in ONLY):
            continue
        if sc["name"] == "idle":
            continue
        runs = {"postern": [], "postfix": []}
        for i in range(RUNS):
            for kind in kinds:
                msgs = sc.get("msgs")
                if msgs is None:
                    # sustained: as many messages as this gateway accepts in
                    # sc["seconds"] at the rate measured in the first scenario
                    # (+30 %: a run must last at least that long)
                    prev = results.get("4k_1rcpt_20s", {}).get(kind.name, [])
                    rate = med(prev, "accepted")
                    if rate != rate:  # not measured in this invocation
                        cal = dict(sc, msgs=2000)
                        try:
                            rate = one_run(kind, cal, 2000, tmp_root)["accepted"]
                        except Exception:
                            rate = float("nan")
                        if rate != rate:
                            rate = 300.0
                        results.setdefault("4k_1rcpt_20s", {}).setdefault(
                            kind.name, []).append({"accepted": rate})
                    msgs = int(rate * sc["seconds"] * 1.3)
                quiet = wait_quiet(15 if QUICK else 90)
                try:
                    r = one_run(kind, sc, msgs, tmp_root)
                except Exception as e:
                    r = {"note": f"run failed: {e}"}
                r["busy_before"] = quiet
                if quiet >= 15:
                    r["note"] = (r.get("note", "") + f" machine {quiet:.0f}% busy with other "
                                 "work before this run").strip()
                runs[kind.name].append(r)
                log(f"  {sc['name']} run {i + 1} {kind.name:7s} "
                    + " ".join(f"{k}={fmt(r.get(k, float('nan')), 2)}"
                               for k in ("accepted", "e2e", "cpu_per_1k", "peak_mib",
                                         "p50_ms", "p99_ms", "seconds", "machine_busy",
                                         "gen_cpu_per_1k"))
                    + (f" [{r['note']}]" if r.get("note") else ""))
        results[sc["name"]] = runs
        hdr = (f"{sc['name']}: {sc['size'] // 1024} KiB, {sc['rcpts']} rcpt, "
               f"{sc['sessions']} sessions, "
               + (f"{sc['msgs']} msgs" if "msgs" in sc else f"≥{sc['seconds']} s"))
        table = [f"| {hdr} | Postern | Postfix | Postern/Postfix |", "|---|---:|---:|---:|"]
        for key, label, nd in METRICS:
            a, b = med(runs["postern"], key), med(runs["postfix"], key)
            table.append(f"| {label} | {fmt(a, nd)} | {fmt(b, nd)} | {fmt(ratio(a, b), 2)} |")
        notes = [f"{k}: {r['note']}" for k in runs for r in runs[k] if r.get("note")]
        log("")
        for t in table:
            log(t)
        for n in notes:
            log(f"  note: {n}")
        a, b = med(runs["postern"], "e2e"), med(runs["postfix"], "e2e")
        line = f"RESULT {sc['name']} postern={fmt(a, 1)} postfix={fmt(b, 1)} ratio={fmt(ratio(a, b), 2)}"
        line = line.replace(",", "")
        lines.append(line)
        log(line)
        log("")
        md += table + [""] + [f"- note: {n}" for n in notes] + ["", "    " + line, ""]

    idle = next((s for s in SCENARIOS if s["name"] == "idle"), None)
    if idle and (not ONLY or any("idle".startswith(o) or o.startswith("idle") for o in ONLY)):
        n = idle["conns"]
        ir = {}
        for kind in kinds:
            rs = []
            for i in range(RUNS):
                wait_quiet(15 if QUICK else 90)
                try:
                    rs.append(idle_run(kind, n, tmp_root))
                except Exception as e:
                    rs.append({"note": f"run failed: {e}"})
                r = rs[-1]
                log(f"  idle_{n} run {i + 1} {kind.name:7s} " + (r.get("note") or
                    f"banners={r['banners']}/{r['asked']} connected={r['connected']} "
                    f"mem {r['before_kib']}→{r['after_kib']} KiB "
                    f"bytes/conn={fmt(r['bytes_per_conn'], 0)} processes {r['procs'][0]}→{r['procs'][1]}"))
            ir[kind.name] = rs
        a, b = med(ir["postern"], "bytes_per_conn"), med(ir["postfix"], "bytes_per_conn")
        ba, bb = med(ir["postern"], "banners"), med(ir["postfix"], "banners")
        table = [f"| idle_{n}: {n} connections, banner read, idle | Postern | Postfix | Postern/Postfix |",
                 "|---|---:|---:|---:|",
                 f"| connections served (banner received) | {fmt(ba, 0)} | {fmt(bb, 0)} | {fmt(ratio(ba, bb), 2)} |",
                 f"| memory per served connection, bytes | {fmt(a, 0)} | {fmt(b, 0)} | {fmt(ratio(a, b), 2)} |",
                 f"| memory for all of them, MiB | {fmt(a * ba / 2**20, 1)} | {fmt(b * bb / 2**20, 1)} | |"]
        log("")
        for t in table:
            log(t)
        log("  (Postfix serves at most default_process_limit = 100 smtpd processes; the other "
            "connections wait in the listen queue without a banner. Memory: Postern VmRSS, "
            "Postfix sum of PSS over its processes.)")
        line = f"RESULT idle_{n} postern={fmt(a, 0)} postfix={fmt(b, 0)} ratio={fmt(ratio(a, b), 3)}"
        line = line.replace(",", "")
        log("# idle: values are bytes of memory per connection (lower is better)")
        log(line)
        lines.append(line)
        md += table + ["", "    " + line, ""]

    log("")
    log("Banner latency under slow DNS: not part of this run; measured by "
        "bench/banner_latency.py (docs/performance.md).")
    log("")
    log("Summary (medians; end-to-end = messages / time from first send to last arrival at the sink):")
    for line in lines:
        log(line)
    md += ["Banner latency under slow DNS: see bench/banner_latency.py.",
           "", "```"] + lines + ["```", ""]
    with open(RESULTS_MD, "w") as f:
        f.write("\n".join(md))
    log(f"bench: markdown table written to {RESULTS_MD}; "
        f"{time.monotonic() - started:.0f} s in all")
    return 0


def on_signal(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    rc = 1
    try:
        rc = main()
    except KeyboardInterrupt:
        log("bench: interrupted; cleaning up")
        rc = 130
    except subprocess.CalledProcessError as e:
        log(f"bench: {e}")
        rc = 1
    finally:
        CLEAN.run_all()
    sys.exit(rc)
