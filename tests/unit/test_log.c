/*
 * Unit tests for core/log: escaping of network values and the line format
 * and buffering of mail_logs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

struct escape_case {
    const char *in;
    size_t len;
    const char *out;
};

static void test_escape_table(void **state)
{
    static const struct escape_case cases[] = {
        {"plain text", 10, "plain text"},
        {"a'b", 3, "a\\'b"},
        {"back\\slash", 10, "back\\\\slash"},
        {"line\r\nforged", 12, "line\\x0d\\x0aforged"},
        {"nul\0x", 5, "nul\\x00x"},
        {"tab\t", 4, "tab\\x09"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},            /* valid UTF-8 passes */
        {"bad\xc3", 4, "bad\\xc3"},                   /* truncated sequence */
        {"over\xc0\xaf", 6, "over\\xc0\\xaf"},        /* overlong */
        {"sur\xed\xa0\x80", 6, "sur\\xed\\xa0\\x80"}, /* surrogate */
        {"del\x7f", 4, "del\\x7f"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        log_escape(out, sizeof(out), cases[i].in, cases[i].len);
        assert_string_equal(out, cases[i].out);
    }
}

static void test_escape_truncates(void **state)
{
    char out[16];
    char in[100];
    memset(in, 'a', sizeof(in));
    log_escape(out, sizeof(out), in, sizeof(in));
    assert_true(strlen(out) < sizeof(out));
    assert_string_equal(out + strlen(out) - 3, "...");
    /* an escape sequence is never cut in half */
    log_escape(out, 8, "\r\r\r\r\r", 5);
    assert_string_equal(out, "\\x0d...");
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[8192];
    size_t n;
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int hook_calls;
static void count_hook(void)
{
    hook_calls++;
}

static void test_line_format_and_buffering(void **state)
{
    char dir[] = "/tmp/postern-logtest-XXXXXX";
    char path[256];
    regex_t re;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/mail_logs", dir);
    assert_int_equal(maillog_open(dir), 0);

    maillog_set_flush_hook(count_hook);
    maillog(LOG_INFO, "Start MID %d ICID %d", 7, 3);
    maillog(LOG_WARNING, "second");
    /* buffered until the flush; the hook fires once per pending flush */
    assert_int_equal(hook_calls, 1);
    assert_string_equal(read_file(path), "");
    maillog_flush();
    maillog(LOG_INFO, "third");
    assert_int_equal(hook_calls, 2);
    maillog_set_flush_hook(NULL);
    maillog_flush();

    const char *text = read_file(path);
    assert_int_equal(regcomp(&re,
                             "^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} "
                             "[0-9]{4} Info: Start MID 7 ICID 3\n"
                             "[^\n]* Warning: second\n[^\n]* Info: third\n$",
                             REG_EXTENDED),
                     0);
    assert_int_equal(regexec(&re, text, 0, NULL, 0), 0);
    regfree(&re);
    maillog_close();
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_table),
        cmocka_unit_test(test_escape_truncates),
        cmocka_unit_test(test_line_format_and_buffering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
