/*
 * libFuzzer harness for smtp_data: the DATA/BDAT machine and the header
 * scanner.
 *
 * Input: byte 0 picks the mode and max_line, byte 1 seeds the split sizes,
 * the rest is the message stream. Properties checked (abort() on failure):
 *   - split feeding (one call, byte by byte, pseudo-random pieces) gives the
 *     same output, flags, consumed count, done and line_len;
 *   - output never exceeds input, per call, and feeding in place (in ==
 *     out) gives the same result;
 *   - the result equals a direct, non-incremental reference: the data ends
 *     right after the first "\r\n.\r\n" of "\r\n" + input, the flags are
 *     what a scan of the consumed bytes finds, and the content is the input
 *     minus line-start dots and the CR that follows one;
 *   - the header scanner gives the same result whatever the split, and its
 *     values stay bounded and NUL-terminated.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    char *out;
    size_t outlen;
    size_t consumed;
    unsigned flags;
    bool done;
    size_t line_len;
};

static const size_t fuzz_max_lines[] = {1000, 0, 8, 3};

/* Next piece size from a small LCG: 1..16, or 0 for "the rest". */
static size_t fuzz_next_step(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 16) % 17;
}

/* step: 0 one call, 1 byte by byte, 2 pseudo-random pieces. */
static struct run fuzz_run(enum smtp_data_mode mode, size_t max_line, const char *in, size_t len,
                           int how, uint32_t seed)
{
    struct smtp_data d;
    struct run r = {0};
    r.out = malloc(len + 1);
    if (r.out == NULL)
        abort();
    smtp_data_init(&d, mode, max_line);
    size_t pos = 0;
    while (pos < len && !d.done) {
        size_t n = len - pos;
        if (how == 1)
            n = 1;
        else if (how == 2) {
            size_t s = fuzz_next_step(&seed);
            if (s != 0 && s < n)
                n = s;
        }
        /* exact-size copies so ASan sees any read or write past a piece */
        char *piece = malloc(n);
        char *pout = malloc(n);
        if (piece == NULL || pout == NULL)
            abort();
        memcpy(piece, in + pos, n);
        size_t olen = 0;
        size_t used = smtp_data_feed(&d, piece, n, pout, &olen);
        if (used > n || olen > n || olen > used)
            abort();
        if (used < n && !d.done)
            abort();
        memcpy(r.out + r.outlen, pout, olen);
        free(piece);
        free(pout);
        r.outlen += olen;
        pos += used;
    }
    r.consumed = pos;
    r.flags = d.flags;
    r.done = d.done;
    r.line_len = d.line_len;
    return r;
}

static void fuzz_same(const struct run *a, const struct run *b)
{
    if (a->outlen != b->outlen || memcmp(a->out, b->out, a->outlen) != 0 ||
        a->consumed != b->consumed || a->flags != b->flags || a->done != b->done ||
        a->line_len != b->line_len)
        abort();
}

/* Reference: where DATA ends (index past the terminator), or 0. */
static size_t ref_data_end(const char *in, size_t len)
{
    for (size_t i = 0; i + 3 <= len; i++) {
        bool crlf_before = i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n');
        if (crlf_before && in[i] == '.' && in[i + 1] == '\r' && in[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static bool ref_line_start(const char *in, size_t i)
{
    return i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n');
}

/* Reference flags and content for the consumed bytes in[0..n). */
static void ref_check(enum smtp_data_mode mode, size_t max_line, const char *in, size_t n,
                      bool done, const struct run *r)
{
    bool dat = mode == SMTP_DATA_MODE_DATA;
    size_t body = done ? n - 3 : n; /* the terminator's ".\r\n" is not content */
    unsigned flags = 0;
    size_t line = 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        bool stuffing = dat && c == '.' && ref_line_start(in, i);
        bool dot_cr = dat && c == '\r' && i >= 1 && in[i - 1] == '.' && ref_line_start(in, i - 1);
        if (c == '\0')
            flags |= SMTP_DATA_NUL;
        if (c == '\n') {
            if (i == 0 || in[i - 1] != '\r')
                flags |= SMTP_DATA_BARE_LF;
            line = 0;
        } else if (c == '\r' && i + 1 < n && in[i + 1] != '\n') {
            flags |= SMTP_DATA_BARE_CR;
            line++;
        } else if (c != '\r' && !stuffing) {
            line++;
        }
        if (max_line != 0 && line + 2 > max_line)
            flags |= SMTP_DATA_LONG_LINE;
        if (i < body && !stuffing && !dot_cr) {
            if (o >= r->outlen || r->out[o] != c)
                abort();
            o++;
        }
    }
    if (o != r->outlen || flags != r->flags)
        abort();
}

static void fuzz_check_hdr(const char *p, size_t len, uint32_t seed)
{
    static struct smtp_hdr_scan a, b;
    smtp_hdr_scan_init(&a);
    smtp_hdr_scan_feed(&a, p, len);
    smtp_hdr_scan_init(&b);
    for (size_t pos = 0; pos < len;) {
        size_t n = fuzz_next_step(&seed);
        if (n == 0 || n > len - pos)
            n = len - pos;
        smtp_hdr_scan_feed(&b, p + pos, n);
        pos += n;
    }
    if (a.in_body != b.in_body || a.max_header_line != b.max_header_line ||
        a.have_message_id != b.have_message_id || a.have_subject != b.have_subject ||
        a.message_id_len != b.message_id_len || a.subject_len != b.subject_len ||
        memcmp(a.message_id, b.message_id, a.message_id_len + 1) != 0 ||
        memcmp(a.subject, b.subject, a.subject_len + 1) != 0)
        abort();
    if (a.message_id_len > SMTP_HDR_VALUE_MAX || a.subject_len > SMTP_HDR_VALUE_MAX ||
        a.message_id[a.message_id_len] != '\0' || a.subject[a.subject_len] != '\0' ||
        a.max_header_line > len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum smtp_data_mode mode = (data[0] & 1) ? SMTP_DATA_MODE_BDAT : SMTP_DATA_MODE_DATA;
    size_t max_line = fuzz_max_lines[(data[0] >> 1) & 3];
    uint32_t seed = data[1];
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    struct run whole = fuzz_run(mode, max_line, in, len, 0, seed);
    for (int how = 1; how <= 2; how++) {
        struct run split = fuzz_run(mode, max_line, in, len, how, seed);
        fuzz_same(&whole, &split);
        free(split.out);
    }

    if (mode == SMTP_DATA_MODE_DATA) {
        size_t end = ref_data_end(in, len);
        if (whole.done != (end != 0) || whole.consumed != (end ? end : len))
            abort();
    } else if (whole.done || whole.consumed != len) {
        abort();
    }
    ref_check(mode, max_line, in, whole.consumed, whole.done, &whole);

    /* in place (in == out), as the session feeds BDAT chunks */
    char *buf = malloc(len ? len : 1);
    if (buf == NULL)
        abort();
    memcpy(buf, in, len);
    struct smtp_data d;
    size_t olen;
    smtp_data_init(&d, mode, max_line);
    size_t used = smtp_data_feed(&d, buf, len, buf, &olen);
    if (used != whole.consumed || olen != whole.outlen || memcmp(buf, whole.out, olen) != 0 ||
        d.flags != whole.flags)
        abort();
    free(buf);

    fuzz_check_hdr(whole.out, whole.outlen, seed);
    free(whole.out);
    return 0;
}
