/*
 * smtp_reply: parsing of SMTP replies (RFC 5321 4.2) as received by our
 * client, line by line, with bounded memory.
 *
 * A reply is one or more lines "ddd-text" ... "ddd text" (or "ddd"); all
 * lines must carry the same code. The enhanced status code (RFC 3463,
 * RFC 2034) is taken from the first line's text when present. The texts
 * are kept (truncated) for logs and bounces: at most SMTP_REPLY_MAX_LINES
 * lines and SMTP_REPLY_TEXT_MAX octets in all; a peer that sends more gets
 * an error, not our memory.
 *
 * Masking: an SMTP-inspecting firewall (Cisco ASA "inspect esmtp") rewrites
 * a banner to asterisks except some '2' and '0' characters, and EHLO
 * keywords it does not allow to X's ("XXXXXXXA"). smtp_reply_masked() tells
 * whether a reply looks like that, so the log can name the likely cause.
 */
#ifndef POSTERN_SMTP_REPLY_H
#define POSTERN_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_REPLY_MAX_LINES 64
#define SMTP_REPLY_TEXT_MAX  2048
/* Longest reply line accepted, without CRLF. RFC 5321 4.5.3.1.5 allows 512
 * octets with CRLF; real servers exceed that (long EHLO AUTH lists, verbose
 * rejections), so we allow four times as much and no more. */
#define SMTP_REPLY_LINE_MAX 2048

struct smtp_reply {
    int code;          /* 200..599; 0 when empty */
    char enhanced[16]; /* "4.3.1", or "" */
    size_t nlines;
    size_t text_len; /* octets of text[] in use, NUL terminators included */
    bool truncated;  /* some text did not fit in text[] and was cut */
    /* line texts (after "ddd-"/"ddd "), each NUL-terminated, one after the
     * other: line i starts at the offset in line_off[i] */
    char text[SMTP_REPLY_TEXT_MAX];
    unsigned short line_off[SMTP_REPLY_MAX_LINES];
};

enum smtp_reply_status {
    SMTP_REPLY_MORE, /* a continuation line: feed the next one */
    SMTP_REPLY_DONE, /* the reply is complete */
    SMTP_REPLY_ERROR /* malformed: bad code, code changed between lines, too long */
};

void smtp_reply_init(struct smtp_reply *r);
/* Feed one line without its CRLF. A line longer than SMTP_REPLY_LINE_MAX,
 * a 65th line, a bad code or a code change is an ERROR; after an ERROR or
 * DONE, smtp_reply_init() before the next reply. Text beyond text[] is cut
 * (truncated = true), never an error. */
enum smtp_reply_status smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);
/* Text of line i ("" when i >= nlines). */
const char *smtp_reply_line(const struct smtp_reply *r, size_t i);
/* Appliance-style rendering for logs: ('452', ['4.3.1 Insufficient system resources']) */
void smtp_reply_format(const struct smtp_reply *r, char *out, size_t outlen);
/* Plain rendering for DSNs and host status: "550 5.1.1 text", the lines
 * joined by single spaces, control characters replaced by spaces. */
void smtp_reply_plain(const struct smtp_reply *r, char *out, size_t outlen);
/* True if the reply looks masked by an inspecting firewall. */
bool smtp_reply_masked(const struct smtp_reply *r);
/* Set a synthesised reply (local errors). */
void smtp_reply_set(struct smtp_reply *r, int code, const char *enhanced, const char *text);

#endif
