/*
 * test_smtp_reply: the client-side reply parser, table driven.
 *
 * Each case is a list of lines (without CRLF) fed in order, the status the
 * last one must return, and what the reply must hold afterwards: code,
 * enhanced code, line count, the appliance-style rendering for logs, and
 * whether it looks masked by an inspecting firewall.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "smtp/smtp_reply.h"

#define MAXL 6

struct reply_case {
    const char *name;
    const char *lines[MAXL];
    enum smtp_reply_status last; /* status of the last line fed */
    int code;
    const char *enhanced;
    size_t nlines;
    const char *format; /* NULL: not checked */
    bool masked;
};

static const struct reply_case cases[] = {
    {"single line",
     {"250 2.1.0 Ok"},
     SMTP_REPLY_DONE,
     250,
     "2.1.0",
     1,
     "('250', ['2.1.0 Ok'])",
     false},
    {"bare code", {"250"}, SMTP_REPLY_DONE, 250, "", 1, "('250', [''])", false},
    {"code and space", {"354 "}, SMTP_REPLY_DONE, 354, "", 1, "('354', [''])", false},
    {"appliance example",
     {"452 4.3.1 Insufficient system resources"},
     SMTP_REPLY_DONE,
     452,
     "4.3.1",
     1,
     "('452', ['4.3.1 Insufficient system resources'])",
     false},
    {"multi-line EHLO",
     {"250-mx.example.com Hello", "250-PIPELINING", "250-SIZE 10240000", "250 STARTTLS"},
     SMTP_REPLY_DONE,
     250,
     "",
     4,
     "('250', ['mx.example.com Hello', 'PIPELINING', 'SIZE 10240000', 'STARTTLS'])",
     false},
    {"continuation pending", {"220-first", "220-second"}, SMTP_REPLY_MORE, 220, "", 2, NULL, false},
    {"code changes between lines",
     {"250-first", "251 second"},
     SMTP_REPLY_ERROR,
     250,
     "",
     1,
     NULL,
     false},
    {"non-digit code", {"2x0 Ok"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"class 1 is not SMTP", {"150 Ok"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"class 6 is not SMTP", {"650 Ok"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"too short", {"25"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"empty line", {""}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"blank line inside a reply", {"250-first", ""}, SMTP_REPLY_ERROR, 250, "", 1, NULL, false},
    {"bad separator", {"250\tOk"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"four digits", {"2500 Ok"}, SMTP_REPLY_ERROR, 0, "", 0, NULL, false},
    {"enhanced at end of line", {"550 5.1.1"}, SMTP_REPLY_DONE, 550, "5.1.1", 1, NULL, false},
    {"enhanced three digits",
     {"550 5.123.456 x"},
     SMTP_REPLY_DONE,
     550,
     "5.123.456",
     1,
     NULL,
     false},
    {"enhanced four digits is not", {"550 5.1234.1 x"}, SMTP_REPLY_DONE, 550, "", 1, NULL, false},
    {"enhanced class 3 is not", {"354 3.0.0 go"}, SMTP_REPLY_DONE, 354, "", 1, NULL, false},
    {"enhanced glued to text is not", {"550 5.1.1x"}, SMTP_REPLY_DONE, 550, "", 1, NULL, false},
    {"enhanced missing part", {"550 5.1 x"}, SMTP_REPLY_DONE, 550, "", 1, NULL, false},
    {"enhanced only from first line",
     {"451-temporary", "451 4.7.1 later"},
     SMTP_REPLY_DONE,
     451,
     "",
     2,
     NULL,
     false},
    {"escapes in format",
     {"554 it's a \\ \x01\x7f\xc3\xa9"},
     SMTP_REPLY_DONE,
     554,
     "",
     1,
     "('554', ['it\\'s a \\\\ \\x01\\x7f\\xc3\\xa9'])",
     false},
    {"masked banner",
     {"220 ****2***0**"},
     SMTP_REPLY_DONE,
     220,
     "",
     1,
     "('220', ['****2***0**'])",
     true},
    {"masked banner long", {"220 *****02****...0****0"}, SMTP_REPLY_DONE, 220, "", 1, NULL, true},
    {"masked banner multi-line",
     {"220-*******0*****2**", "220 ****0***"},
     SMTP_REPLY_DONE,
     220,
     "",
     2,
     NULL,
     true},
    {"banner with a star is not masked",
     {"220 mx.example.com ESMTP *ready*"},
     SMTP_REPLY_DONE,
     220,
     "",
     1,
     NULL,
     false},
    {"masked EHLO keyword",
     {"250-mx.example.com", "250-PIPELINING", "250-XXXXXXXA", "250 8BITMIME"},
     SMTP_REPLY_DONE,
     250,
     "",
     4,
     NULL,
     true},
    {"masked EHLO all X",
     {"250-mx.example.com", "250 XXXXXXXX"},
     SMTP_REPLY_DONE,
     250,
     "",
     2,
     NULL,
     true},
    {"real X keywords are not masked",
     {"250-mx.example.com", "250-XFORWARD NAME ADDR", "250-XCLIENT NAME", "250 XEXCH50"},
     SMTP_REPLY_DONE,
     250,
     "",
     4,
     NULL,
     false},
    {"X greeting line is not a keyword",
     {"250 XXXXXXXX"},
     SMTP_REPLY_DONE,
     250,
     "",
     1,
     NULL,
     false},
};

/* Feed a case's lines; return the status of the last one fed. */
static enum smtp_reply_status feed_lines(struct smtp_reply *r, const char *const *lines)
{
    enum smtp_reply_status st = SMTP_REPLY_ERROR;
    smtp_reply_init(r);
    for (size_t i = 0; i < MAXL && lines[i] != NULL; i++) {
        st = smtp_reply_feed(r, lines[i], strlen(lines[i]));
        if (st != SMTP_REPLY_MORE)
            break;
    }
    return st;
}

static void test_cases(void **state)
{
    (void)state;
    struct smtp_reply *r = malloc(sizeof(*r));
    char out[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct reply_case *tc = &cases[i];
        print_message("# case: %s\n", tc->name);
        assert_int_equal(feed_lines(r, tc->lines), tc->last);
        assert_int_equal(r->code, tc->code);
        assert_string_equal(r->enhanced, tc->enhanced);
        assert_int_equal(r->nlines, tc->nlines);
        if (tc->format != NULL) {
            smtp_reply_format(r, out, sizeof(out));
            assert_string_equal(out, tc->format);
        }
        assert_int_equal(smtp_reply_masked(r), tc->masked);
    }
    free(r);
}

static void test_lines_and_out_of_range(void **state)
{
    (void)state;
    struct smtp_reply r;
    const char *lines[] = {"250-a", "250-", "250 ccc", NULL};
    assert_int_equal(feed_lines(&r, lines), SMTP_REPLY_DONE);
    assert_string_equal(smtp_reply_line(&r, 0), "a");
    assert_string_equal(smtp_reply_line(&r, 1), "");
    assert_string_equal(smtp_reply_line(&r, 2), "ccc");
    assert_string_equal(smtp_reply_line(&r, 3), "");
    assert_string_equal(smtp_reply_line(&r, 1000), "");
}

/* The 65th line is refused; 64 are fine. */
static void test_line_count_limit(void **state)
{
    (void)state;
    struct smtp_reply r;
    smtp_reply_init(&r);
    for (int i = 0; i < SMTP_REPLY_MAX_LINES; i++)
        assert_int_equal(smtp_reply_feed(&r, "250-KEYWORD", 11), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_feed(&r, "250 LAST", 8), SMTP_REPLY_ERROR);
    assert_int_equal(r.nlines, SMTP_REPLY_MAX_LINES);
}

/* A line of SMTP_REPLY_LINE_MAX is accepted whole, one more octet is an
 * error. */
static void test_line_length_limit(void **state)
{
    (void)state;
    struct smtp_reply r;
    char *line = malloc(SMTP_REPLY_LINE_MAX + 2);
    memset(line, 'a', SMTP_REPLY_LINE_MAX + 1);
    memcpy(line, "550 ", 4);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX + 1), SMTP_REPLY_ERROR);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX), SMTP_REPLY_DONE);
    assert_int_equal(r.code, 550);
    assert_false(r.truncated);
    assert_true(r.text_len <= SMTP_REPLY_TEXT_MAX - 1);
    assert_int_equal(strlen(smtp_reply_line(&r, 0)), SMTP_REPLY_LINE_MAX - 4);
    free(line);
}

/* Text beyond text[] is cut, later lines read as "", the reply stays
 * usable and the buffer is never overrun. */
static void test_text_truncation(void **state)
{
    (void)state;
    struct smtp_reply r;
    char line[1100];
    memset(line, 'b', sizeof(line));
    memcpy(line, "250-", 4);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), SMTP_REPLY_MORE);
    assert_false(r.truncated);
    assert_int_equal(smtp_reply_feed(&r, line, sizeof(line)), SMTP_REPLY_MORE);
    assert_true(r.truncated);
    assert_int_equal(smtp_reply_feed(&r, "250-more", 8), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_feed(&r, "250 end", 7), SMTP_REPLY_DONE);
    assert_int_equal(r.nlines, 4);
    assert_int_equal(strlen(smtp_reply_line(&r, 0)), sizeof(line) - 4);
    assert_int_equal(strlen(smtp_reply_line(&r, 0)) + 1 + strlen(smtp_reply_line(&r, 1)) + 1,
                     SMTP_REPLY_TEXT_MAX - 1);
    assert_string_equal(smtp_reply_line(&r, 2), "");
    assert_string_equal(smtp_reply_line(&r, 3), "");
    assert_true(r.text_len <= SMTP_REPLY_TEXT_MAX - 1);
}

/* The rendering stops cleanly at the buffer's end: NUL-terminated, never
 * half an escape. */
static void test_format_truncation(void **state)
{
    (void)state;
    struct smtp_reply r;
    char out[64];
    const char *line = "550 \x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01";
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_feed(&r, line, strlen(line)), SMTP_REPLY_DONE);
    for (size_t n = 0; n < sizeof(out); n++) {
        memset(out, 'Z', sizeof(out));
        smtp_reply_format(&r, out, n);
        if (n == 0) {
            assert_int_equal(out[0], 'Z');
            continue;
        }
        size_t len = strlen(out);
        assert_true(len < n);
        /* an escape is whole: the text ends in ... \xHH, not \x0 */
        const char *bs = strrchr(out, '\\');
        if (bs != NULL)
            assert_true(strlen(bs) >= 4);
    }
    smtp_reply_format(&r, out, sizeof(out));
    assert_string_equal(out, "('550', ['\\x01\\x01\\x01\\x01\\x01\\x01\\x01\\x01\\x01\\x01\\x01"
                             "\\x01\\x01");
}

static void test_set_and_empty(void **state)
{
    (void)state;
    struct smtp_reply r;
    char out[128];
    smtp_reply_init(&r);
    smtp_reply_format(&r, out, sizeof(out));
    assert_string_equal(out, "('000', [])");
    assert_false(smtp_reply_masked(&r));
    smtp_reply_set(&r, 552, "5.3.4", "Message too big");
    assert_int_equal(r.code, 552);
    assert_string_equal(r.enhanced, "5.3.4");
    smtp_reply_format(&r, out, sizeof(out));
    assert_string_equal(out, "('552', ['5.3.4 Message too big'])");
    smtp_reply_set(&r, 421, NULL, "bye");
    assert_string_equal(r.enhanced, "");
    smtp_reply_format(&r, out, sizeof(out));
    assert_string_equal(out, "('421', ['bye'])");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_lines_and_out_of_range),
        cmocka_unit_test(test_line_count_limit),
        cmocka_unit_test(test_line_length_limit),
        cmocka_unit_test(test_text_truncation),
        cmocka_unit_test(test_format_truncation),
        cmocka_unit_test(test_set_and_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
