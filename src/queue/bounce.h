/*
 * bounce: building delivery status notifications (RFC 3464 DSNs) for
 * recipients that failed (or, later, were delayed).
 *
 * A DSN is a multipart/report (RFC 6522) with report-type=delivery-status:
 *   1. text/plain: a human-readable explanation;
 *   2. message/delivery-status: per-message fields (Reporting-MTA,
 *      Arrival-Date, Original-Envelope-Id) and one block per recipient
 *      (Final-Recipient, Original-Recipient, Action, Status, Remote-MTA,
 *      Diagnostic-Code, Last-Attempt-Date);
 *   3. the original: message/rfc822 when it fits in max_original and RET is
 *      not HDRS, otherwise text/rfc822-headers (headers only).
 * Headers carry Auto-Submitted: auto-replied (RFC 3834) so that auto-
 * responders do not answer, and the envelope sender of a DSN is always <>
 * (the caller's job) so that a DSN never causes another DSN.
 *
 * The builder is a pure function of its input: no I/O except reading the
 * original through the given reader, every line CRLF-terminated, no line
 * longer than 998 octets (long diagnostic texts are folded or truncated).
 */
#ifndef POSTERN_QUEUE_BOUNCE_H
#define POSTERN_QUEUE_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bounce_action { BOUNCE_FAILED, BOUNCE_DELAYED };

struct bounce_rcpt {
    const char *addr;  /* final recipient mailbox */
    const char *orcpt; /* original recipient (RFC 3461 ORCPT, decoded) or NULL */
    enum bounce_action action;
    const char *status;     /* RFC 3463 code, e.g. "5.1.1" */
    const char *remote_mta; /* host name or IP that answered, or NULL */
    const char
        *diagnostic;    /* the remote reply text, e.g. "550 5.1.1 <x@y>: user unknown", or NULL */
    const char *reason; /* our words for the text part, e.g. "the remote server refused" */
    int64_t last_attempt_ms; /* unix ms, 0 if never attempted */
};

/* Reads the original message: called repeatedly with a buffer; returns the
 * number of bytes put in buf, 0 at the end, -1 on error. */
typedef long (*bounce_reader)(void *ctx, char *buf, size_t len);
/* Receives the DSN's bytes, in order; returns 0, or -1 to stop. */
typedef int (*bounce_writer)(void *ctx, const char *data, size_t len);

struct bounce_input {
    const char *reporting_mta; /* our host name */
    const char *sender;        /* original envelope sender (the DSN's To:) */
    uint64_t orig_mid;         /* original MID, shown in the text */
    const char *envid;         /* RFC 3461 ENVID or NULL */
    int64_t arrival_ms;        /* when the original was received */
    int64_t now_ms;            /* Date: of the DSN */
    const struct bounce_rcpt *rcpts;
    size_t nrcpts;
    bool headers_only;      /* RET=HDRS */
    uint64_t max_original;  /* include the whole original only up to this size */
    uint64_t original_size; /* size of the original */
    bounce_reader read;     /* reads the original from its start */
    void *read_ctx;
    const char *boundary_seed; /* unique string used to make the MIME boundary and Message-ID */
};

/* Build the DSN. Returns 0, or -1 if the reader or writer failed. */
int bounce_build(const struct bounce_input *in, bounce_writer write, void *write_ctx);

#endif
