/*
 * smtp_server: the inbound SMTP session.
 *
 * A session is an explicit input mode plus a command table (OpenSMTPD
 * style), driven by one bufferevent:
 *
 *   MODE_POLICY   before the banner: PTR, forward-confirm and reputation
 *                 lookups run (policy/lookup), then the host access table
 *                 decides (policy_decide) what banner, if any, is sent;
 *                 anything the client sends now is a pregreet
 *   MODE_CMD      reading command lines; each verb is dispatched through
 *                 cmd_table to one small handler
 *   MODE_DATA     streaming DATA content through the smtp_data machine
 *   MODE_BDAT     consuming the octets of one BDAT chunk
 *   MODE_COMMIT   the message is with the spool worker; input waits
 *   MODE_TLS      STARTTLS handshake in progress
 *   MODE_CLOSING  last reply being flushed; the session is freed when the
 *                 output is empty
 *
 * PIPELINING (RFC 2920): every complete command in the input buffer is
 * handled in one read callback and the replies accumulate in the output
 * buffer, which libevent writes once per loop turn. A session whose
 * message is being committed stops reading commands (MODE_COMMIT) and
 * resumes from the commit callback, so replies always stay in order.
 *
 * Ordering rules:
 *  - "250" after end of data is written only from the spool's commit
 *    callback (the durability contract, spool.h).
 *  - A session is freed only at a safe point: never while its message is
 *    with the spool worker (the callback still needs it), never from inside
 *    a handler (the caller still holds it). sess_maybe_free() runs at the
 *    end of every libevent callback.
 *  - STARTTLS (RFC 3207 4.2 and CVE-2011-0411): whatever the client sent
 *    after the STARTTLS line, before our 220, is discarded unread, reading
 *    stops before the 220 is queued, and the session forgets HELO and any
 *    transaction.
 *
 * Self-protection (docs/protection.md):
 *  - Resource conservation (policy/rescon): while tarpitting, every reply
 *    goes to s->held instead of the output buffer, and a timer moves the
 *    held replies to the output after the current delay. Replies queued
 *    while others are held join them, so order is kept and a pipelined
 *    batch is delayed once; the pre-banner DNS lookups are never delayed,
 *    only the banner they produce. Halted: a new connection gets 421 4.3.2
 *    instead of a session, MAIL gets 452 4.3.1. Backlog suspension
 *    disables the evconnlistener of every listener the server has seen; a
 *    listener it has not seen yet is disabled at its first accept, and
 *    that one connection is parked (no banner, nothing read) until resume,
 *    which to the client looks exactly like the kernel's accept queue.
 *  - Slow clients: a minimum data rate during DATA/BDAT (checked after
 *    min_data_rate_grace, then every min_data_rate_window), a deadline
 *    for the whole session, a per-IP connection rate at accept.
 *  - Improper pipelining: a command other than EHLO followed by more
 *    buffered input from a client that has not used EHLO (RFC 2920: only
 *    an ESMTP client may pipeline) gets 554 5.5.0 and the session ends:
 *    HELO-only clients and anything sent before EHLO. EHLO+MAIL in one
 *    write stays legal (common, and harmless: we always offer PIPELINING);
 *    the HTTP detector is exempt (it answers and closes anyway).
 *
 * Memory per idle session: this struct (~700 bytes) plus libevent's
 * bufferevent; transaction data (recipient list, header scanner) exists
 * only during a transaction. Input is capped by a read high watermark.
 */
#include "smtp/smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "policy/clients.h"
#include "policy/lookup.h"
#include "policy/policy.h"
#include "policy/rescon.h"
#include "queue/spool.h"
#include "smtp/listener.h"
#include "smtp/mime_scan.h"
#include "smtp/smtp_addr.h"
#include "smtp/smtp_cmd.h"
#include "smtp/smtp_data.h"
#include "smtp/tls.h"

/* Unread input a session may hold. Pipelined commands beyond this wait in
 * the kernel's socket buffer (TCP flow control) instead of our memory. */
#define SESS_INPUT_HIGHWAT (256 * 1024)
/* Chunk of DATA processed per step; the unstuffed output of one chunk goes
 * through a scratch buffer of the same size. */
#define SESS_DATA_CHUNK (16 * 1024)
/* How long a closing session may take to flush its last reply. */
#define SESS_CLOSE_TIMEOUT_S 10
/* Stack buffer for a command line; longer configured limits use the heap. */
#define SESS_LINE_STACK 1024

enum sess_mode { MODE_POLICY, MODE_CMD, MODE_DATA, MODE_BDAT, MODE_COMMIT, MODE_TLS, MODE_CLOSING };

/* Limits logged at most once per session ("Receiving Failed: ..."). */
enum sess_limit_logged {
    LOGGED_MSGS = 1,
    LOGGED_RCPTS = 2,
    LOGGED_RATE = 4,
    LOGGED_SIZE = 8,
    LOGGED_CONNS = 16
};

/* Protocol errors, each logged once per session (hostile input visible per
 * ICID without one line per junk command). */
enum sess_proto_error {
    PROTO_EMPTY = 1,
    PROTO_NUL = 2,
    PROTO_BADCHAR = 4,
    PROTO_LONG_LINE = 8,
    PROTO_BARE_LF = 16,
    PROTO_UNKNOWN = 32
};

/* The deadline timer retries this often while the session cannot be
 * interrupted (message with the spool worker, TLS handshake). */
#define SESS_DEADLINE_RETRY_S 1

/* The current mail transaction (RFC 5321 3.3), reset by RSET/HELO/EHLO/
 * STARTTLS and after each message. */
struct tx {
    uint64_t mid; /* 0: no MAIL yet */
    char *sender; /* mailbox, "" for <> */
    bool smtputf8;
    bool body_8bit;
    char **rcpts;
    size_t nrcpts, cap;
    struct spool_msg *msg;
    struct smtp_data data;
    struct smtp_hdr_scan *hdr;
    struct mime_scan *mime;
    bool mime_too_long; /* a filename longer than limits.max_mime_filename */
    uint64_t size;      /* content octets received (unstuffed), excl. Received */
    bool too_big;
    int write_err;
    bool bdat;          /* a BDAT transfer has started */
    uint64_t bdat_left; /* octets of the current chunk still to read */
    bool bdat_last;
    bool bdat_discard;        /* chunk refused: read and drop its octets */
    int64_t received_ms;      /* when the content ended (the envelope's time) */
    uint64_t stored_size;     /* octets stored, Received header included */
    const char *bdat_refusal; /* reply for a discarded chunk */
};

struct session {
    struct smtp_server *srv;
    struct session *prev, *next;
    struct listener *lst;
    struct config *cfg;
    struct bufferevent *bev;
    int fd;
    uint64_t icid;
    enum sess_mode mode;
    char ip[INET6_ADDRSTRLEN];
    bool ipv6;
    char helo[256];
    bool helo_seen;
    bool esmtp;
    bool tls_active;
    bool quit;         /* we ended the session (QUIT, 421): logs "close", not "lost" */
    bool discard_line; /* skipping the rest of an over-long command line */
    bool lost;         /* the client went away while we were busy */
    bool stopping;     /* server shutdown: close at the next safe point */
    unsigned errors;
    unsigned messages;
    char tls_info[96];
    /* connection policy (decided before the banner) */
    struct policy_lookup *lookup; /* pending pre-banner lookups */
    struct policy_params pol;     /* the mail flow policy in force */
    char group[64];               /* matched sender group ("" = None) */
    char rdns[256];               /* forward-confirmed PTR name, or "" */
    struct timespec t_start;      /* accept time */
    double dns_ms;                /* what the pre-banner lookups took */
    bool commands_seen;
    bool pregreet;
    bool counted_ip;        /* counted in srv->clients */
    bool rejected;          /* REJECT banner sent: only QUIT left */
    unsigned limits_logged; /* sess_limit_logged */
    unsigned proto_logged;  /* sess_proto_error */
    uint64_t max_size;      /* min(listener limit, policy) */
    uint32_t max_rcpts;
    struct tx tx;
    /* self-protection */
    struct evbuffer *held;     /* replies held back by the tarpit */
    struct event *tarpit_ev;   /* releases held; pending iff held is non-empty */
    struct event *deadline_ev; /* timeouts.session */
    struct event *rate_ev;     /* min_data_rate check; pending during a transfer */
    uint64_t xfer_bytes;       /* DATA/BDAT octets read in this transfer */
    uint64_t rate_mark_bytes;  /* xfer_bytes at the start of the window */
    struct timespec rate_mark; /* start of the window */
};

/* A connection accepted by a listener we had not disabled yet while
 * suspended: handed to smtp_server_accept() at resume. */
struct parked_conn {
    struct listener *lst; /* referenced */
    int fd;
    struct sockaddr_storage sa;
    int salen;
};

struct smtp_server {
    struct event_base *base;
    struct spool *spool;
    struct resolver *resolver;
    struct clients *clients;
    struct event *expire_ev;
    struct config *cfg;
    struct session *sessions;
    struct smtp_server_stats stats;
    smtp_server_queue_fn queue_fn;
    void *queue_ctx;
    void (*shutdown_done)(void *);
    void *shutdown_arg;
    bool stopping;
    struct rescon *rescon;  /* NULL: no resource conservation (tests) */
    bool suspended;         /* backlog suspension in force */
    struct listener **seen; /* referenced: every listener that accepted */
    size_t nseen, seen_cap;
    struct parked_conn *parked; /* at most one per listener */
    size_t nparked, parked_cap;
    char **op_held; /* listener names suspended by the operator (suspendlistener) */
    size_t nop_held, op_held_cap;
};

typedef void (*cmd_fn)(struct session *s, const struct smtp_cmd *cmd);

static void sess_process(struct session *s);
static void sess_proto_log(struct session *s, unsigned kind, const char *what);
static void sess_policy_start(struct session *s);
static void sess_limit_log(struct session *s, unsigned which, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sess_maybe_free(struct session *s);
static void sess_free(struct session *s);
static void sess_on_read(struct bufferevent *bev, void *arg);
static void sess_on_write(struct bufferevent *bev, void *arg);
static void sess_on_event(struct bufferevent *bev, short what, void *arg);

/* The host name this session shows (policy banner hostname or the
 * listener's). */
static const char *sess_host(const struct session *s)
{
    return s->pol.banner_hostname[0] ? s->pol.banner_hostname : s->lst->hostname;
}

/* ---- replies ---------------------------------------------------------- */

static void sess_on_tarpit(evutil_socket_t fd, short what, void *arg);

/* The current tarpit delay in seconds (0: send at once). A stopping server
 * sends its last words at once: the shutdown grace period is short. */
static unsigned sess_tarpit_delay(const struct session *s)
{
    if (s->srv->rescon == NULL || s->srv->stopping || s->stopping)
        return 0;
    return rescon_delay(s->srv->rescon);
}

static bool sess_holding(const struct session *s)
{
    return s->held != NULL && evbuffer_get_length(s->held) > 0;
}

/* Where the next reply goes: the output buffer, or the held buffer while
 * tarpitting (and while anything is held, so that order is kept). The
 * first held reply starts the release timer. */
static struct evbuffer *sess_out(struct session *s)
{
    unsigned delay;
    if (sess_holding(s))
        return s->held;
    if ((delay = sess_tarpit_delay(s)) == 0)
        return bufferevent_get_output(s->bev);
    if (s->held == NULL) {
        s->held = evbuffer_new();
        s->tarpit_ev = evtimer_new(s->srv->base, sess_on_tarpit, s);
    }
    struct timeval tv = {(time_t)delay, 0};
    evtimer_add(s->tarpit_ev, &tv);
    return s->held;
}

/* Send whatever the tarpit holds, now. */
static void sess_release(struct session *s)
{
    if (!sess_holding(s))
        return;
    evtimer_del(s->tarpit_ev);
    if (s->bev != NULL)
        evbuffer_add_buffer(bufferevent_get_output(s->bev), s->held);
    else
        evbuffer_drain(s->held, evbuffer_get_length(s->held));
}

static void sess_on_tarpit(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    sess_release(s);
    sess_maybe_free(s);
}

/* Queue one reply line. Every 5xx to a command counts as a client error
 * (max_errors), since a well-behaved client rarely earns one. */
static void sess_reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sess_reply(struct session *s, const char *fmt, ...)
{
    struct evbuffer *out = sess_out(s);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    if (fmt[0] == '5' && s->mode == MODE_CMD)
        s->errors++;
}

static void sess_timeouts(struct session *s, uint64_t read_ms)
{
    struct timeval rd = {(time_t)(read_ms / 1000), (suseconds_t)(read_ms % 1000) * 1000};
    struct timeval wr = {(time_t)(s->cfg->timeouts.command / 1000), 0};
    bufferevent_set_timeouts(s->bev, &rd, &wr);
}

/* Stop reading and free the session once the queued replies are out. */
static void sess_close(struct session *s)
{
    struct timeval tv = {SESS_CLOSE_TIMEOUT_S, 0};
    s->mode = MODE_CLOSING;
    s->quit = true;
    bufferevent_disable(s->bev, EV_READ);
    bufferevent_set_timeouts(s->bev, NULL, &tv);
}

/* ---- transaction -------------------------------------------------------- */

static void sess_rate_stop(struct session *s);

static void tx_reset(struct session *s, const char *abort_reason)
{
    struct tx *tx = &s->tx;
    sess_rate_stop(s);
    if (tx->mid != 0 && abort_reason != NULL) {
        maillog(LOG_INFO, "Message aborted MID %llu Receiving aborted%s",
                (unsigned long long)tx->mid, abort_reason);
        s->srv->stats.aborted_messages++;
    }
    if (tx->msg)
        spool_msg_discard(tx->msg);
    for (size_t i = 0; i < tx->nrcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    free(tx->sender);
    free(tx->hdr);
    free(tx->mime);
    memset(tx, 0, sizeof(*tx));
}

static const char *sess_log_addr(char *buf, size_t len, const char *addr)
{
    return log_escape(buf, len, addr, strlen(addr));
}

/* ---- command handlers ------------------------------------------------- */

/* HELO/EHLO argument: a domain or address literal. We accept any visible
 * token (many clients send junk) but nothing that could corrupt a
 * Received header or a log line. */
static bool helo_arg_ok(const struct smtp_cmd *cmd)
{
    if (cmd->arg_len == 0 || cmd->arg_len >= 256)
        return false;
    for (size_t i = 0; i < cmd->arg_len; i++) {
        unsigned char c = (unsigned char)cmd->arg[i];
        if (c <= 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static void sess_ehlo_keywords(struct session *s)
{
    struct evbuffer *out = sess_out(s);
    evbuffer_add_printf(out, "250-%s\r\n", sess_host(s));
    evbuffer_add_printf(out, "250-PIPELINING\r\n");
    evbuffer_add_printf(out, "250-SIZE %llu\r\n", (unsigned long long)s->max_size);
    evbuffer_add_printf(out, "250-8BITMIME\r\n");
    evbuffer_add_printf(out, "250-ENHANCEDSTATUSCODES\r\n");
    if (s->lst->tls != NULL && !s->tls_active && s->pol.tls != POLICY_TLS_OFF)
        evbuffer_add_printf(out, "250-STARTTLS\r\n");
    evbuffer_add_printf(out, "250-CHUNKING\r\n");
    evbuffer_add_printf(out, "250 SMTPUTF8\r\n");
}

static void sess_greet(struct session *s, const struct smtp_cmd *cmd, bool esmtp)
{
    if (!helo_arg_ok(cmd)) {
        sess_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    tx_reset(s, " (new HELO)");
    memcpy(s->helo, cmd->arg, cmd->arg_len);
    s->helo[cmd->arg_len] = '\0';
    s->helo_seen = true;
    s->esmtp = esmtp;
    if (esmtp)
        sess_ehlo_keywords(s);
    else
        sess_reply(s, "250 %s", sess_host(s));
}

static void cmd_helo(struct session *s, const struct smtp_cmd *cmd)
{
    sess_greet(s, cmd, false);
}

static void cmd_ehlo(struct session *s, const struct smtp_cmd *cmd)
{
    sess_greet(s, cmd, true);
}

/* Apply one MAIL parameter; returns NULL or the reply refusing it. */
static const char *mail_param(struct session *s, const struct smtp_param *p)
{
    if (!s->esmtp)
        return "555 5.5.4 MAIL parameters need EHLO";
    if (p->key_len == 4 && strncasecmp(p->key, "SIZE", 4) == 0) {
        uint64_t size;
        if (p->value == NULL || !smtp_parse_u64(p->value, p->value_len, &size))
            return "501 5.5.4 Bad SIZE parameter";
        if (size > s->max_size)
            return "552 5.3.4 Message size exceeds fixed maximum message size";
        return NULL;
    }
    if (p->key_len == 4 && strncasecmp(p->key, "BODY", 4) == 0) {
        if (p->value && p->value_len == 4 && strncasecmp(p->value, "7BIT", 4) == 0)
            return NULL;
        if (p->value && p->value_len == 8 && strncasecmp(p->value, "8BITMIME", 8) == 0) {
            s->tx.body_8bit = true;
            return NULL;
        }
        return "501 5.5.4 Unsupported BODY type";
    }
    if (p->key_len == 8 && strncasecmp(p->key, "SMTPUTF8", 8) == 0) {
        if (p->value != NULL)
            return "501 5.5.4 SMTPUTF8 takes no value";
        s->tx.smtputf8 = true;
        return NULL;
    }
    return "555 5.5.4 Unsupported MAIL parameter";
}

static void cmd_mail(struct session *s, const struct smtp_cmd *cmd)
{
    const char *path;
    size_t path_len, nparams = 0;
    struct smtp_param params[SMTP_MAX_PARAMS];
    struct smtp_path addr;
    char esc[600];

    if (s->tx.mid != 0) {
        sess_reply(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (s->pol.tls == POLICY_TLS_REQUIRED && !s->tls_active) {
        sess_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (s->messages >= s->pol.max_messages_per_connection) {
        sess_limit_log(s, LOGGED_MSGS, "message limit of %u per connection exceeded",
                       s->pol.max_messages_per_connection);
        sess_reply(s, "452 4.7.0 Too many messages in this session; please reconnect");
        return;
    }
    if (smtp_mailrcpt_split(cmd->arg, cmd->arg_len, "FROM:", &path, &path_len, params, &nparams) !=
        SMTP_MR_OK) {
        sess_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    for (size_t i = 0; i < nparams; i++) {
        const char *refusal = mail_param(s, &params[i]);
        if (refusal) {
            if (strncmp(refusal, "552", 3) == 0)
                sess_limit_log(s, LOGGED_SIZE, "message size limit of %llu bytes exceeded",
                               (unsigned long long)s->max_size);
            s->tx.smtputf8 = s->tx.body_8bit = false;
            sess_reply(s, "%s", refusal);
            return;
        }
    }
    unsigned flags = SMTP_ADDR_ALLOW_NULL | (s->tx.smtputf8 ? SMTP_ADDR_UTF8 : 0);
    enum smtp_addr_status st = smtp_path_parse(path, path_len, flags, &addr);
    if (st != SMTP_ADDR_OK) {
        s->tx.smtputf8 = s->tx.body_8bit = false;
        if (st == SMTP_ADDR_NON_ASCII)
            sess_reply(s, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
        else if (st == SMTP_ADDR_TOO_LONG)
            sess_reply(s, "501 5.1.7 Sender address too long");
        else
            sess_reply(s, "501 5.1.7 Bad sender address syntax");
        return;
    }
    if (path_len > s->cfg->limits.max_sender_length) {
        s->tx.smtputf8 = s->tx.body_8bit = false;
        sess_reply(s, "501 5.1.7 Sender address too long (limit %u octets)",
                   s->cfg->limits.max_sender_length);
        return;
    }
    if (s->srv->rescon != NULL && rescon_state(s->srv->rescon) == RESCON_HALT) {
        s->tx.smtputf8 = s->tx.body_8bit = false;
        maillog(LOG_WARNING, "ICID %llu MAIL refused: resource conservation mode halted",
                (unsigned long long)s->icid);
        sess_reply(s, "452 4.3.1 Insufficient system resources");
        return;
    }
    if (spool_low_space(s->srv->spool)) {
        s->tx.smtputf8 = s->tx.body_8bit = false;
        maillog(LOG_WARNING, "ICID %llu MAIL refused: spool low on free space",
                (unsigned long long)s->icid);
        sess_reply(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    s->tx.mid = spool_next_id(s->srv->spool, SPOOL_ID_MID);
    s->tx.sender = xstrdup(addr.mailbox);
    maillog(LOG_INFO, "Start MID %llu ICID %llu", (unsigned long long)s->tx.mid,
            (unsigned long long)s->icid);
    maillog(LOG_INFO, "MID %llu ICID %llu From: <%s>", (unsigned long long)s->tx.mid,
            (unsigned long long)s->icid, sess_log_addr(esc, sizeof(esc), addr.mailbox));
    sess_reply(s, "250 2.1.0 Sender OK");
}

/* Log a limit hit once per session. */
static void sess_limit_log(struct session *s, unsigned which, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sess_limit_log(struct session *s, unsigned which, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    if (s->limits_logged & which)
        return;
    s->limits_logged |= which;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    maillog(LOG_INFO, "ICID %llu Receiving Failed: %s (policy %s, address %s)",
            (unsigned long long)s->icid, what, s->pol.name, s->ip);
}

static bool relay_domain_cb(void *ctx, const char *domain, size_t len)
{
    return config_is_relay_domain(ctx, domain, len);
}

enum smtp_relay_verdict smtp_server_rcpt_relay(const struct config *cfg, int access,
                                               const struct smtp_path *rcpt)
{
    /* RELAY policies (relay lists, private listeners) may send anywhere */
    if (access == ACCESS_RELAY)
        return SMTP_RELAY_OK;
    /* the configuration is only read; the callback's context is not const */
    return smtp_relay_check(rcpt, relay_domain_cb, (void *)(uintptr_t)cfg);
}

static bool tx_has_rcpt(const struct tx *tx, const char *mailbox)
{
    for (size_t i = 0; i < tx->nrcpts; i++)
        if (strcmp(tx->rcpts[i], mailbox) == 0)
            return true;
    return false;
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
    const char *path;
    size_t path_len, nparams = 0;
    struct smtp_param params[SMTP_MAX_PARAMS];
    struct smtp_path addr;
    char esc[600];

    if (s->tx.mid == 0) {
        sess_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->tx.bdat) {
        sess_reply(s, "503 5.5.1 Error: RCPT not allowed during BDAT transfer");
        return;
    }
    if (smtp_mailrcpt_split(cmd->arg, cmd->arg_len, "TO:", &path, &path_len, params, &nparams) !=
        SMTP_MR_OK) {
        sess_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    if (nparams > 0) {
        sess_reply(s, "555 5.5.4 Unsupported RCPT parameter");
        return;
    }
    unsigned flags = SMTP_ADDR_ALLOW_POSTMASTER | (s->tx.smtputf8 ? SMTP_ADDR_UTF8 : 0);
    enum smtp_addr_status st = smtp_path_parse(path, path_len, flags, &addr);
    if (st == SMTP_ADDR_NON_ASCII) {
        sess_reply(s, "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8");
        return;
    }
    if (st != SMTP_ADDR_OK) {
        sess_reply(s, "501 5.1.3 Bad recipient address syntax");
        return;
    }
    if (s->pol.access == ACCESS_REJECT) {
        /* delayed rejection (reject_at_rcpt): the sender learns at RCPT */
        s->srv->stats.rejected_recipients++;
        maillog(LOG_INFO, "MID %llu ICID %llu To: <%s> Rejected by policy %s (delayed rejection)",
                (unsigned long long)s->tx.mid, (unsigned long long)s->icid,
                sess_log_addr(esc, sizeof(esc), addr.mailbox), s->pol.name);
        sess_reply(s, "%u 5.7.1 %s", s->pol.reject_code, s->pol.reject_text);
        return;
    }
    enum smtp_relay_verdict v = smtp_server_rcpt_relay(s->cfg, (int)s->pol.access, &addr);
    if (v != SMTP_RELAY_OK) {
        s->srv->stats.rejected_recipients++;
        maillog(LOG_INFO, "MID %llu ICID %llu To: <%s> Rejected by RAT (%s)",
                (unsigned long long)s->tx.mid, (unsigned long long)s->icid,
                sess_log_addr(esc, sizeof(esc), addr.mailbox), smtp_relay_verdict_text(v));
        sess_reply(s, "554 5.7.1 <%s>: Relay access denied", esc);
        return;
    }
    if (tx_has_rcpt(&s->tx, addr.mailbox)) {
        /* Same mailbox twice: one delivery (RFC 5321 3.3 lets us merge). */
        sess_reply(s, "250 2.1.5 Recipient OK (duplicate)");
        return;
    }
    if (s->tx.nrcpts >= s->max_rcpts) {
        /* RFC 5321 4.5.3.1.10: 452 and the client sends the rest later. */
        sess_limit_log(s, LOGGED_RCPTS, "recipient limit of %u per message exceeded", s->max_rcpts);
        sess_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    uint32_t per_hour = s->pol.max_recipients_per_hour;
    if (per_hour > 0 && clients_rcpts_hour(s->srv->clients, s->ip, time(NULL)) >= per_hour) {
        sess_limit_log(s, LOGGED_RATE, "rate limit of %u recipients per hour exceeded", per_hour);
        sess_reply(s, "%u %c.7.1 %s", s->pol.rate_limit_code,
                   s->pol.rate_limit_code >= 500 ? '5' : '4', s->pol.rate_limit_text);
        return;
    }
    if (per_hour > 0)
        clients_rcpt_add(s->srv->clients, s->ip, time(NULL));
    xgrow((void **)&s->tx.rcpts, &s->tx.cap, s->tx.nrcpts + 1, sizeof(char *));
    s->tx.rcpts[s->tx.nrcpts] = xstrdup(addr.mailbox);
    maillog(LOG_INFO, "MID %llu ICID %llu RID %zu To: <%s>", (unsigned long long)s->tx.mid,
            (unsigned long long)s->icid, s->tx.nrcpts,
            sess_log_addr(esc, sizeof(esc), addr.mailbox));
    s->tx.nrcpts++;
    sess_reply(s, "250 2.1.5 Recipient OK");
}

/* RFC 5322 date for the Received header. */
static void sess_date(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* Protocol name for the Received "with" clause (RFC 3848, RFC 6531). */
static const char *sess_with(const struct session *s)
{
    if (s->tx.smtputf8)
        return s->tls_active ? "UTF8SMTPS" : "UTF8SMTP";
    if (!s->esmtp)
        return "SMTP";
    return s->tls_active ? "ESMTPS" : "ESMTP";
}

/* ---- slow clients ------------------------------------------------------ */

static int64_t ms_between(const struct timespec *a, const struct timespec *b)
{
    return (int64_t)(b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

static void sess_rate_arm(struct session *s, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(s->rate_ev, &tv);
}

static void sess_on_rate(evutil_socket_t fd, short what, void *arg);

/* A message transfer (DATA, or the first BDAT) begins: measure its rate
 * from now, first after the grace period (TCP slow start, a client's
 * first burst), then every window. */
static void sess_rate_start(struct session *s)
{
    if (s->cfg->limits.min_data_rate == 0)
        return;
    if (s->rate_ev == NULL)
        s->rate_ev = evtimer_new(s->srv->base, sess_on_rate, s);
    s->xfer_bytes = s->rate_mark_bytes = 0;
    clock_gettime(CLOCK_MONOTONIC, &s->rate_mark);
    sess_rate_arm(s, s->cfg->limits.min_data_rate_grace);
}

static void sess_rate_stop(struct session *s)
{
    if (s->rate_ev != NULL)
        evtimer_del(s->rate_ev);
}

/* The transfer was slower than min_data_rate over the last window: the
 * client holds a session slot while sending (almost) nothing. */
static void sess_too_slow(struct session *s, uint64_t bytes, int64_t ms)
{
    maillog(LOG_INFO,
            "ICID %llu data transfer too slow: %llu bytes in %lld ms (minimum %u bytes/s), "
            "disconnecting",
            (unsigned long long)s->icid, (unsigned long long)bytes, (long long)ms,
            s->cfg->limits.min_data_rate);
    tx_reset(s, " (data transfer too slow)");
    sess_reply(s, "421 4.4.2 %s Error: data transfer too slow", sess_host(s));
    sess_close(s);
}

static void sess_on_rate(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = ms_between(&s->rate_mark, &now);
    uint64_t bytes = s->xfer_bytes - s->rate_mark_bytes;
    /* Between BDAT chunks the client waits for our reply (perhaps held by
     * the tarpit): that time is not the client's; the command timeout
     * covers an idle client. */
    bool measuring = s->mode == MODE_DATA || s->mode == MODE_BDAT;
    if (measuring && ms > 0 && bytes * 1000 / (uint64_t)ms < s->cfg->limits.min_data_rate) {
        sess_too_slow(s, bytes, ms);
        sess_maybe_free(s);
        return;
    }
    s->rate_mark = now;
    s->rate_mark_bytes = s->xfer_bytes;
    sess_rate_arm(s, s->cfg->limits.min_data_rate_window);
}

/* timeouts.session: the whole session took too long. A message with the
 * spool worker or a TLS handshake finishes first (retried shortly). */
static void sess_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    if (s->mode == MODE_CLOSING)
        return;
    if (s->mode == MODE_COMMIT || s->mode == MODE_TLS) {
        struct timeval tv = {SESS_DEADLINE_RETRY_S, 0};
        evtimer_add(s->deadline_ev, &tv);
        return;
    }
    if (s->lookup != NULL) {
        policy_lookup_cancel(s->lookup);
        s->lookup = NULL;
    }
    maillog(LOG_INFO, "ICID %llu session time limit of %llu s exceeded, disconnecting",
            (unsigned long long)s->icid, (unsigned long long)(s->cfg->timeouts.session / 1000));
    tx_reset(s, " (session time limit)");
    sess_reply(s, "421 4.4.2 %s Error: session time limit exceeded", sess_host(s));
    sess_close(s);
    sess_maybe_free(s);
}

/* Create the spool message and write our Received header (RFC 5321 4.4). */
/* Append to buf (cap bytes, *used so far), clamping: a long host name,
 * HELO or recipient truncates the header, never overruns it. */
static void buf_appendf(char *buf, size_t cap, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void buf_appendf(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
    va_list ap;
    if (*used >= cap - 1)
        return;
    va_start(ap, fmt);
    int r = vsnprintf(buf + *used, cap - *used, fmt, ap);
    va_end(ap);
    if (r < 0)
        return;
    *used += (size_t)r < cap - *used ? (size_t)r : cap - 1 - *used;
}

/* Create the spool message and write our Received header (RFC 5321 4.4). */
static void tx_begin_content(struct session *s, enum smtp_data_mode mode)
{
    struct tx *tx = &s->tx;
    /* worst case: HELO 255 + rDNS 255 + host 255 + TLS 96 + recipient 400
     * + fixed text: well under 2048 */
    char date[64], line[2048];
    size_t n = 0;
    sess_rate_start(s);
    tx->msg = spool_msg_new(s->srv->spool, tx->mid);
    tx->hdr = xmalloc(sizeof(*tx->hdr));
    smtp_hdr_scan_init(tx->hdr);
    tx->mime = xmalloc(sizeof(*tx->mime));
    mime_scan_init(tx->mime);
    smtp_data_init(&tx->data, mode, s->cfg->limits.max_text_line);
    sess_date(date, sizeof(date));
    /* RFC 5321 4.1.3: an IPv6 address literal is written [IPv6:...];
     * the name is the forward-confirmed PTR name, or "unknown" */
    buf_appendf(line, sizeof(line), &n, "Received: from %s (%s [%s%s])\r\n\tby %s (Postern)",
                s->helo, s->rdns[0] ? s->rdns : "unknown", s->ipv6 ? "IPv6:" : "", s->ip,
                sess_host(s));
    if (s->tls_active)
        buf_appendf(line, sizeof(line), &n, "\r\n\t(%s)", s->tls_info);
    buf_appendf(line, sizeof(line), &n, " with %s id %llu", sess_with(s),
                (unsigned long long)tx->mid);
    /* "for" only with one recipient: naming several would disclose Bcc
     * recipients to each other. */
    if (tx->nrcpts == 1 && strlen(tx->rcpts[0]) < 400)
        buf_appendf(line, sizeof(line), &n, "\r\n\tfor <%s>", tx->rcpts[0]);
    buf_appendf(line, sizeof(line), &n, "; %s\r\n", date);
    if (n >= sizeof(line) - 1) {
        /* cannot happen with the limits above; keep the header well formed */
        n = sizeof(line) - 3;
        memcpy(line + n, "\r\n", 2);
        n += 2;
    }
    tx->write_err = spool_msg_write(tx->msg, line, n);
}

static void cmd_data(struct session *s, const struct smtp_cmd *cmd)
{
    if (s->tx.mid == 0) {
        sess_reply(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->tx.bdat) {
        sess_reply(s, "503 5.5.1 Error: DATA not allowed after BDAT");
        return;
    }
    if (s->tx.nrcpts == 0) {
        sess_reply(s, "554 5.5.1 Error: no valid recipients");
        return;
    }
    if (cmd->arg_len != 0) {
        sess_reply(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    tx_begin_content(s, SMTP_DATA_MODE_DATA);
    s->mode = MODE_DATA;
    sess_timeouts(s, s->cfg->timeouts.data);
    sess_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* Why a BDAT chunk cannot be accepted, or NULL. */
static const char *bdat_refusal(struct session *s)
{
    if (s->tx.mid == 0)
        return "503 5.5.1 Error: need MAIL command";
    if (s->tx.nrcpts == 0)
        return "554 5.5.1 Error: no valid recipients";
    return NULL;
}

static void cmd_bdat(struct session *s, const struct smtp_cmd *cmd)
{
    uint64_t size;
    bool last;
    if (!smtp_bdat_parse(cmd->arg, cmd->arg_len, &size, &last)) {
        /* Without a size we cannot find the end of the chunk: the session
         * cannot be resynchronised (RFC 3030 4.2). */
        sess_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
        sess_close(s);
        return;
    }
    s->tx.bdat_left = size;
    s->tx.bdat_last = last;
    s->tx.bdat_refusal = bdat_refusal(s);
    s->tx.bdat_discard = s->tx.bdat_refusal != NULL;
    if (!s->tx.bdat_discard && !s->tx.bdat) {
        s->tx.bdat = true;
        tx_begin_content(s, SMTP_DATA_MODE_BDAT);
    }
    s->mode = MODE_BDAT;
    sess_timeouts(s, s->cfg->timeouts.data);
}

static void cmd_rset(struct session *s, const struct smtp_cmd *cmd)
{
    tx_reset(s, " (RSET)");
    sess_reply(s, "250 2.0.0 OK");
}

static void cmd_noop(struct session *s, const struct smtp_cmd *cmd)
{
    sess_reply(s, "250 2.0.0 OK");
}

static void cmd_quit(struct session *s, const struct smtp_cmd *cmd)
{
    sess_reply(s, "221 2.0.0 %s closing connection", sess_host(s));
    s->quit = true;
    sess_close(s);
}

static void cmd_vrfy(struct session *s, const struct smtp_cmd *cmd)
{
    /* RFC 5321 3.5.3: 252 instead of disclosing who exists. */
    sess_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct session *s, const struct smtp_cmd *cmd)
{
    sess_reply(s, "502 5.5.1 EXPN not available");
}

static void cmd_help(struct session *s, const struct smtp_cmd *cmd)
{
    sess_reply(s, "214-2.0.0 Postern SMTP server; commands:");
    sess_reply(s, "214 2.0.0 HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS");
}

static void cmd_not_implemented(struct session *s, const struct smtp_cmd *cmd)
{
    sess_reply(s, "502 5.5.1 Error: command not implemented");
}

static void cmd_http(struct session *s, const struct smtp_cmd *cmd)
{
    char esc[64];
    maillog(LOG_INFO, "ICID %llu HTTP request on SMTP port (%s), closing",
            (unsigned long long)s->icid,
            log_escape(esc, sizeof(esc), cmd->verb_str, cmd->verb_len));
    sess_reply(s, "500 5.5.1 Error: this is an SMTP server, not HTTP");
    sess_close(s);
}

static void cmd_unknown(struct session *s, const struct smtp_cmd *cmd)
{
    sess_proto_log(s, PROTO_UNKNOWN, "unrecognized command");
    sess_reply(s, "500 5.5.1 Error: command not recognized");
}

static void cmd_starttls(struct session *s, const struct smtp_cmd *cmd)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t junk;
    if (s->lst->tls == NULL || s->pol.tls == POLICY_TLS_OFF) {
        sess_reply(s, "502 5.5.1 Error: STARTTLS not available");
        return;
    }
    if (s->tls_active) {
        sess_reply(s, "503 5.5.1 Error: TLS already active");
        return;
    }
    if (cmd->arg_len != 0) {
        sess_reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    /* CVE-2011-0411: anything already buffered was sent before our 220 and
     * must never be read as if it came over TLS. */
    junk = evbuffer_get_length(in);
    if (junk > 0) {
        evbuffer_drain(in, junk);
        maillog(LOG_WARNING, "ICID %llu discarded %zu bytes pipelined after STARTTLS",
                (unsigned long long)s->icid, junk);
    }
    bufferevent_disable(s->bev, EV_READ);
    tx_reset(s, " (STARTTLS)");
    s->helo_seen = false;
    s->esmtp = false;
    s->helo[0] = '\0';
    sess_reply(s, "220 2.0.0 Ready to start TLS");
    s->mode = MODE_TLS; /* sess_on_write starts the handshake once 220 is out */
}

enum cmd_flags {
    CMD_NEED_HELO = 1, /* 503 before HELO/EHLO */
    CMD_IN_BDAT = 2    /* allowed while a BDAT transfer is open */
};

struct cmd_entry {
    cmd_fn fn;
    unsigned flags;
};

static const struct cmd_entry cmd_table[SMTP_VERB__COUNT] = {
    [SMTP_VERB_UNKNOWN] = {cmd_unknown, CMD_IN_BDAT},
    [SMTP_VERB_HELO] = {cmd_helo, 0},
    [SMTP_VERB_EHLO] = {cmd_ehlo, 0},
    [SMTP_VERB_MAIL] = {cmd_mail, CMD_NEED_HELO},
    [SMTP_VERB_RCPT] = {cmd_rcpt, CMD_NEED_HELO},
    [SMTP_VERB_DATA] = {cmd_data, CMD_NEED_HELO | CMD_IN_BDAT},
    [SMTP_VERB_BDAT] = {cmd_bdat, CMD_IN_BDAT},
    [SMTP_VERB_RSET] = {cmd_rset, CMD_IN_BDAT},
    [SMTP_VERB_NOOP] = {cmd_noop, CMD_IN_BDAT},
    [SMTP_VERB_QUIT] = {cmd_quit, CMD_IN_BDAT},
    [SMTP_VERB_VRFY] = {cmd_vrfy, 0},
    [SMTP_VERB_EXPN] = {cmd_expn, 0},
    [SMTP_VERB_HELP] = {cmd_help, 0},
    [SMTP_VERB_STARTTLS] = {cmd_starttls, 0},
    [SMTP_VERB_AUTH] = {cmd_not_implemented, 0},
    [SMTP_VERB_ETRN] = {cmd_not_implemented, 0},
    [SMTP_VERB_HTTP] = {cmd_http, CMD_IN_BDAT},
};

/* RFC 2920 3.1: a client may send several commands without waiting only
 * once it has used EHLO (and we advertise PIPELINING to every EHLO). A
 * client that has not, and already has more input buffered behind this
 * command, did not wait: a spambot's shortcut (or a HELO-only client out
 * of step), refused and disconnected. EHLO itself may be followed at once
 * (many ESMTP clients pipeline EHLO with MAIL), and the HTTP detector
 * answers and closes anyway. */
static bool sess_improper_pipelining(struct session *s, const struct smtp_cmd *cmd)
{
    char esc[32];
    if (s->esmtp || cmd->verb == SMTP_VERB_EHLO || cmd->verb == SMTP_VERB_HTTP)
        return false;
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) == 0)
        return false;
    maillog(LOG_INFO, "ICID %llu improper command pipelining after %s from %s, disconnecting",
            (unsigned long long)s->icid, log_escape(esc, sizeof(esc), cmd->verb_str, cmd->verb_len),
            s->ip);
    tx_reset(s, " (improper command pipelining)");
    sess_reply(s, "554 5.5.0 Error: improper command pipelining");
    sess_close(s);
    return true;
}

/* Log a protocol error of one kind once per session. */
static void sess_proto_log(struct session *s, unsigned kind, const char *what)
{
    if (s->proto_logged & kind)
        return;
    s->proto_logged |= kind;
    maillog(LOG_INFO, "ICID %llu protocol error from %s: %s", (unsigned long long)s->icid, s->ip,
            what);
}

static void sess_dispatch(struct session *s, const char *line, size_t len)
{
    struct smtp_cmd cmd;
    switch (smtp_cmd_parse(line, len, &cmd)) {
    case SMTP_CMD_OK:
        break;
    case SMTP_CMD_EMPTY:
        sess_proto_log(s, PROTO_EMPTY, "empty command");
        sess_reply(s, "500 5.5.2 Error: empty command");
        return;
    case SMTP_CMD_NUL:
        sess_proto_log(s, PROTO_NUL, "NUL character in command");
        sess_reply(s, "500 5.5.2 Error: NUL character in command");
        return;
    case SMTP_CMD_BADCHAR:
    case SMTP_CMD_NON_ASCII:
        sess_proto_log(s, PROTO_BADCHAR, "invalid character in command");
        sess_reply(s, "500 5.5.2 Error: invalid character in command");
        return;
    }
    const struct cmd_entry *e = &cmd_table[cmd.verb];
    s->commands_seen = true;
    if (sess_improper_pipelining(s, &cmd))
        return;
    if (s->rejected && cmd.verb != SMTP_VERB_QUIT) {
        /* RFC 5321 3.1: after a 554 greeting only QUIT is answered with
         * anything but 503 */
        sess_reply(s, "503 5.7.1 Error: access denied");
        return;
    }
    if (s->tx.bdat && !(e->flags & CMD_IN_BDAT)) {
        sess_reply(s, "503 5.5.1 Error: only BDAT, RSET, NOOP or QUIT during BDAT transfer");
        return;
    }
    if ((e->flags & CMD_NEED_HELO) && !s->helo_seen) {
        sess_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    e->fn(s, &cmd);
}

/* ---- input ---------------------------------------------------------------- */

/* Handle one command line if a whole one is buffered. Returns false when
 * more input is needed. */
static bool sess_read_command(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t max = s->cfg->limits.max_command_line, eol_len;
    struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
    if (p.pos < 0) {
        size_t avail = evbuffer_get_length(in);
        /* RFC 5321 4.5.3.1.4: a line longer than the limit is an error,
         * and its bytes are dropped without waiting for its end. */
        if (avail >= max) {
            evbuffer_drain(in, avail);
            sess_proto_log(s, PROTO_LONG_LINE, "command line too long");
            if (!s->discard_line)
                sess_reply(s, "500 5.5.2 Error: line too long");
            s->discard_line = true;
        }
        return false;
    }
    size_t linelen = (size_t)p.pos + 1;
    if (s->discard_line || linelen > max) {
        evbuffer_drain(in, linelen);
        sess_proto_log(s, PROTO_LONG_LINE, "command line too long");
        if (!s->discard_line)
            sess_reply(s, "500 5.5.2 Error: line too long");
        s->discard_line = false;
        return true;
    }
    char stackbuf[SESS_LINE_STACK];
    char *line = linelen <= sizeof(stackbuf) ? stackbuf : xmalloc(linelen);
    evbuffer_remove(in, line, linelen);
    /* RFC 5321 2.3.8: lines end with CRLF; a bare LF is refused so that no
     * two parsers on the path disagree about where a command ends. */
    if (linelen < 2 || line[linelen - 2] != '\r') {
        sess_proto_log(s, PROTO_BARE_LF, "bare LF in command line");
        sess_reply(s, "500 5.5.2 Error: bare <LF> in command line");
    } else
        sess_dispatch(s, line, linelen - 2);
    if (line != stackbuf)
        free(line);
    return true;
}

/* Content octets (already unstuffed) for the current message. */
static void tx_content(struct session *s, const char *p, size_t n)
{
    struct tx *tx = &s->tx;
    if (n == 0)
        return;
    smtp_hdr_scan_feed(tx->hdr, p, n);
    mime_scan_feed(tx->mime, p, n);
    tx->size += n;
    /* SIZE is enforced while streaming: past the limit nothing more is
     * stored, the rest is read and dropped, and the end gets 552. */
    if (tx->size > s->max_size)
        tx->too_big = true;
    if (tx->too_big || tx->write_err)
        return;
    tx->write_err = spool_msg_write(tx->msg, p, n);
}

static void tx_end_content(struct session *s);

/* Feed buffered DATA content through the terminator machine. */
static bool sess_read_data(struct session *s)
{
    static char scratch[SESS_DATA_CHUNK];
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct evbuffer_iovec v[16];
    size_t used = 0;
    int n = evbuffer_peek(in, -1, NULL, v, 16);
    if (n <= 0)
        return false;
    if (n > 16)
        n = 16;
    for (int i = 0; i < n && !s->tx.data.done; i++) {
        const char *p = v[i].iov_base;
        size_t left = v[i].iov_len;
        while (left > 0 && !s->tx.data.done) {
            size_t chunk = left < sizeof(scratch) ? left : sizeof(scratch), outlen;
            size_t took = smtp_data_feed(&s->tx.data, p, chunk, scratch, &outlen);
            tx_content(s, scratch, outlen);
            p += took;
            left -= took;
            used += took;
        }
    }
    evbuffer_drain(in, used);
    s->xfer_bytes += used;
    if (s->tx.data.done)
        tx_end_content(s);
    return s->tx.data.done || used > 0;
}

/* Consume the octets of the current BDAT chunk. */
static bool sess_read_bdat(struct session *s)
{
    static char scratch[SESS_DATA_CHUNK];
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct tx *tx = &s->tx;
    while (tx->bdat_left > 0) {
        size_t avail = evbuffer_get_length(in), outlen;
        size_t n = avail < sizeof(scratch) ? avail : sizeof(scratch);
        if (n > tx->bdat_left)
            n = (size_t)tx->bdat_left;
        if (n == 0)
            return false;
        evbuffer_remove(in, scratch, n);
        tx->bdat_left -= n;
        s->xfer_bytes += n;
        if (tx->bdat_discard)
            continue;
        /* BDAT mode never shortens its input, so scratch is both sides. */
        smtp_data_feed(&tx->data, scratch, n, scratch, &outlen);
        tx_content(s, scratch, outlen);
    }
    s->mode = MODE_CMD;
    sess_timeouts(s, s->cfg->timeouts.command);
    if (tx->bdat_discard) {
        sess_reply(s, "%s", tx->bdat_refusal);
        return true;
    }
    if (tx->bdat_last) {
        smtp_data_finish(&tx->data);
        tx_end_content(s);
    } else
        sess_reply(s, "250 2.0.0 %llu octets received", (unsigned long long)tx->size);
    return true;
}

static void sess_committed(void *arg, int err);
static void tx_envelope(struct session *s, struct spool_envelope *env);

/* The reply refusing a finished message's content, or NULL if it is fine. */
static const char *tx_content_refusal(struct session *s)
{
    unsigned f = s->tx.data.flags;
    if (f & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR))
        return "554 5.5.2 Message refused: bare CR or LF in message text (RFC 5321 2.3.8)";
    if (f & SMTP_DATA_NUL)
        return "554 5.6.0 Message refused: NUL character in message text";
    if (f & SMTP_DATA_LONG_LINE)
        return "554 5.6.0 Message refused: text line longer than 1000 octets (RFC 5321 4.5.3.1.6)";
    if (s->tx.too_big)
        return "552 5.3.4 Message size exceeds fixed maximum message size";
    if (s->tx.write_err)
        return "451 4.3.0 Error: queue file write error";
    if (s->tx.mime_too_long)
        return "554 5.6.0 Message refused: MIME attachment filename too long (an inspecting "
               "firewall on the path would drop it)";
    return NULL;
}

/* End of DATA or of the LAST BDAT chunk: refuse, or hand to the spool. */
static void tx_end_content(struct session *s)
{
    struct tx *tx = &s->tx;
    char esc[1100], reason[160];
    uint32_t max_name = s->cfg->limits.max_mime_filename;
    mime_scan_finish(tx->mime);
    tx->mime_too_long = max_name > 0 && tx->mime->longest > max_name;
    const char *refusal = tx_content_refusal(s);

    sess_rate_stop(s);
    s->mode = MODE_CMD;
    sess_timeouts(s, s->cfg->timeouts.command);
    if (refusal) {
        if (tx->too_big && !(tx->data.flags) && !tx->write_err)
            sess_limit_log(s, LOGGED_SIZE, "message size limit of %llu bytes exceeded",
                           (unsigned long long)s->max_size);
        snprintf(reason, sizeof(reason), ": %.3s %.5s %s", refusal, refusal + 4,
                 tx->write_err       ? strerror(-tx->write_err)
                 : tx->too_big       ? "message too big"
                 : tx->mime_too_long ? "MIME attachment filename too long"
                                     : smtp_data_flag_text(tx->data.flags));
        tx_reset(s, reason);
        sess_reply(s, "%s", refusal);
        return;
    }
    if (tx->hdr->have_message_id)
        maillog(LOG_INFO, "MID %llu Message-ID '%s'", (unsigned long long)tx->mid,
                log_escape(esc, sizeof(esc), tx->hdr->message_id, tx->hdr->message_id_len));
    if (tx->hdr->have_subject)
        maillog(LOG_INFO, "MID %llu Subject '%s'", (unsigned long long)tx->mid,
                log_escape(esc, sizeof(esc), tx->hdr->subject, tx->hdr->subject_len));
    maillog(LOG_INFO, "MID %llu ready %llu bytes from <%s>", (unsigned long long)tx->mid,
            (unsigned long long)spool_msg_size(tx->msg),
            sess_log_addr(esc, sizeof(esc), tx->sender));

    struct timeval tv;
    gettimeofday(&tv, NULL);
    tx->received_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    tx->stored_size = spool_msg_size(tx->msg);
    struct spool_envelope env;
    tx_envelope(s, &env);
    spool_msg_set_envelope(tx->msg, &env);
    for (size_t i = 0; i < tx->nrcpts; i++)
        spool_msg_add_rcpt(tx->msg, tx->rcpts[i], NULL, SPOOL_NOTIFY_DEFAULT);
    struct spool_msg *m = tx->msg;
    tx->msg = NULL;
    s->mode = MODE_COMMIT;
    spool_msg_commit(m, sess_committed, s);
}

/* The envelope of the current transaction (strings point into s). */
static void tx_envelope(struct session *s, struct spool_envelope *env)
{
    struct tx *tx = &s->tx;
    *env = (struct spool_envelope){
        .mid = tx->mid,
        .icid = s->icid,
        .sender = tx->sender,
        .flags = (tx->smtputf8 ? SPOOL_F_SMTPUTF8 : 0) | (tx->body_8bit ? SPOOL_F_8BITMIME : 0) |
                 (s->tls_active ? SPOOL_F_TLS : 0),
        .client_ip = s->ip,
        .helo = s->helo,
        .listener = s->lst->name,
        .message_id = tx->hdr->have_message_id ? tx->hdr->message_id : NULL,
        .subject = tx->hdr->have_subject ? tx->hdr->subject : NULL,
        .received_ms = tx->received_ms,
    };
}

/* The spool's verdict on the message: the only place "250" is sent. */
static void sess_committed(void *arg, int err)
{
    struct session *s = arg;
    struct tx *tx = &s->tx;
    if (err == 0) {
        maillog(LOG_INFO, "MID %llu queued for delivery", (unsigned long long)tx->mid);
        s->srv->stats.messages++;
        s->srv->stats.recipients += tx->nrcpts;
        s->messages++;
        if (s->srv->queue_fn) {
            struct spool_envelope env;
            tx_envelope(s, &env);
            s->srv->queue_fn(s->srv->queue_ctx, &env, tx->stored_size, tx->rcpts, tx->nrcpts);
        }
    } else {
        maillog(LOG_WARNING, "MID %llu could not be queued: %s", (unsigned long long)tx->mid,
                strerror(-err));
    }
    if (s->lost) {
        /* Stored but never acknowledged: it is delivered anyway (the
         * contract is "at least once"), so it is not "aborted". */
        tx->mid = 0;
        s->mode = MODE_CLOSING;
        sess_free(s);
        return;
    }
    if (err == 0)
        sess_reply(s, "250 2.0.0 Message %llu accepted", (unsigned long long)tx->mid);
    else
        sess_reply(s, "451 4.3.0 Error: queue file write error");
    tx->mid = 0; /* not aborted: it is queued (or refused) */
    tx_reset(s, NULL);
    s->mode = MODE_CMD;
    if (s->stopping) {
        sess_reply(s, "421 4.3.2 %s Service shutting down", sess_host(s));
        sess_close(s);
        return;
    }
    sess_process(s);
    sess_maybe_free(s);
}

/* Run as many buffered commands / content bytes as the mode allows. */
static void sess_process(struct session *s)
{
    bool progress = true;
    while (progress) {
        if (s->errors > s->cfg->limits.max_errors && s->mode == MODE_CMD) {
            maillog(LOG_INFO, "ICID %llu too many errors (%u), disconnecting",
                    (unsigned long long)s->icid, s->errors);
            sess_reply(s, "421 4.7.0 %s Error: too many errors", sess_host(s));
            sess_close(s);
            return;
        }
        switch (s->mode) {
        case MODE_CMD:
            progress = sess_read_command(s);
            break;
        case MODE_DATA:
            progress = sess_read_data(s);
            break;
        case MODE_BDAT:
            progress = sess_read_bdat(s);
            break;
        default:
            progress = false;
            break;
        }
    }
}

/* ---- lifecycle ---------------------------------------------------------------- */

static double sess_elapsed_s(const struct session *s)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - s->t_start.tv_sec) +
           (double)(now.tv_nsec - s->t_start.tv_nsec) / 1e9;
}

static void sess_free(struct session *s)
{
    struct smtp_server *srv = s->srv;
    if (s->lookup) {
        policy_lookup_cancel(s->lookup);
        s->lookup = NULL;
    }
    if (s->counted_ip)
        clients_session_del(srv->clients, s->ip);
    if (!s->commands_seen && !s->quit && !s->stopping) {
        /* The appliance's "late banner" diagnosis: how much of the wait
         * was DNS (seed 004). Before the banner, all of it was. */
        double total = sess_elapsed_s(s);
        double dns = s->mode == MODE_POLICY || s->dns_ms <= 0 ? total : s->dns_ms / 1000;
        if (s->mode != MODE_POLICY && s->dns_ms > 0)
            dns = s->dns_ms / 1000;
        maillog(LOG_INFO,
                "ICID %llu Connection from %s on interface %s (%s) lost after %.1f seconds "
                "(DNS query took %.1f seconds), before any commands were received",
                (unsigned long long)s->icid, s->ip, s->lst->name, s->lst->address, total, dns);
    }
    if (s->quit || s->stopping)
        maillog(LOG_INFO, "ICID %llu close", (unsigned long long)s->icid);
    else
        maillog(LOG_INFO, "ICID %llu lost", (unsigned long long)s->icid);
    tx_reset(s, "");
    if (s->rate_ev)
        event_free(s->rate_ev);
    if (s->tarpit_ev)
        event_free(s->tarpit_ev);
    if (s->held)
        evbuffer_free(s->held);
    if (s->deadline_ev)
        event_free(s->deadline_ev);
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->fd >= 0)
        close(s->fd);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->lst->sessions--;
    listener_unref(s->lst);
    config_unref(s->cfg);
    free(s);
    srv->stats.current--;
    if (srv->stopping && srv->sessions == NULL && srv->shutdown_done) {
        void (*done)(void *) = srv->shutdown_done;
        srv->shutdown_done = NULL;
        done(srv->shutdown_arg);
    }
}

/* Free the session if it reached a state where nothing still needs it. */
static void sess_maybe_free(struct session *s)
{
    if (s->mode == MODE_COMMIT)
        return; /* the spool callback still holds s */
    if (s->mode != MODE_CLOSING)
        return;
    if (s->bev && evbuffer_get_length(bufferevent_get_output(s->bev)) > 0 && !s->lost)
        return;
    if (sess_holding(s) && !s->lost)
        return; /* the tarpit still holds the last reply */
    sess_free(s);
}

static void sess_on_read(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (s->mode == MODE_POLICY) {
        /* talking before the banner (RFC 5321 3.1 says wait): answered
         * once the decision is made; read no further meanwhile */
        s->pregreet = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    sess_process(s);
    sess_maybe_free(s);
}

/* Replace the plain bufferevent by a TLS one on the same socket, once our
 * 220 has been written. */
static void sess_tls_start(struct session *s)
{
    struct event_base *base = bufferevent_get_base(s->bev);
    SSL *ssl = SSL_new(s->lst->tls);
    bufferevent_free(s->bev);
    s->bev = NULL;
    if (ssl == NULL) {
        maillog(LOG_WARNING, "ICID %llu TLS failed: SSL_new", (unsigned long long)s->icid);
        s->mode = MODE_CLOSING;
        s->lost = true;
        return;
    }
    /* CLOSE_ON_FREE: libevent frees the SSL only with it, so from here the
     * bufferevent owns the socket. */
    s->bev = bufferevent_openssl_socket_new(base, s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    s->fd = -1;
    bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    bufferevent_setcb(s->bev, sess_on_read, sess_on_write, sess_on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, SESS_INPUT_HIGHWAT);
    sess_timeouts(s, s->cfg->timeouts.tls_handshake);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

static void sess_on_write(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    if (sess_holding(s))
        return; /* e.g. the STARTTLS 220 is still in the tarpit */
    if (s->mode == MODE_TLS && !s->tls_active && bufferevent_openssl_get_ssl(bev) == NULL) {
        sess_tls_start(s);
    }
    sess_maybe_free(s);
}

static void sess_tls_done(struct session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    s->tls_active = true;
    snprintf(s->tls_info, sizeof(s->tls_info), "using %s with cipher %s", SSL_get_version(ssl),
             SSL_get_cipher_name(ssl));
    maillog(LOG_INFO, "ICID %llu TLS success protocol %s cipher %s", (unsigned long long)s->icid,
            SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    s->mode = MODE_CMD;
    sess_timeouts(s, s->cfg->timeouts.command);
}

static void sess_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (s->mode == MODE_TLS)
            sess_tls_done(s);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && s->mode != MODE_CLOSING &&
        s->mode != MODE_TLS) {
        maillog(LOG_INFO, "ICID %llu timeout waiting for %s", (unsigned long long)s->icid,
                s->mode == MODE_CMD ? "a command" : "message data");
        tx_reset(s, " (timeout)");
        sess_reply(s, "421 4.4.2 %s Error: timeout exceeded", sess_host(s));
        sess_close(s);
        return;
    }
    if (what & BEV_EVENT_ERROR && s->mode == MODE_TLS && !s->tls_active) {
        char ebuf[200];
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e)
            ERR_error_string_n(e, ebuf, sizeof(ebuf));
        else
            snprintf(ebuf, sizeof(ebuf), "%s", strerror(EVUTIL_SOCKET_ERROR()));
        maillog(LOG_INFO, "ICID %llu TLS failed: %s", (unsigned long long)s->icid, ebuf);
    }
    /* EOF, error, or a timeout while closing/handshaking: the client is gone. */
    s->lost = true;
    if (s->mode == MODE_COMMIT) {
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        return; /* sess_committed frees it */
    }
    s->mode = MODE_CLOSING;
    sess_free(s);
}

/* ---- connection policy ------------------------------------------------ */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void sess_policy_log(struct session *s, const struct policy_facts *f,
                            const struct policy_decision *dec)
{
    char sbrs[32];
    if (f->rfc1918 && !s->cfg->reputation.lookup_private)
        snprintf(sbrs, sizeof(sbrs), "rfc1918");
    else if (f->sbrs_none)
        snprintf(sbrs, sizeof(sbrs), "None");
    else
        snprintf(sbrs, sizeof(sbrs), "%.1f", f->sbrs);
    maillog(
        LOG_INFO, "New SMTP ICID %llu interface %s (%s) address %s reverse dns host %s verified %s",
        (unsigned long long)s->icid, s->lst->name, s->lst->address, s->ip,
        f->ptr == PTR_OK && f->ptr_name[0] ? f->ptr_name : "unknown", f->verified ? "yes" : "no");
    maillog(LOG_INFO, "ICID %llu %s SG %s match %s SBRS %s", (unsigned long long)s->icid,
            policy_access_name(dec->params.access), dec->group ? dec->group : "None", dec->member,
            sbrs);
    maillog(LOG_INFO,
            "ICID %llu DNS lookups took %.0f ms: PTR %.0f ms, forward %.0f ms, reputation %.0f ms",
            (unsigned long long)s->icid, f->ms_total, f->ms_ptr < 0 ? 0 : f->ms_ptr,
            f->ms_forward < 0 ? 0 : f->ms_forward, f->ms_reputation < 0 ? 0 : f->ms_reputation);
}

/* The host access table decided: send the banner the policy says, or
 * refuse. Runs from the lookup's callback (or at once without lookups). */
static void sess_policy_decided(void *arg, const struct policy_facts *f)
{
    struct session *s = arg;
    struct policy_decision dec;
    char banner[300];
    s->lookup = NULL;
    s->dns_ms = f->ms_total;
    if (f->ptr == PTR_OK && f->verified)
        snprintf(s->rdns, sizeof(s->rdns), "%s", f->ptr_name);
    policy_decide(s->lst->hat, f, &dec);
    s->pol = dec.params;
    snprintf(s->group, sizeof(s->group), "%s", dec.group ? dec.group : "");
    /* the listener's limits are hard caps; the policy may only lower them */
    s->max_size = min_u64(s->cfg->limits.max_message_size, s->pol.max_message_size);
    s->max_rcpts =
        (uint32_t)min_u64(s->cfg->limits.max_recipients, s->pol.max_recipients_per_message);
    sess_policy_log(s, f, &dec);
    /* the reject text may name the host too; expand it once, here, where
     * the facts are (RCPT uses it later, for delayed rejection) */
    policy_expand_banner(dec.params.reject_text, f, s->group[0] ? s->group : NULL,
                         s->pol.reject_text, sizeof(s->pol.reject_text));
    if (s->pol.access == ACCESS_TCPREFUSE) {
        s->quit = true;
        s->mode = MODE_CLOSING;
        sess_free(s);
        return;
    }
    s->mode = MODE_CMD;
    s->counted_ip = true;
    if (clients_session_add(s->srv->clients, s->ip) > s->pol.max_concurrent_connections) {
        sess_limit_log(s, LOGGED_CONNS, "Connection limit exceeded: %u concurrent connections",
                       s->pol.max_concurrent_connections);
        sess_reply(s, "421 4.7.0 %s Too many concurrent connections from your address",
                   sess_host(s));
        sess_close(s);
        return;
    }
    if (s->pregreet) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        maillog(LOG_INFO, "ICID %llu pregreet: client sent %zu bytes before the banner",
                (unsigned long long)s->icid, evbuffer_get_length(in));
        evbuffer_drain(in, evbuffer_get_length(in));
        sess_reply(s, "554 5.5.1 %s Protocol error: data sent before the banner", sess_host(s));
        sess_close(s);
        return;
    }
    if (s->pol.access == ACCESS_REJECT && !s->pol.reject_at_rcpt) {
        s->rejected = true;
        sess_reply(s, "%u %s %s", s->pol.reject_code, sess_host(s), s->pol.reject_text);
        return;
    }
    policy_expand_banner(s->pol.banner_text, f, s->group[0] ? s->group : NULL, banner,
                         sizeof(banner));
    sess_reply(s, "%u %s %s", s->pol.banner_code, sess_host(s), banner);
}

/* Start the pre-banner lookups (PTR, forward-confirm, DNS lists). */
static void sess_policy_start(struct session *s)
{
    const char *zones[POLICY_MAX_DNSLISTS];
    size_t nz = policy_table_dnslists(s->lst->hat, zones, POLICY_MAX_DNSLISTS);
    struct policy_lookup_params p = {
        .reputation = &s->cfg->reputation,
        .zones = zones,
        .nzones = nz,
        .deadline_ms = s->cfg->connection_dns_deadline,
    };
    s->mode = MODE_POLICY;
    s->lookup =
        policy_lookup_start(s->srv->base, s->srv->resolver, s->ip, &p, sess_policy_decided, s);
    if (s->lookup == NULL) {
        /* not an address the resolver can look up: decide on the IP alone */
        struct policy_facts f = {.ptr = PTR_NOT_LOOKED, .sbrs_none = true};
        snprintf(f.ip, sizeof(f.ip), "%s", s->ip);
        f.ms_ptr = f.ms_forward = f.ms_reputation = -1;
        sess_policy_decided(s, &f);
    }
}

/* Send one 421 line on a fresh socket and close it: no session is built. */
static void sess_refuse_fd(struct smtp_server *srv, struct listener *l, int fd, const char *code,
                           const char *text)
{
    char line[300];
    int n = snprintf(line, sizeof(line), "421 %s %s %s\r\n", code, l->hostname, text);
    /* Best effort: a non-blocking send of one short line on a fresh socket. */
    if (write(fd, line, (size_t)n) < 0) {
        /* nothing to do: the connection is being refused anyway */
    }
    close(fd);
    srv->stats.connections_refused++;
}

/* Refuse a connection over a limit without building a session. */
static void sess_refuse(struct smtp_server *srv, struct listener *l, int fd, uint64_t icid,
                        const char *ip)
{
    maillog(LOG_INFO, "ICID %llu Receiving Failed: Connection limit exceeded (address %s)",
            (unsigned long long)icid, ip);
    sess_refuse_fd(srv, l, fd, "4.7.0", "Too many connections, try again later");
}

/* Connection-time protection: resource conservation halted, or the
 * client's connection rate over limits.max_connection_rate (logged once
 * a minute per IP: a client hammering us must not flood the log). True
 * when fd was refused. */
static bool sess_refused_at_connect(struct smtp_server *srv, struct listener *l, int fd,
                                    uint64_t icid, const char *ip)
{
    uint32_t max_rate = srv->cfg->limits.max_connection_rate;
    if (srv->rescon != NULL && rescon_state(srv->rescon) == RESCON_HALT) {
        maillog(LOG_INFO,
                "ICID %llu Receiving Failed: resource conservation mode halted (address %s)",
                (unsigned long long)icid, ip);
        sess_refuse_fd(srv, l, fd, "4.3.2", "Service temporarily unavailable");
        return true;
    }
    if (max_rate == 0)
        return false;
    uint32_t n = clients_conn_add(srv->clients, ip, time(NULL));
    if (n <= max_rate)
        return false;
    if (n == max_rate + 1)
        maillog(LOG_INFO,
                "ICID %llu Receiving Failed: connection rate limit of %u per minute exceeded "
                "(address %s)",
                (unsigned long long)icid, max_rate, ip);
    sess_refuse_fd(srv, l, fd, "4.7.0", "Too many connections from your address, try again later");
    return true;
}

/* ---- listener suspension ------------------------------------------------ */

/* Remember a listener (once) so that a suspension can disable it. Removed
 * listeners (set == NULL after a reload) are dropped here. */
static void srv_listener_seen(struct smtp_server *srv, struct listener *l)
{
    size_t j = 0;
    bool found = false;
    for (size_t i = 0; i < srv->nseen; i++) {
        struct listener *x = srv->seen[i];
        if (x->set == NULL && x != l) {
            listener_unref(x);
            continue;
        }
        found = found || x == l;
        srv->seen[j++] = x;
    }
    srv->nseen = j;
    if (found)
        return;
    xgrow((void **)&srv->seen, &srv->seen_cap, srv->nseen + 1, sizeof(*srv->seen));
    srv->seen[srv->nseen++] = listener_ref(l);
}

static void srv_listener_enable(struct listener *l, bool on)
{
    if (l->evl == NULL || l->set == NULL || l->suspended == !on)
        return;
    if (on)
        evconnlistener_enable(l->evl);
    else
        evconnlistener_disable(l->evl);
    l->suspended = !on;
}

/* Hold a connection accepted while suspended, unread, until resume. */
static void srv_park(struct smtp_server *srv, struct listener *l, int fd, const struct sockaddr *sa,
                     int salen)
{
    struct parked_conn *pc;
    xgrow((void **)&srv->parked, &srv->parked_cap, srv->nparked + 1, sizeof(*srv->parked));
    pc = &srv->parked[srv->nparked++];
    pc->lst = listener_ref(l);
    pc->fd = fd;
    pc->salen = salen < (int)sizeof(pc->sa) ? salen : (int)sizeof(pc->sa);
    memcpy(&pc->sa, sa, (size_t)pc->salen);
}

/* Close parked connections (shutdown) or hand them to accept (resume). */
static void srv_unpark(struct smtp_server *srv, bool serve)
{
    struct parked_conn *list = srv->parked;
    size_t n = srv->nparked;
    srv->parked = NULL;
    srv->nparked = srv->parked_cap = 0;
    for (size_t i = 0; i < n; i++) {
        if (serve)
            smtp_server_accept(srv, list[i].lst, list[i].fd, (struct sockaddr *)&list[i].sa,
                               list[i].salen);
        else
            close(list[i].fd);
        listener_unref(list[i].lst);
    }
    free(list);
}

/* Index of name among the operator's suspended listeners, or -1. */
static ptrdiff_t srv_op_find(const struct smtp_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nop_held; i++)
        if (strcmp(srv->op_held[i], name) == 0)
            return (ptrdiff_t)i;
    return -1;
}

static bool srv_op_held(const struct smtp_server *srv, const struct listener *l)
{
    return srv_op_find(srv, l->name) >= 0;
}

static void srv_suspend(struct smtp_server *srv, bool on)
{
    srv->suspended = on;
    /* a listener the operator suspended stays so when the backlog clears */
    for (size_t i = 0; i < srv->nseen; i++)
        srv_listener_enable(srv->seen[i], !on && !srv_op_held(srv, srv->seen[i]));
    if (!on)
        srv_unpark(srv, true);
}

int smtp_server_suspend_listener(struct smtp_server *srv, const char *name, bool on)
{
    int n = 0;
    for (size_t i = 0; i < srv->cfg->nlisteners; i++) {
        const char *ln = srv->cfg->listeners[i].name;
        ptrdiff_t at = srv_op_find(srv, ln);
        if (name != NULL && strcmp(name, ln) != 0)
            continue;
        n++;
        if (on && at < 0) {
            xgrow((void **)&srv->op_held, &srv->op_held_cap, srv->nop_held + 1,
                  sizeof(*srv->op_held));
            srv->op_held[srv->nop_held++] = xstrdup(ln);
            maillog(LOG_INFO, "Listener %s suspended by operator", ln);
        } else if (!on && at >= 0) {
            free(srv->op_held[at]);
            srv->op_held[at] = srv->op_held[--srv->nop_held];
            maillog(LOG_INFO, "Listener %s resumed by operator", ln);
        }
    }
    if (n == 0)
        return -1;
    for (size_t i = 0; i < srv->nseen; i++)
        srv_listener_enable(srv->seen[i],
                            !srv->suspended && !srv_op_held(srv, srv->seen[i]) && !srv->stopping);
    /* parked connections of listeners no longer held are served; the
     * others are parked again by smtp_server_accept() */
    if (!on && !srv->suspended && !srv->stopping)
        srv_unpark(srv, true);
    return n;
}

bool smtp_server_listener_suspended(const struct smtp_server *srv, const char *name)
{
    return srv_op_find(srv, name) >= 0;
}

static void srv_on_rescon(void *ctx, const struct rescon *rc)
{
    struct smtp_server *srv = ctx;
    if (rescon_suspended(rc) != srv->suspended && !srv->stopping)
        srv_suspend(srv, rescon_suspended(rc));
}

void smtp_server_accept(void *arg, struct listener *l, int fd, const struct sockaddr *sa, int salen)
{
    struct smtp_server *srv = arg;
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
    srv_listener_seen(srv, l);
    if ((srv->suspended || srv_op_held(srv, l)) && !srv->stopping) {
        /* this listener was not disabled yet: it is now */
        srv_listener_enable(l, false);
        srv_park(srv, l, fd, sa, salen);
        return;
    }
    uint64_t icid = spool_next_id(srv->spool, SPOOL_ID_ICID);
    srv->stats.connections++;
    if (srv->stopping || l->sessions >= srv->cfg->limits.max_connections) {
        /* refused before any lookup: the cap protects the resolver too */
        maillog(LOG_INFO,
                "New SMTP ICID %llu interface %s (%s) address %s reverse dns host unknown "
                "verified no",
                (unsigned long long)icid, l->name, l->address, ip);
        sess_refuse(srv, l, fd, icid, ip);
        return;
    }
    if (sess_refused_at_connect(srv, l, fd, icid, ip))
        return;
    struct session *s = xcalloc(1, sizeof(*s));
    s->srv = srv;
    s->fd = fd;
    s->icid = icid;
    s->lst = listener_ref(l);
    s->cfg = config_ref(srv->cfg);
    memcpy(s->ip, ip, sizeof(ip));
    s->ipv6 = sa->sa_family == AF_INET6;
    clock_gettime(CLOCK_MONOTONIC, &s->t_start);
    l->sessions++;
    srv->stats.current++;
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;

    /* accept4() gave us a non-blocking socket already. Replies are
     * batched per loop turn, so Nagle would only add delayed-ACK stalls. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->bev = bufferevent_socket_new(srv->base, fd, 0);
    bufferevent_setcb(s->bev, sess_on_read, sess_on_write, sess_on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, SESS_INPUT_HIGHWAT);
    sess_timeouts(s, s->cfg->timeouts.command);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    uint64_t dl = s->cfg->timeouts.session;
    struct timeval dtv = {(time_t)(dl / 1000), (suseconds_t)(dl % 1000) * 1000};
    s->deadline_ev = evtimer_new(srv->base, sess_on_deadline, s);
    evtimer_add(s->deadline_ev, &dtv);
    sess_policy_start(s);
}

/* ---- server ------------------------------------------------------------------- */

/* Every 5 minutes: forget clients idle for an hour. */
static void srv_on_expire(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_server *srv = arg;
    clients_expire(srv->clients, time(NULL));
}

struct smtp_server *smtp_server_new(struct event_base *base, struct spool *spool,
                                    struct resolver *resolver, struct config *cfg)
{
    struct smtp_server *srv = xcalloc(1, sizeof(*srv));
    struct timeval tv = {300, 0};
    srv->base = base;
    srv->spool = spool;
    srv->resolver = resolver;
    srv->cfg = config_ref(cfg);
    srv->clients = clients_new();
    srv->expire_ev = event_new(base, -1, EV_PERSIST, srv_on_expire, srv);
    event_add(srv->expire_ev, &tv);
    return srv;
}

void smtp_server_set_rescon(struct smtp_server *srv, struct rescon *rc)
{
    srv->rescon = rc;
    rescon_set_handler(rc, srv_on_rescon, srv);
    srv_on_rescon(srv, rc);
}

void smtp_server_set_queue(struct smtp_server *srv, smtp_server_queue_fn fn, void *ctx)
{
    srv->queue_fn = fn;
    srv->queue_ctx = ctx;
}

void smtp_server_set_config(struct smtp_server *srv, struct config *cfg)
{
    config_ref(cfg);
    config_unref(srv->cfg);
    srv->cfg = cfg;
}

void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg)
{
    struct session *s, *next;
    srv->stopping = true;
    srv->shutdown_done = done;
    srv->shutdown_arg = arg;
    srv_unpark(srv, false);
    for (s = srv->sessions; s; s = next) {
        next = s->next;
        s->stopping = true;
        sess_release(s); /* no tarpit for the last words */
        if (s->mode == MODE_COMMIT || s->mode == MODE_CLOSING)
            continue;
        tx_reset(s, " (shutdown)");
        sess_reply(s, "421 4.3.2 %s Service shutting down", sess_host(s));
        sess_close(s);
        sess_maybe_free(s);
    }
    if (srv->sessions == NULL && srv->shutdown_done) {
        srv->shutdown_done = NULL;
        done(arg);
    }
}

void smtp_server_abort_all(struct smtp_server *srv)
{
    struct session *s, *next;
    for (s = srv->sessions; s; s = next) {
        next = s->next;
        s->lost = true;
        s->stopping = true;
        /* A session whose message is with the spool worker is freed by the
         * commit callback, which spool_close() still runs. */
        if (s->mode == MODE_COMMIT)
            continue;
        s->mode = MODE_CLOSING;
        sess_free(s);
    }
}

const struct smtp_server_stats *smtp_server_stats(const struct smtp_server *srv)
{
    return &srv->stats;
}

void smtp_server_free(struct smtp_server *srv)
{
    if (srv == NULL)
        return;
    smtp_server_abort_all(srv);
    srv_unpark(srv, false);
    for (size_t i = 0; i < srv->nseen; i++)
        listener_unref(srv->seen[i]);
    free(srv->seen);
    for (size_t i = 0; i < srv->nop_held; i++)
        free(srv->op_held[i]);
    free(srv->op_held);
    if (srv->rescon)
        rescon_set_handler(srv->rescon, NULL, NULL);
    event_free(srv->expire_ev);
    clients_free(srv->clients);
    config_unref(srv->cfg);
    free(srv);
}
