/*
 * Unit tests for smtp_data: the DATA/BDAT content machine (terminator,
 * dot-unstuffing, every SMTP smuggling variant, NUL, bare CR/LF, line
 * length) and the header scanner. Every table input is also fed byte by
 * byte and in two pieces at every split point, and must give the same
 * output, flags, consumed count and done flag as one call.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_data.h"

#define S(x) x, sizeof(x) - 1

#define CHECK(cond, i)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("case %zu: %s", (size_t)(i), #cond);                                          \
    } while (0)

#define ALL ((size_t)-1) /* consumed: the whole input */

enum {
    CR = SMTP_DATA_BARE_CR,
    LF = SMTP_DATA_BARE_LF,
    LL = SMTP_DATA_LONG_LINE,
    NL = SMTP_DATA_NUL
};

struct data_result {
    char *out;
    size_t outlen;
    size_t consumed;
    unsigned flags;
    bool done;
    size_t line_len;
};

/* Feed in[0..len) in pieces of at most step bytes (0: one call), stopping
 * like a session would once the machine reports the end of data. */
static struct data_result data_run(enum smtp_data_mode mode, size_t max_line, const char *in,
                                   size_t len, size_t step)
{
    struct smtp_data d;
    struct data_result r = {0};
    r.out = malloc(len + 1);
    assert_non_null(r.out);
    smtp_data_init(&d, mode, max_line);
    size_t pos = 0;
    while (pos < len) {
        size_t n = (step == 0 || len - pos < step) ? len - pos : step;
        size_t olen = 0;
        size_t used = smtp_data_feed(&d, in + pos, n, r.out + r.outlen, &olen);
        assert_true(used <= n);
        assert_true(olen <= n); /* out has room for len bytes only */
        r.outlen += olen;
        pos += used;
        if (used < n) {
            assert_true(d.done);
            break;
        }
        if (d.done)
            break;
    }
    r.consumed = pos;
    r.flags = d.flags;
    r.done = d.done;
    r.line_len = d.line_len;
    return r;
}

/* Split-feeding property: any split gives what one call gives. */
static void data_check_splits(size_t i, enum smtp_data_mode mode, size_t max_line, const char *in,
                              size_t len, const struct data_result *whole)
{
    for (size_t step = 1; step <= 3; step++) {
        struct data_result r = data_run(mode, max_line, in, len, step);
        CHECK(r.outlen == whole->outlen && memcmp(r.out, whole->out, r.outlen) == 0, i);
        CHECK(r.flags == whole->flags && r.consumed == whole->consumed, i);
        CHECK(r.done == whole->done && r.line_len == whole->line_len, i);
        free(r.out);
    }
    /* two pieces, split at every point (inputs here are short) */
    for (size_t cut = 1; cut < len && len < 4096; cut++) {
        struct smtp_data d;
        char *out = malloc(len + 1);
        assert_non_null(out);
        size_t o1 = 0, o2 = 0;
        smtp_data_init(&d, mode, max_line);
        size_t used = smtp_data_feed(&d, in, cut, out, &o1);
        if (used == cut && !d.done)
            used += smtp_data_feed(&d, in + cut, len - cut, out + o1, &o2);
        CHECK(used == whole->consumed && d.flags == whole->flags && d.done == whole->done, i);
        CHECK(o1 + o2 == whole->outlen && memcmp(out, whole->out, o1 + o2) == 0, i);
        free(out);
    }
}

struct data_case {
    const char *in;
    size_t len;
    const char *out; /* expected content */
    size_t outlen;
    size_t consumed; /* ALL for the whole input */
    unsigned flags;
    bool done;
};

static const struct data_case data_cases[] = {
    /* the terminator, including at the very start (the DATA line's CRLF) */
    {S(".\r\n"), S(""), ALL, 0, true},
    {S(".\r\nMAIL FROM:<a@b>\r\n"), S(""), 3, 0, true},
    {S("hello\r\n.\r\n"), S("hello\r\n"), ALL, 0, true},
    {S("hello\r\n.\r\nQUIT\r\n"), S("hello\r\n"), 10, 0, true},
    {S("x\r\n.\r\nRSET\r\n"), S("x\r\n"), 6, 0, true},
    {S("\r\n.\r\n"), S("\r\n"), ALL, 0, true},
    {S("\r\n\r\n.\r\n"), S("\r\n\r\n"), ALL, 0, true},
    {S("a\r\nb\r\n.\r\n.\r\n"), S("a\r\nb\r\n"), 9, 0, true},
    /* dot-unstuffing */
    {S("..x\r\n.\r\n"), S(".x\r\n"), ALL, 0, true},
    {S(".x\r\n.\r\n"), S("x\r\n"), ALL, 0, true},
    {S("a\r\n..\r\n.\r\n"), S("a\r\n.\r\n"), ALL, 0, true},
    {S("a\r\n...\r\n.\r\n"), S("a\r\n..\r\n"), ALL, 0, true},
    {S("a\r\n. \r\n.\r\n"), S("a\r\n \r\n"), ALL, 0, true},
    {S("a.\r\n.\r\n"), S("a.\r\n"), ALL, 0, true},
    {S("a\r\nb.c\r\n.\r\n"), S("a\r\nb.c\r\n"), ALL, 0, true},
    {S("..\r\n.\r\n"), S(".\r\n"), ALL, 0, true},
    /* no terminator yet: a held "." (and "." CR) produce nothing */
    {S("hello"), S("hello"), ALL, 0, false},
    {S("hello\r\n"), S("hello\r\n"), ALL, 0, false},
    {S("hello\r\n."), S("hello\r\n"), ALL, 0, false},
    {S("hello\r\n.\r"), S("hello\r\n"), ALL, 0, false},
    {S("hello\r"), S("hello\r"), ALL, 0, false},
    {S(""), S(""), ALL, 0, false},
    /* smuggling variants: never a terminator, always flagged */
    {S("\n.\n"), S("\n.\n"), ALL, LF, false},
    {S("\r.\r"), S("\r.\r"), ALL, CR, false},
    {S("\r.\rx"), S("\r.\rx"), ALL, CR, false},
    {S("\n.\r\n"), S("\n.\r\n"), ALL, LF, false},
    {S("\r\n.\n"), S("\r\n\n"), ALL, LF, false},
    {S("\r\n.\rx"), S("\r\nx"), ALL, CR, false},
    {S("\r.\r\n"), S("\r.\r\n"), ALL, CR, false},
    {S("a\n.\nb\r\n.\r\n"), S("a\n.\nb\r\n"), ALL, LF, true},
    {S("a\r.\rb\r\n.\r\n"), S("a\r.\rb\r\n"), ALL, CR, true},
    {S("a\n.\r\nb\r\n.\r\n"), S("a\n.\r\nb\r\n"), ALL, LF, true},
    {S("a\r\n.\nb\r\n.\r\n"), S("a\r\n\nb\r\n"), ALL, LF, true},
    {S("a\r\n.\rb\r\n.\r\n"), S("a\r\nb\r\n"), ALL, CR, true},
    {S("a\r\n.\r\r\n.\r\n"), S("a\r\n\r\n"), ALL, CR, true},
    {S("a\r.\r\nb\r\n.\r\n"), S("a\r.\r\nb\r\n"), ALL, CR, true},
    {S("a\n.\r\nMAIL FROM:<x@y>\r\n"), S("a\n.\r\nMAIL FROM:<x@y>\r\n"), ALL, LF, false},
    {S("a\r\n.\nMAIL FROM:<x@y>\r\n"), S("a\r\n\nMAIL FROM:<x@y>\r\n"), ALL, LF, false},
    {S("\r\r\n.\r\n"), S("\r\r\n"), ALL, CR, true},
    {S("\n\r\n.\r\n"), S("\n\r\n"), ALL, LF, true},
    {S("\n\n.\r\n"), S("\n\n.\r\n"), ALL, LF, false},
    {S("\r\n\r.\r\n"), S("\r\n\r.\r\n"), ALL, CR, false},
    /* other defects */
    {S("a\0b\r\n.\r\n"), S("a\0b\r\n"), ALL, NL, true},
    {S("\0"), S("\0"), ALL, NL, false},
    {S(".\0\r\n.\r\n"), S("\0\r\n"), ALL, NL, true},
    {S("a\rb\r\n.\r\n"), S("a\rb\r\n"), ALL, CR, true},
    {S("a\nb\r\n.\r\n"), S("a\nb\r\n"), ALL, LF, true},
    {S("a\r\r\nb\n\0\r\n.\r\n"), S("a\r\r\nb\n\0\r\n"), ALL, CR | LF | NL, true},
    /* nothing after the terminator is ours, defects included */
    {S(".\r\n\n\0"), S(""), 3, 0, true},
};

static void test_data_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
        const struct data_case *c = &data_cases[i];
        struct data_result r = data_run(SMTP_DATA_MODE_DATA, 1000, c->in, c->len, 0);
        size_t want_consumed = c->consumed == ALL ? c->len : c->consumed;
        if (r.outlen != c->outlen || memcmp(r.out, c->out, r.outlen) != 0)
            fail_msg("case %zu: output of %zu octets, want %zu", i, r.outlen, c->outlen);
        CHECK(r.consumed == want_consumed, i);
        CHECK(r.flags == c->flags, i);
        CHECK(r.done == c->done, i);
        data_check_splits(i, SMTP_DATA_MODE_DATA, 1000, c->in, c->len, &r);
        free(r.out);
    }
}

/* Build "<prefix><n x 'x'>\r\n.\r\n" and run it with max_line 1000. */
static struct data_result data_run_line(const char *prefix, size_t n, const char *eol)
{
    size_t plen = strlen(prefix), elen = strlen(eol);
    char *buf = malloc(plen + n + elen + 5);
    assert_non_null(buf);
    memcpy(buf, prefix, plen);
    memset(buf + plen, 'x', n);
    memcpy(buf + plen + n, eol, elen);
    memcpy(buf + plen + n + elen, ".\r\n", 3);
    size_t len = plen + n + elen + 3;
    struct data_result r = data_run(SMTP_DATA_MODE_DATA, 1000, buf, len, 0);
    data_check_splits(n, SMTP_DATA_MODE_DATA, 1000, buf, len, &r);
    free(buf);
    return r;
}

/* max_line counts octets including CRLF (RFC 5321 4.5.3.1.6): with 1000,
 * 998 octets + CRLF is fine and 999 + CRLF is flagged. */
static void test_data_long_lines(void **state)
{
    (void)state;
    static const struct {
        const char *prefix;
        size_t n;
        const char *eol;
        unsigned flags;
    } cases[] = {
        {"", 998, "\r\n", 0},
        {"", 999, "\r\n", LL},
        {"", 1000, "\r\n", LL},
        {"", 5000, "\r\n", LL},
        /* the stuffing dot does not count */
        {".", 998, "\r\n", 0},
        {".", 999, "\r\n", LL},
        {"..", 997, "\r\n", 0},
        {"..", 998, "\r\n", LL},
        /* the count restarts on each line */
        {"a\r\n", 998, "\r\n", 0},
        {"yyyyyyyyyy\r\n", 998, "\r\n", 0},
        /* a bare CR is content */
        {"\r", 997, "\r\n", CR},
        {"\r", 998, "\r\n", CR | LL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct data_result r = data_run_line(cases[i].prefix, cases[i].n, cases[i].eol);
        if (r.flags != cases[i].flags)
            fail_msg("case %zu: flags %u, want %u", i, r.flags, cases[i].flags);
        CHECK(r.done, i);
        free(r.out);
    }

    /* line_len tracks content octets of the current line */
    struct smtp_data d;
    char out[16];
    size_t olen;
    smtp_data_init(&d, SMTP_DATA_MODE_DATA, 1000);
    smtp_data_feed(&d, S("..abc"), out, &olen);
    assert_int_equal(d.line_len, 4);
    smtp_data_feed(&d, S("\r\n"), out, &olen);
    assert_int_equal(d.line_len, 0);

    /* max_line 0: no limit */
    char *big = malloc(100003);
    assert_non_null(big);
    memset(big, 'x', 100000);
    memcpy(big + 100000, "\r\n", 2);
    char *bout = malloc(100003);
    assert_non_null(bout);
    smtp_data_init(&d, SMTP_DATA_MODE_DATA, 0);
    assert_int_equal(smtp_data_feed(&d, big, 100002, bout, &olen), 100002);
    assert_int_equal(d.flags, 0);
    free(big);
    free(bout);
}

/* Feeding in place (in == out, as the session does) gives the same result. */
static void test_data_in_place(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
        const struct data_case *c = &data_cases[i];
        for (int m = 0; m < 2; m++) {
            enum smtp_data_mode mode = m ? SMTP_DATA_MODE_BDAT : SMTP_DATA_MODE_DATA;
            struct data_result r = data_run(mode, 1000, c->in, c->len, 0);
            struct smtp_data d;
            char buf[64];
            size_t olen;
            assert_true(c->len <= sizeof(buf));
            memcpy(buf, c->in, c->len);
            smtp_data_init(&d, mode, 1000);
            size_t used = smtp_data_feed(&d, buf, c->len, buf, &olen);
            CHECK(used == r.consumed && d.flags == r.flags && d.done == r.done, i);
            CHECK(olen == r.outlen && memcmp(buf, r.out, olen) == 0, i);
            free(r.out);
        }
    }
}

/* Once done, the machine consumes nothing more. */
static void test_data_after_done(void **state)
{
    (void)state;
    struct smtp_data d;
    char out[16];
    size_t olen = 99;
    smtp_data_init(&d, SMTP_DATA_MODE_DATA, 1000);
    assert_int_equal(smtp_data_feed(&d, S(".\r\n"), out, &olen), 3);
    assert_true(d.done);
    assert_int_equal(smtp_data_feed(&d, S("x\r\n.\r\n"), out, &olen), 0);
    assert_int_equal(olen, 0);
    assert_int_equal(d.flags, 0);
}

struct bdat_case {
    const char *in;
    size_t len;
    unsigned flags;       /* before smtp_data_finish */
    unsigned final_flags; /* after it */
};

static const struct bdat_case bdat_cases[] = {
    {S("hello\r\n"), 0, 0},  {S("hello\r\n.\r\n"), 0, 0},
    {S(".\r\n"), 0, 0},      {S("..x\r\n.x\r\n"), 0, 0},
    {S(""), 0, 0},           {S("no final newline"), 0, 0},
    {S("a\rb\r\n"), CR, CR}, {S("a\nb\r\n"), LF, LF},
    {S("\r\n.\n"), LF, LF},  {S("\n.\n"), LF, LF},
    {S("\r.\r\n"), CR, CR},  {S("a\0b\r\n"), NL, NL},
    {S("abc\r"), 0, CR},     {S("abc\r\r"), CR, CR},
};

static void test_bdat_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bdat_cases) / sizeof(bdat_cases[0]); i++) {
        const struct bdat_case *c = &bdat_cases[i];
        struct data_result r = data_run(SMTP_DATA_MODE_BDAT, 1000, c->in, c->len, 0);
        /* BDAT: everything consumed, content unchanged, never done */
        CHECK(r.consumed == c->len && !r.done, i);
        CHECK(r.outlen == c->len && memcmp(r.out, c->in, c->len) == 0, i);
        CHECK(r.flags == c->flags, i);
        data_check_splits(i, SMTP_DATA_MODE_BDAT, 1000, c->in, c->len, &r);
        free(r.out);

        struct smtp_data d;
        char out[64];
        size_t olen;
        smtp_data_init(&d, SMTP_DATA_MODE_BDAT, 1000);
        smtp_data_feed(&d, c->in, c->len, out, &olen);
        smtp_data_finish(&d);
        CHECK(d.flags == c->final_flags, i);
    }
}

/* A CRLF split between two BDAT chunks is a CRLF; long lines count. */
static void test_bdat_chunks(void **state)
{
    (void)state;
    struct smtp_data d;
    char out[2048];
    size_t olen;
    smtp_data_init(&d, SMTP_DATA_MODE_BDAT, 1000);
    assert_int_equal(smtp_data_feed(&d, S("abc\r"), out, &olen), 4);
    assert_int_equal(smtp_data_feed(&d, S("\ndef\r\n"), out, &olen), 6);
    smtp_data_finish(&d);
    assert_int_equal(d.flags, 0);

    char line[1001];
    memset(line, 'x', sizeof(line));
    smtp_data_init(&d, SMTP_DATA_MODE_BDAT, 1000);
    smtp_data_feed(&d, line, 998, out, &olen);
    smtp_data_feed(&d, S("\r\n"), out, &olen);
    assert_int_equal(d.flags, 0);
    smtp_data_feed(&d, line, 999, out, &olen);
    assert_int_equal(d.flags, LL);
}

/* DATA mode does not need finish; calling it changes nothing. */
static void test_data_finish_noop(void **state)
{
    (void)state;
    struct smtp_data d;
    char out[8];
    size_t olen;
    smtp_data_init(&d, SMTP_DATA_MODE_DATA, 1000);
    smtp_data_feed(&d, S("abc\r"), out, &olen);
    smtp_data_finish(&d);
    assert_int_equal(d.flags, 0);
    assert_int_equal(smtp_data_feed(&d, S("\n.\r\n"), out, &olen), 4);
    assert_true(d.done);
}

static void test_data_flag_text(void **state)
{
    (void)state;
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_BARE_CR), "bare CR in message");
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_BARE_LF), "bare LF in message");
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_LONG_LINE), "line too long");
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_NUL), "NUL in message");
    assert_string_equal(smtp_data_flag_text(0), "no defect");
    /* the first set flag wins */
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_NUL | SMTP_DATA_BARE_LF),
                        "bare LF in message");
    assert_string_equal(smtp_data_flag_text(SMTP_DATA_NUL | SMTP_DATA_LONG_LINE), "line too long");
    assert_string_equal(smtp_data_flag_text(CR | LF | LL | NL), "bare CR in message");
}

/* ---- header scanner ---- */

struct hdr_case {
    const char *in;
    size_t len;
    const char *message_id; /* NULL: not found */
    const char *subject;    /* NULL: not found */
    bool in_body;
    size_t max_header_line;
};

static const struct hdr_case hdr_cases[] = {
    {S("Subject: Hello\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n"), "<a@b>", "Hello", true, 17},
    {S("Message-ID: <a@b>\r\nSubject: Hello\r\n\r\n"), "<a@b>", "Hello", true, 17},
    /* folded values are unfolded: CRLF removed, WSP kept */
    {S("Subject: Hello\r\n world\r\n\tagain\r\n\r\n"), NULL, "Hello world\tagain", true, 14},
    {S("Subject:\r\n folded only\r\n\r\n"), NULL, "folded only", true, 12},
    {S("Message-ID:\r\n <x@y>\r\n\r\n"), "<x@y>", NULL, true, 11},
    /* case-insensitive names; spacing */
    {S("subject:x\r\n\r\n"), NULL, "x", true, 9},
    {S("SUBJECT: X\r\nMESSAGE-ID: <Q@R>\r\n\r\n"), "<Q@R>", "X", true, 17},
    {S("message-id:<m@n>\r\n\r\n"), "<m@n>", NULL, true, 16},
    {S("Subject :  spaced  \r\n\r\n"), NULL, "spaced", true, 19},
    {S("Subject:\t\ttabs\t\r\n\r\n"), NULL, "tabs", true, 15},
    {S("Subject:\r\n\r\n"), NULL, "", true, 8},
    {S("Subject: a\r\nSubject: b\r\n\r\n"), NULL, "a", true, 10},
    {S("Message-ID: <1@x>\r\nMessage-ID: <2@x>\r\n\r\n"), "<1@x>", NULL, true, 17},
    /* names that are not ours */
    {S("X-Subject: no\r\nSubject-Extra: no\r\nSubjec: no\r\n\r\n"), NULL, NULL, true, 17},
    {S("Message-ID-but-much-longer-than-thirty-two-octets: no\r\n\r\n"), NULL, NULL, true, 53},
    {S("Message-IDs: no\r\nResent-Message-ID: no\r\n\r\n"), NULL, NULL, true, 21},
    /* stops at the empty line */
    {S("X: y\r\n\r\nSubject: body\r\nMessage-ID: <b@b>\r\n"), NULL, NULL, true, 4},
    {S("\r\nSubject: body\r\n"), NULL, NULL, true, 0},
    {S("Subject: s\r\n\r\nSubject: body\r\n"), NULL, "s", true, 10},
    /* no empty line yet */
    {S("Subject: s\r\n"), NULL, "s", false, 10},
    {S("Subject: s"), NULL, "s", false, 10},
    {S("Subj"), NULL, NULL, false, 4},
    {S(""), NULL, NULL, false, 0},
    /* a line that is not a header ends the section */
    {S("From foo@bar Mon\r\nSubject: x\r\n\r\n"), NULL, NULL, true, 5},
    {S("Subject: a\r\nnot a header\r\nMessage-ID: <x>\r\n"), NULL, "a", true, 10},
    {S(": empty name\r\nSubject: x\r\n"), NULL, NULL, true, 0},
    {S("Sub\x01ject: x\r\n"), NULL, NULL, true, 3},
    /* bare LF line ends are tolerated here (the data machine flags them) */
    {S("Subject: a\nMessage-ID: <b>\n\nbody"), "<b>", "a", true, 15},
    {S("Subject: a\n b\n\n"), NULL, "a b", true, 10},
    /* a bare CR inside a value is content */
    {S("Subject: a\rb\r\n\r\n"), NULL, "a\rb", true, 12},
    {S("Subject: a\r\r\n\r\n"), NULL, "a\r", true, 11},
    /* a continuation before any header is ignored */
    {S(" Subject: x\r\nSubject: y\r\n\r\n"), NULL, "y", true, 11},
    /* UTF-8 values are kept */
    {S("Subject: caf\xc3\xa9\r\n\r\n"), NULL, "caf\xc3\xa9", true, 14},
};

struct hdr_result {
    struct smtp_hdr_scan h;
};

static void hdr_run(struct smtp_hdr_scan *h, const char *in, size_t len, size_t step)
{
    smtp_hdr_scan_init(h);
    for (size_t pos = 0; pos < len;) {
        size_t n = (step == 0 || len - pos < step) ? len - pos : step;
        smtp_hdr_scan_feed(h, in + pos, n);
        pos += n;
    }
}

static bool hdr_same(const struct smtp_hdr_scan *a, const struct smtp_hdr_scan *b)
{
    return a->in_body == b->in_body && a->max_header_line == b->max_header_line &&
           a->have_message_id == b->have_message_id && a->have_subject == b->have_subject &&
           a->message_id_len == b->message_id_len && a->subject_len == b->subject_len &&
           memcmp(a->message_id, b->message_id, a->message_id_len + 1) == 0 &&
           memcmp(a->subject, b->subject, a->subject_len + 1) == 0;
}

static void test_hdr_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hdr_cases) / sizeof(hdr_cases[0]); i++) {
        const struct hdr_case *c = &hdr_cases[i];
        struct smtp_hdr_scan h, h2;
        hdr_run(&h, c->in, c->len, 0);
        CHECK(h.have_message_id == (c->message_id != NULL), i);
        if (c->message_id != NULL) {
            CHECK(h.message_id_len == strlen(c->message_id), i);
            CHECK(strcmp(h.message_id, c->message_id) == 0, i);
        }
        CHECK(h.have_subject == (c->subject != NULL), i);
        if (c->subject != NULL) {
            CHECK(h.subject_len == strlen(c->subject), i);
            if (strcmp(h.subject, c->subject) != 0)
                fail_msg("case %zu: subject \"%s\", want \"%s\"", i, h.subject, c->subject);
        }
        CHECK(h.in_body == c->in_body, i);
        if (h.max_header_line != c->max_header_line)
            fail_msg("case %zu: max_header_line %zu, want %zu", i, h.max_header_line,
                     c->max_header_line);
        /* headers split across feeds */
        for (size_t step = 1; step <= 4; step++) {
            hdr_run(&h2, c->in, c->len, step);
            CHECK(hdr_same(&h, &h2), i);
        }
    }
}

/* Values are truncated to SMTP_HDR_VALUE_MAX; the line length is tracked. */
static void test_hdr_truncation(void **state)
{
    (void)state;
    static struct smtp_hdr_scan h;
    size_t n = 2000;
    char *buf = malloc(n + 64);
    assert_non_null(buf);
    memcpy(buf, "Subject: ", 9);
    memset(buf + 9, 's', n);
    memcpy(buf + 9 + n, "\r\n\r\n", 4);
    hdr_run(&h, buf, 9 + n + 4, 0);
    assert_true(h.have_subject);
    assert_int_equal(h.subject_len, SMTP_HDR_VALUE_MAX);
    assert_int_equal(strlen(h.subject), SMTP_HDR_VALUE_MAX);
    assert_int_equal(h.max_header_line, 9 + n);
    assert_true(h.in_body);

    /* truncation also holds across folded lines, fed in small pieces */
    size_t o = 0;
    memcpy(buf, "Message-ID: <", 13);
    o = 13;
    for (int k = 0; k < 3; k++) {
        memset(buf + o, 'm', 500);
        o += 500;
        memcpy(buf + o, "\r\n ", 3);
        o += 3;
    }
    memcpy(buf + o, ">\r\n\r\n", 5);
    o += 5;
    static struct smtp_hdr_scan h2;
    hdr_run(&h2, buf, o, 7);
    assert_int_equal(h2.message_id_len, SMTP_HDR_VALUE_MAX);
    assert_int_equal(h2.message_id[0], '<');
    assert_int_equal(h2.message_id[500], 'm'); /* unfolded: no CRLF kept */
    assert_int_equal(h2.message_id[501], ' ');
    assert_int_equal(h2.max_header_line, 513);
    free(buf);
}

/* max_header_line: the longest physical line, continuation lines apart. */
static void test_hdr_max_line(void **state)
{
    (void)state;
    struct smtp_hdr_scan h;
    char buf[3000];
    size_t o = 0;
    memcpy(buf, "X-Long: ", 8);
    o = 8;
    memset(buf + o, 'l', 990); /* 998 octets: the RFC 5322 2.1.1 limit */
    o += 990;
    memcpy(buf + o, "\r\n ", 3);
    o += 3;
    memset(buf + o, 'c', 1000); /* 1001-octet continuation line */
    o += 1000;
    memcpy(buf + o, "\r\n\r\n", 4);
    o += 4;
    hdr_run(&h, buf, 998 + 2, 0);
    assert_int_equal(h.max_header_line, 998);
    hdr_run(&h, buf, o, 0);
    assert_int_equal(h.max_header_line, 1001);
    /* body lines do not count */
    hdr_run(&h, S("A: b\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"), 0);
    assert_int_equal(h.max_header_line, 4);
}

/* The pipeline the session runs: data machine output into the scanner. */
static void test_data_into_hdr(void **state)
{
    (void)state;
    const char msg[] = "Subject: dots\r\n"
                       "Message-ID: <p@q>\r\n"
                       "\r\n"
                       "..leading dot\r\n"
                       ".\r\n"
                       "QUIT\r\n";
    struct smtp_data d;
    struct smtp_hdr_scan h;
    char out[sizeof(msg)];
    size_t olen;
    smtp_data_init(&d, SMTP_DATA_MODE_DATA, 1000);
    smtp_hdr_scan_init(&h);
    size_t used = smtp_data_feed(&d, msg, sizeof(msg) - 1, out, &olen);
    smtp_hdr_scan_feed(&h, out, olen);
    assert_true(d.done);
    assert_int_equal(used, sizeof(msg) - 1 - 6);
    assert_int_equal(olen, used - 3 - 1);
    assert_memory_equal(out + olen - 14, ".leading dot\r\n", 14);
    assert_string_equal(h.subject, "dots");
    assert_string_equal(h.message_id, "<p@q>");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_table),       cmocka_unit_test(test_data_long_lines),
        cmocka_unit_test(test_data_in_place),    cmocka_unit_test(test_data_after_done),
        cmocka_unit_test(test_bdat_table),       cmocka_unit_test(test_bdat_chunks),
        cmocka_unit_test(test_data_finish_noop), cmocka_unit_test(test_data_flag_text),
        cmocka_unit_test(test_hdr_table),        cmocka_unit_test(test_hdr_truncation),
        cmocka_unit_test(test_hdr_max_line),     cmocka_unit_test(test_data_into_hdr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
