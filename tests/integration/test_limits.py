"""Configured limits and their replies."""
import socket

from conftest import RawSMTP, assert_spooled


def test_command_line_too_long_session_continues(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    code, lines = c.cmd("NOOP " + "x" * 600)
    assert code == 500 and lines[-1].startswith("5.5.2 "), (code, lines)
    # exactly one reply for the long line; the next command works
    c.expect("NOOP", 250, "2.0.0")
    # 512 octets including CRLF is fine
    code, _ = c.cmd("NOOP " + "y" * (512 - 7))
    assert code == 250
    code, lines = c.cmd("NOOP " + "y" * (513 - 7))
    assert code == 500 and lines[-1].startswith("5.5.2 ")
    # a huge line, larger than any buffer, sent in pieces
    c.send(b"MAIL FROM:<" + b"a" * 300000)
    c.send(b"@example.org>\r\nNOOP\r\n")
    code, lines = c.reply()
    assert code == 500 and lines[-1].startswith("5.5.2 "), (code, lines)
    c.expect(None, 250)
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_bare_lf_in_command_line(gateway):
    c = RawSMTP(gateway.port)
    c.send(b"EHLO lf.test\n")
    code, lines = c.reply()
    assert code == 500 and lines[-1].startswith("5.5.2 "), (code, lines)
    c.send(b"EHLO a.test\r\nMAIL FROM:<a@example.org>\nRCPT TO:<b@example.com>\r\n")
    assert c.reply()[0] == 250
    code, lines = c.reply()
    assert code == 500 and lines[-1].startswith("5.5.2 ")
    c.expect(None, 503, "5.5.1")  # the MAIL was not executed


def test_size_param_too_big(make_gateway):
    gw = make_gateway({"limits": {"max_message_size": 10000}})
    c = RawSMTP(gw.port)
    assert "SIZE 10000" in c.ehlo()
    c.expect("MAIL FROM:<a@example.org> SIZE=10001", 552, "5.3.4")
    c.expect("MAIL FROM:<a@example.org> SIZE=99999999999999999999999", 501)
    c.expect("MAIL FROM:<a@example.org> SIZE=10000", 250, "2.1.0")


def test_streaming_over_size_refused_at_end(make_gateway):
    gw = make_gateway({"limits": {"max_message_size": 10000}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> SIZE=100", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 200 + b".\r\n")
    c.expect(None, 552, "5.3.4")
    assert gw.spool_messages() == []
    gw.wait_log(r"Message aborted MID \d+ Receiving aborted")
    # at the limit exactly is fine (the limit counts the content sent)
    content = b"Subject: fits\r\n\r\n" + (b"y" * 98 + b"\r\n") * 99 + b"y" * 81 + b"\r\n"
    assert len(content) == 10000
    code, lines = c.message("a@example.org", ["b@example.com"], content, helo=None)
    assert code == 250, lines
    (m,) = gw.spool_messages()
    assert_spooled(m, content, rcpt="b@example.com")


def test_bdat_over_size_refused(make_gateway):
    gw = make_gateway({"limits": {"max_message_size": 2048}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    data = b"Subject: x\r\n\r\n" + (b"z" * 98 + b"\r\n") * 30
    c.send(b"BDAT %d LAST\r\n" % len(data) + data)
    c.expect(None, 552, "5.3.4")
    c.expect("NOOP", 250)
    assert gw.spool_messages() == []


def test_max_recipients(make_gateway):
    gw = make_gateway({"limits": {"max_recipients": 3}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    for i in range(3):
        c.expect(f"RCPT TO:<r{i}@example.com>", 250, "2.1.5")
    c.expect("RCPT TO:<r3@example.com>", 452, "4.5.3")
    c.expect("RCPT TO:<r4@example.com>", 452, "4.5.3")
    c.expect("DATA", 354)
    c.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
    c.expect(None, 250)
    (m,) = gw.spool_messages()
    assert m["rcpts"] == ["r0@example.com", "r1@example.com", "r2@example.com"]
    gw.wait_log(r"ICID \d+ Receiving Failed: recipient limit of 3 per message exceeded "
                r"\(policy TRUSTED, address 127\.0\.0\.1\)")


def test_max_connections(make_gateway):
    gw = make_gateway({"limits": {"max_connections": 2}})
    a = RawSMTP(gw.port)
    b = RawSMTP(gw.port)
    assert a.banner[0] == 220 and b.banner[0] == 220
    c = RawSMTP(gw.port, banner=False)
    code, lines = c.reply()
    assert code == 421 and lines[-1].startswith("4.7.0 "), (code, lines)
    assert c.closed()
    gw.wait_log(r"ICID \d+ Receiving Failed: Connection limit exceeded \(address 127\.0\.0\.1\)")
    # the admitted sessions still work; closing one frees a slot
    a.expect("NOOP", 250)
    a.expect("QUIT", 221)
    assert a.closed()
    gw.wait_log(r"ICID \d+ close")
    d = RawSMTP(gw.port)
    assert d.banner[0] == 220
    d.ehlo()
    b.expect("NOOP", 250)


def test_command_timeout(make_gateway):
    gw = make_gateway({"timeouts": {"command": "1s"}})
    c = RawSMTP(gw.port)
    c.ehlo()
    code, lines = c.reply()  # wait: the server speaks first after the timeout
    assert code == 421 and lines[-1].startswith("4.4.2 "), (code, lines)
    assert c.closed()
    gw.wait_log(r"ICID \d+ timeout waiting for a command")


def test_data_timeout_aborts(make_gateway):
    gw = make_gateway({"timeouts": {"data": "1s"}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: slow\r\n\r\npartial")
    code, lines = c.reply()
    assert code == 421 and lines[-1].startswith("4.4.2 "), (code, lines)
    assert c.closed()
    gw.wait_log(r"Message aborted MID \d+ Receiving aborted")
    assert gw.spool_messages() == []


def test_configured_long_command_line(make_gateway):
    gw = make_gateway({"limits": {"max_command_line": 4096}})
    c = RawSMTP(gw.port)
    c.ehlo()
    c.expect("NOOP " + "n" * (4096 - 7), 250)
    code, lines = c.cmd("NOOP " + "n" * (4097 - 7))
    assert code == 500 and lines[-1].startswith("5.5.2 ")
    c.expect("NOOP", 250)


def test_configured_text_line(make_gateway):
    gw = make_gateway({"limits": {"max_text_line": 2000}})
    c = RawSMTP(gw.port)
    ok = b"Subject: long\r\n\r\n" + b"l" * 1998 + b"\r\n"
    code, lines = c.message("a@example.org", ["b@example.com"], ok)
    assert code == 250, lines
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: long\r\n\r\n" + b"l" * 1999 + b"\r\n.\r\n")
    c.expect(None, 554, "5.6.0")
    (m,) = gw.spool_messages()
    assert_spooled(m, ok, rcpt="b@example.com")


def test_max_sender_length_configurable(make_gateway):
    gw = make_gateway({"limits": {"max_sender_length": 40}})
    c = RawSMTP(gw.port)
    c.ehlo()
    long_sender = "a" * 30 + "@example.org"  # path of 44 octets with <>
    code, lines = c.cmd(f"MAIL FROM:<{long_sender}>")
    assert (code, lines[0][:5]) == (501, "5.1.7"), lines
    assert "40" in lines[0]
    c.expect("MAIL FROM:<" + "a" * 26 + "@example.org>", 250)  # exactly 40
    c.expect("QUIT", 221)
