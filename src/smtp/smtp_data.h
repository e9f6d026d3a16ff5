/*
 * smtp_data: the message-content state machine for DATA and BDAT, and the
 * header scanner that picks Message-ID and Subject out of the stream.
 *
 * DATA mode (RFC 5321 4.1.1.4, 4.5.2): only <CRLF>.<CRLF> ends the data
 * (the first line may be "." alone: the DATA command's CRLF counts as the
 * preceding CRLF). A leading "." on any other line is removed
 * (dot-unstuffing). Any bare CR (CR not followed by LF) or bare LF (LF not
 * preceded by CR) is flagged, and in particular "\n.\n", "\r.\r", "\n.\r\n",
 * "\r\n.\n" never end the data: this is the SMTP smuggling defence, since a
 * downstream server that honours one of them would see a second, smuggled
 * message. The caller rejects a flagged message at the real end of data.
 *
 * BDAT mode (RFC 3030): no terminator and no dot handling; the bytes are
 * checked for the same defects (bare CR/LF, NUL, long lines) because they
 * will later be relayed, possibly with DATA.
 *
 * The machine is resumable at every byte: feeding input in one call or byte
 * by byte gives the same output, flags and end position (fuzzed).
 * Output never exceeds input: a held "." is dropped or re-emitted only once
 * its successor is known, and out must have room for len bytes.
 */
#ifndef POSTERN_SMTP_DATA_H
#define POSTERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_data_flag {
    SMTP_DATA_BARE_CR = 1,
    SMTP_DATA_BARE_LF = 2,
    SMTP_DATA_LONG_LINE = 4, /* a line longer than max_line octets incl. CRLF */
    SMTP_DATA_NUL = 8
};

enum smtp_data_mode { SMTP_DATA_MODE_DATA, SMTP_DATA_MODE_BDAT };

struct smtp_data {
    enum smtp_data_mode mode;
    int state;       /* private */
    size_t line_len; /* octets in the current line so far (excl. CRLF) */
    size_t max_line; /* limit incl. CRLF, e.g. 1000 */
    unsigned flags;  /* smtp_data_flag, sticky */
    bool done;       /* DATA mode: terminator seen */
};

void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, size_t max_line);

/* Feed len bytes of input. Writes the unstuffed content to out (room for len
 * bytes) and sets *outlen. Returns the number of input bytes consumed: less
 * than len only in DATA mode when the terminator was reached (d->done is then
 * true and the terminator is included in the count; the rest belongs to the
 * next command). The terminator's leading CRLF is part of the content (the
 * last line's end); ".\r\n" is not. in and out may be the same buffer (in
 * place): each output octet is written at or before the position of the
 * input octet it comes from. */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, char *out, size_t *outlen);

/* BDAT mode: call once after the LAST chunk. A CR at the very end of the
 * data has no successor yet, so it can only be flagged as bare here. */
void smtp_data_finish(struct smtp_data *d);

/* Short description of the first set flag, for replies and logs. */
const char *smtp_data_flag_text(unsigned flags);

/*
 * Header scanner: fed the unstuffed content, it finds the end of the header
 * section (the first empty line) and captures the unfolded values of the
 * first Message-ID and Subject headers, truncated to SMTP_HDR_VALUE_MAX.
 * It also tracks the longest header line (for the 998-octet limit of RFC
 * 5322 2.1.1). Bounded memory whatever the input.
 */
#define SMTP_HDR_VALUE_MAX 998

struct smtp_hdr_scan {
    int state;              /* private */
    bool in_body;           /* end of headers seen */
    size_t line_len;        /* private */
    size_t name_len;        /* private */
    char name[32];          /* private: current header name (truncated) */
    int capture;            /* private: which value is being captured */
    size_t max_header_line; /* longest header line seen, excl. CRLF */
    char message_id[SMTP_HDR_VALUE_MAX + 1];
    size_t message_id_len;
    bool have_message_id;
    char subject[SMTP_HDR_VALUE_MAX + 1];
    size_t subject_len;
    bool have_subject;
};

void smtp_hdr_scan_init(struct smtp_hdr_scan *h);
void smtp_hdr_scan_feed(struct smtp_hdr_scan *h, const char *p, size_t len);

#endif
