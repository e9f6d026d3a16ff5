/*
 * mime_scan: finds the longest MIME filename in a message stream.
 *
 * Why: an SMTP-inspecting firewall (Cisco ASA "inspect esmtp", seed 001)
 * drops the connection when a MIME attachment filename is longer than 255
 * octets, so such a message can never be relayed through one: the gateway
 * refuses it up front with a clear reply instead of retrying it for days.
 *
 * Fed the unstuffed content in any chunks, it looks at every header line
 * named Content-Type or Content-Disposition, at the top level or in any
 * MIME part (a line of that name anywhere in the body; folded lines are
 * joined), and measures the value of its name=, filename= and RFC 2231
 * filename*= / filename*0*= ... parameters (continuations add up). Memory
 * is bounded: only the current Content-* header is kept, up to
 * MIME_SCAN_LINE_MAX octets; beyond that the length keeps counting.
 */
#ifndef POSTERN_SMTP_MIME_SCAN_H
#define POSTERN_SMTP_MIME_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_SCAN_LINE_MAX 4096

struct mime_scan {
    int state;           /* private */
    bool in_content_hdr; /* private: collecting a Content-* header */
    size_t hdr_len;      /* private */
    size_t name_len;     /* private: header name chars matched so far */
    char hdr[MIME_SCAN_LINE_MAX];
    size_t longest; /* longest filename value seen, in octets */
};

void mime_scan_init(struct mime_scan *m);
void mime_scan_feed(struct mime_scan *m, const char *p, size_t len);
/* Call at the end of the message (flushes a header still being read). */
void mime_scan_finish(struct mime_scan *m);

/* The longest name=/filename= value in one header line (without its CRLF):
 * exported for tests. RFC 2231 continuations of one parameter are summed. */
size_t mime_scan_header_filename_len(const char *line, size_t len);

#endif
