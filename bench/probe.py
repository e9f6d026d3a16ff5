"""Latency probe for bench/run.py: one SMTP session that sends messages one
after another and times each from the end of DATA (the final "." sent) to
the reply, while smtp-source loads the gateway.

    probe.py HOST PORT SIZE RCPTS GAP_MS OUTFILE

Runs until SIGTERM, then writes JSON {"lat": [seconds...], "sent": N,
"errors": N} to OUTFILE. "sent" counts the messages answered 250, which the
caller adds to the number it expects at the sink.
"""
import json
import signal
import socket
import sys
import time

stop = False


def on_term(signum, frame):
    global stop
    stop = True


class Session:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        """Read one (possibly multi-line) reply; return its code."""
        while True:
            while b"\r\n" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise OSError("connection closed")
                self.buf += d
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3])

    def cmd(self, line):
        self.s.sendall(line + b"\r\n")
        return self.reply()


def body(size):
    hdr = (b"From: <probe@example.org>\r\nTo: <probe@example.com>\r\n"
           b"Subject: latency probe\r\n\r\n")
    line = b"X" * 78 + b"\r\n"
    n = max(1, size // len(line))
    return hdr + line * n


def main():
    host, port, size, rcpts, gap_ms, out = sys.argv[1:7]
    port, size, rcpts, gap = int(port), int(size), int(rcpts), int(gap_ms) / 1000.0
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    lat, sent, errors = [], 0, 0
    msg = body(size)
    sess = None
    while not stop:
        try:
            if sess is None:
                sess = Session(host, port)
                if sess.reply() != 220 or sess.cmd(b"EHLO probe.example.org") != 250:
                    raise OSError("greeting")
            if sess.cmd(b"MAIL FROM:<probe@example.org>") != 250:
                raise OSError("MAIL")
            for i in range(rcpts):
                if sess.cmd(b"RCPT TO:<%dprobe@example.com>" % i) != 250:
                    raise OSError("RCPT")
            if sess.cmd(b"DATA") != 354:
                raise OSError("DATA")
            sess.s.sendall(msg)
            t0 = time.perf_counter()
            sess.s.sendall(b".\r\n")
            code = sess.reply()
            t1 = time.perf_counter()
            if code != 250:
                raise OSError("end of data %d" % code)
            lat.append(t1 - t0)
            sent += 1
        except (OSError, ValueError):
            errors += 1
            if sess is not None:
                try:
                    sess.s.close()
                except OSError:
                    pass
            sess = None
            time.sleep(0.2)
            continue
        if gap:
            time.sleep(gap)
    if sess is not None:
        try:
            sess.cmd(b"QUIT")
            sess.s.close()
        except OSError:
            pass
    with open(out, "w") as f:
        json.dump({"lat": lat, "sent": sent, "errors": errors}, f)


if __name__ == "__main__":
    main()
