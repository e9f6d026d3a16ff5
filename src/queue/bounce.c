/*
 * bounce: the DSN builder (see bounce.h for the contract, docs/bounces.md
 * for what a DSN looks like).
 *
 * Design
 *   bounce_build() is a pure function of its input plus the bytes of the
 *   original: it writes, in order, the top-level header (RFC 5322, with
 *   Auto-Submitted: auto-replied per RFC 3834), then a multipart/report
 *   (RFC 6522) of three parts: text/plain for people, message/delivery-status
 *   (RFC 3464) for programs, and the original as message/rfc822 or, when RET
 *   was HDRS or the original is bigger than max_original, its header section
 *   as text/rfc822-headers. Output goes through a 16 KiB buffer that is
 *   handed to the writer whenever it fills, so the DSN is never held whole
 *   in memory; the original is streamed through the same buffer.
 *
 * Invariants of the output
 *   - Every line ends in CRLF: our own lines by construction, the original's
 *     by normalisation (bare LF and bare CR become CRLF, as a receiving MTA
 *     would have to do anyway), and NUL becomes a space (not allowed in 8bit).
 *   - No line is longer than 998 octets (RFC 5322 2.1.1): every value we
 *     did not write ourselves is cleaned (control characters become spaces,
 *     runs of white space collapse, invalid UTF-8 becomes '?'), capped at
 *     VALUE_MAX octets with "..." and folded at spaces near 78 columns; a
 *     line of the original longer than 998 octets is broken in two.
 *   - The MIME boundary never starts a line inside the parts: it is
 *     "=_Postern_" plus a hash of boundary_seed (the "=_" cannot occur in
 *     quoted-printable or base64 text), it is checked against the first
 *     HEAD_CAP octets of the original (all of it in the common case) and
 *     replaced by a numbered variant if it occurs there, and any line of the
 *     original beyond that which would still begin with "--" + boundary gets
 *     a space inserted in front (only a crafted original that predicted the
 *     seed can trigger this).
 *   - Deterministic: the same input and original give the same bytes (no
 *     clock, no locale, no randomness), so tests compare against golden files.
 *
 * Error handling: a reader or writer failure makes bounce_build() return -1;
 * what was already written must then be discarded by the caller. Missing
 * mandatory input (no recipients, no sender, empty sender) is a caller bug
 * and aborts: a DSN to <> is a double bounce, which the scheduler logs and
 * drops before ever getting here.
 *
 * Out of scope: RFC 6533 (message/global-delivery-status, utf-8 address
 * types). UTF-8 values are written as they are, with an 8bit transfer
 * encoding, which SMTPUTF8 receivers accept and others at worst display.
 */
#include "queue/bounce.h"

#include "core/alloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    /* output is handed to the writer in pieces of this size */
    OUT_BUF = 16 * 1024,
    /* how much of the original is read ahead: enough to hold the header
     * section of any reasonable message (and the whole of most messages, so
     * the boundary can be checked against all of it) */
    HEAD_CAP = 64 * 1024,
    /* RFC 5322 2.1.1: at most 998 octets per line, excluding CRLF */
    LINE_MAX_OCTETS = 998,
    /* RFC 5322 2.1.1: lines SHOULD stay within 78 characters; we fold there */
    FOLD_COL = 78,
    /* a value we did not write is cut here (plus "..."): the longest line
     * built around an unbreakable one, the Message-ID (12 octets of name, a
     * SEED_MAX seed, "<@>"), stays under 998 octets */
    VALUE_MAX = 900,
    VALUE_BUF = VALUE_MAX + 8,
    /* the seed goes into the Message-ID's left-hand side; keep it short */
    SEED_MAX = 64,
    /* RFC 2046 5.1.1: a boundary is at most 70 characters */
    BOUNDARY_BUF = 71,
    /* how many numbered boundary variants we try before relying on the
     * line guard alone (only a 64 KiB original full of them gets that far) */
    BOUNDARY_TRIES = 1000,
};

struct out {
    bounce_writer write;
    void *ctx;
    bool failed;
    size_t len;
    char buf[OUT_BUF];
};

/* Normaliser state for the original: see orig_byte(). */
struct orig {
    size_t col;        /* octets on the current output line */
    bool cr;           /* a CR was seen and its successor is not known yet */
    int guard;         /* octets of "--" boundary matched at line start, or -1 */
    bool stop_at_body; /* headers only: stop at the first empty line */
    bool done;         /* that empty line was seen */
};

struct dsn {
    const struct bounce_input *in;
    bool full;                    /* include the whole original */
    bool eight_bit;               /* some value we write has octets >= 0x80 */
    char delim[BOUNDARY_BUF + 2]; /* "--" + boundary */
    size_t delim_len;
    char *head; /* HEAD_CAP octets: read-ahead, then read buffer */
    size_t head_len;
    bool head_eof;
    struct orig orig;
    struct out out;
};

static const char *const day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* ---- output buffer ---- */

/* Hand the buffered bytes to the writer; after a failure nothing more is
 * written. */
static void out_flush(struct out *o)
{
    if (o->failed || o->len == 0)
        return;
    if (o->write(o->ctx, o->buf, o->len) != 0)
        o->failed = true;
    o->len = 0;
}

static void out_put(struct out *o, const char *data, size_t len)
{
    while (len > 0 && !o->failed) {
        size_t n = OUT_BUF - o->len;
        if (n > len)
            n = len;
        memcpy(o->buf + o->len, data, n);
        o->len += n;
        data += n;
        len -= n;
        if (o->len == OUT_BUF)
            out_flush(o);
    }
}

static void out_putc(struct out *o, char c)
{
    if (o->len == OUT_BUF)
        out_flush(o);
    if (!o->failed)
        o->buf[o->len++] = c;
}

static void out_puts(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

/* ---- cleaning and folding of values ---- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0. s is NUL-terminated, and NUL
 * is never a continuation byte, so this never reads past the end. */
static size_t utf8_seq_len(const unsigned char *s)
{
    size_t n;
    unsigned min;
    unsigned cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1f;
        min = 0x80;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0f;
        min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Copy src (NULL counts as "") into dst[VALUE_BUF] as one clean line:
 * control characters and white space runs become one space, leading and
 * trailing space go, invalid UTF-8 becomes '?', and more than VALUE_MAX
 * octets end in "...", never in the middle of a UTF-8 sequence. Why: the
 * values come from remote servers and envelopes, and must neither inject
 * header lines nor break the 998-octet limit. Returns the length. */
static size_t text_clean(char *dst, const char *src)
{
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    size_t n = 0;
    bool space = false;
    while (*s) {
        size_t k = 1;
        const char *tok = (const char *)s;
        if (*s <= 0x20 || *s == 0x7f) {
            space = n > 0;
            s++;
            continue;
        }
        if (*s >= 0x80) {
            k = utf8_seq_len(s);
            if (k == 0) {
                tok = "?";
                k = 1;
                s++;
            } else {
                s += k;
            }
        } else {
            s++;
        }
        if (n + space + k > VALUE_MAX) {
            memcpy(dst + n, "...", 3);
            n += 3;
            break;
        }
        if (space)
            dst[n++] = ' ';
        space = false;
        memcpy(dst + n, tok, k);
        n += k;
    }
    dst[n] = '\0';
    return n;
}

static bool has_8bit(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/* Write prefix and a clean text (single spaces only, see text_clean()),
 * greedily wrapped at spaces so that lines stay within FOLD_COL where a
 * word allows it; continuation lines start with indent. With indent " "
 * this is RFC 5322 folding (unfolding restores the text exactly). */
static void fold_emit(struct dsn *d, const char *prefix, const char *text, const char *indent)
{
    size_t col = strlen(prefix);
    size_t ind = strlen(indent);
    bool first = true;
    out_puts(&d->out, prefix);
    while (*text) {
        const char *sp = strchr(text, ' ');
        size_t wl = sp ? (size_t)(sp - text) : strlen(text);
        if (!first && col + 1 + wl > FOLD_COL) {
            out_put(&d->out, "\r\n", 2);
            out_put(&d->out, indent, ind);
            col = ind;
        } else if (!first) {
            out_putc(&d->out, ' ');
            col++;
        }
        out_put(&d->out, text, wl);
        col += wl;
        first = false;
        text += wl;
        if (*text == ' ')
            text++;
    }
    out_put(&d->out, "\r\n", 2);
}

/* A field whose whole value comes from outside: cleaned, then folded. */
static void field_emit(struct dsn *d, const char *prefix, const char *value)
{
    char clean[VALUE_BUF];
    text_clean(clean, value);
    fold_emit(d, prefix, clean, " ");
}

/* A field "prefix<value>", e.g. an address in angle brackets. */
static void field_emit_angle(struct dsn *d, const char *prefix, const char *value)
{
    char clean[VALUE_BUF];
    char buf[VALUE_BUF + 2];
    text_clean(clean, value);
    snprintf(buf, sizeof(buf), "<%s>", clean);
    fold_emit(d, prefix, buf, " ");
}

/* RFC 5322 3.3 date-time in UTC, e.g. "Thu, 01 Jan 1970 00:00:00 +0000".
 * Names come from our own tables: strftime's %a and %b follow the locale. */
static void date_format(char *buf, size_t len, int64_t ms)
{
    int64_t sec = ms / 1000 - (ms % 1000 < 0);
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1900) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", day_names[tm.tm_wday], tm.tm_mday,
             month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void date_emit(struct dsn *d, const char *prefix, int64_t ms)
{
    char date[64];
    date_format(date, sizeof(date), ms);
    fold_emit(d, prefix, date, " ");
}

/* RFC 3463 status-code: class "." subject "." detail, class 2, 4 or 5,
 * subject and detail 1 to 3 digits. */
static bool status_valid(const char *s)
{
    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    s += 2;
    for (int part = 0; part < 2; part++) {
        size_t n = strspn(s, "0123456789");
        if (n < 1 || n > 3)
            return false;
        s += n;
        if (part == 0 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

static const char *rcpt_status(const struct bounce_rcpt *r)
{
    if (status_valid(r->status))
        return r->status;
    return r->action == BOUNCE_DELAYED ? "4.0.0" : "5.0.0";
}

/* ---- boundary and Message-ID ---- */

/* FNV-1a, 64 bits: a well-spread, dependency-free hash; the boundary needs
 * to look random, not to be secret (see the guard in orig_char()). */
static uint64_t hash_fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Pick the boundary: the seed's hash, or the first numbered variant that
 * does not occur in the read-ahead of the original. */
static void boundary_choose(struct dsn *d)
{
    const char *seed = d->in->boundary_seed ? d->in->boundary_seed : "";
    uint64_t h = hash_fnv1a(seed);
    for (int i = 0; i < BOUNDARY_TRIES; i++) {
        if (i == 0)
            snprintf(d->delim, sizeof(d->delim), "--=_Postern_%016" PRIx64, h);
        else
            snprintf(d->delim, sizeof(d->delim), "--=_Postern_%016" PRIx64 "_%d", h, i);
        d->delim_len = strlen(d->delim);
        if (memmem(d->head, d->head_len, d->delim + 2, d->delim_len - 2) == NULL)
            return;
    }
}

/* The seed as the left-hand side of a Message-ID, a dot-atom (RFC 5322
 * 3.4.1): letters, digits, '_' and '-' (others become '-'), single dots
 * between them, at most SEED_MAX octets. */
static void seed_clean(char *dst, const char *seed)
{
    size_t n = 0;
    for (const char *s = seed ? seed : ""; *s && n < SEED_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (c == '.') {
            if (n > 0 && dst[n - 1] != '.')
                dst[n++] = '.';
            continue;
        }
        dst[n++] = ok ? (char)c : '-';
    }
    if (n > 0 && dst[n - 1] == '.')
        n--;
    if (n == 0)
        dst[n++] = 'x';
    dst[n] = '\0';
}

/* ---- reading the original ---- */

/* One reader call into buf[0..cap); returns the count, 0 at the end, -1
 * on error (including a reader that claims more than it was given). */
static long orig_read(struct dsn *d, char *buf, size_t cap)
{
    long r = d->in->read(d->in->read_ctx, buf, cap);
    if (r < 0 || (size_t)r > cap)
        return -1;
    return r;
}

/* Read ahead up to HEAD_CAP octets (less at the end of the original). */
static int head_fill(struct dsn *d)
{
    while (d->head_len < HEAD_CAP && !d->head_eof) {
        long r = orig_read(d, d->head + d->head_len, HEAD_CAP - d->head_len);
        if (r < 0)
            return -1;
        if (r == 0)
            d->head_eof = true;
        d->head_len += (size_t)r;
    }
    return 0;
}

/* ---- normalising the original ---- */

/* Write the octets of the boundary guard matched so far. */
static void orig_guard_release(struct dsn *d)
{
    struct orig *g = &d->orig;
    if (g->guard > 0) {
        out_put(&d->out, d->delim, (size_t)g->guard);
        g->col += (size_t)g->guard;
    }
    g->guard = -1;
}

static void orig_newline(struct dsn *d)
{
    struct orig *g = &d->orig;
    if (g->stop_at_body && g->col == 0 && g->guard <= 0) {
        /* the empty line that ends the header section: not part of it */
        g->done = true;
        return;
    }
    orig_guard_release(d);
    out_put(&d->out, "\r\n", 2);
    g->col = 0;
    g->guard = 0;
}

/* One octet of line content. At the start of a line the octets are held
 * while they match "--" + boundary; a full match gets a space in front so
 * that it cannot end our MIME part early. */
static void orig_char(struct dsn *d, char c)
{
    struct orig *g = &d->orig;
    if (g->col >= LINE_MAX_OCTETS) {
        /* why: RFC 5322 2.1.1 and RFC 5321 4.5.3.1.6; a relay would break
         * or refuse the line anyway, and 8bit forbids longer lines */
        out_put(&d->out, "\r\n", 2);
        g->col = 0;
        g->guard = 0;
    }
    if (g->guard >= 0) {
        if (c == d->delim[g->guard]) {
            if ((size_t)++g->guard == d->delim_len) {
                out_putc(&d->out, ' ');
                g->col++;
                orig_guard_release(d);
            }
            return;
        }
        orig_guard_release(d);
    }
    out_putc(&d->out, c);
    g->col++;
}

/* Feed one octet of the original: CRLF, bare LF and bare CR all end a line
 * and become CRLF; NUL becomes a space. */
static void orig_byte(struct dsn *d, char c)
{
    struct orig *g = &d->orig;
    if (g->cr) {
        g->cr = false;
        orig_newline(d);
        if (c == '\n')
            return;
        if (g->done)
            return;
    }
    if (c == '\r')
        g->cr = true;
    else if (c == '\n')
        orig_newline(d);
    else
        orig_char(d, c == '\0' ? ' ' : c);
}

static void orig_feed(struct dsn *d, const char *p, size_t len)
{
    for (size_t i = 0; i < len && !d->orig.done && !d->out.failed; i++)
        orig_byte(d, p[i]);
}

/* End of the original: terminate an unfinished last line. */
static void orig_finish(struct dsn *d)
{
    struct orig *g = &d->orig;
    if (g->done)
        return;
    if (g->cr || g->col > 0 || g->guard > 0) {
        g->cr = false;
        orig_newline(d);
    }
}

/* The header section of the original, from the read-ahead: up to the first
 * empty line, or, when there is none within HEAD_CAP octets and the
 * original goes on, up to the last complete line. */
static void orig_emit_headers(struct dsn *d)
{
    size_t len = d->head_len;
    d->orig.stop_at_body = true;
    if (!d->head_eof) {
        size_t end = len;
        while (end > 0 && d->head[end - 1] != '\n' && d->head[end - 1] != '\r')
            end--;
        if (end > 0)
            len = end;
    }
    orig_feed(d, d->head, len);
    orig_finish(d);
}

/* The whole original: the read-ahead, then the rest, read into the same
 * buffer. */
static int orig_emit_full(struct dsn *d)
{
    orig_feed(d, d->head, d->head_len);
    while (!d->head_eof && !d->out.failed) {
        long r = orig_read(d, d->head, HEAD_CAP);
        if (r < 0)
            return -1;
        if (r == 0)
            d->head_eof = true;
        orig_feed(d, d->head, (size_t)r);
    }
    orig_finish(d);
    return 0;
}

/* ---- the DSN ---- */

static bool all_delayed(const struct bounce_input *in)
{
    for (size_t i = 0; i < in->nrcpts; i++)
        if (in->rcpts[i].action != BOUNCE_DELAYED)
            return false;
    return true;
}

static bool any_delayed(const struct bounce_input *in)
{
    for (size_t i = 0; i < in->nrcpts; i++)
        if (in->rcpts[i].action == BOUNCE_DELAYED)
            return true;
    return false;
}

static bool input_8bit(const struct bounce_input *in)
{
    if (has_8bit(in->reporting_mta) || has_8bit(in->envid))
        return true;
    for (size_t i = 0; i < in->nrcpts; i++) {
        const struct bounce_rcpt *r = &in->rcpts[i];
        if (has_8bit(r->addr) || has_8bit(r->orcpt) || has_8bit(r->remote_mta) ||
            has_8bit(r->diagnostic) || has_8bit(r->reason))
            return true;
    }
    return false;
}

static void boundary_line(struct dsn *d, bool last)
{
    out_put(&d->out, "\r\n", 2);
    out_put(&d->out, d->delim, d->delim_len);
    if (last)
        out_put(&d->out, "--", 2);
    out_put(&d->out, "\r\n", 2);
}

static void headers_emit(struct dsn *d)
{
    const struct bounce_input *in = d->in;
    char clean[VALUE_BUF];
    char buf[VALUE_BUF + SEED_MAX + 8];
    char seed[SEED_MAX + 1];

    text_clean(clean, in->reporting_mta);
    snprintf(buf, sizeof(buf), "<MAILER-DAEMON@%s>", clean);
    fold_emit(d, "From: \"Mail Delivery System\" ", buf, " ");
    field_emit_angle(d, "To: ", in->sender);
    out_puts(&d->out, all_delayed(in) ? "Subject: Delivery Status Notification (Delay)\r\n"
                                      : "Subject: Delivery Status Notification (Failure)\r\n");
    date_emit(d, "Date: ", in->now_ms);
    seed_clean(seed, in->boundary_seed);
    snprintf(buf, sizeof(buf), "<%s@%s>", seed, clean);
    fold_emit(d, "Message-ID: ", buf, " ");
    out_puts(&d->out, "MIME-Version: 1.0\r\n"
                      "Auto-Submitted: auto-replied\r\n"
                      "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                      " boundary=\"");
    out_put(&d->out, d->delim + 2, d->delim_len - 2);
    out_puts(&d->out, "\"\r\n"
                      "Content-Transfer-Encoding: 8bit\r\n"
                      "\r\n"
                      "This is a MIME-encapsulated message.\r\n");
}

static const char *intro_text(const struct bounce_input *in)
{
    if (all_delayed(in))
        return "Your message has not yet been delivered to the recipients listed below. "
               "The mail system will keep trying; you do not need to send it again.";
    if (any_delayed(in))
        return "Your message could not be delivered to some of the recipients listed "
               "below, and its delivery to the others has been delayed.";
    return "Your message could not be delivered to the recipients listed below. "
           "This is a permanent error; the mail system has given up.";
}

/* One recipient in the text part: address and outcome, then our reason,
 * the remote server and its reply, indented. */
static void text_rcpt_emit(struct dsn *d, const struct bounce_rcpt *r)
{
    char clean[VALUE_BUF];
    char line[VALUE_BUF + 64];
    text_clean(clean, r->addr);
    snprintf(line, sizeof(line), "<%s>: delivery %s (status %s)", clean,
             r->action == BOUNCE_DELAYED ? "delayed" : "failed", rcpt_status(r));
    out_put(&d->out, "\r\n", 2);
    fold_emit(d, "", line, "    ");
    if (text_clean(clean, r->reason) > 0)
        fold_emit(d, "    Reason: ", clean, "        ");
    if (text_clean(clean, r->remote_mta) > 0)
        fold_emit(d, "    Remote server: ", clean, "        ");
    if (text_clean(clean, r->diagnostic) > 0)
        fold_emit(d, "    Reply: ", clean, "        ");
}

static void text_part_emit(struct dsn *d)
{
    const struct bounce_input *in = d->in;
    char clean[VALUE_BUF];
    char line[VALUE_BUF + 128];
    char date[64];

    boundary_line(d, false);
    out_puts(&d->out, "Content-Description: Notification\r\n");
    out_puts(&d->out, d->eight_bit ? "Content-Type: text/plain; charset=utf-8\r\n"
                                     "Content-Transfer-Encoding: 8bit\r\n"
                                   : "Content-Type: text/plain; charset=us-ascii\r\n");
    out_put(&d->out, "\r\n", 2);
    text_clean(clean, in->reporting_mta);
    snprintf(line, sizeof(line), "This is the mail delivery system at %s.", clean);
    fold_emit(d, "", line, "");
    out_put(&d->out, "\r\n", 2);
    fold_emit(d, "", intro_text(in), "");
    out_put(&d->out, "\r\n", 2);
    if (in->arrival_ms > 0) {
        date_format(date, sizeof(date), in->arrival_ms);
        snprintf(line, sizeof(line), "Message %" PRIu64 ", received %s.", in->orig_mid, date);
    } else {
        snprintf(line, sizeof(line), "Message %" PRIu64 ".", in->orig_mid);
    }
    fold_emit(d, "", line, "");
    for (size_t i = 0; i < in->nrcpts; i++)
        text_rcpt_emit(d, &in->rcpts[i]);
    out_put(&d->out, "\r\n", 2);
    if (d->full)
        fold_emit(d, "", "The original message is attached.", "");
    else if (in->headers_only)
        fold_emit(d, "", "The header of the original message is attached.", "");
    else
        fold_emit(d, "",
                  "The header of the original message is attached; the message "
                  "itself was too large to return.",
                  "");
}

/* One per-recipient block of the delivery-status part (RFC 3464 2.3). */
static void status_rcpt_emit(struct dsn *d, const struct bounce_rcpt *r)
{
    char clean[VALUE_BUF];
    out_put(&d->out, "\r\n", 2);
    if (r->orcpt != NULL && text_clean(clean, r->orcpt) > 0)
        fold_emit(d, "Original-Recipient: rfc822; ", clean, " ");
    field_emit(d, "Final-Recipient: rfc822; ", r->addr);
    out_puts(&d->out, r->action == BOUNCE_DELAYED ? "Action: delayed\r\n" : "Action: failed\r\n");
    fold_emit(d, "Status: ", rcpt_status(r), " ");
    if (text_clean(clean, r->remote_mta) > 0)
        fold_emit(d, "Remote-MTA: dns; ", clean, " ");
    if (text_clean(clean, r->diagnostic) > 0)
        fold_emit(d, "Diagnostic-Code: smtp; ", clean, " ");
    if (r->last_attempt_ms > 0)
        date_emit(d, "Last-Attempt-Date: ", r->last_attempt_ms);
}

static void status_part_emit(struct dsn *d)
{
    const struct bounce_input *in = d->in;
    char clean[VALUE_BUF];
    char mid[32];

    boundary_line(d, false);
    out_puts(&d->out, "Content-Description: Delivery report\r\n"
                      "Content-Type: message/delivery-status\r\n");
    if (d->eight_bit) /* strictly RFC 6533 territory: see the top comment */
        out_puts(&d->out, "Content-Transfer-Encoding: 8bit\r\n");
    out_put(&d->out, "\r\n", 2);
    field_emit(d, "Reporting-MTA: dns; ", in->reporting_mta);
    snprintf(mid, sizeof(mid), "%" PRIu64, in->orig_mid);
    fold_emit(d, "X-Postern-MID: ", mid, " ");
    if (in->envid != NULL && text_clean(clean, in->envid) > 0)
        fold_emit(d, "Original-Envelope-Id: ", clean, " ");
    if (in->arrival_ms > 0)
        date_emit(d, "Arrival-Date: ", in->arrival_ms);
    for (size_t i = 0; i < in->nrcpts; i++)
        status_rcpt_emit(d, &in->rcpts[i]);
}

static int original_part_emit(struct dsn *d)
{
    int rc = 0;
    boundary_line(d, false);
    if (d->full)
        out_puts(&d->out, "Content-Description: Undelivered message\r\n"
                          "Content-Type: message/rfc822\r\n");
    else
        out_puts(&d->out, "Content-Description: Undelivered message headers\r\n"
                          "Content-Type: text/rfc822-headers\r\n");
    /* why 8bit: the original may carry 8-bit octets (8BITMIME, SMTPUTF8)
     * and we only see them while streaming, after this header is out */
    out_puts(&d->out, "Content-Transfer-Encoding: 8bit\r\n\r\n");
    if (d->full)
        rc = orig_emit_full(d);
    else
        orig_emit_headers(d);
    if (rc == 0)
        boundary_line(d, true);
    return rc;
}

/* Missing mandatory input is a caller bug (see the top comment). */
static void input_check(const struct bounce_input *in, bounce_writer write)
{
    if (in == NULL || write == NULL || in->read == NULL || in->rcpts == NULL || in->nrcpts == 0 ||
        in->sender == NULL || in->sender[0] == '\0' || in->reporting_mta == NULL) {
        fprintf(stderr, "bounce_build: invalid input (no recipient, sender or reader)\n");
        abort();
    }
}

int bounce_build(const struct bounce_input *in, bounce_writer write, void *write_ctx)
{
    struct dsn *d;
    int rc = 0;

    input_check(in, write);
    d = xcalloc(1, sizeof(*d));
    d->in = in;
    d->full = !in->headers_only && in->original_size <= in->max_original;
    d->eight_bit = input_8bit(in);
    d->head = xmalloc(HEAD_CAP);
    d->out.write = write;
    d->out.ctx = write_ctx;

    /* read ahead before writing anything: the boundary must be known
     * before the first header, and a failing reader then costs nothing */
    if (head_fill(d) != 0) {
        rc = -1;
        goto out;
    }
    boundary_choose(d);
    headers_emit(d);
    text_part_emit(d);
    status_part_emit(d);
    rc = original_part_emit(d);
    out_flush(&d->out);
    if (d->out.failed)
        rc = -1;
out:
    free(d->head);
    free(d);
    return rc;
}
