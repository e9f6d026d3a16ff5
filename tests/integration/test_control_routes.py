"""`smtproutes` (print, new, edit, delete) against a running posternd (ASan):
the routes printed as configured; a new route, an edited one and a deleted
one take effect for the next message without a restart; the file on disk
is rewritten (previous one kept as FILE.bak) and survives a SIGHUP reload;
invalid hosts, priorities and ports are refused with nothing changed; and
delete is destructive (refused without --yes on a non-tty and without
"confirm" on the raw socket).

posternctl runs in the gateway's directory with -s var/run/postern.sock,
like test_control.py.
"""
import json
import os
import socket

import yaml

from conftest import delivery_overrides, make_content, route, send_message
from test_control import SOCK, ctl, ctl_json

SENDER = "sender@example.org"


def file_routes(gw):
    with open(gw.cfg_path) as f:
        return {r["domain"]: r["hosts"] for r in (yaml.safe_load(f).get("smtp_routes") or [])}


def printed(gw):
    return {r["domain"]: r for r in ctl_json(gw, "smtproutes", "print")["routes"]}


def raw(gw, req):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(os.path.join(gw.dir, SOCK))
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "daemon closed without an answer"
            buf += chunk
    return json.loads(buf)


def test_routes_print_new_edit_delete_apply_and_persist(make_gateway, smtp_peer):
    a, b = smtp_peer("a"), smtp_peer("b")
    gw = make_gateway(delivery_overrides([
        route("example.com", ("127.0.0.1", a.port, 10), ("127.0.0.2", a.port, 0)),
        route(".example.org", "USEDNS")]))

    # print: text table and JSON, hosts by priority
    text = ctl(gw, "smtproutes").stdout
    assert "Receiving Domain" in text and "Destination Hosts" in text
    assert "Priority" in text and "Port" in text
    assert "example.com" in text and "USEDNS" in text
    routes = printed(gw)
    assert routes["example.com"]["hosts"] == [
        {"host": "127.0.0.2", "port": a.port, "priority": 0},
        {"host": "127.0.0.1", "port": a.port, "priority": 10}]
    assert routes[".example.org"]["kind"] == "usedns"

    # new: the next message to example.net goes to b, no restart
    r = ctl_json(gw, "smtproutes", "new", "Example.NET", f"127.0.0.1:{b.port}/5")
    assert r["route"]["hosts"] == [{"host": "127.0.0.1", "port": b.port, "priority": 5}]
    gw.wait_log(r"SMTP route for example\.net added by operator \(uid \d+\)")
    send_message(gw, SENDER, ["x@example.net"], make_content("new route"))
    assert b.wait_messages(1)[0]["rcpts"] == ["x@example.net"]
    assert file_routes(gw)["example.net"] == [{"host": "127.0.0.1", "port": b.port,
                                              "priority": 5}]
    assert os.path.exists(gw.cfg_path + ".bak")
    assert not os.path.exists(gw.cfg_path + ".tmp")

    # edit: the next message goes to the new host
    out = ctl(gw, "smtproutes", "edit", "example.net", f"127.0.0.1:{a.port}").stdout
    assert "SMTP route for example.net changed" in out
    gw.wait_log(r"SMTP route for example\.net changed by operator \(uid \d+\)")
    send_message(gw, SENDER, ["y@example.net"], make_content("edited route"))
    assert a.wait_messages(1)[0]["rcpts"] == ["y@example.net"]
    assert len(b.messages()) == 1
    assert file_routes(gw)["example.net"] == [{"host": "127.0.0.1", "port": a.port,
                                              "priority": 0}]

    # the rewritten file is what a reload reads: SIGHUP keeps the route
    gw.hup()
    gw.wait_log(r"Configuration reloaded from")
    assert printed(gw)["example.net"]["hosts"][0]["port"] == a.port

    # delete: refused without --yes on a non-tty, then done with it
    p = ctl(gw, "smtproutes", "delete", "example.net", ok=False)
    assert p.returncode == 2 and "--yes" in p.stderr
    assert "example.net" in printed(gw)
    ctl(gw, "--yes", "smtproutes", "delete", "example.net")
    gw.wait_log(r"SMTP route for example\.net deleted by operator \(uid \d+\)")
    assert "example.net" not in printed(gw)
    assert "example.net" not in file_routes(gw)
    assert set(file_routes(gw)) == {"example.com", ".example.org"}


def test_routes_invalid_changes_refused_nothing_changed(make_gateway):
    gw = make_gateway(delivery_overrides([route("example.com", ("127.0.0.1", 2526))]))
    with open(gw.cfg_path, "rb") as f:
        before = f.read()
    routes_before = printed(gw)
    bad = [
        ("new", "example.net", "bad_host!"),
        ("new", "example.net", "192.168.0.256"),
        ("new", "example.net", "127.0.0.1/70000"),
        ("new", "example.net", "127.0.0.1:0"),
        ("new", "example.net", "127.0.0.1:99999"),
        ("new", "example.net", "127.0.0.1/x"),
        ("new", "example.net", "USEDNS", "127.0.0.1"),
        ("new", "bad domain", "127.0.0.1"),
        ("new", "example.com", "127.0.0.1"),  # exists: use edit
        ("edit", "nowhere.test", "127.0.0.1"),
        ("edit", "example.com", "[::1"),
    ]
    for args in bad:
        p = ctl(gw, "smtproutes", *args, ok=False)
        assert p.returncode == 1, f"{args}: rc {p.returncode} {p.stdout}{p.stderr}"
        assert p.stderr.strip(), args
    p = ctl(gw, "--yes", "smtproutes", "delete", "nowhere.test", ok=False)
    assert p.returncode == 1 and "no SMTP route" in p.stderr
    # raw protocol: delete needs "confirm"
    resp = raw(gw, {"cmd": "smtproutes", "args": {"action": "delete", "domain": "example.com"}})
    assert not resp["ok"] and "confirm" in resp["error"]
    with open(gw.cfg_path, "rb") as f:
        assert f.read() == before
    assert not os.path.exists(gw.cfg_path + ".bak")
    assert not os.path.exists(gw.cfg_path + ".tmp")
    assert printed(gw) == routes_before

    # the special destinations and an IPv6 literal with a port are accepted
    ctl(gw, "smtproutes", "new", "ALL", "/dev/null")
    ctl(gw, "smtproutes", "edit", "example.com", "[::1]:2526/3", "mx.example.com")
    routes = printed(gw)
    assert routes["ALL"]["kind"] == "devnull"
    assert routes["example.com"]["hosts"] == [
        {"host": "mx.example.com", "port": 25, "priority": 0},
        {"host": "::1", "port": 2526, "priority": 3}]
    assert file_routes(gw)["ALL"] == "/dev/null"
    text = ctl(gw, "smtproutes", "print").stdout
    assert "/dev/null" in text and "mx.example.com" in text
