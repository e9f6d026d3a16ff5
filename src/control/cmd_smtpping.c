/*
 * cmd_smtpping: `smtpping HOST[:PORT]`, a test of a destination from the
 * gateway itself (gateway-behaviour.md sections 4 and 6).
 *
 *   1. DNS, through the daemon's resolver, each query timed: a literal IP
 *      is used as it is; a name given with a port is resolved (A and
 *      AAAA); a name without a port is first asked for MX records and, if
 *      it has some, the MX host with the lowest preference is the target
 *      (its A and AAAA are resolved), else the name itself (RFC 5321 5.1
 *      implicit MX). The first IPv4 address is used, else the first IPv6.
 *   2. The outbound engine (delivery/smtp_client) in its probe mode:
 *      connect, banner, EHLO, STARTTLS when offered (opportunistic, as
 *      delivery does), then MAIL FROM:<> and RCPT TO:<postmaster@HOST>
 *      (bare <postmaster> for an IP literal), RSET and QUIT: never DATA.
 *      Connect time, banner delay, banner text, EHLO lines, TLS version and
 *      cipher, and the MAIL and RCPT replies are reported.
 *   3. A banner or EHLO reply masked with asterisks or X's (the ASA
 *      "inspect esmtp" signature of seed 001) is flagged as a likely
 *      SMTP-inspecting firewall.
 * Asynchronous like cmd_dns.c; cancel() drops pending queries or aborts
 * the connection. The SSL_CTX is the job's own.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "delivery/smtp_client.h"
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PING_PORT_DEFAULT 25
/* Why these: an interactive command; a host that takes longer to connect
 * or answer is reported as timing out, which is itself the diagnosis. */
#define PING_CONNECT_TIMEOUT_MS 10000
#define PING_COMMAND_TIMEOUT_MS 30000
#define PING_FIREWALL                                                                              \
    "likely an SMTP-inspecting firewall (e.g. Cisco ASA inspect esmtp) between the gateway "       \
    "and this host"

enum ping_q { Q_MX, Q_A, Q_AAAA, Q__COUNT };

struct ping_job {
    struct ctl_ctx *ctx;
    uint64_t call_id;
    char host[256];   /* as given, without the port */
    char target[256]; /* the host connected to (MX host or host) */
    uint16_t port;
    bool port_given, is_ip;
    uint64_t qid[Q__COUNT];
    bool qpending[Q__COUNT];
    char addr4[INET6_ADDRSTRLEN], addr6[INET6_ADDRSTRLEN];
    json_t *dns; /* array of the answers */
    json_t *out; /* the result being built */
    struct smtp_client *client;
    SSL_CTX *tls;
    bool sent;
};

static void job_free(struct ping_job *job)
{
    json_decref(job->dns);
    json_decref(job->out);
    if (job->tls)
        SSL_CTX_free(job->tls);
    free(job);
}

static void job_cancel(void *arg)
{
    struct ping_job *job = arg;
    for (int i = 0; i < Q__COUNT; i++)
        if (job->qpending[i])
            resolver_cancel(job->ctx->resolver, job->qid[i]);
    if (job->client)
        smtp_client_abort(job->client);
    job_free(job);
}

static void job_finish(struct ping_job *job, const char *error)
{
    json_t *out = job->out;
    json_object_set_new(out, "host", json_string(job->host));
    json_object_set_new(out, "port", json_integer(job->port));
    json_object_set(out, "dns", job->dns);
    json_object_set_new(out, "error", error ? json_string(error) : json_null());
    job->out = NULL;
    control_complete(job->ctx->ctl, job->call_id, out, NULL);
    job_free(job);
}

static json_t *reply_json(const struct smtp_reply *r)
{
    char buf[600];
    if (r->code == 0)
        return json_null();
    snprintf(buf, sizeof(buf), "%d %s", r->code, r->nlines ? smtp_reply_line(r, 0) : "");
    return json_string(buf);
}

static void info_json(struct ping_job *job, const struct smtp_client_info *in, bool masked_banner,
                      bool masked_ehlo)
{
    json_t *o = job->out;
    json_object_set_new(o, "connect_ms", json_integer((json_int_t)in->connect_ms));
    json_object_set_new(o, "banner_ms",
                        in->banner[0] ? json_integer((json_int_t)in->banner_ms) : json_null());
    json_object_set_new(o, "banner", in->banner[0] ? json_string(in->banner) : json_null());
    json_object_set_new(o, "ehlo", json_string(in->ehlo));
    json_object_set_new(o, "starttls_offered", json_boolean(in->starttls || in->tls_active));
    json_object_set_new(o, "tls",
                        in->tls_active ? json_pack("{s:s, s:s}", "version", in->tls_version,
                                                   "cipher", in->tls_cipher)
                                       : json_null());
    json_object_set_new(o, "masked_banner", json_boolean(masked_banner));
    json_object_set_new(o, "masked_ehlo", json_boolean(masked_ehlo));
    json_object_set_new(o, "firewall",
                        masked_banner || masked_ehlo ? json_string(PING_FIREWALL) : json_null());
}

static void ping_ready(void *arg, struct smtp_client *c)
{
    struct ping_job *job = arg;
    char rcpt[300];
    const char *rcpts[1] = {rcpt};
    if (job->sent) { /* after the RSET: done() already quit; not reached */
        smtp_client_quit(c);
        return;
    }
    job->sent = true;
    if (job->is_ip)
        snprintf(rcpt, sizeof(rcpt), "postmaster");
    else
        snprintf(rcpt, sizeof(rcpt), "postmaster@%s", job->host);
    struct smtp_client_msg msg = {
        .sender = "", .rcpts = rcpts, .nrcpts = 1, .body_fd = -1, .probe = true};
    json_object_set_new(job->out, "rcpt_to", json_string(rcpt));
    smtp_client_send(c, &msg);
}

static void ping_done(void *arg, struct smtp_client *c, const struct smtp_client_result *res)
{
    struct ping_job *job = arg;
    const struct smtp_client_info *in = smtp_client_info(c);
    info_json(job, in, in->masked_banner, in->masked_ehlo);
    json_object_set_new(job->out, "mail", reply_json(&res->mail));
    json_object_set_new(job->out, "rcpt", res->nrcpts ? reply_json(&res->rcpt[0]) : json_null());
    job->client = NULL;
    smtp_client_quit(c);
    job_finish(job, NULL);
}

static void ping_failed(void *arg, struct smtp_client *c, const struct smtp_client_error *e)
{
    struct ping_job *job = arg;
    const struct smtp_client_info *in = smtp_client_info(c);
    char msg[400];
    static const char *const stages[] = {"connect", "banner", "EHLO", "STARTTLS",    "TLS",
                                         "MAIL",    "RCPT",   "DATA", "end of data", "QUIT"};
    info_json(job, in, e->masked_banner || in->masked_banner, e->masked_ehlo || in->masked_ehlo);
    json_object_set_new(job->out, "failed_reply", reply_json(&e->reply));
    snprintf(msg, sizeof(msg), "%s: %s%s%s", stages[e->stage], e->detail[0] ? e->detail : "failed",
             e->timeout ? " (timeout)" : "", e->sys_errno ? " (" : "");
    if (e->sys_errno)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s)", strerror(e->sys_errno));
    job->client = NULL;
    job_finish(job, msg);
}

static const struct smtp_client_ops ping_ops = {ping_ready, ping_done, ping_failed};

static void ping_connect(struct ping_job *job)
{
    struct sockaddr_storage ss;
    socklen_t len;
    const char *ip = job->addr4[0] ? job->addr4 : job->addr6;
    char err[200];
    memset(&ss, 0, sizeof(ss));
    if (job->addr4[0]) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(job->port);
        inet_pton(AF_INET, ip, &sin->sin_addr);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(job->port);
        inet_pton(AF_INET6, ip, &sin6->sin6_addr);
        len = sizeof(*sin6);
    }
    json_object_set_new(job->out, "address", json_string(ip));
    json_object_set_new(job->out, "target", json_string(job->target));
    job->tls = smtp_client_tls_ctx_new(err, sizeof(err));
    const struct config *cfg = job->ctx->cfg;
    struct smtp_client_params p = {
        .dcid = 0,
        .helo_name = cfg->delivery.helo_name ? cfg->delivery.helo_name : cfg->hostname,
        .host = job->target,
        .addr = (const struct sockaddr *)&ss,
        .addrlen = len,
        .tls = job->tls ? SMTP_TLS_PREFERRED : SMTP_TLS_NONE,
        .tls_ctx = job->tls,
        .connect_timeout_ms = PING_CONNECT_TIMEOUT_MS,
        .command_timeout_ms = PING_COMMAND_TIMEOUT_MS,
        .data_block_timeout_ms = PING_COMMAND_TIMEOUT_MS,
        .data_done_timeout_ms = PING_COMMAND_TIMEOUT_MS,
    };
    job->client = smtp_client_start(job->ctx->base, &p, &ping_ops, job);
}

static json_t *answer_json(const struct dns_answer *a)
{
    json_t *recs = json_array();
    char buf[600];
    for (size_t i = 0; i < a->n; i++) {
        if (a->type == DNS_MX)
            snprintf(buf, sizeof(buf), "%u %s", (unsigned)a->rr[i].pref, a->rr[i].host);
        else
            snprintf(buf, sizeof(buf), "%s", a->rr[i].addr_str);
        json_array_append_new(recs, json_string(buf));
    }
    return json_pack("{s:s, s:s, s:s, s:f, s:b, s:o}", "name", a->name, "type",
                     dns_type_str(a->type), "status", dns_status_str(a->status), "elapsed_ms",
                     a->elapsed_ms, "from_cache", a->from_cache, "records", recs);
}

static void ping_on_answer(void *arg, const struct dns_answer *a);

static void ping_resolve(struct ping_job *job)
{
    job->qpending[Q_A] = job->qpending[Q_AAAA] = true;
    job->qid[Q_A] = resolver_query(job->ctx->resolver, job->target, DNS_A, ping_on_answer, job);
    job->qid[Q_AAAA] =
        resolver_query(job->ctx->resolver, job->target, DNS_AAAA, ping_on_answer, job);
}

static void ping_on_answer(void *arg, const struct dns_answer *a)
{
    struct ping_job *job = arg;
    int q = Q__COUNT;
    for (int i = 0; i < Q__COUNT; i++)
        if (job->qpending[i] && job->qid[i] == a->id)
            q = i;
    if (q == Q__COUNT)
        return;
    job->qpending[q] = false;
    json_array_append_new(job->dns, answer_json(a));
    if (q == Q_MX) {
        const struct dns_rr *best = NULL;
        for (size_t i = 0; a->status == DNS_OK && i < a->n; i++)
            if (best == NULL || a->rr[i].pref < best->pref)
                best = &a->rr[i];
        if (best != NULL && strcmp(best->host, ".") == 0) {
            job_finish(job, "the domain accepts no mail (null MX, RFC 7505)");
            return;
        }
        if (best != NULL) {
            snprintf(job->target, sizeof(job->target), "%s", best->host);
            json_object_set_new(job->out, "mx", json_string(best->host));
        }
        ping_resolve(job);
        return;
    }
    if (a->status == DNS_OK && a->n > 0)
        snprintf(q == Q_A ? job->addr4 : job->addr6, INET6_ADDRSTRLEN, "%s", a->rr[0].addr_str);
    if (job->qpending[Q_A] || job->qpending[Q_AAAA])
        return;
    if (!job->addr4[0] && !job->addr6[0]) {
        job_finish(job, "no address for the host");
        return;
    }
    ping_connect(job);
}

/* "host", "host:port", "1.2.3.4:25", "[2001:db8::1]:25", "2001:db8::1". */
static bool parse_target(struct ping_job *job, const char *arg)
{
    unsigned char buf[sizeof(struct in6_addr)];
    const char *colon = strrchr(arg, ':');
    size_t hlen = strlen(arg);
    job->port = PING_PORT_DEFAULT;
    if (arg[0] == '[') {
        const char *end = strchr(arg, ']');
        if (end == NULL)
            return false;
        hlen = (size_t)(end - arg - 1);
        arg++;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] != '\0' && colon == NULL)
            return false;
    } else if (colon != NULL && strchr(arg, ':') != colon) {
        colon = NULL; /* a bare IPv6 literal */
    } else if (colon != NULL) {
        hlen = (size_t)(colon - arg);
    }
    if (colon != NULL) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end != '\0' || port < 1 || port > 65535 || colon[1] == '\0')
            return false;
        job->port = (uint16_t)port;
        job->port_given = true;
    }
    if (hlen == 0 || hlen >= sizeof(job->host))
        return false;
    memcpy(job->host, arg, hlen);
    job->host[hlen] = '\0';
    snprintf(job->target, sizeof(job->target), "%s", job->host);
    job->is_ip =
        inet_pton(AF_INET, job->host, buf) == 1 || inet_pton(AF_INET6, job->host, buf) == 1;
    if (job->is_ip)
        snprintf(strchr(job->host, ':') ? job->addr6 : job->addr4, INET6_ADDRSTRLEN, "%.45s",
                 job->host);
    return true;
}

enum ctl_status ctl_cmd_smtpping(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *host;
    if (!ctl_arg_string(call, "host", &host))
        return CTL_ERROR;
    struct ping_job *job = xcalloc(1, sizeof(*job));
    if (host == NULL || !parse_target(job, host)) {
        free(job);
        return ctl_error(call, "argument 'host' must be HOST, HOST:PORT, IP or [IPv6]:PORT");
    }
    job->ctx = ctx;
    job->call_id = call->id;
    job->dns = json_array();
    job->out = json_object();
    call->async = job;
    call->cancel = job_cancel;
    if (job->is_ip) {
        ping_connect(job);
    } else if (!job->port_given) {
        job->qpending[Q_MX] = true;
        job->qid[Q_MX] = resolver_query(ctx->resolver, job->host, DNS_MX, ping_on_answer, job);
    } else {
        ping_resolve(job);
    }
    return CTL_PENDING;
}
