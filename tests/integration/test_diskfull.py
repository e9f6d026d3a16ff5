"""A full spool filesystem (architecture.md, durability contract: "Write
failure: 451 4.3.0; low space: 452 4.3.1 before DATA. Nothing is lost").

The spool lives on a 3 MiB tmpfs the test mounts (root only; skipped
otherwise). Bodies above 16 KiB go to files, so both the blob and the file
paths meet the full disk:
  1. messages accepted while there is room are kept byte-exact throughout;
  2. free space below spool.min_free_space: MAIL gets 452 4.3.1 (logged);
  3. min_free_space 0 and less room than a big message needs: its DATA gets
     451 4.3.0, its partial body file is removed, nothing else changes;
     a small message on a completely full disk is refused (451/452), never
     acknowledged and lost;
     once room is made again the running daemon takes mail again;
  4. a restart verifies every stored message: 0 damaged, the earlier
     messages byte-exact;
  5. once the filler is deleted, service is normal again.
"""
import os
import subprocess
import time

import pytest

from conftest import RawSMTP, assert_spooled, make_content

SENDER = "sender@example.org"
RCPT = "rcpt@example.com"
MIB = 1024 * 1024


@pytest.fixture
def spoolfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "spoolfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield str(mnt)
    r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_until(path, filler, free_target):
    """Grow the filler file until free space is at most free_target."""
    with open(filler, "ab") as f:
        while free_bytes(path) > free_target:
            chunk = min(free_bytes(path) - free_target, MIB)
            try:
                f.write(b"\0" * max(chunk, 4096))
                f.flush()
            except OSError:
                break
    return free_bytes(path)


def body_lines(n, tag):
    return b"".join(b"%s %06d " % (tag, i) + b"x" * 80 + b"\r\n" for i in range(n))


def transaction(c, content):
    c.expect(f"MAIL FROM:<{SENDER}>", 250)
    c.expect(f"RCPT TO:<{RCPT}>", 250)
    c.expect("DATA", 354)
    data = content.replace(b"\r\n.", b"\r\n..")
    c.send(data + b".\r\n")
    return c.reply()


def stored_files(gw):
    d = os.path.join(gw.spool_dir, "bodies")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_full_spool_filesystem(spoolfs, make_gateway):
    spool = os.path.join(spoolfs, "spool")
    filler = os.path.join(spoolfs, "filler")
    over = {"paths": {"spool": spool},
            "spool": {"memory_threshold": "16K", "min_free_space": "1M"},
            # the spool's own checks are under test, not resource conservation
            # (which would tarpit from 75% of this tiny filesystem)
            "resource_conservation": {"disk_start": 99, "disk_halt": 100}}
    gw = make_gateway(over, start=False)
    gw.spool_dir = spool  # spool_messages() reads it
    gw.start()

    # 1. room: a blob and two file bodies
    kept = [make_content("small"), make_content("file1", body=body_lines(400, b"f1")),
            make_content("file2", body=body_lines(900, b"f2"))]
    c = RawSMTP(gw.port)
    c.ehlo()
    for content in kept:
        code, lines = transaction(c, content)
        assert code == 250, lines
    c.close()
    before = gw.spool_messages()
    assert len(before) == 3
    for m, content in zip(before, kept):
        assert_spooled(m, content, rcpt=RCPT)
    assert len(stored_files(gw)) == 2

    # 2. below min_free_space: 452 4.3.1 at MAIL (statvfs is cached for 1 s)
    free = fill_until(spoolfs, filler, 700 * 1024)
    assert free < MIB
    time.sleep(1.2)
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect(f"MAIL FROM:<{SENDER}>", 452, "4.3.1")
    c.expect("NOOP", 250)
    c.close()
    gw.wait_log(r"ICID \d+ MAIL refused: spool low on free space")

    # 3. min_free_space 0; a message bigger than the room left: 451 4.3.0
    gw.stop()
    gw.cfg["spool"]["min_free_space"] = 0
    gw.write_config()
    gw.start()
    fill_until(spoolfs, filler, 256 * 1024)
    files_before = stored_files(gw)
    c = RawSMTP(gw.port)
    c.ehlo()
    big = make_content("big", body=body_lines(8000, b"bg"))  # ~750 KB
    code, lines = transaction(c, big)
    assert (code, lines[-1][:5]) == (451, "4.3.0"), (code, lines)
    c.expect("NOOP", 250)
    gw.wait_log(r"Message aborted MID \d+ Receiving aborted: 451 4\.3\.0 ")
    assert stored_files(gw) == files_before, "the failed message's body file was left behind"

    # a small (blob) message on a completely full disk: refused, or stored;
    # never acknowledged and then lost
    fill_until(spoolfs, filler, 0)
    small = make_content("full")
    code, lines = transaction(c, small)
    assert code in (250, 421, 451, 452), (code, lines)
    small_acked = code == 250
    print(f"small message on a full disk: {code} {lines[-1]}")
    c.close()

    # the same process, after SQLite itself met ENOSPC: room again, service again
    os.truncate(filler, max(0, os.path.getsize(filler) - MIB))
    recovered = make_content("recovered", body=body_lines(300, b"rc"))
    deadline = time.time() + 6  # statvfs and pressures are sampled once a second
    while True:
        time.sleep(0.5)
        c = RawSMTP(gw.port)
        c.ehlo()
        code, lines = c.cmd(f"MAIL FROM:<{SENDER}>")
        if code == 250:
            c.expect(f"RCPT TO:<{RCPT}>", 250)
            c.expect("DATA", 354)
            c.send(recovered.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            code, lines = c.reply()
            c.close()
            break
        c.close()
        assert time.time() < deadline, f"MAIL still refused after space was freed: {code} {lines}"
    assert code == 250, f"no service after space was freed, without a restart: {code} {lines}"
    kept_later = [small] if small_acked else []
    kept_later.append(recovered)

    # 4. restart: every stored record verifies, the earlier ones byte-exact
    gw.stop()
    log_len = len(gw.log())
    gw.start()
    m = gw.wait_log(r"Spool \S+ loaded: (\d+) messages, \d+ recipients, (\d+) damaged",
                    start=log_len)
    assert m.group(2) == "0", m.group(0)
    after = gw.spool_messages()
    assert int(m.group(1)) == len(after)
    for m_, content in zip(after, kept):
        assert_spooled(m_, content, rcpt=RCPT)
    assert len(after) == 3 + len(kept_later), [x["mid"] for x in after]
    for m_, content in zip(after[3:], kept_later):
        assert_spooled(m_, content, rcpt=RCPT)

    # 5. filler gone: normal service
    os.unlink(filler)
    time.sleep(1.2)
    c = RawSMTP(gw.port)
    c.ehlo()
    again = make_content("again", body=body_lines(600, b"ag"))
    code, lines = transaction(c, again)
    assert code == 250, lines
    c.close()
    final = gw.spool_messages()
    assert_spooled(final[-1], again, rcpt=RCPT)
    for m_, content in zip(final, kept):
        assert_spooled(m_, content, rcpt=RCPT)
    gw.stop()
