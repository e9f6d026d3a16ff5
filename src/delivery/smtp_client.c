/*
 * smtp_client: one outbound SMTP connection (see smtp_client.h).
 *
 * The client is an explicit state plus a table (client_states[]) that
 * gives, per state, the stage reported on failure, the deadline that runs
 * while in it, and the handler of a complete reply. Replies are read line
 * by line from the bufferevent's input and fed to smtp_reply; a complete
 * reply is dispatched to the current state's handler, which decides the
 * next state. A state without a handler treats any reply as unexpected.
 *
 *   CONNECT --writable--> BANNER --2xx--> EHLO --2xx--> (TLS wanted and
 *   offered?) STARTTLS --220--> TLS --handshake--> EHLO --2xx--> READY
 *                                 EHLO --5xx--> HELO --2xx--> READY
 *   READY --send()--> MAIL --> RCPT (n) --> DATA --354--> BODY --"."--> DOT
 *   DOT --reply--> done() --> READY --> ready()
 *   MAIL/RCPT/DATA refused --> RSET (done() right after RSET is written)
 *        --2xx--> READY --> ready()
 *   DATA 354 with MAIL or every RCPT refused (pipelined, RFC 2920 3.1)
 *        --> EMPTYDOT ("." alone) --reply--> done() --> READY
 *   READY --quit()--> QUIT --reply/EOF/timeout--> freed
 *
 * With PIPELINING the MAIL, RCPT and DATA commands go out in one write and
 * the replies come back in order: the MAIL/RCPT/DATA states then only count
 * replies, and every one is read even when MAIL failed (RFC 2920 3.1: the
 * client must check all statuses). Without it, each reply decides whether
 * the next command is sent.
 *
 * Deadlines: one timer is the connect deadline in CONNECT and the reply
 * deadline in every command state (from the command's write to the last
 * line of its reply: a peer trickling a multi-line reply cannot stretch
 * it). While the body is written, the bufferevent's write timeout is the
 * "no progress" limit (libevent restarts it on every successful write);
 * after ".", the timer waits data_done_timeout_ms for the final reply.
 *
 * Lifetime: every libevent callback holds c->busy; a user callback may call
 * smtp_client_abort()/quit(), which only marks the client; it is freed by
 * client_release() when the outermost frame unwinds. ops->failed() marks it
 * dead, so nothing runs after it. Failures found inside smtp_client_start()
 * or smtp_client_send() (connect refused at once, local errors) are
 * reported from a deferred event, never from inside the caller's call.
 *
 * Memory per connection: this struct (~10 KiB: a reply being parsed, the
 * failure report), the bufferevent's buffers (input capped by a read high
 * watermark, output refilled from the body only below BODY_OUT_LOWAT), one
 * 64 KiB chunk buffer while a file body is sent, and one smtp_reply per
 * recipient during a transaction.
 */
#include "delivery/smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

/* Unread input held per connection. Replies are consumed as they arrive,
 * so this only bounds a peer that floods us; beyond it TCP flow control
 * keeps the rest in the kernel. */
#define CLIENT_INPUT_HIGHWAT (64 * 1024)
/* Body read size (pread from the spool file, or a slice of memory). */
#define BODY_CHUNK (64 * 1024)
/* The body is refilled when the output drops below this: output stays
 * under BODY_OUT_LOWAT + 2 * BODY_CHUNK (dot-stuffing and CRLF repair at
 * most double a chunk), whatever the message size. */
#define BODY_OUT_LOWAT (64 * 1024)

/* Defaults for zero parameters (RFC 5321 4.5.3.2 and our connect limit). */
#define DEF_CONNECT_MS    (30 * 1000)
#define DEF_COMMAND_MS    (300 * 1000)
#define DEF_DATA_BLOCK_MS (180 * 1000)
#define DEF_DATA_DONE_MS  (600 * 1000)

enum cstate {
    CS_CONNECT,
    CS_BANNER,
    CS_EHLO,
    CS_HELO,
    CS_STARTTLS,
    CS_TLS,
    CS_READY,
    CS_MAIL,
    CS_RCPT,
    CS_DATA,
    CS_BODY,
    CS_DOT,
    CS_EMPTYDOT,
    CS_RSET,
    CS_QUIT,
    CS__COUNT
};

/* Which deadline runs in a state. */
enum ctimeout { TMO_NONE, TMO_CONNECT, TMO_COMMAND, TMO_DATA_BLOCK, TMO_DATA_DONE };

enum cdefer { DEFER_NONE, DEFER_FAIL, DEFER_LOCAL_ERROR };

/* The transaction in progress (between send() and done()). */
struct tx {
    bool active;
    bool pipelined;
    bool probe; /* stop after RCPT (smtp_client_msg.probe) */
    char *sender;
    char **rcpts;
    size_t nrcpts;
    size_t rcpt_sent;    /* RCPT commands written (unpipelined: one at a time) */
    size_t rcpt_replied; /* RCPT replies received */
    size_t rcpt_ok;
    bool mail_ok;
    struct smtp_client_result res;
    struct smtp_reply *rcpt_replies;
    /* body source and the dot-stuffing state carried across chunks */
    const char *body;
    uint64_t body_size;
    int body_fd;
    uint64_t off;
    char *chunk;
    bool line_start; /* the next body octet starts a line */
    bool pending_cr; /* the last octet was CR (already sent as CRLF) */
};

struct smtp_client {
    struct event_base *base;
    struct smtp_client_params p;
    char *helo_name;
    char *host;
    struct sockaddr_storage addr;
    const struct smtp_client_ops *ops;
    void *arg;

    int fd; /* ours until a TLS bufferevent takes it over (then -1) */
    struct event *conn_ev;
    struct bufferevent *bev;
    struct event *timer;
    struct event *defer;
    enum cdefer deferred;

    enum cstate state;
    struct smtp_reply reply; /* the reply being read */
    struct smtp_client_info info;
    struct smtp_client_error err; /* a failure waiting in the deferred event */
    struct tx tx;
    unsigned quit_skip; /* replies still due before the one to QUIT */

    unsigned busy; /* frames on the stack that use the client */
    bool dead;     /* no more callbacks; freed when busy drops to 0 */
    struct timespec t_start, t_connected;
};

typedef void (*reply_fn)(struct smtp_client *c);

struct state_desc {
    const char *name;
    enum smtp_client_stage stage; /* reported by failed() in this state */
    enum ctimeout timeout;
    reply_fn on_reply; /* NULL: a reply here is unexpected */
};

static void on_banner(struct smtp_client *c);
static void on_ehlo(struct smtp_client *c);
static void on_helo(struct smtp_client *c);
static void on_starttls(struct smtp_client *c);
static void on_mail(struct smtp_client *c);
static void on_rcpt(struct smtp_client *c);
static void on_data(struct smtp_client *c);
static void on_dot(struct smtp_client *c);
static void on_emptydot(struct smtp_client *c);
static void on_rset(struct smtp_client *c);
static void on_quit(struct smtp_client *c);

static const struct state_desc client_states[CS__COUNT] = {
    [CS_CONNECT] = {"connect", SC_CONNECT, TMO_CONNECT, NULL},
    [CS_BANNER] = {"banner", SC_BANNER, TMO_COMMAND, on_banner},
    [CS_EHLO] = {"EHLO", SC_EHLO, TMO_COMMAND, on_ehlo},
    [CS_HELO] = {"HELO", SC_EHLO, TMO_COMMAND, on_helo},
    [CS_STARTTLS] = {"STARTTLS", SC_STARTTLS, TMO_COMMAND, on_starttls},
    [CS_TLS] = {"TLS handshake", SC_TLS, TMO_COMMAND, NULL},
    /* an idle connection that breaks cannot take the next MAIL */
    [CS_READY] = {"idle", SC_MAIL, TMO_NONE, NULL},
    [CS_MAIL] = {"MAIL", SC_MAIL, TMO_COMMAND, on_mail},
    [CS_RCPT] = {"RCPT", SC_RCPT, TMO_COMMAND, on_rcpt},
    [CS_DATA] = {"DATA", SC_DATA, TMO_COMMAND, on_data},
    /* the server speaks during the body only to end the session */
    [CS_BODY] = {"message body", SC_DOT, TMO_DATA_BLOCK, NULL},
    [CS_DOT] = {"end of data", SC_DOT, TMO_DATA_DONE, on_dot},
    [CS_EMPTYDOT] = {"end of empty data", SC_DOT, TMO_DATA_DONE, on_emptydot},
    [CS_RSET] = {"RSET", SC_MAIL, TMO_COMMAND, on_rset},
    [CS_QUIT] = {"QUIT", SC_QUIT, TMO_COMMAND, on_quit},
};

static void client_read_lines(struct smtp_client *c);
static void client_on_read(struct bufferevent *bev, void *arg);
static void client_on_write(struct bufferevent *bev, void *arg);
static void client_on_event(struct bufferevent *bev, short what, void *arg);

/* ---- helpers ------------------------------------------------------------- */

static uint64_t ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
    return ms < 0 ? 0 : (uint64_t)ms;
}

static struct timeval ms_to_tv(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static uint64_t timeout_ms(const struct smtp_client *c, enum ctimeout t)
{
    switch (t) {
    case TMO_CONNECT:
        return c->p.connect_timeout_ms ? c->p.connect_timeout_ms : DEF_CONNECT_MS;
    case TMO_COMMAND:
        return c->p.command_timeout_ms ? c->p.command_timeout_ms : DEF_COMMAND_MS;
    case TMO_DATA_BLOCK:
        return c->p.data_block_timeout_ms ? c->p.data_block_timeout_ms : DEF_DATA_BLOCK_MS;
    case TMO_DATA_DONE:
        return c->p.data_done_timeout_ms ? c->p.data_done_timeout_ms : DEF_DATA_DONE_MS;
    case TMO_NONE:
        break;
    }
    return 0;
}

/* Enter a state and start its reply deadline (the body's limit is the
 * bufferevent write timeout, see body_start()). */
static void client_set_state(struct smtp_client *c, enum cstate st)
{
    enum ctimeout t = client_states[st].timeout;
    c->state = st;
    evtimer_del(c->timer);
    if (t == TMO_COMMAND || t == TMO_DATA_DONE || t == TMO_CONNECT) {
        struct timeval tv = ms_to_tv(timeout_ms(c, t));
        evtimer_add(c->timer, &tv);
    }
}

/* Queue one command line; every command goes through here, so every line
 * ends in CRLF and none carries a bare CR or LF (arguments are checked in
 * smtp_client_send and come from our configuration otherwise). */
static void client_cmd(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void client_cmd(struct smtp_client *c, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

static void tx_clear(struct tx *tx)
{
    if (tx->rcpts != NULL) {
        for (size_t i = 0; i < tx->nrcpts; i++)
            free(tx->rcpts[i]);
    }
    free(tx->rcpts);
    free(tx->sender);
    free(tx->rcpt_replies);
    free(tx->chunk);
    if (tx->body_fd >= 0)
        close(tx->body_fd);
    memset(tx, 0, sizeof(*tx));
    tx->body_fd = -1;
}

static void client_free(struct smtp_client *c)
{
    tx_clear(&c->tx);
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    if (c->fd >= 0)
        close(c->fd);
    if (c->conn_ev != NULL)
        event_free(c->conn_ev);
    event_free(c->timer);
    event_free(c->defer);
    free(c->helo_name);
    free(c->host);
    free(c);
}

/* Stop all I/O: after this only client_release() touches the client. */
static void client_kill(struct smtp_client *c)
{
    c->dead = true;
    evtimer_del(c->timer);
    event_del(c->defer);
    if (c->conn_ev != NULL)
        event_del(c->conn_ev);
    if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
}

/* End of a libevent callback: free the client if it died and nobody else
 * holds it. */
static void client_release(struct smtp_client *c)
{
    if (c->busy == 0 && c->dead)
        client_free(c);
}

/* ---- reporting ------------------------------------------------------------ */

static void err_init(struct smtp_client *c, struct smtp_client_error *e)
{
    memset(e, 0, sizeof(*e));
    e->stage = client_states[c->state].stage;
    smtp_reply_init(&e->reply);
    e->masked_banner = c->info.masked_banner;
    e->masked_ehlo = c->info.masked_ehlo;
}

/* Report a failure once and die. */
static void client_fail(struct smtp_client *c, const struct smtp_client_error *e)
{
    if (c->dead)
        return;
    client_kill(c);
    c->busy++;
    c->ops->failed(c->arg, c, e);
    c->busy--;
}

static void fail_reply(struct smtp_client *c, bool malformed, const char *detail)
{
    struct smtp_client_error *e = xmalloc(sizeof(*e));
    err_init(c, e);
    e->reply = c->reply;
    e->malformed = malformed;
    snprintf(e->detail, sizeof(e->detail), "%s", detail);
    client_fail(c, e);
    free(e);
}

static void fail_sys(struct smtp_client *c, int sys_errno, bool timeout, bool eof,
                     const char *detail)
{
    struct smtp_client_error *e = xmalloc(sizeof(*e));
    err_init(c, e);
    /* a reply cut by the loss is still worth logging */
    if (c->reply.nlines > 0)
        e->reply = c->reply;
    e->sys_errno = sys_errno;
    e->timeout = timeout;
    e->eof = eof;
    snprintf(e->detail, sizeof(e->detail), "%s", detail);
    client_fail(c, e);
    free(e);
}

/* TLS demanded by policy, and this peer cannot give it. */
static void fail_tls_required(struct smtp_client *c, bool with_reply, const char *detail)
{
    struct smtp_client_error *e = xmalloc(sizeof(*e));
    err_init(c, e);
    e->stage = SC_STARTTLS;
    e->tls_required = true;
    if (with_reply)
        e->reply = c->reply;
    snprintf(e->detail, sizeof(e->detail), "%s", detail);
    client_fail(c, e);
    free(e);
}

/* Call ready(); false if the client died meanwhile. */
static bool notify_ready(struct smtp_client *c)
{
    if (c->dead)
        return false;
    client_set_state(c, CS_READY);
    c->busy++;
    c->ops->ready(c->arg, c);
    c->busy--;
    return !c->dead;
}

/* Report the transaction's outcome and forget it. The state is already
 * the one that follows (READY or RSET), so the callback may quit(). */
static void notify_done(struct smtp_client *c)
{
    if (c->dead)
        return;
    c->busy++;
    c->ops->done(c->arg, c, &c->tx.res);
    c->busy--;
    tx_clear(&c->tx);
}

/* ---- deferred reports ----------------------------------------------------- */

static void client_on_defer(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    enum cdefer kind = c->deferred;
    c->deferred = DEFER_NONE;
    c->busy++;
    if (kind == DEFER_FAIL) {
        client_fail(c, &c->err);
    } else if (kind == DEFER_LOCAL_ERROR) {
        notify_done(c);
        if (!c->dead && c->state == CS_READY)
            notify_ready(c);
    }
    c->busy--;
    client_release(c);
}

static void defer(struct smtp_client *c, enum cdefer kind)
{
    c->deferred = kind;
    event_active(c->defer, EV_TIMEOUT, 1);
}

/* ---- connect ---------------------------------------------------------------- */

static void client_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    char detail[96];
    c->busy++;
    if (c->state == CS_QUIT) {
        client_kill(c);
    } else {
        snprintf(detail, sizeof(detail), "timeout waiting for %s", client_states[c->state].name);
        fail_sys(c, ETIMEDOUT, true, false, detail);
    }
    c->busy--;
    client_release(c);
}

static void client_on_connect(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_client *c = arg;
    int soerr = 0;
    socklen_t len = sizeof(soerr);

    c->busy++;
    if (what & EV_TIMEOUT) {
        fail_sys(c, ETIMEDOUT, true, false, "timeout connecting");
        goto out;
    }
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr != 0) {
        fail_sys(c, soerr, false, false, strerror(soerr));
        goto out;
    }
    c->info.connect_ms = ms_since(&c->t_start);
    clock_gettime(CLOCK_MONOTONIC, &c->t_connected);
    event_free(c->conn_ev);
    c->conn_ev = NULL;
    c->bev = bufferevent_socket_new(c->base, c->fd, 0);
    if (c->bev == NULL) {
        fail_sys(c, ENOMEM, false, false, "bufferevent_socket_new failed");
        goto out;
    }
    bufferevent_setcb(c->bev, client_on_read, client_on_write, client_on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CLIENT_INPUT_HIGHWAT);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    client_set_state(c, CS_BANNER);
out:
    c->busy--;
    client_release(c);
}

/* ---- session setup: banner, EHLO/HELO, STARTTLS ------------------------------ */

static void send_ehlo(struct smtp_client *c)
{
    client_cmd(c, "EHLO %s", c->helo_name);
    client_set_state(c, CS_EHLO);
}

static void on_banner(struct smtp_client *c)
{
    snprintf(c->info.banner, sizeof(c->info.banner), "%s", smtp_reply_line(&c->reply, 0));
    c->info.masked_banner = smtp_reply_masked(&c->reply);
    c->info.banner_ms = ms_since(&c->t_connected);
    /* RFC 5321 3.1: anything but 220 (554 "no service", 421, a 452 from
     * a full server) means this host will not take mail now: fail over. */
    if (c->reply.code != 220) {
        fail_reply(c, false, "unexpected SMTP response to the greeting");
        return;
    }
    send_ehlo(c);
}

/* EHLO keywords we act on, by the info flag they set. */
static const struct {
    const char *name;
    size_t off;
} ehlo_keywords[] = {
    {"PIPELINING", offsetof(struct smtp_client_info, pipelining)},
    {"STARTTLS", offsetof(struct smtp_client_info, starttls)},
    {"SMTPUTF8", offsetof(struct smtp_client_info, smtputf8)},
    {"8BITMIME", offsetof(struct smtp_client_info, eightbitmime)},
    {"CHUNKING", offsetof(struct smtp_client_info, chunking)},
    {"DSN", offsetof(struct smtp_client_info, dsn)},
};

static void info_clear_keywords(struct smtp_client_info *in)
{
    in->esmtp = false;
    in->pipelining = in->starttls = in->smtputf8 = in->eightbitmime = false;
    in->chunking = in->dsn = in->size_offered = false;
    in->max_size = 0;
}

/* "SIZE" or "SIZE n" (RFC 1870): n = 0 or absent means no fixed limit; a
 * number too large for us is no limit either. */
static void ehlo_parse_size(struct smtp_client_info *in, const char *arg)
{
    uint64_t v = 0;
    in->size_offered = true;
    in->max_size = 0;
    while (*arg == ' ')
        arg++;
    for (; *arg >= '0' && *arg <= '9'; arg++) {
        if (v > (UINT64_MAX - 9) / 10)
            return;
        v = v * 10 + (uint64_t)(*arg - '0');
    }
    in->max_size = v;
}

static void ehlo_parse_line(struct smtp_client_info *in, const char *line)
{
    size_t n = strcspn(line, " ");
    if (n == 4 && strncasecmp(line, "SIZE", 4) == 0) {
        ehlo_parse_size(in, line + 4);
        return;
    }
    for (size_t k = 0; k < sizeof(ehlo_keywords) / sizeof(ehlo_keywords[0]); k++) {
        if (strlen(ehlo_keywords[k].name) == n && strncasecmp(line, ehlo_keywords[k].name, n) == 0)
            *(bool *)((char *)in + ehlo_keywords[k].off) = true;
    }
}

/* After EHLO/HELO succeeded: STARTTLS when policy and peer allow, else
 * the connection is ready (or unusable when TLS is required). */
static void session_established(struct smtp_client *c)
{
    if (c->p.tls == SMTP_TLS_NONE || c->info.tls_active) {
        notify_ready(c);
        return;
    }
    if (c->info.starttls && c->p.tls_ctx != NULL) {
        client_cmd(c, "STARTTLS");
        client_set_state(c, CS_STARTTLS);
        return;
    }
    if (c->p.tls == SMTP_TLS_REQUIRED) {
        fail_tls_required(c, false,
                          c->info.masked_ehlo ? "STARTTLS not offered (EHLO reply masked)"
                                              : "STARTTLS not offered");
        return;
    }
    notify_ready(c); /* PREFERRED: plain text it is (RFC 7435) */
}

static void on_ehlo(struct smtp_client *c)
{
    if (c->reply.code / 100 == 5) {
        /* RFC 5321 3.2: a server that rejects EHLO may still take HELO */
        client_cmd(c, "HELO %s", c->helo_name);
        client_set_state(c, CS_HELO);
        return;
    }
    if (c->reply.code / 100 != 2) {
        /* 4xx: the host is busy or broken now; the route fails over */
        fail_reply(c, false, "unexpected SMTP response to EHLO");
        return;
    }
    info_clear_keywords(&c->info);
    c->info.esmtp = true;
    c->info.ehlo[0] = '\0';
    for (size_t i = 1; i < c->reply.nlines; i++) {
        size_t n = strlen(c->info.ehlo);
        ehlo_parse_line(&c->info, smtp_reply_line(&c->reply, i));
        snprintf(c->info.ehlo + n, sizeof(c->info.ehlo) - n, "%s%s", n ? ", " : "",
                 smtp_reply_line(&c->reply, i));
    }
    c->info.masked_ehlo = smtp_reply_masked(&c->reply);
    session_established(c);
}

static void on_helo(struct smtp_client *c)
{
    if (c->reply.code / 100 != 2) {
        fail_reply(c, false, "unexpected SMTP response to HELO");
        return;
    }
    info_clear_keywords(&c->info);
    session_established(c);
}

/* True when host is an address literal, which SNI must not carry (RFC
 * 6066 3). */
static bool host_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Replace the plain bufferevent by a TLS one on the same socket. */
static void tls_start(struct smtp_client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t junk = evbuffer_get_length(in);
    SSL *ssl;

    /* CVE-2021-38371 class: what the peer (or a man in the middle) sent
     * after its 220, before the handshake, must never be read as if it
     * came over TLS. It goes with the plain bufferevent, unread. */
    c->info.starttls_discarded += junk;
    bufferevent_free(c->bev);
    c->bev = NULL;
    client_set_state(c, CS_TLS);
    ssl = SSL_new(c->p.tls_ctx);
    if (ssl == NULL) {
        fail_sys(c, 0, false, false, "TLS: SSL_new failed");
        ERR_clear_error();
        return;
    }
    if (c->host != NULL && c->host[0] != '\0' && !host_is_ip(c->host))
        SSL_set_tlsext_host_name(ssl, c->host);
    /* CLOSE_ON_FREE: the TLS bufferevent now owns the socket and the SSL */
    c->bev = bufferevent_openssl_socket_new(c->base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        /* only on allocation failure; libevent versions differ on whether
         * the SSL is freed here, so it is left (a leak beats a double free) */
        fail_sys(c, ENOMEM, false, false, "TLS: bufferevent_openssl_socket_new failed");
        return;
    }
    c->fd = -1;
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, client_on_read, client_on_write, client_on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CLIENT_INPUT_HIGHWAT);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void on_starttls(struct smtp_client *c)
{
    if (c->reply.code == 220) {
        tls_start(c);
        return;
    }
    if (c->p.tls == SMTP_TLS_REQUIRED) {
        fail_tls_required(c, true, "STARTTLS refused");
        return;
    }
    /* PREFERRED: a refused STARTTLS leaves the session as it was (RFC 3207
     * 4: the server stays in plain text) */
    notify_ready(c);
}

/* Handshake done: RFC 3207 4.2, forget everything learnt in plain text
 * and say EHLO again. */
static void tls_done(struct smtp_client *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    c->info.tls_active = true;
    snprintf(c->info.tls_version, sizeof(c->info.tls_version), "%s", SSL_get_version(ssl));
    snprintf(c->info.tls_cipher, sizeof(c->info.tls_cipher), "%s", SSL_get_cipher_name(ssl));
    info_clear_keywords(&c->info);
    send_ehlo(c);
}

/* ---- transaction ------------------------------------------------------------- */

static void send_rcpt(struct smtp_client *c)
{
    client_cmd(c, "RCPT TO:<%s>", c->tx.rcpts[c->tx.rcpt_sent]);
    c->tx.rcpt_sent++;
}

/* The transaction ends without a message: report it, then RSET so the
 * connection can take the next one. done() comes right after the RSET is
 * queued, so the outcome is not lost if the RSET fails. */
static void tx_abandon(struct smtp_client *c, enum smtp_client_stage stage)
{
    c->tx.res.stage = stage;
    client_cmd(c, "RSET");
    client_set_state(c, CS_RSET);
    notify_done(c);
}

/* Where a transaction that ended without a message stopped. */
static enum smtp_client_stage tx_fail_stage(const struct tx *tx)
{
    if (!tx->mail_ok)
        return SC_MAIL;
    if (tx->rcpt_ok == 0)
        return SC_RCPT;
    return SC_DATA;
}

static void on_mail(struct smtp_client *c)
{
    struct tx *tx = &c->tx;
    tx->res.mail = c->reply;
    tx->mail_ok = c->reply.code / 100 == 2;
    if (tx->pipelined) {
        client_set_state(c, CS_RCPT); /* the RCPT replies are due anyway */
        return;
    }
    if (!tx->mail_ok) {
        tx_abandon(c, SC_MAIL);
        return;
    }
    send_rcpt(c);
    client_set_state(c, CS_RCPT);
}

static void on_rcpt(struct smtp_client *c)
{
    struct tx *tx = &c->tx;
    tx->rcpt_replies[tx->rcpt_replied] = c->reply;
    /* RFC 5321 3.6.1: 251 "will forward" is an acceptance too */
    if (tx->mail_ok && c->reply.code / 100 == 2)
        tx->rcpt_ok++;
    tx->rcpt_replied++;
    if (tx->rcpt_replied < tx->nrcpts) {
        if (!tx->pipelined)
            send_rcpt(c);
        client_set_state(c, CS_RCPT);
        return;
    }
    if (!tx->pipelined) {
        if (tx->rcpt_ok == 0 || tx->probe) {
            tx_abandon(c, SC_RCPT);
            return;
        }
        client_cmd(c, "DATA");
    }
    client_set_state(c, CS_DATA);
}

static void body_start(struct smtp_client *c);

static void on_data(struct smtp_client *c)
{
    struct tx *tx = &c->tx;
    tx->res.data = c->reply;
    if (c->reply.code == 354 && tx->mail_ok && tx->rcpt_ok > 0) {
        body_start(c);
        return;
    }
    if (c->reply.code == 354) {
        /* RFC 2920 3.1: DATA accepted although nothing else was; end the
         * empty message with "." alone, the server will refuse it. */
        tx->res.stage = tx_fail_stage(tx);
        client_cmd(c, ".");
        client_set_state(c, CS_EMPTYDOT);
        return;
    }
    tx_abandon(c, tx_fail_stage(tx));
}

static void on_emptydot(struct smtp_client *c)
{
    client_set_state(c, CS_READY);
    notify_done(c);
    if (!c->dead && c->state == CS_READY)
        notify_ready(c);
}

static void on_dot(struct smtp_client *c)
{
    struct bufferevent *bev = c->bev;
    c->tx.res.stage = SC_DOT;
    c->tx.res.data = c->reply;
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    client_set_state(c, CS_READY);
    notify_done(c);
    if (!c->dead && c->state == CS_READY)
        notify_ready(c);
}

static void on_rset(struct smtp_client *c)
{
    if (c->reply.code / 100 != 2) {
        fail_reply(c, false, "unexpected SMTP response to RSET");
        return;
    }
    notify_ready(c);
}

static void on_quit(struct smtp_client *c)
{
    if (c->quit_skip > 0) {
        c->quit_skip--;
        return;
    }
    client_kill(c);
}

/* ---- body ---------------------------------------------------------------------- */

/* Dot-stuff (RFC 5321 4.5.2) and repair line ends of one chunk into out:
 * a bare CR or bare LF becomes CRLF (RFC 5321 2.3.8: no bare CR or LF on
 * the wire), a line that starts with '.' gets another. State carries over
 * chunk boundaries (a CRLF or a line start may straddle two chunks). */
static void body_stuff(struct tx *tx, struct evbuffer *out, const char *p, size_t n)
{
    struct evbuffer_iovec v;
    size_t k = 0;
    /* each input octet yields at most two output octets */
    if (evbuffer_reserve_space(out, (ev_ssize_t)(2 * n), &v, 1) < 1)
        abort();
    char *d = v.iov_base;
    for (size_t i = 0; i < n; i++) {
        char b = p[i];
        if (b == '\r') {
            d[k++] = '\r';
            d[k++] = '\n';
            tx->pending_cr = true;
            tx->line_start = true;
            continue;
        }
        if (b == '\n') {
            if (!tx->pending_cr) {
                d[k++] = '\r';
                d[k++] = '\n';
            }
            tx->pending_cr = false;
            tx->line_start = true;
            continue;
        }
        tx->pending_cr = false;
        if (tx->line_start && b == '.')
            d[k++] = '.';
        tx->line_start = false;
        d[k++] = b;
    }
    v.iov_len = k;
    evbuffer_commit_space(out, &v, 1);
}

/* Next piece of the body: its length, 0 at the end, -1 on a read error. */
static ssize_t body_next(struct tx *tx, const char **p)
{
    ssize_t n;
    if (tx->body != NULL) {
        uint64_t left = tx->body_size - tx->off;
        n = (ssize_t)(left < BODY_CHUNK ? left : BODY_CHUNK);
        *p = tx->body + tx->off;
    } else if (tx->body_fd >= 0) {
        if (tx->chunk == NULL)
            tx->chunk = xmalloc(BODY_CHUNK);
        do
            n = pread(tx->body_fd, tx->chunk, BODY_CHUNK, (off_t)tx->off);
        while (n < 0 && errno == EINTR);
        *p = tx->chunk;
    } else {
        n = 0;
    }
    if (n > 0)
        tx->off += (uint64_t)n;
    return n;
}

/* Close the body: the last line gets its CRLF, then "." (RFC 5321 4.1.1.4). */
static void body_finish(struct smtp_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!c->tx.line_start)
        evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, ".\r\n", 3);
    client_set_state(c, CS_DOT);
}

/* Fill the output up to BODY_OUT_LOWAT; the write callback calls again as
 * it drains, so the body never sits whole in memory. */
static void body_pump(struct smtp_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (c->state == CS_BODY && evbuffer_get_length(out) < BODY_OUT_LOWAT) {
        const char *p = NULL;
        ssize_t n = body_next(&c->tx, &p);
        if (n < 0) {
            int e = errno;
            struct smtp_client_error *err = xmalloc(sizeof(*err));
            err_init(c, err);
            err->sys_errno = e;
            err->local_io = true;
            snprintf(err->detail, sizeof(err->detail), "reading the message body: %s", strerror(e));
            /* the message is half sent: only closing keeps it undelivered */
            client_fail(c, err);
            free(err);
            return;
        }
        if (n == 0) {
            body_finish(c);
            return;
        }
        body_stuff(&c->tx, out, p, (size_t)n);
    }
}

static void body_start(struct smtp_client *c)
{
    struct timeval tv = ms_to_tv(timeout_ms(c, TMO_DATA_BLOCK));
    client_set_state(c, CS_BODY);
    c->tx.line_start = true;
    c->tx.pending_cr = false;
    /* the write timeout restarts on each write that makes progress */
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_setwatermark(c->bev, EV_WRITE, BODY_OUT_LOWAT, 0);
    body_pump(c);
}

/* ---- input ----------------------------------------------------------------------- */

/* States in which the input is read as replies. */
static bool state_reads(enum cstate st)
{
    return st != CS_CONNECT && st != CS_TLS;
}

/* One complete reply: to the current state's handler. */
static void client_dispatch(struct smtp_client *c)
{
    reply_fn fn = client_states[c->state].on_reply;
    if (fn == NULL) {
        fail_reply(c, false,
                   c->state == CS_READY ? "unexpected SMTP response while idle"
                                        : "unexpected SMTP response");
        return;
    }
    fn(c);
}

static void client_feed_line(struct smtp_client *c, const char *line, size_t len)
{
    switch (smtp_reply_feed(&c->reply, line, len)) {
    case SMTP_REPLY_MORE:
        return;
    case SMTP_REPLY_ERROR:
        fail_reply(c, true, "malformed SMTP reply");
        return;
    case SMTP_REPLY_DONE:
        client_dispatch(c);
        if (!c->dead)
            smtp_reply_init(&c->reply);
        return;
    }
}

/* Take complete lines from the input while the state reads replies. A
 * line is at most SMTP_REPLY_LINE_MAX octets plus its CRLF; a longer one
 * is an error before any of it is copied. */
static void client_read_lines(struct smtp_client *c)
{
    char line[SMTP_REPLY_LINE_MAX + 1];
    while (!c->dead && state_reads(c->state)) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        size_t eol_len = 0;
        struct evbuffer_ptr pos = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        if (pos.pos < 0) {
            /* no LF yet: at most the longest line and its CR may wait */
            if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX + 1)
                fail_reply(c, true, "reply line too long");
            return;
        }
        if ((size_t)pos.pos > SMTP_REPLY_LINE_MAX) {
            fail_reply(c, true, "reply line too long");
            return;
        }
        evbuffer_remove(in, line, (size_t)pos.pos);
        evbuffer_drain(in, eol_len);
        client_feed_line(c, line, (size_t)pos.pos);
    }
}

static void client_on_read(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;
    c->busy++;
    client_read_lines(c);
    c->busy--;
    client_release(c);
}

static void client_on_write(struct bufferevent *bev, void *arg)
{
    struct smtp_client *c = arg;
    c->busy++;
    if (!c->dead && c->state == CS_BODY)
        body_pump(c);
    c->busy--;
    client_release(c);
}

/* Describe a TLS or socket error for the failure report. */
static void describe_error(struct bufferevent *bev, int sys_errno, char *buf, size_t len)
{
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (e != 0) {
        char ebuf[120];
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
        snprintf(buf, len, "TLS: %.100s", ebuf);
    } else if (sys_errno != 0) {
        snprintf(buf, len, "%s", strerror(sys_errno));
    } else {
        snprintf(buf, len, "connection error");
    }
}

static void client_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_client *c = arg;
    int sys_errno = EVUTIL_SOCKET_ERROR();
    char detail[160];

    c->busy++;
    if (c->dead)
        goto out;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == CS_TLS)
            tls_done(c);
        goto out;
    }
    if (c->state == CS_QUIT) {
        client_kill(c); /* the peer closed first: the session is over either way */
        goto out;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(detail, sizeof(detail), "timeout sending %s", client_states[c->state].name);
        fail_sys(c, ETIMEDOUT, true, false, detail);
    } else if (what & BEV_EVENT_EOF) {
        snprintf(detail, sizeof(detail), "connection closed by peer during %s",
                 client_states[c->state].name);
        fail_sys(c, 0, false, true, detail);
    } else {
        char why[120];
        describe_error(bev, sys_errno, why, sizeof(why));
        snprintf(detail, sizeof(detail), "%.110s during %.40s", why, client_states[c->state].name);
        fail_sys(c, sys_errno, false, false, detail);
    }
    ERR_clear_error();
out:
    c->busy--;
    client_release(c);
}

/* ---- API ---------------------------------------------------------------------------- */

struct smtp_client *smtp_client_start(struct event_base *base, const struct smtp_client_params *p,
                                      const struct smtp_client_ops *ops, void *arg)
{
    struct smtp_client *c = xcalloc(1, sizeof(*c));
    c->base = base;
    c->p = *p;
    c->helo_name = xstrdup(p->helo_name ? p->helo_name : "localhost");
    c->host = xstrdup(p->host ? p->host : "");
    c->p.helo_name = c->helo_name;
    c->p.host = c->host;
    if (p->addrlen <= sizeof(c->addr))
        memcpy(&c->addr, p->addr, p->addrlen);
    c->p.addr = (const struct sockaddr *)&c->addr;
    c->ops = ops;
    c->arg = arg;
    c->fd = -1;
    c->tx.body_fd = -1;
    smtp_reply_init(&c->reply);
    c->timer = evtimer_new(base, client_on_timer, c);
    c->defer = event_new(base, -1, 0, client_on_defer, c);
    c->state = CS_CONNECT;
    clock_gettime(CLOCK_MONOTONIC, &c->t_start);

    err_init(c, &c->err);
    if (p->addrlen > sizeof(c->addr) || p->addr == NULL) {
        c->err.sys_errno = EINVAL;
        snprintf(c->err.detail, sizeof(c->err.detail), "bad address");
        defer(c, DEFER_FAIL);
        return c;
    }
    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd >= 0) {
        /* Commands are written whole (pipelined groups in one write); with
         * Nagle the final "." of a body waits ~40 ms for a delayed ACK. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (c->fd < 0 || (connect(c->fd, p->addr, p->addrlen) < 0 && errno != EINPROGRESS)) {
        /* refused or unreachable at once: still reported from the loop */
        c->err.sys_errno = errno;
        snprintf(c->err.detail, sizeof(c->err.detail), "%s", strerror(errno));
        defer(c, DEFER_FAIL);
        return c;
    }
    /* TCP binds the local end at connect() time, even in progress: the
     * address is known now, for the "New SMTP DCID ... interface" log. */
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    if (getsockname(c->fd, (struct sockaddr *)&local, &llen) == 0) {
        const void *a = local.ss_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)&local)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)&local)->sin_addr;
        inet_ntop(local.ss_family, a, c->info.local_ip, sizeof(c->info.local_ip));
    }
    c->conn_ev = event_new(base, c->fd, EV_WRITE, client_on_connect, c);
    struct timeval tv = ms_to_tv(timeout_ms(c, TMO_CONNECT));
    event_add(c->conn_ev, &tv);
    return c;
}

/* Arguments that would break the command line they go into. */
static bool arg_ok(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") == NULL && strlen(s) <= SMTP_REPLY_LINE_MAX / 2;
}

/* A transaction refused before any command: done() from the loop with a
 * synthesised reply in data. */
static void tx_local_error(struct smtp_client *c, int code, const char *enh, const char *text)
{
    c->tx.res.stage = SC_MAIL;
    c->tx.res.local_error = true;
    smtp_reply_set(&c->tx.res.data, code, enh, text);
    defer(c, DEFER_LOCAL_ERROR);
}

/* Copy the message into c->tx. */
static void tx_setup(struct tx *tx, const struct smtp_client_msg *m)
{
    tx->active = true;
    tx->sender = xstrdup(m->sender ? m->sender : "");
    tx->nrcpts = m->nrcpts;
    tx->rcpts = xcalloc(m->nrcpts, sizeof(char *));
    for (size_t i = 0; i < m->nrcpts; i++)
        tx->rcpts[i] = xstrdup(m->rcpts[i] ? m->rcpts[i] : "");
    tx->rcpt_replies = xcalloc(m->nrcpts, sizeof(struct smtp_reply));
    for (size_t i = 0; i < m->nrcpts; i++)
        smtp_reply_init(&tx->rcpt_replies[i]);
    smtp_reply_init(&tx->res.mail);
    smtp_reply_init(&tx->res.data);
    tx->res.rcpt = tx->rcpt_replies;
    tx->res.nrcpts = m->nrcpts;
    tx->body = m->body;
    tx->body_size = m->size;
    tx->body_fd = -1;
}

/* Refusals we can know without asking the peer. True if one applies. */
static bool tx_check_local(struct smtp_client *c, const struct smtp_client_msg *m)
{
    bool ok = arg_ok(c->tx.sender);
    for (size_t i = 0; i < m->nrcpts; i++)
        ok = ok && arg_ok(c->tx.rcpts[i]);
    if (!ok) {
        tx_local_error(c, 501, "5.5.2", "Envelope address unusable in an SMTP command");
        return true;
    }
    if (m->smtputf8 && !c->info.smtputf8) {
        /* RFC 6531 3.5: no downgrade, so the message cannot go here */
        tx_local_error(c, 553, "5.6.7",
                       "Remote server does not support SMTPUTF8, required by this message");
        return true;
    }
    if (c->info.size_offered && c->info.max_size > 0 && m->size > c->info.max_size) {
        /* RFC 1870 6.1: sending would only earn a 552 after the data */
        tx_local_error(c, 552, "5.3.4", "Message size exceeds fixed limit of remote server");
        return true;
    }
    if (m->body == NULL && m->body_fd >= 0) {
        c->tx.body_fd = dup(m->body_fd);
        if (c->tx.body_fd < 0) {
            tx_local_error(c, 451, "4.3.0", "Cannot read the message body");
            return true;
        }
    }
    return false;
}

void smtp_client_send(struct smtp_client *c, const struct smtp_client_msg *msg)
{
    struct tx *tx = &c->tx;
    char size[40] = "";

    /* the API contract: only from ready(), one transaction at a time */
    if (c->dead || c->state != CS_READY || tx->active || msg->nrcpts == 0)
        abort();
    tx_setup(tx, msg);
    if (tx_check_local(c, msg))
        return;
    if (c->info.size_offered)
        snprintf(size, sizeof(size), " SIZE=%llu", (unsigned long long)msg->size);
    client_cmd(c, "MAIL FROM:<%s>%s%s%s", tx->sender, size,
               msg->body_8bit && c->info.eightbitmime ? " BODY=8BITMIME" : "",
               msg->smtputf8 ? " SMTPUTF8" : "");
    tx->probe = msg->probe;
    tx->pipelined = c->info.pipelining && !msg->probe;
    if (tx->pipelined) {
        /* RFC 2920: MAIL, every RCPT and DATA in one group */
        while (tx->rcpt_sent < tx->nrcpts)
            send_rcpt(c);
        client_cmd(c, "DATA");
    }
    client_set_state(c, CS_MAIL);
}

void smtp_client_quit(struct smtp_client *c)
{
    if (c->dead)
        return;
    if (c->state != CS_READY && c->state != CS_RSET) {
        smtp_client_abort(c);
        return;
    }
    /* QUIT may follow an RSET whose reply is still due (RFC 2920 3.1) */
    c->quit_skip = c->state == CS_RSET ? 1 : 0;
    client_cmd(c, "QUIT");
    client_set_state(c, CS_QUIT);
}

void smtp_client_abort(struct smtp_client *c)
{
    if (c->dead)
        return;
    client_kill(c);
    client_release(c);
}

const struct smtp_client_info *smtp_client_info(const struct smtp_client *c)
{
    return &c->info;
}

SSL_CTX *smtp_client_tls_ctx_new(char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        unsigned long e = ERR_get_error();
        char ebuf[160] = "unknown error";
        if (e != 0)
            ERR_error_string_n(e, ebuf, sizeof(ebuf));
        snprintf(err, errlen, "SSL_CTX_new: %s", ebuf);
        ERR_clear_error();
        return NULL;
    }
    /* RFC 8996: nothing below TLS 1.2 */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* RFC 7435 opportunistic TLS: an unverifiable certificate is still
     * better than plain text, so it is not checked (the scheduler may log
     * it); renegotiation only adds attack surface. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}
