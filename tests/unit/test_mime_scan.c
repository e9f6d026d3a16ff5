/*
 * Unit tests for smtp/mime_scan: filename parameters found in Content-Type
 * and Content-Disposition headers anywhere in the message, folded lines,
 * quoted values, RFC 2231 continuations, and the same result whatever the
 * chunking.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "smtp/mime_scan.h"

struct hdr_case {
    const char *line;
    size_t want;
};

static void test_header_lines(void **state)
{
    static const struct hdr_case cases[] = {
        {"Content-Type: text/plain", 0},
        {"Content-Type: application/pdf; name=\"report.pdf\"", 10},
        {"Content-Type: application/pdf; name=report.pdf; x=1", 10},
        {"Content-Disposition: attachment; filename=\"a b.txt\"", 7},
        {"Content-Disposition: attachment; FILENAME = \"abc\"", 3},
        {"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt", 20},
        {"Content-Disposition: attachment; filename*0=\"aaaa\"; filename*1=\"bbbbbb\"", 10},
        {"Content-Disposition: attachment; filename=\"q\\\"x\"", 3},
        {"Content-Type: multipart/mixed; boundary=\"filename=xxxxxxxxxxxx\"", 0},
        {"Content-Type: text/plain; charset=us-ascii; format=flowed", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = mime_scan_header_filename_len(cases[i].line, strlen(cases[i].line));
        if (got != cases[i].want)
            fail_msg("case %zu '%s': got %zu want %zu", i, cases[i].line, got, cases[i].want);
    }
}

static const char msg[] = "From: a@example.org\r\n"
                          "Content-Type: multipart/mixed; boundary=BB\r\n"
                          "\r\n"
                          "--BB\r\n"
                          "Content-Type: text/plain\r\n"
                          "\r\n"
                          "hello\r\n"
                          "--BB\r\n"
                          "Content-Type: application/octet-stream;\r\n"
                          "\tname=\"0123456789012345678901234567890123456789.bin\"\r\n"
                          "Content-Disposition: attachment;\r\n"
                          " filename=\"short.bin\"\r\n"
                          "\r\n"
                          "AAAA\r\n"
                          "--BB--\r\n";

static size_t scan_in_chunks(const char *p, size_t len, size_t chunk)
{
    struct mime_scan m;
    mime_scan_init(&m);
    for (size_t off = 0; off < len; off += chunk)
        mime_scan_feed(&m, p + off, len - off < chunk ? len - off : chunk);
    mime_scan_finish(&m);
    return m.longest;
}

static void test_message_any_chunking(void **state)
{
    size_t len = strlen(msg);
    /* the folded name= in the part's Content-Type is the longest: 44 */
    for (size_t chunk = 1; chunk <= len; chunk++)
        assert_int_equal(scan_in_chunks(msg, len, chunk), 44);
}

static void test_header_at_end_without_newline(void **state)
{
    const char *p = "Subject: x\r\nContent-Disposition: attachment; filename=\"abcdef\"";
    assert_int_equal(scan_in_chunks(p, strlen(p), 5), 6);
}

static void test_body_text_is_not_a_header(void **state)
{
    /* "filename=" in running text, not in a Content-* line, does not count */
    const char *p = "Subject: x\r\n\r\nplease set filename=\"a-very-long-name-here\" ok\r\n";
    assert_int_equal(scan_in_chunks(p, strlen(p), 7), 0);
}

static void test_overlong_header_is_bounded(void **state)
{
    static char big[MIME_SCAN_LINE_MAX * 3];
    const char *head = "Content-Type: x/y; name=\"";
    size_t n = strlen(head);
    memcpy(big, head, n);
    memset(big + n, 'z', sizeof(big) - n - 3);
    memcpy(big + sizeof(big) - 3, "\"\r\n", 3);
    /* longer than the buffer: reported as at least the buffer's length */
    assert_true(scan_in_chunks(big, sizeof(big), 100) >= MIME_SCAN_LINE_MAX - n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_lines),
        cmocka_unit_test(test_message_any_chunking),
        cmocka_unit_test(test_header_at_end_without_newline),
        cmocka_unit_test(test_body_text_is_not_a_header),
        cmocka_unit_test(test_overlong_header_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
