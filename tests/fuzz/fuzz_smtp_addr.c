/*
 * libFuzzer harness for smtp_addr. Byte 0 holds the smtp_addr_flags, the
 * rest is the path. Properties checked (abort() on failure):
 *   - on success the mailbox is NUL-terminated, has no NUL, fits, and its
 *     fields agree with each other;
 *   - "<" mailbox ">" parses again to the same mailbox (one parser, one
 *     answer: what the relay check saw is what delivery sends);
 *   - every flag only widens what is accepted: a path accepted with some
 *     flags is accepted, identically, with more;
 *   - the relay check never says OK to a routing character, a domain
 *     literal or a domain the callback refused;
 *   - on failure the output is the empty path.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Relay domains for the harness: "example.com" and anything ending in 'l'. */
static bool fuzz_is_relay(void *ctx, const char *domain, size_t len)
{
    (void)ctx;
    if (len == 0)
        abort(); /* never asked about a path without a domain */
    return (len == 11 && memcmp(domain, "example.com", 11) == 0) || domain[len - 1] == 'l';
}

static void fuzz_check_ok(const struct smtp_path *p, unsigned flags)
{
    if (p->len > SMTP_PATH_MAX - 2 || strlen(p->mailbox) != p->len)
        abort();
    if (p->local_dequoted_len > p->local_len)
        abort();
    if (p->domain_len > 0) {
        if (p->domain != p->mailbox + p->local_len + 1 || p->mailbox[p->local_len] != '@' ||
            p->local_len + 1 + p->domain_len != p->len || p->domain_len > SMTP_DOMAIN_MAX)
            abort();
        for (size_t i = 0; i < p->domain_len; i++) {
            if (p->domain[i] >= 'A' && p->domain[i] <= 'Z')
                abort();
        }
    } else if (!p->is_null && !p->is_postmaster) {
        abort();
    }
    if (p->utf8 && !(flags & SMTP_ADDR_UTF8))
        abort();
    if (p->is_null && !(flags & SMTP_ADDR_ALLOW_NULL))
        abort();
    if (p->is_postmaster && !(flags & SMTP_ADDR_ALLOW_POSTMASTER))
        abort();

    /* round trip */
    char buf[SMTP_PATH_MAX + 1];
    buf[0] = '<';
    memcpy(buf + 1, p->mailbox, p->len);
    buf[p->len + 1] = '>';
    static struct smtp_path q;
    if (smtp_path_parse(buf, p->len + 2, flags, &q) != SMTP_ADDR_OK)
        abort();
    if (q.len != p->len || memcmp(q.mailbox, p->mailbox, p->len) != 0 ||
        q.local_dequoted_len != p->local_dequoted_len ||
        memcmp(q.local_dequoted, p->local_dequoted, p->local_dequoted_len) != 0)
        abort();

    /* relay check */
    enum smtp_relay_verdict v = smtp_relay_check(p, fuzz_is_relay, NULL);
    if (v == SMTP_RELAY_OK && !p->is_postmaster) {
        if (p->domain_literal || p->domain_len == 0 ||
            !fuzz_is_relay(NULL, p->domain, p->domain_len))
            abort();
        for (size_t i = 0; i < p->local_dequoted_len; i++) {
            char c = p->local_dequoted[i];
            if (c == '%' || c == '!' || c == '@')
                abort();
        }
    }
    if (smtp_relay_verdict_text(v) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0] & 7u;
    size_t len = size - 1;
    char *s = malloc(len ? len : 1); /* exact size: ASan sees over-reads */
    if (s == NULL)
        abort();
    memcpy(s, data + 1, len);

    static struct smtp_path p, wide;
    enum smtp_addr_status st = smtp_path_parse(s, len, flags, &p);
    if (st == SMTP_ADDR_OK) {
        fuzz_check_ok(&p, flags);
        for (unsigned more = flags + 1; more < 8; more++) {
            if ((more & flags) != flags)
                continue;
            if (smtp_path_parse(s, len, more, &wide) != SMTP_ADDR_OK ||
                strcmp(wide.mailbox, p.mailbox) != 0)
                abort();
        }
    } else if (p.len != 0 || p.mailbox[0] != '\0' || p.domain_len != 0 || p.domain == NULL ||
               p.is_null || p.is_postmaster) {
        abort();
    }
    if (len > SMTP_PATH_MAX && st != SMTP_ADDR_TOO_LONG)
        abort();
    free(s);
    return 0;
}
