"""Started as root, the daemon becomes the configured user after binding."""
import os
import pwd
import shutil
import tempfile

import pytest

from conftest import Gateway, RawSMTP, assert_spooled


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_drops_to_nobody_and_accepts_mail():
    nobody = pwd.getpwnam("nobody")
    d = tempfile.mkdtemp(prefix="postern-priv-", dir="/tmp")
    os.chmod(d, 0o755)
    gw = Gateway(d, {"user": "nobody"})
    try:
        gw.start()
        with open(f"/proc/{gw.pid}/status") as f:
            status = dict(l.split(":", 1) for l in f if ":" in l)
        uids = status["Uid"].split()
        gids = status["Gid"].split()
        assert uids == [str(nobody.pw_uid)] * 4, status["Uid"]
        assert gids == [str(nobody.pw_gid)] * 4, status["Gid"]
        assert status["Groups"].split() in ([], [str(nobody.pw_gid)]), status["Groups"]
        c = RawSMTP(gw.port)
        content = b"Subject: unprivileged\r\n\r\nhello\r\n"
        code, lines = c.message("a@example.org", ["b@example.com"], content)
        assert code == 250, lines
        big = b"Subject: big\r\n\r\n" + (b"q" * 98 + b"\r\n") * 4000
        code, lines = c.message("a@example.org", ["b@example.com"], big, helo=None)
        assert code == 250, lines
        c.expect("QUIT", 221)
        m1, m2 = gw.spool_messages()
        assert_spooled(m1, content, rcpt="b@example.com")
        assert_spooled(m2, big, rcpt="b@example.com")
        for p in (os.path.join(gw.spool_dir, "queue.db"),
                  os.path.join(gw.spool_dir, m2["body_file"]),
                  os.path.join(gw.log_dir, "mail_logs")):
            assert os.stat(p).st_uid == nobody.pw_uid, p
        gw.stop()
    finally:
        if gw.proc is not None:
            gw.proc.kill()
            gw.proc.wait()
        shutil.rmtree(d, ignore_errors=True)
