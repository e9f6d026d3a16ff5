"""STARTTLS (RFC 3207) and the command-injection defence (CVE-2011-0411)."""
import smtplib
import ssl

import pytest

from conftest import RawSMTP, assert_spooled


@pytest.fixture
def tls_gateway(make_gateway, tls_cert):
    cert, key = tls_cert
    return make_gateway({"listeners": [{
        "name": "InboundMail", "type": "public", "address": "127.0.0.1",
        "port": None, "hostname": "mx.gw.test",
        "tls": {"certificate": cert, "key": key}}]}, start=False)


def started(gw):
    gw.cfg["listeners"][0]["port"] = gw.port
    gw.write_config()
    return gw.start()


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_then_message(tls_gateway):
    gw = started(tls_gateway)
    content = b"Subject: over tls\r\nMessage-ID: <tls-1@example.org>\r\n\r\nsecret\r\n"
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname="tls.client", timeout=10) as c:
        c.ehlo()
        assert c.has_extn("starttls")
        code, _ = c.starttls(context=client_ctx())
        assert code == 220
        c.ehlo()
        assert not c.has_extn("starttls"), "STARTTLS offered again inside TLS"
        assert c.sendmail("a@example.org", ["b@example.com"], content) == {}
        code, text = c.docmd("STARTTLS")
        assert code == 503
    (m,) = gw.spool_messages()
    rx = assert_spooled(m, content, helo="tls.client", rcpt="b@example.com", proto="ESMTPS")
    assert rx.group("tls") is not None and rx.group("tls").startswith(b"using TLSv1")
    assert m["flags"] & 8  # SPOOL_F_TLS
    gw.wait_log(r"ICID \d+ TLS success protocol TLSv1\.[23] cipher \S+")


def test_starttls_pipelined_commands_discarded(tls_gateway):
    gw = started(tls_gateway)
    c = RawSMTP(gw.port)
    c.ehlo("inject.test")
    # were these read after the handshake, EHLO+MAIL would make the RCPT below succeed
    injected = b"EHLO evil.test\r\nMAIL FROM:<evil@x.org>\r\n"
    c.send(b"STARTTLS\r\n" + injected)
    code, lines = c.reply()
    assert code == 220 and lines[-1].startswith("2.0.0 "), (code, lines)
    assert c.buf == b"", f"data after 220 in plaintext: {c.buf!r}"
    tls = client_ctx().wrap_socket(c.sock, server_hostname="mx.gw.test")
    c.sock = tls
    gw.wait_log(r"ICID \d+ discarded %d bytes pipelined after STARTTLS" % len(injected))
    # HELO state was reset: the injected MAIL was not run, and without a new
    # EHLO even MAIL is refused
    c.expect("RCPT TO:<victim@example.com>", 503, "5.5.1")
    c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
    c.ehlo("inject.test")
    c.expect("RCPT TO:<victim@example.com>", 503, "5.5.1")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(b"Subject: after tls\r\n\r\nok\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    c.expect("QUIT", 221)
    (m,) = gw.spool_messages()
    assert m["sender"] == "a@example.org"
    assert m["rcpts"] == ["b@example.com"]
    assert "evil@x.org" not in gw.log()


def test_starttls_forgets_transaction(tls_gateway):
    gw = started(tls_gateway)
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<before@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("STARTTLS", 220, "2.0.0")
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname="mx.gw.test")
    c.ehlo()
    c.expect("DATA", 503, "5.5.1")
    c.expect("QUIT", 221)
    assert gw.spool_messages() == []


def test_starttls_syntax_and_no_tls_listener(tls_gateway, make_gateway):
    gw = started(tls_gateway)
    c = RawSMTP(gw.port)
    assert "STARTTLS" in c.ehlo()
    c.expect("STARTTLS now", 501, "5.5.4")
    c.expect("NOOP", 250)


def test_tls_handshake_failure_logged(tls_gateway):
    gw = started(tls_gateway)
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("STARTTLS", 220)
    c.send(b"this is not a TLS client hello\r\n" * 4)
    assert c.closed()
    gw.wait_log(r"ICID \d+ TLS failed: ")
    gw.wait_log(r"ICID \d+ lost")
    # the daemon is fine
    d = RawSMTP(gw.port)
    d.ehlo()
