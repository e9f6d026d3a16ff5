/*
 * fuzz_smtp_reply: libFuzzer harness for the client-side reply parser.
 *
 * The input is split at LF (a CR before it is dropped, as the client's
 * line reader does) and fed line by line; after each complete or broken
 * reply the harness renders it for logs, asks whether it looks masked,
 * reads every line back, checks the invariants the client relies on, and
 * starts the next reply. A small output buffer is also tried so the
 * renderer's truncation path is exercised.
 */
#include "smtp/smtp_reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const struct smtp_reply *r)
{
    char out[4 * SMTP_REPLY_TEXT_MAX + 64 * 8 + 32];
    char small[37];
    if (r->nlines > SMTP_REPLY_MAX_LINES || r->text_len > SMTP_REPLY_TEXT_MAX - 1)
        abort();
    if (r->nlines > 0 && (r->code < 200 || r->code > 599))
        abort();
    if (strlen(r->enhanced) >= sizeof(r->enhanced))
        abort();
    for (size_t i = 0; i <= r->nlines; i++) {
        if (strlen(smtp_reply_line(r, i)) > SMTP_REPLY_LINE_MAX)
            abort();
    }
    smtp_reply_format(r, out, sizeof(out));
    if (strlen(out) >= sizeof(out))
        abort();
    smtp_reply_format(r, small, sizeof(small));
    if (strlen(small) >= sizeof(small))
        abort();
    (void)smtp_reply_masked(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_reply r;
    const char *p = (const char *)data;
    const char *end = p + size;

    smtp_reply_init(&r);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        size_t len = (size_t)(stop - p);
        if (len > 0 && p[len - 1] == '\r')
            len--;
        enum smtp_reply_status st = smtp_reply_feed(&r, p, len);
        check_reply(&r);
        if (st != SMTP_REPLY_MORE)
            smtp_reply_init(&r);
        p = nl ? nl + 1 : end;
    }
    return 0;
}
