"""SIGHUP reload and `posternd -n`."""
import copy
import os
import socket
import subprocess

from conftest import POSTERND, RawSMTP, free_port, to_yaml


def reload(gw, start=None):
    start = len(gw.log()) if start is None else start
    gw.hup()
    m = gw.wait_log(r"Configuration (reloaded from|reload refused: )(.*)$", start=start)
    return m


def test_good_reload_applies_to_new_sessions(make_gateway):
    gw = make_gateway()
    old = RawSMTP(gw.port)
    old.ehlo()
    old.expect("MAIL FROM:<a@example.org>", 250)
    old.expect("RCPT TO:<x@added.example>", 554, "5.7.1")
    old.expect("RCPT TO:<b@example.com>", 250)
    gw.cfg["relay_domains"].append("added.example")
    gw.cfg["listeners"][0]["hostname"] = "mx2.gw.test"
    gw.write_config()
    m = reload(gw)
    assert m.group(1) == "reloaded from", m.group(0)
    new = RawSMTP(gw.port)
    assert new.banner[1][0].startswith("mx2.gw.test "), new.banner
    assert new.ehlo()[0] == "mx2.gw.test"
    new.expect("MAIL FROM:<a@example.org>", 250)
    new.expect("RCPT TO:<x@added.example>", 250, "2.1.5")
    # the open session keeps working (with the rules it started with)
    old.expect("RCPT TO:<y@added.example>", 554, "5.7.1")
    old.expect("DATA", 354)
    old.send(b"Subject: across reload\r\n\r\nx\r\n.\r\n")
    old.expect(None, 250, "2.0.0")
    new.expect("DATA", 354)
    new.send(b"Subject: new\r\n\r\ny\r\n.\r\n")
    new.expect(None, 250, "2.0.0")
    m1, m2 = gw.spool_messages()
    assert m1["rcpts"] == ["b@example.com"]
    assert m2["rcpts"] == ["x@added.example"]
    assert b"\r\n\tby mx2.gw.test (Postern) with ESMTP id " in m2["body"]


def test_reload_changes_limits(make_gateway):
    gw = make_gateway({"limits": {"max_recipients": 1}})
    gw.cfg["limits"]["max_recipients"] = 2
    gw.write_config()
    assert reload(gw).group(1) == "reloaded from"
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<a@example.com>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("RCPT TO:<c@example.com>", 452, "4.5.3")


def test_bad_yaml_refused_old_config_stays(make_gateway):
    gw = make_gateway()
    good = to_yaml(gw.cfg)
    with open(gw.cfg_path, "w") as f:
        f.write(good.replace('relay_domains:\n', 'relay_domains: [broken\n', 1))
    m = reload(gw)
    assert m.group(1) == "reload refused: ", m.group(0)
    assert m.group(2).startswith(gw.cfg_path + ":"), m.group(0)
    line, col = m.group(2)[len(gw.cfg_path) + 1:].split(":")[:2]
    assert line.isdigit() and col.isdigit() and int(line) >= 1 and int(col) >= 1, m.group(0)
    c = RawSMTP(gw.port)
    assert c.banner[1][0].startswith("mx.gw.test ")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<a@example.com>", 250)
    c.expect("RCPT TO:<a@x.sub.example.net>", 250)
    # and a fixed file is taken again
    gw.write_config()
    assert reload(gw).group(1) == "reloaded from"


def test_bad_value_refused_with_position(make_gateway):
    gw = make_gateway()
    text = to_yaml(gw.cfg)
    lines = text.splitlines()
    i = lines.index("  max_errors: 20")
    lines[i] = "  max_errors: lots"
    with open(gw.cfg_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    m = reload(gw)
    assert m.group(1) == "reload refused: "
    assert m.group(2).startswith(f"{gw.cfg_path}:{i + 1}:15: "), m.group(0)
    c = RawSMTP(gw.port)
    c.ehlo()


def test_reload_refuses_unbindable_listener(make_gateway):
    gw = make_gateway()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        cfg = copy.deepcopy(gw.cfg)
        cfg["listeners"].append({"name": "Blocked", "address": "127.0.0.1",
                                 "port": blocker.getsockname()[1]})
        cfg["relay_domains"].append("added.example")
        gw.write_config(cfg)
        m = reload(gw)
        assert m.group(1) == "reload refused: ", m.group(0)
        assert "port %d" % blocker.getsockname()[1] in m.group(2)
    finally:
        blocker.close()
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<a@added.example>", 554, "5.7.1")


def test_reload_refuses_user_change(make_gateway):
    gw = make_gateway()
    cfg = copy.deepcopy(gw.cfg)
    cfg["user"] = "daemon" if cfg["user"] != "daemon" else "root"
    gw.write_config(cfg)
    m = reload(gw)
    assert m.group(0).endswith("Configuration reload refused: user changed (needs a restart)")


def test_reload_adds_and_removes_listener(make_gateway):
    gw = make_gateway()
    port2 = free_port()
    # public: a private listener's default table blocks all but RELAYLIST
    gw.cfg["listeners"].append({"name": "Second", "type": "public", "address": "127.0.0.1",
                                "port": port2, "hostname": "second.gw.test"})
    gw.write_config()
    assert reload(gw).group(1) == "reloaded from"
    gw.wait_log(rf"Listener Second listening on 127\.0\.0\.1 port {port2}")
    c = RawSMTP(port2)
    assert c.banner[1][0].startswith("second.gw.test ")
    code, lines = c.message("a@example.org", ["b@example.com"], b"Subject: 2nd\r\n\r\nx\r\n")
    assert code == 250
    c.expect("QUIT", 221)
    (m,) = gw.spool_messages()
    assert m["listener"] == "Second"
    gw.wait_log(r"New SMTP ICID \d+ interface Second \(127\.0\.0\.1\) address 127\.0\.0\.1")
    # the first listener still works
    RawSMTP(gw.port).ehlo()
    # remove it again
    del gw.cfg["listeners"][1]
    gw.write_config()
    assert reload(gw).group(1) == "reloaded from"
    gw.wait_log(rf"Listener Second closed \(127\.0\.0\.1 port {port2}\)")
    try:
        socket.create_connection(("127.0.0.1", port2), timeout=2).close()
        raise AssertionError("removed listener still accepts connections")
    except ConnectionRefusedError:
        pass


def run_check(path):
    return subprocess.run([POSTERND, "-n", "-c", path], capture_output=True, timeout=30)


def test_check_prints_effective_config(make_gateway, tmp_path):
    gw = make_gateway(start=False)
    r = run_check(gw.cfg_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert 'relay_domains: ["example.com", ".sub.example.net"]' in out
    assert f"port: {gw.port}" in out
    assert 'hostname: "mx.gw.test"' in out
    assert "max_errors: 20" in out
    assert "max_message_size: 10M" in out  # a default filled in
    assert "memory_threshold: 256K" in out
    # the dump is itself a valid configuration that dumps the same
    dumped = tmp_path / "dumped.yaml"
    dumped.write_bytes(r.stdout)
    r2 = run_check(str(dumped))
    assert r2.returncode == 0, r2.stderr
    body = lambda b: b.decode().split("\n", 1)[1]  # first line names the file
    assert body(r2.stdout) == body(r.stdout)


def test_check_reports_errors_with_position(tmp_path):
    cases = {
        "hostname: gw.test\nlimits:\n  max_errors: 20\n  bogus: 3\n": (4, 3, "bogus"),
        "hostname: gw.test\nlimits:\n  max_errors: many\n": (3, 15, "max_errors"),
        "hostname: gw.test\nlisteners:\n  - name: A\n    port: 70000\n": (4, 11, "port"),
    }
    for i, (text, (line, col, word)) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(text)
        r = run_check(str(p))
        err = r.stderr.decode()
        assert r.returncode == 1, (text, r.returncode, err)
        assert r.stdout == b""
        assert err.startswith(f"posternd: {p}:{line}:{col}: "), (text, err)
        assert word in err
    p = tmp_path / "syntax.yaml"
    p.write_text("hostname: gw.test\nrelay_domains: [example.com\nlimits:\n  max_errors: 2\n")
    r = run_check(str(p))
    assert r.returncode == 1
    import re
    assert re.match(rf"posternd: {re.escape(str(p))}:\d+:\d+: ", r.stderr.decode()), r.stderr
    r = run_check(str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and str(tmp_path / "missing.yaml") in r.stderr.decode()


def test_tls_files_checked_by_check_and_reload(make_gateway, tls_cert, tmp_path):
    cert, key = tls_cert
    gw = make_gateway()
    cfg = copy.deepcopy(gw.cfg)
    cfg["listeners"][0]["tls"] = {"certificate": str(tmp_path / "missing.pem"), "key": key}
    bad = tmp_path / "badtls.yaml"
    bad.write_text(to_yaml(cfg))
    r = run_check(str(bad))
    assert r.returncode == 1
    assert "missing.pem" in r.stderr.decode()
    gw.write_config(cfg)
    m = reload(gw)
    assert m.group(1) == "reload refused: " and "missing.pem" in m.group(2), m.group(0)
    c = RawSMTP(gw.port)
    assert "STARTTLS" not in c.ehlo()
    # a good certificate enables STARTTLS on the running listener
    cfg["listeners"][0]["tls"]["certificate"] = cert
    gw.write_config(cfg)
    assert reload(gw).group(1) == "reloaded from"
    c = RawSMTP(gw.port)
    assert "STARTTLS" in c.ehlo()
    c.expect("STARTTLS", 220, "2.0.0")
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.gw.test")
    assert "STARTTLS" not in c.ehlo()
    c.expect("QUIT", 221)
