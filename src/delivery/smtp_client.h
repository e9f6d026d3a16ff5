/*
 * smtp_client: one outbound SMTP connection (RFC 5321 client side) on the
 * loop, used by the delivery scheduler.
 *
 * Life of a connection:
 *   smtp_client_start() -> connect -> banner -> EHLO (HELO if EHLO gets 5xx)
 *   -> [STARTTLS -> handshake -> EHLO again] -> ops->ready()
 *   -> smtp_client_send(msg) -> MAIL, RCPT..., DATA (pipelined in one write
 *      when the peer offers PIPELINING, RFC 2920) -> body -> "."
 *   -> ops->done(result) -> ops->ready() again (connection reuse) ...
 *   -> smtp_client_quit() (QUIT, then the client frees itself).
 * Any failure that makes the connection unusable (refused, timeout, reset,
 * 4xx/5xx to banner or EHLO, TLS required but unavailable, TLS failure) is
 * reported once through ops->failed() and the client frees itself after the
 * callback returns. After ops->failed() or smtp_client_quit()/abort() no
 * other callback runs.
 *
 * Wire hygiene: every line written ends in CRLF and no bare CR or LF is ever
 * sent; the body is dot-stuffed exactly (RFC 5321 4.5.2) and a bare LF or
 * CR in it is sent as CRLF; the body is streamed (file bodies are read in
 * chunks as the socket drains), never held whole in memory.
 *
 * A connection lost (reset, EOF, timeout, malformed reply) during a
 * transaction, i.e. between smtp_client_send() and ops->done(), is reported
 * through ops->failed() with the stage reached (SC_MAIL..SC_DOT; the body
 * transfer counts as SC_DOT), never through done(): the outcome of the
 * message is unknown and the scheduler defers it. A lost idle connection
 * (after ready()) is reported as failed() at SC_MAIL.
 *
 * The client writes to sockets: the process must ignore SIGPIPE.
 */
#ifndef POSTERN_DELIVERY_SMTP_CLIENT_H
#define POSTERN_DELIVERY_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "smtp/smtp_reply.h"

struct event_base;
struct smtp_client;
typedef struct ssl_ctx_st SSL_CTX;

enum smtp_tls_policy { SMTP_TLS_NONE, SMTP_TLS_PREFERRED, SMTP_TLS_REQUIRED };

/* Where a connection or transaction stopped. */
enum smtp_client_stage {
    SC_CONNECT,
    SC_BANNER,
    SC_EHLO,
    SC_STARTTLS,
    SC_TLS,
    SC_MAIL,
    SC_RCPT,
    SC_DATA, /* the reply to the DATA command (354 expected) */
    SC_DOT,  /* the reply after the final "." */
    SC_QUIT
};

struct smtp_client_params {
    uint64_t dcid;               /* for logs */
    const char *helo_name;       /* our name in EHLO */
    const char *host;            /* the peer's name (route/MX host), logs and SNI */
    const struct sockaddr *addr; /* the one address to connect to */
    socklen_t addrlen;
    enum smtp_tls_policy tls;
    SSL_CTX *tls_ctx;               /* client context; may be NULL when tls is NONE */
    uint64_t connect_timeout_ms;    /* RFC 5321 4.5.3.2: our defaults 30 s */
    uint64_t command_timeout_ms;    /* banner, EHLO, MAIL, RCPT, ...: 5 min */
    uint64_t data_block_timeout_ms; /* each body write progress: 3 min */
    uint64_t data_done_timeout_ms;  /* reply after ".": 10 min */
};

/* What the peer offered (valid from ready() on). */
struct smtp_client_info {
    bool esmtp, pipelining, starttls, smtputf8, eightbitmime, chunking, dsn;
    bool size_offered;
    uint64_t max_size; /* 0: no limit announced */
    bool tls_active;
    char tls_version[32];
    char tls_cipher[64];
    char banner[512];          /* first banner line text, for logs/smtpping */
    char ehlo[512];            /* the EHLO reply's lines after the first, as
                                  sent, separated by ", " (smtpping) */
    bool masked_banner;        /* banner looks rewritten by an inspecting firewall */
    bool masked_ehlo;          /* EHLO keywords masked (XXXXXXXA) */
    uint64_t connect_ms;       /* time to connect */
    uint64_t banner_ms;        /* time from connect to banner */
    char local_ip[46];         /* our address on this connection (valid from
                                  smtp_client_start's return when the connect began) */
    size_t starttls_discarded; /* octets the peer sent after its 220 to STARTTLS
                                  and before the handshake: discarded unread
                                  (CVE-2021-38371 class), 0 normally */
};

/* Why a connection failed (ops->failed). */
struct smtp_client_error {
    enum smtp_client_stage stage;
    int sys_errno; /* connect/read/write error, or 0 */
    bool timeout;
    bool tls_required;       /* TLS required but not offered */
    struct smtp_reply reply; /* the reply that caused it; code 0 if none */
    bool masked_banner;
    bool masked_ehlo;
    bool eof;         /* the peer closed the connection */
    bool malformed;   /* the peer's reply broke the syntax (bad or changed
                         code, line too long): reply holds what came */
    bool local_io;    /* reading the body failed here (sys_errno), not the peer */
    char detail[160]; /* one line for logs ("connection closed by peer",
                         "TLS handshake: ...", "reply line too long") */
};

/* One message for one transaction. Strings are copied by smtp_client_send. */
struct smtp_client_msg {
    const char *sender; /* "" for <> */
    const char *const *rcpts;
    size_t nrcpts;
    bool smtputf8;    /* needs SMTPUTF8 */
    bool body_8bit;   /* BODY=8BITMIME */
    uint64_t size;    /* exact body size (for SIZE=) */
    const char *body; /* in-memory body of size octets, or NULL; not
                         copied: valid until done()/failed() */
    int body_fd;      /* else a file descriptor read from offset 0; the client dups it
                         (-1 with body NULL: an empty body) */
    bool probe;       /* smtpping: stop after the RCPT replies (never DATA):
                         commands one at a time, then RSET, and done() with
                         stage SC_RCPT (SC_MAIL if MAIL was refused) */
};

/* Outcome of one transaction (ops->done). */
struct smtp_client_result {
    enum smtp_client_stage stage;  /* SC_DOT when the transaction completed */
    struct smtp_reply mail;        /* MAIL reply (code 0 if not sent) */
    const struct smtp_reply *rcpt; /* nrcpts replies (code 0 if not sent) */
    size_t nrcpts;
    struct smtp_reply data; /* DATA (354) reply, or the final reply after "." */
    bool local_error;       /* e.g. message larger than peer's SIZE, needs SMTPUTF8
                               the peer lacks: data.code holds a synthesised 5xx */
};

struct smtp_client_ops {
    void (*ready)(void *arg, struct smtp_client *c);
    void (*done)(void *arg, struct smtp_client *c, const struct smtp_client_result *res);
    void (*failed)(void *arg, struct smtp_client *c, const struct smtp_client_error *err);
};

struct smtp_client *smtp_client_start(struct event_base *base, const struct smtp_client_params *p,
                                      const struct smtp_client_ops *ops, void *arg);
/* Start a transaction; only between ready() and the next callback. */
void smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg);
/* Send QUIT and close (the client frees itself; no further callbacks). */
void smtp_client_quit(struct smtp_client *c);
/* Close at once (no further callbacks). */
void smtp_client_abort(struct smtp_client *c);
const struct smtp_client_info *smtp_client_info(const struct smtp_client *c);
/* Client-side TLS context for opportunistic STARTTLS (no verification:
 * RFC 7435 opportunistic security). */
SSL_CTX *smtp_client_tls_ctx_new(char *err, size_t errlen);

#endif
