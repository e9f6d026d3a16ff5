"""Self-protection: resource conservation (tarpit, halt, listener
suspension, alerts) and slow or abusive clients (minimum data rate, session
deadline, per-IP connection rate, improper pipelining, junk commands).

Resource conservation is driven through resource_conservation.
test_pressure_file, which the sampler reads once a second: the tests set a
pressure, wait for the log line that says the mode changed, and then look
at what clients see. Times are kept to a few seconds per test.
"""
import os
import socket
import stat
import time

from conftest import RawSMTP


def protected(make_gateway, tmp_path, extra=None):
    """A gateway whose pressures come from a file, with an alert script that
    appends its arguments to alerts.txt."""
    pressure = tmp_path / "pressure"
    alerts = tmp_path / "alerts.txt"
    script = tmp_path / "alert.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {alerts}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    # disk is off by default; switched on here at 75/90
    cfg = {"resource_conservation": {"test_pressure_file": str(pressure),
                                     "alert_command": str(script),
                                     "disk_start": 75, "disk_halt": 90}}
    if extra:
        cfg.update(extra)
    gw = make_gateway(cfg)
    return gw, pressure, alerts


def set_pressure(gw, pressure, text, expect):
    """Write the pressures and wait for the sampler's log line."""
    start = len(gw.log())
    pressure.write_text(text + "\n")
    gw.wait_log(expect, timeout=10, start=start)


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def wait_alerts(alerts, word, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if alerts.exists() and word in alerts.read_text():
            return alerts.read_text()
        time.sleep(0.05)
    raise AssertionError(f"alert {word!r} never ran: {alerts.read_text() if alerts.exists() else ''}")


def test_tarpit_delays_every_reply(make_gateway, tmp_path):
    gw, pressure, alerts = protected(make_gateway, tmp_path)
    fast, t_fast = timed(lambda: RawSMTP(gw.port))
    assert fast.banner[0] == 220 and t_fast < 0.8
    # memory at its start threshold: 1 s per reply
    set_pressure(gw, pressure, "memory=75",
                 r"Resource conservation mode entered: tarpit 1 s \(memory 75%\)")
    c, t_banner = timed(lambda: RawSMTP(gw.port))
    assert c.banner[0] == 220
    assert t_banner >= 0.9, t_banner
    _, t_ehlo = timed(c.ehlo)
    assert t_ehlo >= 0.9, t_ehlo
    # a session that started before the tarpit is tarpitted too
    _, t_noop = timed(lambda: fast.expect("NOOP", 250))
    assert t_noop >= 0.9, t_noop
    # a pipelined batch keeps its order (and is held once)
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    set_pressure(gw, pressure, "memory=10", r"Resource conservation mode left \(all pressures normal")
    # what was held goes out; then replies are immediate again
    _, t_after = timed(lambda: c.expect("RSET", 250))
    assert t_after < 1.5
    _, t_after = timed(lambda: c.expect("NOOP", 250))
    assert t_after < 0.5, t_after
    c.expect("QUIT", 221)
    fast.expect("QUIT", 221)
    text = wait_alerts(alerts, "normal")
    assert "tarpit Resource conservation mode entered: tarpit 1 s (memory 75%)" in text
    assert text.index("tarpit") < text.index("normal")


def test_halt_refuses_connections_and_mail(make_gateway, tmp_path):
    gw, pressure, alerts = protected(make_gateway, tmp_path)
    old = RawSMTP(gw.port)
    old.ehlo()
    set_pressure(gw, pressure, "disk=95",
                 r"Resource conservation mode entered: halted \(disk 95%\)")
    c = RawSMTP(gw.port)
    assert c.banner == (421, ["4.3.2 mx.gw.test Service temporarily unavailable"]), c.banner
    assert c.closed()
    gw.wait_log(r"Receiving Failed: resource conservation mode halted \(address 127\.0\.0\.1\)")
    old.expect("MAIL FROM:<a@example.org>", 452, "4.3.1")
    assert "Insufficient system resources" in old.expect("MAIL FROM:<a@example.org>", 452)[-1]
    wait_alerts(alerts, "halted")
    # leaving restores normal service, for old and new sessions
    set_pressure(gw, pressure, "disk=10", r"Resource conservation mode left")
    old.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    old.expect("RCPT TO:<b@example.com>", 250)
    old.expect("DATA", 354)
    old.send(b"Subject: after halt\r\n\r\nx\r\n.\r\n")
    assert old.reply()[0] == 250
    c = RawSMTP(gw.port)
    assert c.banner[0] == 220
    c.expect("QUIT", 221)
    assert len(gw.spool_messages()) == 1
    wait_alerts(alerts, "normal")


def test_disk_off_by_default(make_gateway, tmp_path):
    pressure = tmp_path / "pressure"
    pressure.write_text("disk=100\n")
    gw = make_gateway({"resource_conservation": {"test_pressure_file": str(pressure)}})
    time.sleep(1.2)
    c = RawSMTP(gw.port)
    assert c.banner[0] == 220
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    assert "Resource conservation" not in gw.log()


def test_hysteresis_keeps_the_state(make_gateway, tmp_path):
    gw, pressure, _ = protected(make_gateway, tmp_path)
    set_pressure(gw, pressure, "backlog=92", r"mode entered: halted \(backlog 92%\)")
    # 87 is under the halt threshold but inside the 5-point band: still halted
    pressure.write_text("backlog=87\n")
    time.sleep(2.2)
    assert RawSMTP(gw.port).banner[0] == 421
    assert "entered: tarpit" not in gw.log()
    set_pressure(gw, pressure, "backlog=84", r"mode entered: tarpit \d+ s \(backlog 84%\)")
    set_pressure(gw, pressure, "backlog=0", r"mode left")


def test_backlog_suspends_and_resumes_listeners(make_gateway, tmp_path):
    gw, pressure, alerts = protected(make_gateway, tmp_path)
    set_pressure(gw, pressure, "backlog=96",
                 r"Resource conservation: listeners suspended \(backlog 96%\)")
    # the kernel still completes the handshake, but nobody accepts: no banner
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=1.5) for _ in range(2)]
    for s in socks:
        try:
            data = s.recv(512)
        except socket.timeout:
            data = None
        assert data is None, f"a suspended listener answered: {data!r}"
    set_pressure(gw, pressure, "backlog=10",
                 r"Resource conservation: listeners resumed \(backlog 10%\)")
    for s in socks:
        s.settimeout(5)
        assert s.recv(512).startswith(b"220 "), "not accepted after resume"
        s.sendall(b"QUIT\r\n")
        s.close()
    text = wait_alerts(alerts, "resumed")
    assert "suspended Resource conservation: listeners suspended (backlog 96%)" in text
    c = RawSMTP(gw.port)
    assert c.banner[0] == 220
    c.expect("QUIT", 221)


def test_slow_data_is_cut_off(make_gateway):
    gw = make_gateway({"limits": {"max_errors": 20, "min_data_rate": 100,
                                  "min_data_rate_window": "1s", "min_data_rate_grace": "1s"}})
    # a client at full speed is not affected
    c = RawSMTP(gw.port)
    assert c.message("a@example.org", ["b@example.com"], b"Subject: fast\r\n\r\nx\r\n")[0] == 250
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    got = None
    deadline = time.monotonic() + 8
    c.sock.settimeout(0.5)
    for ch in b"Subject: slow\r\n\r\n" * 4:
        try:
            c.send(bytes([ch]))
            got = c.reply()
            break
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        if time.monotonic() > deadline:
            break
    assert got is not None, "slow transfer never cut off"
    assert got[0] == 421 and got[1][-1] == "4.4.2 mx.gw.test Error: data transfer too slow", got
    assert c.closed()
    gw.wait_log(r"ICID \d+ data transfer too slow: \d+ bytes in \d+ ms \(minimum 100 bytes/s\)")
    gw.wait_log(r"Message aborted MID \d+ Receiving aborted \(data transfer too slow\)")
    assert len(gw.spool_messages()) == 1  # only the fast one


def test_session_deadline(make_gateway):
    gw = make_gateway({"timeouts": {"session": "2s"}})
    c = RawSMTP(gw.port)
    c.ehlo()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        code, lines = c.cmd("NOOP")
        if code != 250:
            break
        time.sleep(0.3)
    assert code == 421 and lines[-1] == "4.4.2 mx.gw.test Error: session time limit exceeded"
    assert c.closed()
    gw.wait_log(r"ICID \d+ session time limit of 2 s exceeded")


def test_connection_rate_per_ip(make_gateway):
    gw = make_gateway({"limits": {"max_errors": 20, "max_connection_rate": 3}})
    # The start-up probe was one connection. Eight more: whichever way a
    # minute boundary splits them, one minute holds more than three.
    refused = []
    for _ in range(8):
        c = RawSMTP(gw.port)
        if c.banner[0] == 421:
            refused.append(c.banner)
            assert c.closed()
        else:
            c.expect("QUIT", 221)
    assert refused, "no connection was refused"
    assert all(b == (421, ["4.7.0 mx.gw.test Too many connections from your address, "
                           "try again later"]) for b in refused), refused
    gw.wait_log(r"Receiving Failed: connection rate limit of 3 per minute exceeded "
                r"\(address 127\.0\.0\.1\)")
    # logged once per minute, not once per refused connection
    assert gw.log().count("connection rate limit of 3") <= 2


def test_improper_pipelining_after_helo(gateway):
    c = RawSMTP(gateway.port)
    c.expect("HELO old.client", 250)
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
    assert c.reply() == (554, ["5.5.0 Error: improper command pipelining"])
    assert c.closed()
    gateway.wait_log(r"ICID \d+ improper command pipelining after MAIL from 127\.0\.0\.1")
    # before any greeting at all
    c = RawSMTP(gateway.port)
    c.send("NOOP\r\nNOOP\r\n")
    assert c.reply()[0] == 554
    assert c.closed()
    # one command at a time is fine for a HELO client
    c = RawSMTP(gateway.port)
    c.expect("HELO old.client", 250)
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("QUIT", 221)


def test_pipelining_after_ehlo_is_fine(gateway):
    c = RawSMTP(gateway.port)
    c.send("EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
    assert c.reply()[0] == 250
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 250]
    c.send("DATA\r\n")
    assert c.reply()[0] == 354
    c.send("Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert c.reply()[0] == 250
    assert c.reply()[0] == 221
    assert len(gateway.spool_messages()) == 1


def test_junk_commands_disconnect(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.send("XJUNK\r\n" * 25)
    codes = []
    while True:
        code, _ = c.reply()
        codes.append(code)
        if code != 500:
            break
    assert codes[-1] == 421 and codes.count(500) == 21, codes
    assert c.closed()
    gateway.wait_log(r"ICID \d+ too many errors \(21\), disconnecting")
