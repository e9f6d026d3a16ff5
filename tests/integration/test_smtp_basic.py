"""A message in, its exact bytes in the spool; the command set and its errors."""
import pytest
import smtplib
import socket
import subprocess

from conftest import RawSMTP, assert_spooled, dot_stuff

MSG = (b"From: Alice <alice@example.org>\r\n"
       b"To: Bob <bob@example.com>\r\n"
       b"Subject: hello there\r\n"
       b"Message-ID: <basic-1@example.org>\r\n"
       b"\r\n"
       b"First line\r\n"
       b".leading dot line\r\n"
       b"..two dots\r\n"
       b"\r\n"
       b"last line\r\n")


def test_smtplib_message_spooled_exact(gateway):
    with smtplib.SMTP("127.0.0.1", gateway.port, local_hostname="client.test", timeout=10) as c:
        code, _ = c.ehlo("client.test")
        assert code == 250
        refused = c.sendmail("alice@example.org", ["bob@example.com"], MSG)
        assert refused == {}
        code, text = c.noop()
        assert code == 250
    msgs = gateway.spool_messages()
    assert len(msgs) == 1
    m = msgs[0]
    assert_spooled(m, MSG, rcpt="bob@example.com")
    assert m["sender"] == "alice@example.org"
    assert m["rcpts"] == ["bob@example.com"]
    assert m["client_ip"] == "127.0.0.1"
    assert m["helo"] == "client.test"
    assert m["listener"] == "InboundMail"
    assert m["message_id"] == "<basic-1@example.org>"
    assert m["subject"] == "hello there"
    assert m["flags"] == 0
    assert m["body_file"] is None


def test_smtplib_reply_names_queued_mid(gateway):
    c = RawSMTP(gateway.port)
    code, lines = c.message("a@example.org", ["b@example.com"], MSG)
    assert code == 250
    assert lines[-1].startswith("2.0.0 Message ")
    mid = int(lines[-1].split()[2])
    c.expect("QUIT", 221, "2.0.0")
    (m,) = gateway.spool_messages()
    assert m["mid"] == mid


def test_swaks_multi_recipient_spooled_exact(gateway, tmp_path):
    data = tmp_path / "msg.eml"
    content = (b"From: s@example.org\r\nTo: undisclosed\r\nSubject: via swaks\r\n"
               b"Message-ID: <swaks-1@example.org>\r\n\r\nbody by swaks\r\n.dotted\r\nend\r\n")
    # swaks ends the data with "\r\n.\r\n" itself: the file has no final CRLF.
    data.write_bytes(content[:-2])
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{gateway.port}", "--helo", "swaks.test",
                        "--from", "s@example.org", "--to", "one@example.com,two@x.sub.example.net",
                        "--data", str(data), "--timeout", "10"],
                       capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert "<-  250 2.0.0 Message" in out
    (m,) = gateway.spool_messages()
    assert_spooled(m, content, helo="swaks.test", rcpt=None)
    assert m["sender"] == "s@example.org"
    assert m["rcpts"] == ["one@example.com", "two@x.sub.example.net"]


def test_null_sender_and_duplicate_recipient(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<>", 250, "2.1.0")
    c.expect("RCPT TO:<a@example.com>", 250, "2.1.5")
    c.expect("RCPT TO:<a@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(b"Subject: bounce\r\n\r\nx\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert m["sender"] == ""
    assert m["rcpts"] == ["a@example.com"]
    assert_spooled(m, b"Subject: bounce\r\n\r\nx\r\n", rcpt="a@example.com")


def test_8bitmime_body_byte_exact(gateway):
    body = ("Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße aus Köln — ünïcödé ✓\r\n").encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> BODY=8BITMIME", 250, "2.1.0")
    c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(dot_stuff(body) + b".\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert_spooled(m, body, rcpt="b@example.com")
    assert m["flags"] & 2  # SPOOL_F_8BITMIME


def test_smtputf8_address_needs_param(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<jörg@example.org>", 553, "5.6.7")
    c.expect("MAIL FROM:<plain@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<müller@example.com>", 553, "5.6.7")
    c.expect("RSET", 250, "2.0.0")
    c.expect("MAIL FROM:<jörg@example.org> SMTPUTF8", 250, "2.1.0")
    c.expect("RCPT TO:<müller@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    content = "Subject: ünïcödé\r\n\r\nhallo\r\n".encode()
    c.send(content + b".\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert m["sender"] == "jörg@example.org"
    assert m["rcpts"] == ["müller@example.com"]
    assert m["flags"] & 1  # SPOOL_F_SMTPUTF8
    assert_spooled(m, content, rcpt="müller@example.com", proto="UTF8SMTP")


def test_message_above_memory_threshold_stored_as_file_exact(gateway):
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 10 + b"\r\n"
    lines = [b"Subject: big\r\n", b"\r\n"]
    i = 0
    while sum(map(len, lines)) < 600 * 1024:
        lines.append(b"." + str(i).encode() + b" " + line if i % 7 == 0 else line)
        i += 1
    content = b"".join(lines)
    c = RawSMTP(gateway.port)
    code, lines_ = c.message("a@example.org", ["b@example.com"], content)
    assert code == 250, lines_
    (m,) = gateway.spool_messages()
    assert m["body_file"] is not None, "a 600K message should be stored as a file"
    assert_spooled(m, content, rcpt="b@example.com")


def test_ehlo_keywords(make_gateway):
    gw = make_gateway({"limits": {"max_message_size": 1234567}})
    c = RawSMTP(gw.port)
    assert c.banner[0] == 220
    assert c.banner[1][0].startswith("mx.gw.test ")
    lines = c.ehlo()
    assert lines[0] == "mx.gw.test"
    kw = lines[1:]
    for k in ("PIPELINING", "SIZE 1234567", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING",
              "SMTPUTF8"):
        assert k in kw, f"EHLO lacks {k}: {kw}"
    assert "STARTTLS" not in kw, "STARTTLS offered on a listener without tls"
    c.expect("STARTTLS", 502, "5.5.1")


def test_helo_gives_plain_smtp(gateway):
    c = RawSMTP(gateway.port)
    lines = c.expect("HELO old.client", 250)
    assert lines == ["mx.gw.test"]
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(b"Subject: helo\r\n\r\nx\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    # ESMTP parameters need EHLO
    c.expect("MAIL FROM:<a@example.org> BODY=8BITMIME", 555, "5.5.4")
    (m,) = gateway.spool_messages()
    assert_spooled(m, b"Subject: helo\r\n\r\nx\r\n", helo="old.client", rcpt="b@example.com",
                   proto="SMTP")


def test_vrfy_help_noop_quit(gateway):
    c = RawSMTP(gateway.port)
    c.expect("VRFY postmaster", 252, "2.5.0")
    lines = c.expect("HELP", 214, "2.0.0")
    assert len(lines) == 2
    c.expect("NOOP", 250, "2.0.0")
    c.expect("EXPN staff", 502, "5.5.1")
    c.expect("QUIT", 221, "2.0.0")
    assert c.closed()


def test_rset_clears_transaction(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<first@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<first@example.com>", 250, "2.1.5")
    c.expect("RSET", 250, "2.0.0")
    c.expect("RCPT TO:<x@example.com>", 503, "5.5.1")
    c.expect("DATA", 503, "5.5.1")
    c.expect("MAIL FROM:<second@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<second@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(b"Subject: after rset\r\n\r\nx\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    (m,) = gateway.spool_messages()
    assert m["sender"] == "second@example.org"
    assert m["rcpts"] == ["second@example.com"]


def test_commands_before_helo_refused(gateway):
    c = RawSMTP(gateway.port)
    c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
    c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
    c.expect("DATA", 503, "5.5.1")
    c.expect("NOOP", 250)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_sequence_errors(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("RCPT TO:<b@example.com>", 503, "5.5.1")
    c.expect("MAIL FROM:a@example.org", 501, "5.5.4")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
    c.expect("DATA", 554, "5.5.1")
    c.expect("FOOBAR baz", 500, "5.5.1")
    c.expect("EHLO", 501, "5.5.4")
    # the transaction survived the errors
    c.expect("RCPT TO:<b@example.com>", 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(b"Subject: s\r\n\r\nx\r\n.\r\n")
    c.expect(None, 250, "2.0.0")
    assert len(gateway.spool_messages()) == 1


def test_too_many_errors_disconnects(make_gateway):
    gw = make_gateway({"limits": {"max_errors": 3}})
    c = RawSMTP(gw.port)
    c.ehlo()
    for _ in range(3):
        c.expect("BOGUS", 500, "5.5.1")
    code, lines = c.cmd("BOGUS")
    assert code == 500
    code, lines = c.reply()
    assert code == 421 and lines[-1].startswith("4.7.0 "), (code, lines)
    assert c.closed()
    gw.wait_log(r"ICID \d+ too many errors \(4\), disconnecting")


def test_http_request_refused_and_closed(gateway):
    c = RawSMTP(gateway.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    code, lines = c.reply()
    assert code == 500 and lines[-1].startswith("5.5.1 "), (code, lines)
    assert c.closed()
    gateway.wait_log(r"ICID \d+ HTTP request on SMTP port \(GET\), closing")


def test_helo_argument_checked(gateway):
    c = RawSMTP(gateway.port)
    c.expect("EHLO " + "h" * 256, 501, "5.5.4")
    c.expect("HELO", 501, "5.5.4")
    c.expect("EHLO " + "h" * 255, 250)


def test_ehlo_again_resets_transaction(gateway):
    c = RawSMTP(gateway.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250)
    c.expect("RCPT TO:<b@example.com>", 250)
    c.ehlo("second.test")
    c.expect("DATA", 503, "5.5.1")
    code, lines = c.message("c@example.org", ["d@example.com"], b"Subject: x\r\n\r\ny\r\n",
                            helo=None)
    assert code == 250
    (m,) = gateway.spool_messages()
    assert m["helo"] == "second.test" and m["sender"] == "c@example.org"


def test_ipv6_client_received_header(make_gateway):
    try:
        port = free_port_v6()
    except OSError:
        pytest.skip("no IPv6 loopback")
    gw = make_gateway({"listeners": [{"name": "V6", "address": "::1", "port": port,
                                      "hostname": "mx.gw.test"}]}, start=False)
    gw.port = port
    gw.start(wait=False)
    import time
    deadline = time.time() + 20
    while True:
        try:
            s = socket.create_connection(("::1", port), timeout=5)
            break
        except OSError:
            assert time.time() < deadline and gw.proc.poll() is None, gw.stderr_text()
            time.sleep(0.05)
    c = RawSMTP.__new__(RawSMTP)
    c.sock, c.buf = s, b""
    c.banner = c.reply()
    code, lines = c.message("a@example.org", ["b@example.com"], b"Subject: v6\r\n\r\nx\r\n")
    assert code == 250
    (m,) = gw.spool_messages()
    assert m["client_ip"] == "::1"
    # RFC 5321 4.1.3 / 4.4: an IPv6 address literal is written [IPv6:...]
    first = m["body"].split(b"\r\n", 1)[0]
    assert first == b"Received: from client.test (unknown [IPv6:::1])", first


def free_port_v6():
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]
