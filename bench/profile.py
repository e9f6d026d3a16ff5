#!/usr/bin/python3
"""Profile posternd under the 4 KiB / 1 recipient / 20 sessions load of
bench/run.py, with perf (call graphs) and a syscall count, so that the
developers see where the CPU goes. Not part of `make bench`.

    /usr/bin/python3 bench/profile.py [MESSAGES]

Writes perf.data and the reports under /tmp/postern-profile/ and prints the
top of each. perf needs only software events (cpu-clock) here, which works
on virtual machines without hardware counters.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

OUT = "/tmp/postern-profile"


def main():
    msgs = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    run.build_posternd()
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="postern-profile-", dir="/var/tmp")
    os.chmod(tmp, 0o755)
    run.CLEAN.push(lambda: shutil.rmtree(tmp, ignore_errors=True))
    sink = run.Sink(tmp)
    gw = run.Postern(tmp, sink.port)
    run.smtp_source(gw.port, 20, 300, 4096, 1, 60)
    sink.wait_count(300, 60)
    data = os.path.join(OUT, "perf.data")
    perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384",
                             "-o", data, "-p", str(gw.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.CLEAN.push(lambda: run.kill_proc(perf, run.signal.SIGINT, 60))
    time.sleep(0.5)
    cpu0 = gw.cpu()
    t0 = time.monotonic()
    rc, out = run.smtp_source(gw.port, 20, msgs, 4096, 1, 600)
    t = time.monotonic() - t0
    sink.wait_count(300 + msgs, 120)
    cpu = gw.cpu() - cpu0
    run.kill_proc(perf, run.signal.SIGINT, 120)
    print(f"profile: {msgs} msgs in {t:.2f} s ({msgs / t:.0f} msg/s accepted), "
          f"posternd CPU {cpu:.2f} s ({cpu / msgs * 1e6:.0f} us/msg), smtp-source rc {rc} {out[-300:]}")
    # syscall mix of the same load, counted with strace (slows it: counts only)
    strace_out = os.path.join(OUT, "strace-c.txt")
    st = subprocess.Popen(["strace", "-f", "-c", "-o", strace_out, "-p", str(gw.proc.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run.CLEAN.push(lambda: run.kill_proc(st, run.signal.SIGINT, 60))
    time.sleep(0.5)
    run.smtp_source(gw.port, 20, 2000, 4096, 1, 600)
    sink.wait_count(300 + msgs + 2000, 120)
    run.kill_proc(st, run.signal.SIGINT, 60)
    gw.stop()
    sink.stop()
    for name, args in [
        ("self", ["--no-children", "--sort", "symbol"]),
        ("children", ["--children", "--sort", "symbol"]),
        ("dso", ["--no-children", "--sort", "dso"]),
        ("threads", ["--no-children", "--sort", "comm"]),
    ]:
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none",
                              "--percent-limit", "0.7"] + args,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        with open(os.path.join(OUT, f"report-{name}.txt"), "w") as f:
            f.write(rep)
        print(f"---- perf report ({name}) ----")
        print("\n".join(line for line in rep.splitlines() if line and not line.startswith("#"))[:6000])
    if os.path.exists(strace_out):
        print("---- strace -c (2000 messages) ----")
        with open(strace_out) as f:
            print(f.read()[:3000])
    print(f"profile: reports in {OUT}")


if __name__ == "__main__":
    run.signal.signal(run.signal.SIGTERM, run.on_signal)
    try:
        main()
    except KeyboardInterrupt:
        print("profile: interrupted; cleaning up")
    finally:
        run.CLEAN.run_all()
