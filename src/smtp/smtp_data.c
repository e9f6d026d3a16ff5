/*
 * smtp_data: the DATA/BDAT content machine and the header scanner (see
 * smtp_data.h for the protocol rules and the smuggling defence).
 *
 * Content machine states (DATA mode; BDAT uses only MID and CR):
 *
 *   LINE_START  after a real CRLF (or the DATA command's): "." is held
 *   MID         inside a line
 *   CR          a CR was seen and emitted; LF makes it a line end
 *   DOT         a line-start "." was held (never emitted: it is either
 *               dot-stuffing or the start of the terminator)
 *   DOT_CR      "." CR held: LF completes <CRLF>.<CRLF>, anything else
 *               makes the CR bare
 *   DONE        terminator consumed; further input is not ours
 *
 * Only LINE_START is entered by a real CRLF, so "\n.", "\r." after a bare
 * CR/LF never reach DOT and can never terminate. A byte is examined once;
 * where a state has to look at the next byte (CR, DOT, DOT_CR) it keeps the
 * pending bytes in the state, not in a buffer, which is what makes the
 * machine give the same result whatever the split of the input.
 *
 * Output never exceeds input, per call: every input byte produces at most
 * one output byte, the held "." produces none, and the CR held in DOT_CR is
 * dropped when it turns out bare (the message is flagged, so its content
 * will be rejected, not delivered). Because nothing held is ever emitted
 * later, output position <= input position at every step, which is what
 * makes feeding in place (in == out) safe.
 *
 * Line length counts content octets excluding CRLF and excluding a
 * stuffing dot, as RFC 5321 4.5.3.1.6 does.
 *
 * Header scanner states: LINE_START, NAME, NAME_WSP (obsolete space before
 * the colon, RFC 5322 4.5), VALUE, VALUE_CR, BODY. A header line that is
 * neither "name:" nor a continuation ends the header section, as most MUAs
 * and parsers do with a missing separator line.
 */
#include "smtp/smtp_data.h"

#include <string.h>

enum data_state { DS_LINE_START, DS_MID, DS_CR, DS_DOT, DS_DOT_CR, DS_DONE };

void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, size_t max_line)
{
    memset(d, 0, sizeof(*d));
    d->mode = mode;
    /* DATA: the CRLF of the DATA command counts as the one before a "."
     * (RFC 5321 4.1.1.4), so an empty message is just ".\r\n". */
    d->state = mode == SMTP_DATA_MODE_DATA ? DS_LINE_START : DS_MID;
    d->max_line = max_line;
}

/* Count one content octet of the current line against max_line. */
static void data_count_octet(struct smtp_data *d)
{
    if (d->line_len < SIZE_MAX - 2)
        d->line_len++;
    /* RFC 5321 4.5.3.1.6: at most 1000 octets per text line including the
     * CRLF; 0 means the caller set no limit. */
    if (d->max_line != 0 && d->line_len + 2 > d->max_line)
        d->flags |= SMTP_DATA_LONG_LINE;
}

/* A byte inside a line (MID, and LINE_START for anything but "."). */
static void data_step_mid(struct smtp_data *d, unsigned char c, char *out, size_t *o)
{
    out[(*o)++] = (char)c;
    if (c == '\r') {
        d->state = DS_CR;
        return;
    }
    d->state = DS_MID;
    if (c == '\n') {
        /* A bare LF ends a line for many receivers, but never starts one for
         * us: no dot handling and no terminator may follow it. */
        d->flags |= SMTP_DATA_BARE_LF;
        d->line_len = 0;
        return;
    }
    if (c == '\0')
        d->flags |= SMTP_DATA_NUL;
    data_count_octet(d);
}

/* The byte after a CR that was already emitted. */
static void data_step_cr(struct smtp_data *d, unsigned char c, char *out, size_t *o)
{
    if (c == '\n') {
        out[(*o)++] = '\n';
        d->line_len = 0;
        d->state = d->mode == SMTP_DATA_MODE_DATA ? DS_LINE_START : DS_MID;
        return;
    }
    d->flags |= SMTP_DATA_BARE_CR;
    data_count_octet(d); /* the bare CR is line content */
    data_step_mid(d, c, out, o);
}

/* The byte after "." CR at line start: only LF ends the data. */
static bool data_step_dot_cr(struct smtp_data *d, unsigned char c, char *out, size_t *o)
{
    if (c == '\n') {
        d->state = DS_DONE;
        d->done = true;
        return true;
    }
    d->flags |= SMTP_DATA_BARE_CR;
    data_count_octet(d);
    data_step_mid(d, c, out, o);
    return false;
}

/* One input byte; returns true when it completed the terminator. */
static bool data_step(struct smtp_data *d, unsigned char c, char *out, size_t *o)
{
    switch (d->state) {
    case DS_LINE_START:
        if (c == '.') {
            d->state = DS_DOT;
            return false;
        }
        data_step_mid(d, c, out, o);
        return false;
    case DS_MID:
        data_step_mid(d, c, out, o);
        return false;
    case DS_CR:
        data_step_cr(d, c, out, o);
        return false;
    case DS_DOT:
        if (c == '\r') {
            d->state = DS_DOT_CR;
            return false;
        }
        data_step_mid(d, c, out, o); /* dot-unstuffing: the "." is dropped */
        return false;
    case DS_DOT_CR:
        return data_step_dot_cr(d, c, out, o);
    default:
        return true;
    }
}

size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, char *out, size_t *outlen)
{
    size_t o = 0;
    size_t i = 0;
    if (d->state == DS_DONE) {
        *outlen = 0;
        return 0;
    }
    while (i < len) {
        bool end = data_step(d, (unsigned char)in[i], out, &o);
        i++;
        if (end)
            break;
    }
    *outlen = o;
    return i;
}

void smtp_data_finish(struct smtp_data *d)
{
    /* A CR at the very end of the last BDAT chunk has no LF to pair with. */
    if (d->mode == SMTP_DATA_MODE_BDAT && d->state == DS_CR) {
        d->flags |= SMTP_DATA_BARE_CR;
        d->state = DS_MID;
    }
}

const char *smtp_data_flag_text(unsigned flags)
{
    if (flags & SMTP_DATA_BARE_CR)
        return "bare CR in message";
    if (flags & SMTP_DATA_BARE_LF)
        return "bare LF in message";
    if (flags & SMTP_DATA_LONG_LINE)
        return "line too long";
    if (flags & SMTP_DATA_NUL)
        return "NUL in message";
    return "no defect";
}

/* ---- header scanner ---- */

enum hdr_state { HS_LINE_START, HS_NAME, HS_NAME_WSP, HS_VALUE, HS_VALUE_CR, HS_BODY };
enum hdr_capture { HC_NONE, HC_MESSAGE_ID, HC_SUBJECT };

void smtp_hdr_scan_init(struct smtp_hdr_scan *h)
{
    memset(h, 0, sizeof(*h));
    h->state = HS_LINE_START;
}

static bool hdr_is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static bool hdr_equal_nocase(const char *s, size_t len, const char *lit)
{
    if (strlen(lit) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char a = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
        if (a != lit[i])
            return false;
    }
    return true;
}

/* Where the value being captured lives, or NULL. */
static char *hdr_capture_buf(struct smtp_hdr_scan *h, size_t **lenp)
{
    switch (h->capture) {
    case HC_MESSAGE_ID:
        *lenp = &h->message_id_len;
        return h->message_id;
    case HC_SUBJECT:
        *lenp = &h->subject_len;
        return h->subject;
    default:
        return NULL;
    }
}

/* Add one octet of unfolded value; leading white space is not kept. */
static void hdr_capture_octet(struct smtp_hdr_scan *h, char c)
{
    size_t *len;
    char *buf = hdr_capture_buf(h, &len);
    if (buf == NULL || (*len == 0 && hdr_is_wsp((unsigned char)c)))
        return;
    /* SMTP_HDR_VALUE_MAX: the longest a single header line may be (RFC 5322
     * 2.1.1); anything longer is for logs only, so it is truncated. */
    if (*len < SMTP_HDR_VALUE_MAX) {
        buf[(*len)++] = c;
        buf[*len] = '\0';
    }
}

/* The current header is complete: drop trailing white space. */
static void hdr_capture_end(struct smtp_hdr_scan *h)
{
    size_t *len;
    char *buf = hdr_capture_buf(h, &len);
    if (buf != NULL) {
        while (*len > 0 && hdr_is_wsp((unsigned char)buf[*len - 1]))
            buf[--(*len)] = '\0';
    }
    h->capture = HC_NONE;
}

static void hdr_enter_body(struct smtp_hdr_scan *h)
{
    hdr_capture_end(h);
    h->state = HS_BODY;
    h->in_body = true;
}

/* Count one octet of a header line (for max_header_line). */
static void hdr_count_octet(struct smtp_hdr_scan *h)
{
    h->line_len++;
    if (h->line_len > h->max_header_line)
        h->max_header_line = h->line_len;
}

/* The colon after a field name: decide what to capture. */
static void hdr_name_done(struct smtp_hdr_scan *h)
{
    h->state = HS_VALUE;
    if (h->name_len >= sizeof(h->name))
        return; /* truncated: not one of ours */
    if (!h->have_message_id && hdr_equal_nocase(h->name, h->name_len, "message-id")) {
        h->have_message_id = true;
        h->capture = HC_MESSAGE_ID;
    } else if (!h->have_subject && hdr_equal_nocase(h->name, h->name_len, "subject")) {
        h->have_subject = true;
        h->capture = HC_SUBJECT;
    }
}

/* First octet of a line in the header section. */
static void hdr_step_line_start(struct smtp_hdr_scan *h, unsigned char c)
{
    h->line_len = 0;
    if (hdr_is_wsp(c)) {
        /* RFC 5322 2.2.3: unfolding removes the CRLF, keeps the WSP. */
        hdr_count_octet(h);
        hdr_capture_octet(h, (char)c);
        h->state = HS_VALUE;
        return;
    }
    hdr_capture_end(h);
    /* ftext = %d33-57 / %d59-126 (RFC 5322 3.6.8); an empty line, or any
     * other first octet, ends the header section. */
    if (c < 33 || c > 126 || c == ':') {
        hdr_enter_body(h);
        return;
    }
    hdr_count_octet(h);
    h->name[0] = (char)c;
    h->name_len = 1;
    h->state = HS_NAME;
}

static void hdr_step_name(struct smtp_hdr_scan *h, unsigned char c)
{
    if (c == ':') {
        hdr_count_octet(h);
        hdr_name_done(h);
        return;
    }
    if (hdr_is_wsp(c)) {
        hdr_count_octet(h);
        h->state = HS_NAME_WSP;
        return;
    }
    if (c < 33 || c > 126 || h->state == HS_NAME_WSP) {
        hdr_enter_body(h);
        return;
    }
    hdr_count_octet(h);
    if (h->name_len < sizeof(h->name))
        h->name[h->name_len] = (char)c;
    if (h->name_len < SIZE_MAX)
        h->name_len++;
}

static void hdr_step_value(struct smtp_hdr_scan *h, unsigned char c)
{
    if (c == '\r') {
        h->state = HS_VALUE_CR;
        return;
    }
    if (c == '\n') {
        h->state = HS_LINE_START; /* a bare LF ends the line here too */
        return;
    }
    hdr_count_octet(h);
    hdr_capture_octet(h, (char)c);
}

static void hdr_step(struct smtp_hdr_scan *h, unsigned char c)
{
    switch (h->state) {
    case HS_LINE_START:
        hdr_step_line_start(h, c);
        break;
    case HS_NAME:
    case HS_NAME_WSP:
        hdr_step_name(h, c);
        break;
    case HS_VALUE:
        hdr_step_value(h, c);
        break;
    case HS_VALUE_CR:
        if (c == '\n') {
            h->state = HS_LINE_START;
            break;
        }
        h->state = HS_VALUE; /* a bare CR is value content */
        hdr_count_octet(h);
        hdr_capture_octet(h, '\r');
        hdr_step_value(h, c);
        break;
    default:
        break;
    }
}

void smtp_hdr_scan_feed(struct smtp_hdr_scan *h, const char *p, size_t len)
{
    for (size_t i = 0; i < len && h->state != HS_BODY; i++)
        hdr_step(h, (unsigned char)p[i]);
}
