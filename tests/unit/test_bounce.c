/*
 * Unit tests for queue/bounce: the DSN builder. Every DSN built here is
 * checked for CRLF-only lines of at most 998 octets and for its MIME
 * structure, twice: by a small splitter in C and by Python's email package
 * (/usr/bin/python3, skipped if absent). One canonical case is compared
 * byte for byte with tests/unit/golden/bounce_basic.eml (set
 * POSTERN_UPDATE_GOLDEN=1 to rewrite it after an intended change).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "queue/bounce.h"

/* ---- reader and writer over memory ---- */

struct mem_reader {
    const char *data;
    size_t len;
    size_t pos;
    size_t chunk;     /* at most this many bytes per call (0: no limit) */
    long fail_at;     /* return -1 once pos reaches this (-1: never) */
    size_t max_asked; /* largest len the builder passed */
};

static long mem_read(void *ctx, char *buf, size_t len)
{
    struct mem_reader *r = ctx;
    if (len > r->max_asked)
        r->max_asked = len;
    if (r->fail_at >= 0 && r->pos >= (size_t)r->fail_at)
        return -1;
    size_t n = r->len - r->pos;
    if (n > len)
        n = len;
    if (r->chunk > 0 && n > r->chunk)
        n = r->chunk;
    memcpy(buf, r->data + r->pos, n);
    r->pos += n;
    return (long)n;
}

struct mem_writer {
    char *buf;
    size_t len;
    size_t cap;
    int calls;
    int fail_on_call; /* return -1 on this call (1-based; 0: never) */
    int calls_after_fail;
    bool failed;
    size_t max_piece;
};

static int mem_write(void *ctx, const char *data, size_t len)
{
    struct mem_writer *w = ctx;
    if (w->failed)
        w->calls_after_fail++;
    w->calls++;
    if (w->fail_on_call > 0 && w->calls == w->fail_on_call) {
        w->failed = true;
        return -1;
    }
    if (len > w->max_piece)
        w->max_piece = len;
    xgrow((void **)&w->buf, &w->cap, w->len + len + 1, 1);
    memcpy(w->buf + w->len, data, len);
    w->len += len;
    w->buf[w->len] = '\0';
    return 0;
}

/* ---- fixtures ---- */

static const char basic_original[] = "From: Alice <alice@example.org>\r\n"
                                     "To: Bob <bob@example.net>\r\n"
                                     "Subject: Lunch\r\n"
                                     "Message-ID: <1234@example.org>\r\n"
                                     "\r\n"
                                     "Shall we meet at noon?\r\n"
                                     "-- \r\n"
                                     "Alice\r\n";

static struct bounce_rcpt basic_rcpt(void)
{
    struct bounce_rcpt r = {
        .addr = "bob@example.net",
        .orcpt = NULL,
        .action = BOUNCE_FAILED,
        .status = "5.1.1",
        .remote_mta = "mx1.example.net",
        .diagnostic = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
        .reason = "the remote server refused the recipient",
        .last_attempt_ms = 1700000300000LL,
    };
    return r;
}

static void basic_input(struct bounce_input *in, const struct bounce_rcpt *rcpts, size_t n,
                        struct mem_reader *rd, const char *orig, size_t orig_len)
{
    memset(rd, 0, sizeof(*rd));
    rd->data = orig;
    rd->len = orig_len;
    rd->fail_at = -1;
    memset(in, 0, sizeof(*in));
    in->reporting_mta = "gw.example.org";
    in->sender = "alice@example.org";
    in->orig_mid = 42;
    in->envid = NULL;
    in->arrival_ms = 1700000000000LL;
    in->now_ms = 1700000400000LL;
    in->rcpts = rcpts;
    in->nrcpts = n;
    in->headers_only = false;
    in->max_original = 10 * 1024 * 1024;
    in->original_size = orig_len;
    in->read = mem_read;
    in->read_ctx = rd;
    in->boundary_seed = "42.1700000400000";
}

/* ---- checks ---- */

/* Every line ends in CRLF, no bare CR or LF, no line over 998 octets. */
static void check_lines(const char *buf, size_t len)
{
    size_t col = 0;
    assert_true(len >= 2);
    assert_memory_equal(buf + len - 2, "\r\n", 2);
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r') {
            assert_true(i + 1 < len);
            assert_int_equal(buf[i + 1], '\n');
            assert_true(col <= 998);
            col = 0;
            i++;
        } else {
            assert_int_not_equal(buf[i], '\n');
            col++;
        }
    }
}

static size_t count_str(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The boundary parameter of the top-level Content-Type. */
static void get_boundary(const char *msg, char *out, size_t outlen)
{
    const char *p = strstr(msg, "boundary=\"");
    assert_non_null(p);
    p += strlen("boundary=\"");
    const char *e = strchr(p, '"');
    assert_non_null(e);
    assert_true((size_t)(e - p) < outlen);
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
}

/* Split on the boundary (delimiter lines only) and check three parts with
 * the given Content-Types, then the close delimiter and nothing after it. */
static void check_mime(const char *msg, const char *last_type)
{
    char b[80];
    char delim[90];
    const char *types[3] = {"text/plain", "message/delivery-status", last_type};
    get_boundary(msg, b, sizeof(b));
    snprintf(delim, sizeof(delim), "\r\n--%s", b);
    const char *p = strstr(msg, "\r\n\r\n"); /* end of the top-level header */
    assert_non_null(p);
    for (int i = 0; i < 3; i++) {
        p = strstr(p, delim);
        assert_non_null(p);
        p += strlen(delim);
        assert_memory_equal(p, "\r\n", 2);
        const char *hdr_end = strstr(p, "\r\n\r\n");
        const char *ct = strstr(p, "\r\nContent-Type: ");
        assert_non_null(ct);
        assert_true(ct < hdr_end);
        ct += strlen("\r\nContent-Type: ");
        assert_memory_equal(ct, types[i], strlen(types[i]));
        assert_true(ct[strlen(types[i])] == '\r' || ct[strlen(types[i])] == ';');
    }
    p = strstr(p, delim);
    assert_non_null(p);
    p += strlen(delim);
    assert_string_equal(p, "--\r\n");
    /* the delimiter occurs exactly four times at a line start */
    assert_int_equal(count_str(msg, delim), 4);
}

static const char py_check[] =
    "import sys, email\n"
    "m = email.message_from_bytes(open(sys.argv[1], 'rb').read())\n"
    "assert m.is_multipart(), 'not multipart'\n"
    "assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
    "assert m.get_param('report-type') == 'delivery-status'\n"
    "parts = m.get_payload()\n"
    "types = [p.get_content_type() for p in parts]\n"
    "assert types == ['text/plain', 'message/delivery-status', sys.argv[2]], types\n"
    "blocks = parts[1].get_payload()\n"
    "assert len(blocks) == int(sys.argv[3]) + 1, len(blocks)\n"
    "assert blocks[0]['Reporting-MTA'].startswith('dns; ')\n"
    "for b in blocks[1:]:\n"
    "    assert b['Final-Recipient'].startswith('rfc822; '), b['Final-Recipient']\n"
    "    assert b['Action'] in ('failed', 'delayed'), b['Action']\n"
    "    assert b['Status'][0] in '245', b['Status']\n"
    "if sys.argv[2] == 'message/rfc822':\n"
    "    inner = parts[2].get_payload()\n"
    "    assert len(inner) == 1 and len(inner[0].keys()) > 0\n"
    "for p in m.walk():\n"
    "    assert not p.defects, p.defects\n"
    "assert m['Auto-Submitted'] == 'auto-replied'\n";

/* Parse with Python's email package: multipart/report with the three
 * expected parts, nrcpts per-recipient blocks, no defects. */
static void check_python(const char *msg, size_t len, const char *last_type, size_t nrcpts)
{
    char path[] = "/tmp/test_bounce_XXXXXX";
    char n[16];
    if (access("/usr/bin/python3", X_OK) != 0) {
        print_message("python3 absent: skipping the email package check\n");
        return;
    }
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, msg, len), (ssize_t)len);
    close(fd);
    snprintf(n, sizeof(n), "%zu", nrcpts);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/usr/bin/python3", "python3", "-c", py_check, path, last_type, n, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    unlink(path);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Build, and check lines and MIME structure both ways. */
static void build_ok(const struct bounce_input *in, struct mem_writer *w, const char *last_type)
{
    memset(w, 0, sizeof(*w));
    assert_int_equal(bounce_build(in, mem_write, w), 0);
    assert_non_null(w->buf);
    assert_true(w->max_piece <= 16 * 1024);
    check_lines(w->buf, w->len);
    check_mime(w->buf, last_type);
    check_python(w->buf, w->len, last_type, in->nrcpts);
}

/* The part after the third delimiter's header, up to the close delimiter. */
static char *third_part_body(const char *msg)
{
    char b[80];
    char delim[90];
    get_boundary(msg, b, sizeof(b));
    snprintf(delim, sizeof(delim), "\r\n--%s", b);
    const char *p = strstr(msg, "\r\n\r\n");
    for (int i = 0; i < 3; i++)
        p = strstr(p, delim) + strlen(delim);
    p = strstr(p, "\r\n\r\n") + 4;
    const char *e = strstr(p, delim);
    assert_non_null(e);
    return xstrndup(p, (size_t)(e - p)); /* the delimiter owns the CRLF before it */
}

static char *golden_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        xgrow((void **)&buf, &cap, *len + 4096, 1);
        size_t n = fread(buf + *len, 1, 4096, f);
        *len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    return buf;
}

/* ---- tests ---- */

static void test_basic_golden(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    char path[4096];
    size_t glen = 0;

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    build_ok(&in, &w, "message/rfc822");

    const char *src = getenv("POSTERN_SRCDIR");
    assert_non_null(src);
    snprintf(path, sizeof(path), "%s/tests/unit/golden/bounce_basic.eml", src);
    if (getenv("POSTERN_UPDATE_GOLDEN") != NULL) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(w.buf, 1, w.len, f), w.len);
        fclose(f);
    }
    char *golden = golden_read(path, &glen);
    assert_non_null(golden);
    assert_int_equal(glen, w.len);
    assert_memory_equal(golden, w.buf, w.len);
    free(golden);
    free(w.buf);
}

static void test_one_failed_fields(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    build_ok(&in, &w, "message/rfc822");
    const char *m = w.buf;
    assert_non_null(strstr(m, "From: \"Mail Delivery System\" <MAILER-DAEMON@gw.example.org>\r\n"));
    assert_non_null(strstr(m, "\r\nTo: <alice@example.org>\r\n"));
    assert_non_null(strstr(m, "\r\nSubject: Delivery Status Notification (Failure)\r\n"));
    assert_non_null(strstr(m, "\r\nDate: Tue, 14 Nov 2023 22:20:00 +0000\r\n"));
    assert_non_null(strstr(m, "\r\nMessage-ID: <42.1700000400000@gw.example.org>\r\n"));
    assert_non_null(strstr(m, "\r\nAuto-Submitted: auto-replied\r\n"));
    assert_non_null(strstr(m, "\r\nReporting-MTA: dns; gw.example.org\r\n"));
    assert_non_null(strstr(m, "\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    assert_non_null(
        strstr(m, "\r\n\r\nFinal-Recipient: rfc822; bob@example.net\r\n"
                  "Action: failed\r\n"
                  "Status: 5.1.1\r\n"
                  "Remote-MTA: dns; mx1.example.net\r\n"
                  "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address\r\n"
                  " rejected: User unknown\r\n"
                  "Last-Attempt-Date: Tue, 14 Nov 2023 22:18:20 +0000\r\n"));
    assert_null(strstr(m, "Original-Recipient:"));
    assert_null(strstr(m, "Original-Envelope-Id:"));
    /* the whole original, unchanged */
    char *orig = third_part_body(m);
    assert_string_equal(orig, basic_original);
    free(orig);
    free(w.buf);
}

static void test_several_rcpts(void **state)
{
    struct bounce_rcpt r[3] = {basic_rcpt(), basic_rcpt(), basic_rcpt()};
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    r[1].addr = "carol@example.com";
    r[1].orcpt = "carol@old.example.com";
    r[1].remote_mta = NULL;
    r[1].diagnostic = NULL;
    r[1].status = "5.4.4";
    r[1].reason = "no mail server found for the domain";
    r[1].last_attempt_ms = 0;
    r[2].addr = "dave@example.com";
    r[2].action = BOUNCE_DELAYED;
    r[2].status = "4.4.1";
    r[2].diagnostic = "connection timed out";
    basic_input(&in, r, 3, &rd, basic_original, sizeof(basic_original) - 1);
    in.envid = "QQ314159";
    build_ok(&in, &w, "message/rfc822");
    const char *m = w.buf;
    assert_non_null(strstr(m, "Subject: Delivery Status Notification (Failure)\r\n"));
    assert_non_null(strstr(m, "\r\nOriginal-Envelope-Id: QQ314159\r\n"));
    assert_non_null(strstr(m, "\r\n\r\nOriginal-Recipient: rfc822; carol@old.example.com\r\n"
                              "Final-Recipient: rfc822; carol@example.com\r\n"
                              "Action: failed\r\n"
                              "Status: 5.4.4\r\n"
                              "\r\n"));
    assert_non_null(strstr(m, "\r\n\r\nFinal-Recipient: rfc822; dave@example.com\r\n"
                              "Action: delayed\r\n"
                              "Status: 4.4.1\r\n"
                              "Remote-MTA: dns; mx1.example.net\r\n"
                              "Diagnostic-Code: smtp; connection timed out\r\n"));
    assert_int_equal(count_str(m, "Final-Recipient:"), 3);
    assert_int_equal(count_str(m, "Remote-MTA:"), 2);
    assert_int_equal(count_str(m, "Last-Attempt-Date:"), 2);
    /* the text part names everyone, with our reason */
    assert_non_null(strstr(m, "\r\n<carol@example.com>: delivery failed (status 5.4.4)\r\n"
                              "    Reason: no mail server found for the domain\r\n"));
    assert_non_null(strstr(m, "\r\n<dave@example.com>: delivery delayed (status 4.4.1)\r\n"));
    free(w.buf);
}

static void test_all_delayed(void **state)
{
    struct bounce_rcpt r[2] = {basic_rcpt(), basic_rcpt()};
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    r[0].action = r[1].action = BOUNCE_DELAYED;
    r[0].status = "4.2.2";
    r[1].status = "bogus"; /* an invalid status falls back to the class default */
    r[1].addr = "erin@example.net";
    basic_input(&in, r, 2, &rd, basic_original, sizeof(basic_original) - 1);
    build_ok(&in, &w, "message/rfc822");
    assert_non_null(strstr(w.buf, "Subject: Delivery Status Notification (Delay)\r\n"));
    assert_int_equal(count_str(w.buf, "\r\nAction: delayed\r\n"), 2);
    assert_non_null(strstr(w.buf, "\r\nStatus: 4.0.0\r\n"));
    assert_null(strstr(w.buf, "bogus"));
    assert_null(strstr(w.buf, "Action: failed"));
    free(w.buf);
}

static void test_headers_only(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    in.headers_only = true;
    build_ok(&in, &w, "text/rfc822-headers");
    char *hdrs = third_part_body(w.buf);
    assert_string_equal(hdrs, "From: Alice <alice@example.org>\r\n"
                              "To: Bob <bob@example.net>\r\n"
                              "Subject: Lunch\r\n"
                              "Message-ID: <1234@example.org>\r\n");
    assert_null(strstr(w.buf, "noon"));
    assert_non_null(strstr(w.buf, "The header of the original message is attached.\r\n"));
    /* RET=HDRS does not need the body: the read-ahead is bounded */
    assert_true(rd.pos <= 64 * 1024);
    free(hdrs);
    free(w.buf);
}

static void test_too_large(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    size_t body = 200 * 1024;
    char *orig = xmalloc(body + 100);
    int hl = snprintf(orig, 100, "Subject: big\r\nX-Big: yes\r\n\r\n");
    for (size_t i = 0; i < body; i++)
        orig[hl + i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'x';

    basic_input(&in, &r, 1, &rd, orig, (size_t)hl + body);
    in.max_original = 100 * 1024;
    build_ok(&in, &w, "text/rfc822-headers");
    char *hdrs = third_part_body(w.buf);
    assert_string_equal(hdrs, "Subject: big\r\nX-Big: yes\r\n");
    assert_non_null(strstr(w.buf, "large to return.\r\n"));
    assert_true(w.len < 8 * 1024);
    free(hdrs);
    free(w.buf);

    /* just at the limit: whole */
    in.max_original = in.original_size;
    rd.pos = 0;
    build_ok(&in, &w, "message/rfc822");
    assert_true(w.len > body);
    free(w.buf);
    free(orig);
}

static void test_bare_lf_normalised(void **state)
{
    static const char orig[] = "Subject: lf\n"
                               "X-Cr: a\r b\n"
                               "\n"
                               "line one\n"
                               "line two\r\n"
                               "nul\0here\n"
                               "no final newline";
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    basic_input(&in, &r, 1, &rd, orig, sizeof(orig) - 1);
    build_ok(&in, &w, "message/rfc822");
    char *body = third_part_body(w.buf);
    assert_string_equal(body, "Subject: lf\r\n"
                              "X-Cr: a\r\n b\r\n"
                              "\r\n"
                              "line one\r\n"
                              "line two\r\n"
                              "nul here\r\n"
                              "no final newline\r\n");
    free(body);
    free(w.buf);

    /* headers only, with bare LF: the empty line is still found */
    in.headers_only = true;
    rd.pos = 0;
    build_ok(&in, &w, "text/rfc822-headers");
    body = third_part_body(w.buf);
    assert_string_equal(body, "Subject: lf\r\nX-Cr: a\r\n b\r\n");
    free(body);
    free(w.buf);
}

static void test_long_diagnostic(void **state)
{
    struct bounce_rcpt r[2] = {basic_rcpt(), basic_rcpt()};
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    char *words = xmalloc(5001);
    char *blob = xmalloc(3001);

    for (size_t i = 0; i < 5000; i++)
        words[i] = (i % 7 == 6) ? ' ' : 'a' + (char)(i % 7);
    words[5000] = '\0';
    memset(blob, 'z', 3000);
    blob[3000] = '\0';
    r[0].diagnostic = words;
    r[1].diagnostic = blob;
    r[1].addr = blob; /* an absurd address is cut too */
    r[1].remote_mta = blob;
    basic_input(&in, r, 2, &rd, basic_original, sizeof(basic_original) - 1);
    build_ok(&in, &w, "message/rfc822"); /* checks <= 998 octets per line */
    const char *m = w.buf;
    /* folded near 78 columns, continuation lines start with a space */
    const char *d = strstr(m, "Diagnostic-Code: smtp; abcdef abcdef");
    assert_non_null(d);
    const char *eol = strstr(d, "\r\n");
    assert_true(eol - d <= 78);
    assert_int_equal(eol[2], ' ');
    /* the unbreakable one is cut with "..." on one line */
    assert_non_null(strstr(m, "zzz...\r\n"));
    assert_null(strstr(m, "zzzzzzzzzz\r\n"));
    free(w.buf);
    free(words);
    free(blob);
}

static void test_values_sanitised(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    r.diagnostic = "550-5.7.1 first line\r\n550 5.7.1 second\tline\r\nBcc: victim@example.com";
    r.reason = "bad\x01\x7f"
               "bytes \xc3\xa9t\xc3\xa9 \xff\xc0\xaf end";
    r.addr = "bob@example.net>\r\nX-Injected: yes";
    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    in.sender = "alice@example.org\nBcc: x@y";
    build_ok(&in, &w, "message/rfc822");
    const char *m = w.buf;
    assert_null(strstr(m, "\r\nBcc:"));
    assert_null(strstr(m, "\r\nX-Injected:"));
    assert_non_null(strstr(m, "550-5.7.1 first line 550 5.7.1 second line Bcc:"));
    /* valid UTF-8 stays, invalid octets become '?', and the part says utf-8 */
    assert_non_null(strstr(m, "Reason: bad bytes \xc3\xa9t\xc3\xa9 ??? end\r\n"));
    assert_non_null(strstr(m, "Content-Type: text/plain; charset=utf-8\r\n"
                              "Content-Transfer-Encoding: 8bit\r\n"));
    free(w.buf);
}

static void test_ascii_charset(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    build_ok(&in, &w, "message/rfc822");
    assert_non_null(strstr(w.buf, "Content-Type: text/plain; charset=us-ascii\r\n\r\n"));
    assert_null(strstr(w.buf, "Content-Type: message/delivery-status\r\n"
                              "Content-Transfer-Encoding"));
    free(w.buf);
}

/* The boundary of an input, learnt from a build with a harmless original. */
static void boundary_of(struct bounce_input *in, char *b, size_t blen)
{
    struct mem_writer w = {0};
    struct mem_reader *rd = in->read_ctx;
    const char *data = rd->data;
    size_t len = rd->len;
    rd->data = "Subject: x\r\n\r\nx\r\n";
    rd->len = strlen(rd->data);
    rd->pos = 0;
    assert_int_equal(bounce_build(in, mem_write, &w), 0);
    get_boundary(w.buf, b, blen);
    free(w.buf);
    rd->data = data;
    rd->len = len;
    rd->pos = 0;
}

static void test_boundary_collision(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    char b[80];
    char b2[80];
    char orig[512];

    basic_input(&in, &r, 1, &rd, "", 0);
    boundary_of(&in, b, sizeof(b));
    assert_memory_equal(b, "=_Postern_", 10);
    assert_true(strlen(b) <= 70);
    snprintf(orig, sizeof(orig),
             "Subject: evil\r\n\r\n--%s\r\nContent-Type: text/plain\r\n\r\nforged\r\n--%s--\r\n", b,
             b);
    rd.data = orig;
    rd.len = in.original_size = strlen(orig);
    build_ok(&in, &w, "message/rfc822");
    get_boundary(w.buf, b2, sizeof(b2));
    assert_string_not_equal(b, b2);
    char *body = third_part_body(w.buf);
    assert_string_equal(body, orig); /* unchanged: the boundary moved instead */
    free(body);
    free(w.buf);

    /* a different seed gives a different boundary and Message-ID */
    in.boundary_seed = "43.1700000400000";
    boundary_of(&in, b2, sizeof(b2));
    assert_string_not_equal(b, b2);
}

static void test_boundary_guard_beyond_readahead(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    char b[80];
    size_t fill = 100 * 1024;
    char *orig = xmalloc(fill + 512);

    basic_input(&in, &r, 1, &rd, "", 0);
    boundary_of(&in, b, sizeof(b));
    size_t n = (size_t)snprintf(orig, 64, "Subject: evil\r\n\r\n");
    for (size_t i = 0; i < fill; i++)
        orig[n++] = (i % 64 == 62) ? '\r' : (i % 64 == 63) ? '\n' : 'y';
    n += (size_t)snprintf(orig + n, 400, "--%s--\r\nafter\r\n", b);
    rd.data = orig;
    rd.len = in.original_size = n;
    build_ok(&in, &w, "message/rfc822");
    char line[100];
    snprintf(line, sizeof(line), "\r\n --%s--\r\nafter\r\n", b);
    assert_non_null(strstr(w.buf, line));
    free(w.buf);
    free(orig);
}

static void test_long_original_line(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    char *orig = xmalloc(4000);
    size_t n = (size_t)snprintf(orig, 64, "Subject: long\r\n\r\n");
    memset(orig + n, 'q', 2500);
    n += 2500;
    memcpy(orig + n, "\r\n", 2);
    n += 2;

    basic_input(&in, &r, 1, &rd, orig, n);
    build_ok(&in, &w, "message/rfc822");
    char *body = third_part_body(w.buf);
    assert_int_equal(strlen(body), n + 2 * 2); /* two CRLFs inserted */
    assert_int_equal(strspn(body + 17, "q"), 998);
    free(body);
    free(w.buf);
    free(orig);
}

static void test_headers_without_end(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;
    size_t total = 100 * 1024;
    char *orig = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        orig[i] = (i % 50 == 48) ? '\r' : (i % 50 == 49) ? '\n' : (i % 50 == 0) ? 'X' : 'h';

    basic_input(&in, &r, 1, &rd, orig, total);
    in.headers_only = true;
    rd.chunk = 1000;
    build_ok(&in, &w, "text/rfc822-headers");
    char *hdrs = third_part_body(w.buf);
    size_t hl = strlen(hdrs);
    assert_true(hl <= 64 * 1024);
    assert_true(hl > 60 * 1024);
    assert_int_equal(hl % 50, 0); /* whole lines only */
    free(hdrs);
    free(w.buf);
    free(orig);
}

static void test_chunked_io_same_output(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w1;
    struct mem_writer w2;
    size_t total = 50 * 1024;
    char *orig = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        orig[i] = (i % 33 == 31) ? '\r' : (i % 33 == 32) ? '\n' : (char)('a' + i % 26);
    memcpy(orig, "Subject: s\r\n\r\n", 14);

    basic_input(&in, &r, 1, &rd, orig, total);
    build_ok(&in, &w1, "message/rfc822");
    rd.pos = 0;
    rd.chunk = 1;
    memset(&w2, 0, sizeof(w2));
    assert_int_equal(bounce_build(&in, mem_write, &w2), 0);
    assert_int_equal(w1.len, w2.len);
    assert_memory_equal(w1.buf, w2.buf, w1.len);
    assert_true(w1.calls > 1); /* handed over in pieces */
    free(w1.buf);
    free(w2.buf);
    free(orig);
}

static void test_reader_error(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w = {0};
    size_t total = 200 * 1024;
    char *orig = xcalloc(1, total);
    memset(orig, 'a', total);

    /* at once: nothing is written */
    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    rd.fail_at = 0;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);
    assert_int_equal(w.calls, 0);

    /* in the middle of a big original */
    basic_input(&in, &r, 1, &rd, orig, total);
    rd.fail_at = 100 * 1024;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);

    /* headers only, the reader fails within the read-ahead */
    basic_input(&in, &r, 1, &rd, orig, total);
    in.headers_only = true;
    rd.fail_at = 10;
    rd.chunk = 5;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);
    free(w.buf);
    free(orig);
}

static long lying_read(void *ctx, char *buf, size_t len)
{
    return (long)len + 1;
}

static void test_reader_overclaims(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w = {0};

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    in.read = lying_read;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);
    free(w.buf);
}

static void test_writer_error(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w = {0};
    size_t total = 200 * 1024;
    char *orig = xmalloc(total);
    for (size_t i = 0; i < total; i++)
        orig[i] = (i % 40 == 38) ? '\r' : (i % 40 == 39) ? '\n' : 'w';

    basic_input(&in, &r, 1, &rd, basic_original, sizeof(basic_original) - 1);
    w.fail_on_call = 1;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);
    assert_int_equal(w.calls, 1);

    /* failing in the middle: no further calls, and the rest is not read */
    memset(&w, 0, sizeof(w));
    basic_input(&in, &r, 1, &rd, orig, total);
    w.fail_on_call = 3;
    assert_int_equal(bounce_build(&in, mem_write, &w), -1);
    assert_int_equal(w.calls_after_fail, 0);
    assert_true(rd.pos < total);
    free(w.buf);
    free(orig);
}

static void test_empty_original(void **state)
{
    struct bounce_rcpt r = basic_rcpt();
    struct bounce_input in;
    struct mem_reader rd;
    struct mem_writer w;

    basic_input(&in, &r, 1, &rd, "", 0);
    in.headers_only = true;
    in.arrival_ms = 0;
    in.boundary_seed = "..weird seed/with spaces..";
    memset(&w, 0, sizeof(w));
    assert_int_equal(bounce_build(&in, mem_write, &w), 0);
    check_lines(w.buf, w.len);
    check_mime(w.buf, "text/rfc822-headers");
    assert_null(strstr(w.buf, "Arrival-Date"));
    assert_non_null(strstr(w.buf, "\r\nMessage-ID: <weird-seed-with-spaces@gw.example.org>\r\n"));
    free(w.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_golden),
        cmocka_unit_test(test_one_failed_fields),
        cmocka_unit_test(test_several_rcpts),
        cmocka_unit_test(test_all_delayed),
        cmocka_unit_test(test_headers_only),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_bare_lf_normalised),
        cmocka_unit_test(test_long_diagnostic),
        cmocka_unit_test(test_values_sanitised),
        cmocka_unit_test(test_ascii_charset),
        cmocka_unit_test(test_boundary_collision),
        cmocka_unit_test(test_boundary_guard_beyond_readahead),
        cmocka_unit_test(test_long_original_line),
        cmocka_unit_test(test_headers_without_end),
        cmocka_unit_test(test_chunked_io_same_output),
        cmocka_unit_test(test_reader_error),
        cmocka_unit_test(test_reader_overclaims),
        cmocka_unit_test(test_writer_error),
        cmocka_unit_test(test_empty_original),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
