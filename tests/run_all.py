#!/usr/bin/python3
"""Run every Postern test suite and print one closing line: "N passed, N failed".

Suites, in order (each counted test by test):
  format       clang-format check of every C source and header (one test)
  unit         cmocka unit tests, normal build (build/)
  unit-asan    the same tests built with ASan+UBSan (build-asan/), leaks fatal
  fuzz         each libFuzzer harness for a short run on its seed corpus
               (clang, ASan+UBSan; build-fuzz/)
  integration  pytest against build-asan/posternd: real clients, real servers

Environment: SUITES=unit,integration runs a subset; FUZZ_SECS (default 10)
sets the per-harness fuzz time; PYTEST_ARGS adds pytest arguments.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}

results = []  # (suite, name, ok)


def record(suite, name, ok, detail=""):
    results.append((suite, name, ok))
    mark = "PASS" if ok else "FAIL"
    print(f"[{mark}] {suite}: {name}" + (f"  {detail}" if detail and not ok else ""), flush=True)


def run(cmd, env=None, cwd=ROOT, timeout=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=timeout)


def build(dirname, opts, env=None):
    if not os.path.exists(os.path.join(ROOT, dirname, "build.ninja")):
        r = run(["meson", "setup", dirname] + opts, env=env)
        if r.returncode != 0:
            print(r.stdout)
            return False
    r = run(["ninja", "-C", dirname], env=env)
    if r.returncode != 0:
        print(r.stdout[-20000:])
        return False
    return True


def suite_format():
    files = sorted(glob.glob(os.path.join(ROOT, "src/**/*.[ch]"), recursive=True) +
                   glob.glob(os.path.join(ROOT, "tests/**/*.[ch]"), recursive=True))
    r = run(["clang-format", "--dry-run", "--Werror"] + files)
    record("format", "clang-format", r.returncode == 0, r.stdout[-3000:])


def unit_tests(suite, builddir, meson_opts=(), env=None):
    if not build(builddir, list(meson_opts)):
        record(suite, "build", False)
        return
    record(suite, "build", True)
    for exe in sorted(glob.glob(os.path.join(ROOT, builddir, "tests/unit/test_*"))):
        if not os.access(exe, os.X_OK) or os.path.isdir(exe):
            continue
        name = os.path.basename(exe)
        e = {"CMOCKA_MESSAGE_OUTPUT": "TAP", "POSTERN_SRCDIR": ROOT}
        e.update(env or {})
        try:
            r = run([exe], env=e, timeout=300)
        except subprocess.TimeoutExpired:
            record(suite, name, False, "timeout")
            continue
        seen = 0
        for line in r.stdout.splitlines():
            m = re.match(r"^(not ok|ok) \d+ - (.*)$", line)
            if m:
                seen += 1
                record(suite, f"{name}:{m.group(2)}", m.group(1) == "ok")
        if r.returncode != 0 or seen == 0:
            # a crash, a sanitizer report or a leak after the last test
            record(suite, f"{name} (exit status {r.returncode})", False, r.stdout[-4000:])


def suite_fuzz():
    secs = os.environ.get("FUZZ_SECS", "10")
    if not build("build-fuzz", ["-Dfuzz=true", "-Db_sanitize=address,undefined",
                                "-Db_lundef=false"], env={"CC": "clang"}):
        record("fuzz", "build", False)
        return
    record("fuzz", "build", True)
    for exe in sorted(glob.glob(os.path.join(ROOT, "build-fuzz/tests/fuzz/fuzz_*"))):
        if not os.access(exe, os.X_OK) or os.path.isdir(exe):
            continue
        name = os.path.basename(exe)
        corpus = os.path.join(ROOT, "tests/fuzz/corpus", name)
        with tempfile.TemporaryDirectory() as tmp:
            work = os.path.join(tmp, "corpus")
            if os.path.isdir(corpus):
                shutil.copytree(corpus, work)
            else:
                os.mkdir(work)
            r = run([exe, f"-max_total_time={secs}", "-timeout=10", "-rss_limit_mb=2048",
                     f"-artifact_prefix={tmp}/", work], env=SAN_ENV, timeout=int(secs) + 120)
        record("fuzz", name, r.returncode == 0, r.stdout[-4000:])


def suite_integration():
    if not build("build-asan", ["-Db_sanitize=address,undefined", "-Db_lundef=false"]):
        record("integration", "build", False)
        return
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        env = {"POSTERND": os.path.join(ROOT, "build-asan/posternd")}
        env.update(SAN_ENV)
        args = ["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"--junitxml={xml}", "tests/integration"]
        args += os.environ.get("PYTEST_ARGS", "").split()
        r = subprocess.run(args, cwd=ROOT, env=dict(os.environ, **env))
        if not os.path.exists(xml):
            record("integration", "pytest", False, f"exit {r.returncode}")
            return
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = case.get("classname", "") + "::" + case.get("name", "")
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            record("integration", name, not failed)
        if r.returncode not in (0, 1):
            record("integration", f"pytest exit status {r.returncode}", False)


SUITES = {
    "format": suite_format,
    "unit": lambda: unit_tests("unit", "build"),
    "unit-asan": lambda: unit_tests("unit-asan", "build-asan",
                                    ["-Db_sanitize=address,undefined", "-Db_lundef=false"],
                                    SAN_ENV),
    "fuzz": suite_fuzz,
    "integration": suite_integration,
}


def main():
    wanted = os.environ.get("SUITES", ",".join(SUITES)).split(",")
    for s in wanted:
        print(f"==== suite {s}", flush=True)
        SUITES[s]()
    passed = sum(1 for r in results if r[2])
    failed = sum(1 for r in results if not r[2])
    for suite, name, ok in results:
        if not ok:
            print(f"FAILED: {suite}: {name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
