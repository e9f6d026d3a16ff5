/*
 * smtp_reply: the client-side SMTP reply parser (see smtp_reply.h).
 *
 * A reply is accumulated line by line into one fixed struct; nothing is
 * allocated, so a hostile peer can cost us at most sizeof(struct
 * smtp_reply) per connection. The per-reply machine is:
 *
 *   EMPTY --"ddd-text"--> MORE --"ddd-text"--> MORE ... --"ddd text"--> DONE
 *   EMPTY --"ddd text" or "ddd"--> DONE
 *   any   --bad code, code change, line too long, 65th line--> ERROR
 *
 * The state is implicit in nlines (0: EMPTY); DONE and ERROR are returned,
 * the caller starts the next reply with smtp_reply_init().
 *
 * Text storage: line texts are packed NUL-terminated into text[]; the last
 * octet of text[] is never written and stays NUL, so a line that finds no
 * room left points at it and reads as "". Text that does not fit is cut and
 * the reply marked truncated: the code is what the protocol acts on, the
 * text is only for logs and bounces.
 */
#include "smtp/smtp_reply.h"

#include <stdio.h>
#include <string.h>

/* Usable text octets: the final octet is the shared empty string. */
#define REPLY_TEXT_USABLE (SMTP_REPLY_TEXT_MAX - 1)

void smtp_reply_init(struct smtp_reply *r)
{
    r->code = 0;
    r->enhanced[0] = '\0';
    r->nlines = 0;
    r->text_len = 0;
    r->truncated = false;
    r->text[0] = '\0';
    r->text[SMTP_REPLY_TEXT_MAX - 1] = '\0';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The three-digit code of a reply line, or 0. RFC 5321 4.2: the first digit
 * is 2..5 (1xx replies are not used by SMTP); we accept any second and third
 * digit, as the code's class is all the client acts on. */
static int reply_line_code(const char *line, size_t len)
{
    if (len < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
        return 0;
    if (line[0] < '2' || line[0] > '5')
        return 0;
    return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/* Length of a run of 1..3 digits at p (within len), or 0. */
static size_t digits_1_3(const char *p, size_t len)
{
    size_t n = 0;
    while (n < len && n < 4 && is_digit(p[n]))
        n++;
    return (n >= 1 && n <= 3) ? n : 0;
}

/* RFC 3463 enhanced code at the start of text: class "." subject "."
 * detail, class 2, 4 or 5, subject and detail 1-3 digits, followed by a
 * space or the end of the line. Stores it in r->enhanced. */
static void reply_take_enhanced(struct smtp_reply *r, const char *t, size_t len)
{
    size_t i, n;
    if (len < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
        return;
    i = 2;
    n = digits_1_3(t + i, len - i);
    if (n == 0)
        return;
    i += n;
    if (i >= len || t[i] != '.')
        return;
    i++;
    n = digits_1_3(t + i, len - i);
    if (n == 0)
        return;
    i += n;
    if (i < len && t[i] != ' ')
        return;
    /* i <= 1+1+3+1+3 = 9 < sizeof(enhanced) */
    memcpy(r->enhanced, t, i);
    r->enhanced[i] = '\0';
}

/* Append one line's text, cutting it to the room left. */
static void reply_store_text(struct smtp_reply *r, const char *t, size_t len)
{
    size_t room = REPLY_TEXT_USABLE - r->text_len;
    if (room == 0) {
        r->line_off[r->nlines] = REPLY_TEXT_USABLE;
        if (len > 0)
            r->truncated = true;
        return;
    }
    /* one octet of the room is this line's NUL */
    if (len > room - 1) {
        len = room - 1;
        r->truncated = true;
    }
    r->line_off[r->nlines] = (unsigned short)r->text_len;
    memcpy(r->text + r->text_len, t, len);
    r->text[r->text_len + len] = '\0';
    r->text_len += len + 1;
}

enum smtp_reply_status smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
    int code = reply_line_code(line, len);
    bool last;
    const char *t;
    size_t tlen;

    if (code == 0 || len > SMTP_REPLY_LINE_MAX)
        return SMTP_REPLY_ERROR;
    if (len == 3 || line[3] == ' ')
        last = true;
    else if (line[3] == '-')
        last = false;
    else
        return SMTP_REPLY_ERROR; /* "2500", "250\t": not a reply line */
    if (r->nlines > 0 && code != r->code)
        return SMTP_REPLY_ERROR; /* RFC 5321 4.2.1: one code for all lines */
    if (r->nlines >= SMTP_REPLY_MAX_LINES)
        return SMTP_REPLY_ERROR;
    t = len > 4 ? line + 4 : "";
    tlen = len > 4 ? len - 4 : 0;
    if (r->nlines == 0) {
        r->code = code;
        reply_take_enhanced(r, t, tlen);
    }
    reply_store_text(r, t, tlen);
    r->nlines++;
    return last ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}

const char *smtp_reply_line(const struct smtp_reply *r, size_t i)
{
    if (i >= r->nlines || i >= SMTP_REPLY_MAX_LINES)
        return "";
    if (r->line_off[i] >= SMTP_REPLY_TEXT_MAX)
        return "";
    return r->text + r->line_off[i];
}

/* A bounded string builder: never overflows, always NUL-terminated, and
 * stops at the first piece that does not fit whole (so an escape is never
 * cut in half). */
struct outbuf {
    char *p;
    size_t len, cap;
    bool full;
};

static void out_put(struct outbuf *o, const char *s, size_t n)
{
    if (o->full || o->cap == 0)
        return;
    if (o->len + n + 1 > o->cap) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(struct outbuf *o, const char *s)
{
    out_put(o, s, strlen(s));
}

/* One text in single quotes, Python-repr style: quote and backslash
 * escaped, anything not printable ASCII as \xHH, so a log line stays one
 * line whatever the peer sent. */
static void out_quoted(struct outbuf *o, const char *s)
{
    char esc[5];
    out_put(o, "'", 1);
    for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++) {
        if (*u == '\'' || *u == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*u;
            out_put(o, esc, 2);
        } else if (*u < 0x20 || *u >= 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", *u);
            out_put(o, esc, 4);
        } else {
            out_put(o, (const char *)u, 1);
        }
    }
    out_put(o, "'", 1);
}

void smtp_reply_format(const struct smtp_reply *r, char *out, size_t outlen)
{
    struct outbuf o = {out, 0, outlen, false};
    char code[8];
    if (outlen == 0)
        return;
    out[0] = '\0';
    snprintf(code, sizeof(code), "%03d", r->code >= 0 && r->code <= 999 ? r->code : 0);
    out_str(&o, "('");
    out_str(&o, code);
    out_str(&o, "', [");
    for (size_t i = 0; i < r->nlines && i < SMTP_REPLY_MAX_LINES; i++) {
        if (i > 0)
            out_str(&o, ", ");
        out_quoted(&o, smtp_reply_line(r, i));
    }
    out_str(&o, "])");
}

/* Cisco "mask-banner": every character but some '2' and '0' becomes '*'.
 * Mostly stars, and enough of them that a real text with a '*' in it does
 * not qualify. */
static bool text_mostly_stars(const char *t)
{
    size_t stars = 0, other = 0;
    for (; *t != '\0'; t++) {
        if (*t == '*')
            stars++;
        else if (*t != ' ')
            other++;
    }
    return stars >= 4 && stars > other;
}

static bool is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Cisco "ehlo-reply-parameter others mask": a keyword turned into X's,
 * sometimes keeping its last letter ("XXXXXXXA" was STARTTLS). Real
 * keywords that start with X (XFORWARD, XCLIENT, XEXCH50) have other
 * letters inside, so they do not match. */
static bool keyword_masked(const char *t)
{
    size_t n = 0, xs = 0;
    while (t[n] != '\0' && t[n] != ' ')
        n++;
    if (n < 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == 'X')
            xs++;
        else if (i != n - 1 || !is_alpha(t[i]))
            return false;
    }
    return xs >= 3;
}

bool smtp_reply_masked(const struct smtp_reply *r)
{
    for (size_t i = 0; i < r->nlines && i < SMTP_REPLY_MAX_LINES; i++) {
        const char *t = smtp_reply_line(r, i);
        if (text_mostly_stars(t))
            return true;
        /* line 0 of an EHLO reply is the greeting, keywords follow */
        if (i > 0 && keyword_masked(t))
            return true;
    }
    return false;
}

void smtp_reply_set(struct smtp_reply *r, int code, const char *enhanced, const char *text)
{
    smtp_reply_init(r);
    r->code = code;
    if (enhanced != NULL && enhanced[0] != '\0') {
        snprintf(r->enhanced, sizeof(r->enhanced), "%s", enhanced);
        /* the text carries the code too, as a peer's reply would */
        char buf[SMTP_REPLY_TEXT_MAX];
        int n = snprintf(buf, sizeof(buf), "%s %s", enhanced, text ? text : "");
        reply_store_text(r, buf,
                         n < 0 ? 0 : ((size_t)n >= sizeof(buf) ? sizeof(buf) - 1 : (size_t)n));
    } else {
        reply_store_text(r, text ? text : "", text ? strlen(text) : 0);
    }
    r->nlines = 1;
}

void smtp_reply_plain(const struct smtp_reply *r, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    o = (size_t)snprintf(out, outlen, "%d", r->code);
    for (size_t i = 0; i < r->nlines && o + 1 < outlen; i++) {
        const char *t = smtp_reply_line(r, i);
        out[o++] = ' ';
        for (; t && *t && o + 1 < outlen; t++)
            out[o++] = ((unsigned char)*t < 0x20 || *t == 0x7f) ? ' ' : *t;
    }
    out[o < outlen ? o : outlen - 1] = '\0';
}
