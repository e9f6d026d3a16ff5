/*
 * outbound: one connection's life, from host selection to QUIT.
 *
 * States of a connection (struct conn):
 *   RESOLVE   looking up the destination's hosts: the SMTP route's hosts
 *             (names resolved to A/AAAA), or MX records (then each MX
 *             host's A/AAAA), or the domain's own A/AAAA (no MX, RFC 5321
 *             5.1 implicit MX)
 *   CONNECT   trying candidates in order through smtp_client
 *   READY     an smtp_client is ready: take a batch, send it
 *   SENDING   a transaction is in progress
 *
 * Host order (seed 003, gateway-behaviour.md section 3): candidates sorted
 * by priority (route) or preference (MX), lowest first. Equal priorities of
 * a route are rotated per connection (round robin); equal MX preferences
 * are shuffled (RFC 5321 5.1). A candidate that refuses the connection,
 * times out, drops it, or answers 4xx to the banner, EHLO or MAIL is
 * failed over: the same batch goes to the next candidate. Only when every
 * candidate failed are the destination's recipients deferred, and the host
 * marked down.
 *
 * Results: a recipient's RCPT reply decides it (2xx: wait for the data
 * reply, 4xx: deferred, 5xx: bounced); then the reply after "." decides
 * every recipient still accepted. A /dev/null route drops without a
 * connection. DNS: NXDOMAIN and null MX (RFC 7505) bounce at once ("DNS
 * Hard Bounce"); SERVFAIL or timeout defers.
 */
#include "delivery/outbound.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"
#include "delivery/smtp_client.h"
#include "dns/resolver.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_status.h"

/* Candidates per connection: routes and MX sets beyond this are cut. */
#define OB_MAX_CANDS 32
/* Recipients in one transaction: RFC 5321 4.5.3.1.8 requires servers to
 * take 100; the destination control may lower it. */
#define OB_MAX_BATCH 1000

enum conn_state { C_RESOLVE, C_CONNECT, C_READY, C_SENDING };

/* Why a recipient failed, rendered twice: the appliance log shape
 * (('550', ['5.1.1 ...'])) and the plain SMTP reply ("550 5.1.1 ...") that
 * DSNs (RFC 3464 Diagnostic-Code), the spool and hoststatus carry. */
struct why {
    char status[16];
    char log[720];
    char plain[720];
};

struct cand {
    char host[256];
    char ip[INET6_ADDRSTRLEN];
    uint16_t port;
    uint32_t prio;
    struct sockaddr_storage sa;
    socklen_t salen;
};

/* A host name being resolved for the candidate list. */
struct lookup {
    struct conn *c;
    char host[256];
    uint16_t port;
    uint32_t prio;
    enum dns_type type;
    uint64_t id;
};

struct conn {
    struct outbound *ob;
    struct dest *d;
    struct conn *prev, *next;
    enum conn_state st;
    bool connecting; /* counted in d->connecting */
    uint64_t dcid;
    struct cand cands[OB_MAX_CANDS];
    size_t ncands, ci;
    struct lookup *lookups;
    size_t nlookups, lookups_left;
    uint64_t mx_id;
    bool by_mx; /* candidates come from MX records: shuffle equal preferences */
    struct smtp_client *cl;
    struct q_rcpt *batch[OB_MAX_BATCH];
    size_t nbatch;
    struct spool_body body;
    bool body_open;
    unsigned msgs;
    char local_ip[46]; /* our end of the current connection */
    /* why the last candidate failed, for the deferral of the recipients */
    struct why fail;
};

struct outbound {
    struct scheduler *s;
    SSL_CTX *tls;
    struct conn *conns;
};

static void conn_try_next(struct conn *c);
static void conn_free(struct conn *c);

static int64_t ob_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static struct config *ob_cfg(struct conn *c)
{
    return scheduler_config(c->ob->s);
}

/* "[0, 1, 2]" */
static void rid_list(struct q_rcpt **rs, size_t n, const bool *pick, char *out, size_t len)
{
    size_t o = 0;
    bool first = true;
    o += (size_t)snprintf(out + o, len - o, "[");
    for (size_t i = 0; i < n && o < len; i++) {
        if (pick && !pick[i])
            continue;
        o += (size_t)snprintf(out + o, len - o, "%s%u", first ? "" : ", ", rs[i]->rid);
        first = false;
    }
    if (o < len)
        snprintf(out + o, len - o, "]");
}

/* ---- giving recipients back ------------------------------------------ */

static void give_back(struct conn *c, struct q_rcpt *r, enum q_outcome out, enum q_hard_kind kind,
                      const char *status, const char *diag, const char *remote)
{
    struct q_result res = {out, kind, status, diag, remote};
    scheduler_result(c->ob->s, r, &res);
}

static void why_text(struct why *w, const char *status, const char *text)
{
    snprintf(w->status, sizeof(w->status), "%s", status);
    snprintf(w->log, sizeof(w->log), "%s", text);
    snprintf(w->plain, sizeof(w->plain), "%s", text);
}

/* From a reply; the status defaults by class when the peer gave none. */
static void why_reply(struct why *w, const struct smtp_reply *r)
{
    if (r->enhanced[0])
        snprintf(w->status, sizeof(w->status), "%s", r->enhanced);
    else
        snprintf(w->status, sizeof(w->status), "%c.0.0", r->code >= 500 ? '5' : '4');
    smtp_reply_format(r, w->log, sizeof(w->log));
    smtp_reply_plain(r, w->plain, sizeof(w->plain));
}

/* Log and return one recipient as deferred or bounced. */
static void rcpt_fail(struct conn *c, struct q_rcpt *r, bool hard, enum q_hard_kind kind,
                      const struct why *w, const char *remote)
{
    /* w->log is ours, or a reply already escaped by smtp_reply_format() */
    maillog(LOG_INFO, "%s: DCID %llu MID %llu to RID %u - %s - %s %s", hard ? "Bounced" : "Delayed",
            (unsigned long long)c->dcid, (unsigned long long)r->msg->mid, r->rid, w->status,
            smtp_status_text(w->status), w->log);
    if (hard) {
        snprintf(c->d->last_5xx, sizeof(c->d->last_5xx), "%s", w->plain);
        c->d->last_5xx_ms = ob_now_ms();
    } else {
        snprintf(c->d->last_4xx, sizeof(c->d->last_4xx), "%s", w->plain);
        c->d->last_4xx_ms = ob_now_ms();
    }
    give_back(c, r, hard ? Q_BOUNCED : Q_DEFERRED, kind, w->status, w->plain, remote);
}

/* Defer or bounce the current batch and every ready recipient of the
 * destination with the same reason (host down, DNS failure). */
static void fail_all(struct conn *c, bool hard, enum q_hard_kind kind, const struct why *w)
{
    struct scheduler *s = c->ob->s;
    struct q_rcpt *rs[64];
    size_t n;
    for (size_t i = 0; i < c->nbatch; i++)
        rcpt_fail(c, c->batch[i], hard, kind, w, NULL);
    c->nbatch = 0;
    while ((n = scheduler_take(s, c->d, rs, 64)) > 0)
        for (size_t i = 0; i < n; i++)
            rcpt_fail(c, rs[i], hard, kind, w, NULL);
}

/* fail_all with a reason of our own words. */
static void fail_all_text(struct conn *c, bool hard, enum q_hard_kind kind, const char *status,
                          const char *text)
{
    struct why w;
    why_text(&w, status, text);
    fail_all(c, hard, kind, &w);
}

/* ---- candidates --------------------------------------------------------- */

static bool cand_from_ip(struct cand *k, const char *host, const char *ip, uint16_t port,
                         uint32_t prio)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&k->sa;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&k->sa;
    memset(k, 0, sizeof(*k));
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        k->salen = sizeof(*sin);
    } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        k->salen = sizeof(*sin6);
    } else {
        return false;
    }
    snprintf(k->host, sizeof(k->host), "%s", host);
    snprintf(k->ip, sizeof(k->ip), "%s", ip);
    k->port = port;
    k->prio = prio;
    return true;
}

static void cand_add(struct conn *c, const char *host, const char *ip, uint16_t port, uint32_t prio)
{
    if (c->ncands < OB_MAX_CANDS && cand_from_ip(&c->cands[c->ncands], host, ip, port, prio))
        c->ncands++;
}

static int cand_cmp(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return x->prio < y->prio ? -1 : x->prio > y->prio;
}

/* Sort by priority (stable for equal ones: insertion order), then rotate
 * each group of equal priority: by the destination's round-robin counter
 * for routes, randomly for MX (RFC 5321 5.1). */
static void cands_order(struct conn *c, bool shuffle)
{
    struct cand tmp[OB_MAX_CANDS];
    /* insertion sort keeps equal priorities in order (qsort is not stable) */
    for (size_t i = 1; i < c->ncands; i++) {
        struct cand k = c->cands[i];
        size_t j = i;
        while (j > 0 && cand_cmp(&c->cands[j - 1], &k) > 0) {
            c->cands[j] = c->cands[j - 1];
            j--;
        }
        c->cands[j] = k;
    }
    for (size_t i = 0; i < c->ncands;) {
        size_t j = i;
        while (j < c->ncands && c->cands[j].prio == c->cands[i].prio)
            j++;
        size_t n = j - i;
        size_t rot = shuffle ? (size_t)random() % n : c->d->rr % n;
        for (size_t k = 0; k < n; k++)
            tmp[k] = c->cands[i + (k + rot) % n];
        memcpy(&c->cands[i], tmp, n * sizeof(tmp[0]));
        i = j;
    }
    c->d->rr++;
    c->d->nips = 0;
    for (size_t i = 0; i < c->ncands && c->d->nips < DEST_MAX_IPS; i++)
        snprintf(c->d->ips[c->d->nips++], sizeof(c->d->ips[0]), "%s", c->cands[i].ip);
}

/* ---- DNS ---------------------------------------------------------------- */

static void lookups_done(struct conn *c, bool shuffle)
{
    for (size_t i = 0; i < c->nlookups; i++)
        c->lookups[i].id = 0;
    if (c->ncands == 0) {
        fail_all_text(c, false, Q_HARD_OTHER, "4.4.4",
                      "no address found for any destination host of this domain");
        c->d->state = HOST_DOWN;
        conn_free(c);
        return;
    }
    cands_order(c, shuffle);
    c->st = C_CONNECT;
    c->ci = 0;
    conn_try_next(c);
}

static void on_addr(void *arg, const struct dns_answer *ans)
{
    struct lookup *lk = arg;
    struct conn *c = lk->c;
    lk->id = 0;
    if (ans->status == DNS_OK)
        for (size_t i = 0; i < ans->n; i++)
            cand_add(c, lk->host, ans->rr[i].addr_str, lk->port, lk->prio);
    if (--c->lookups_left == 0)
        lookups_done(c, c->by_mx);
}

/* Resolve host (A and AAAA) or take it as a literal. */
static void host_add(struct conn *c, const char *host, uint16_t port, uint32_t prio)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
        cand_add(c, host, host, port, prio);
        return;
    }
    static const enum dns_type types[] = {DNS_A, DNS_AAAA};
    for (size_t t = 0; t < 2; t++) {
        struct lookup *lk = &c->lookups[c->nlookups++];
        *lk = (struct lookup){.c = c, .port = port, .prio = prio, .type = types[t]};
        snprintf(lk->host, sizeof(lk->host), "%s", host);
        c->lookups_left++;
    }
}

static void lookups_start(struct conn *c)
{
    struct resolver *res = scheduler_resolver(c->ob->s);
    /* snapshot: callbacks never run from inside resolver_query */
    size_t n = c->nlookups;
    for (size_t i = 0; i < n; i++)
        c->lookups[i].id =
            resolver_query(res, c->lookups[i].host, c->lookups[i].type, on_addr, &c->lookups[i]);
}

static void on_mx(void *arg, const struct dns_answer *ans)
{
    struct conn *c = arg;
    struct dest *d = c->d;
    char diag[400];
    c->mx_id = 0;
    switch (ans->status) {
    case DNS_OK:
        break;
    case DNS_NODATA:
        /* RFC 5321 5.1: no MX, the domain itself is the implicit MX */
        d->nmx = 0;
        c->by_mx = true;
        c->lookups = xcalloc(2, sizeof(*c->lookups));
        host_add(c, d->domain, 25, 0);
        lookups_start(c);
        return;
    case DNS_NXDOMAIN:
        snprintf(diag, sizeof(diag), "DNS Hard Bounce: domain %s does not exist", d->domain);
        fail_all_text(c, true, Q_HARD_DNS, "5.1.2", diag);
        conn_free(c);
        return;
    default:
        snprintf(diag, sizeof(diag), "DNS temporary failure looking up MX for %s: %s", d->domain,
                 dns_status_str(ans->status));
        fail_all_text(c, false, Q_HARD_OTHER, "4.4.3", diag);
        conn_free(c);
        return;
    }
    /* RFC 7505: a single MX "." means the domain accepts no mail */
    if (ans->n == 1 && strcmp(ans->rr[0].host, ".") == 0) {
        snprintf(diag, sizeof(diag), "DNS Hard Bounce: domain %s has a null MX (RFC 7505)",
                 d->domain);
        fail_all_text(c, true, Q_HARD_DNS, "5.1.10", diag);
        conn_free(c);
        return;
    }
    d->nmx = 0;
    c->by_mx = true;
    d->mx_expiry_ms = ob_now_ms() + (int64_t)ans->ttl * 1000;
    c->lookups = xcalloc(2 * (ans->n ? ans->n : 1), sizeof(*c->lookups));
    for (size_t i = 0; i < ans->n; i++) {
        if (strcmp(ans->rr[i].host, ".") == 0)
            continue;
        if (d->nmx < DEST_MAX_MX) {
            snprintf(d->mx[d->nmx].host, sizeof(d->mx[0].host), "%s", ans->rr[i].host);
            d->mx[d->nmx++].pref = ans->rr[i].pref;
        }
        host_add(c, ans->rr[i].host, 25, ans->rr[i].pref);
    }
    if (c->lookups_left == 0)
        lookups_done(c, true);
    else
        lookups_start(c);
}

/* Find the hosts of the destination (route or MX). */
static void conn_resolve(struct conn *c)
{
    const struct cfg_route *rt = config_route_for(ob_cfg(c), c->d->domain);
    uint16_t rport;
    const char *redirect = scheduler_redirect(c->ob->s, &rport);
    if (redirect != NULL) {
        /* redirectrecipients: one host for every destination */
        c->lookups = xcalloc(2, sizeof(*c->lookups));
        host_add(c, redirect, rport, 0);
        if (c->lookups_left == 0)
            lookups_done(c, false);
        else
            lookups_start(c);
        return;
    }
    if (rt == NULL || rt->kind == ROUTE_USEDNS) {
        c->mx_id = resolver_query(scheduler_resolver(c->ob->s), c->d->domain, DNS_MX, on_mx, c);
        return;
    }
    c->lookups = xcalloc(2 * rt->nhosts, sizeof(*c->lookups));
    for (size_t i = 0; i < rt->nhosts; i++)
        host_add(c, rt->hosts[i].host, rt->hosts[i].port, rt->hosts[i].priority);
    if (c->lookups_left == 0)
        lookups_done(c, false);
    else
        lookups_start(c);
}

/* ---- the SMTP client's callbacks ------------------------------------------ */

static const char *stage_name(enum smtp_client_stage st)
{
    static const char *const names[] = {
        [SC_CONNECT] = "connect",   [SC_BANNER] = "banner",     [SC_EHLO] = "EHLO",
        [SC_STARTTLS] = "STARTTLS", [SC_TLS] = "TLS handshake", [SC_MAIL] = "MAIL",
        [SC_RCPT] = "RCPT",         [SC_DATA] = "DATA",         [SC_DOT] = "end of data",
        [SC_QUIT] = "QUIT"};
    return names[st];
}

/* Log a failed candidate the appliance way and remember why (for the
 * deferral if it was the last one). stage prefixes the details. */
static void conn_error(struct conn *c, const char *stage, const struct why *w, const char *reason)
{
    const struct cand *k = &c->cands[c->ci];
    /* w->log is ours, or a reply already escaped by smtp_reply_format() */
    maillog(LOG_INFO,
            "Connection Error: DCID %llu domain: %s IP: %s port: %u details: %s%s%s interface: %s "
            "reason: %s",
            (unsigned long long)c->dcid, c->d->domain, k->ip, k->port, stage, stage[0] ? " " : "",
            w->log, c->local_ip[0] ? c->local_ip : "0.0.0.0", reason);
    c->fail = *w;
    if (w->status[0] == '4') {
        snprintf(c->d->last_4xx, sizeof(c->d->last_4xx), "%s", w->plain);
        c->d->last_4xx_ms = ob_now_ms();
    }
}

static void on_failed(void *arg, struct smtp_client *cl, const struct smtp_client_error *e)
{
    struct conn *c = arg;
    char details[300];
    const char *reason = "network error", *stage = stage_name(e->stage);
    struct why w;
    c->cl = NULL;
    if (c->body_open) {
        spool_body_close(&c->body);
        c->body_open = false;
    }
    if (e->reply.code != 0) {
        why_reply(&w, &e->reply);
        /* a refusal at banner/EHLO is about this host now: fail over, and
         * if it was the last host, retry later (4xx) whatever its class */
        w.status[0] = '4';
        reason = "unexpected SMTP response";
    } else {
        /* "timeout at banner", "Connection refused at connect" */
        if (e->tls_required) {
            snprintf(details, sizeof(details), "TLS required but not offered at %s", stage);
            reason = "TLS policy";
        } else if (e->timeout) {
            snprintf(details, sizeof(details), "timeout at %s", stage);
        } else {
            snprintf(details, sizeof(details), "%s at %s",
                     e->detail[0]   ? e->detail
                     : e->sys_errno ? strerror(e->sys_errno)
                                    : "connection lost",
                     stage);
        }
        why_text(&w, e->timeout ? "4.4.1" : "4.4.2", details);
        stage = "";
    }
    if (e->masked_banner || e->masked_ehlo)
        reason = e->masked_banner ? "masked banner: likely an SMTP-inspecting firewall"
                                  : "masked EHLO: likely an SMTP-inspecting firewall";
    conn_error(c, stage, &w, reason);
    c->ci++;
    conn_try_next(c);
}

/* Open the body and start a transaction for the current batch. Returns
 * false if the connection had to be closed (c is freed). */
static bool conn_send(struct conn *c)
{
    struct q_msg *m = c->batch[0]->msg;
    const char *rcpts[OB_MAX_BATCH];
    char rids[256];
    if (spool_body_open(scheduler_spool(c->ob->s), m->mid, &c->body) < 0) {
        struct why w;
        why_text(&w, "4.3.0", "local error: message body unreadable");
        for (size_t i = 0; i < c->nbatch; i++)
            rcpt_fail(c, c->batch[i], false, Q_HARD_OTHER, &w, NULL);
        c->nbatch = 0;
        smtp_client_quit(c->cl);
        c->cl = NULL;
        conn_free(c);
        return false;
    }
    c->body_open = true;
    for (size_t i = 0; i < c->nbatch; i++)
        rcpts[i] = c->batch[i]->addr;
    struct smtp_client_msg msg = {
        .sender = m->sender,
        .rcpts = rcpts,
        .nrcpts = c->nbatch,
        .smtputf8 = (m->flags & SPOOL_F_SMTPUTF8) != 0,
        .body_8bit = (m->flags & SPOOL_F_8BITMIME) != 0,
        .size = c->body.size,
        .body = c->body.data,
        .body_fd = c->body.data ? -1 : c->body.fd,
    };
    rid_list(c->batch, c->nbatch, NULL, rids, sizeof(rids));
    maillog(LOG_INFO, "Delivery start DCID %llu MID %llu to RID %s", (unsigned long long)c->dcid,
            (unsigned long long)m->mid, rids);
    c->st = C_SENDING;
    smtp_client_send(c->cl, &msg);
    return true;
}

static void on_ready(void *arg, struct smtp_client *cl)
{
    struct conn *c = arg;
    const struct cfg_dest_control *dc = config_dest_control_for(ob_cfg(c), c->d->domain);
    if (c->connecting) {
        const struct smtp_client_info *info = smtp_client_info(cl);
        c->connecting = false;
        c->d->connecting--;
        c->d->state = HOST_UP;
        /* delivered or not, the operator should know what sits between us
         * and the peer (seed 001: ASA "inspect esmtp") */
        if (info->masked_banner || info->masked_ehlo)
            maillog(LOG_WARNING,
                    "DCID %llu %s%s%s from %s: likely an SMTP-inspecting firewall on the path",
                    (unsigned long long)c->dcid, info->masked_banner ? "masked banner" : "",
                    info->masked_banner && info->masked_ehlo ? " and " : "",
                    info->masked_ehlo ? "masked EHLO keywords" : "", c->cands[c->ci].ip);
        if (info->starttls_discarded > 0)
            maillog(LOG_WARNING,
                    "DCID %llu discarded %zu bytes the peer sent after its 220 to STARTTLS",
                    (unsigned long long)c->dcid, info->starttls_discarded);
    }
    c->st = C_READY;
    if (c->nbatch == 0 && c->msgs < dc->max_messages_per_connection) {
        size_t max = dc->max_recipients_per_message < OB_MAX_BATCH ? dc->max_recipients_per_message
                                                                   : OB_MAX_BATCH;
        c->nbatch = scheduler_take(c->ob->s, c->d, c->batch, max);
    }
    if (c->nbatch == 0) {
        smtp_client_quit(cl);
        c->cl = NULL;
        conn_free(c);
        return;
    }
    /* more work waiting: open the next connection (slow start) */
    if (conn_send(c))
        scheduler_kick(c->ob->s, c->d);
}

static void on_done(void *arg, struct smtp_client *cl, const struct smtp_client_result *res)
{
    struct conn *c = arg;
    struct q_msg *m = c->batch[0]->msg;
    char rids[256];
    struct why w;
    bool delivered[OB_MAX_BATCH] = {false};
    size_t ndelivered = 0;
    const char *remote = c->cands[c->ci].host;

    spool_body_close(&c->body);
    c->body_open = false;
    c->msgs++;
    /* 4xx to MAIL: this host cannot take mail now; the batch fails over */
    if (res->stage == SC_MAIL && res->mail.code >= 400 && res->mail.code < 500) {
        why_reply(&w, &res->mail);
        conn_error(c, "MAIL", &w, "unexpected SMTP response");
        smtp_client_quit(cl);
        c->cl = NULL;
        c->ci++;
        conn_try_next(c);
        return;
    }
    for (size_t i = 0; i < c->nbatch; i++) {
        struct q_rcpt *r = c->batch[i];
        const struct smtp_reply *rep;
        if (res->local_error || res->stage == SC_MAIL)
            rep = res->local_error ? &res->data : &res->mail;
        else if (res->rcpt[i].code < 200 || res->rcpt[i].code >= 300)
            rep = &res->rcpt[i];
        else
            rep = &res->data;
        if (rep->code >= 200 && rep->code < 300) {
            delivered[i] = true;
            ndelivered++;
            continue;
        }
        why_reply(&w, rep);
        rcpt_fail(c, r, rep->code >= 500, Q_HARD_5XX, &w, remote);
    }
    if (ndelivered > 0) {
        char esc[700];
        rid_list(c->batch, c->nbatch, delivered, rids, sizeof(rids));
        maillog(LOG_INFO, "Message done DCID %llu MID %llu to RID %s", (unsigned long long)c->dcid,
                (unsigned long long)m->mid, rids);
        const char *line = smtp_reply_line(&res->data, 0);
        char resp[600];
        snprintf(resp, sizeof(resp), "%s", line ? line : "");
        maillog(LOG_INFO, "MID %llu RID %s Response '%s'", (unsigned long long)m->mid, rids,
                log_escape(esc, sizeof(esc), resp, strlen(resp)));
        for (size_t i = 0; i < c->nbatch; i++)
            if (delivered[i])
                give_back(c, c->batch[i], Q_DELIVERED, Q_HARD_OTHER, "2.0.0", resp, remote);
    }
    c->nbatch = 0;
    c->st = C_READY; /* the client calls ready() next */
}

static const struct smtp_client_ops client_ops = {on_ready, on_done, on_failed};

/* Connect to the next candidate, or give up on the destination. */
static void conn_try_next(struct conn *c)
{
    struct config *cfg = ob_cfg(c);
    if (c->ci >= c->ncands) {
        c->d->state = HOST_DOWN;
        if (c->fail.status[0] == '\0')
            why_text(&c->fail, "4.4.1", "no destination host could be reached");
        fail_all(c, false, Q_HARD_OTHER, &c->fail);
        conn_free(c);
        return;
    }
    const struct cand *k = &c->cands[c->ci];
    const struct cfg_dest_control *dc = config_dest_control_for(cfg, c->d->domain);
    c->dcid = spool_next_id(scheduler_spool(c->ob->s), SPOOL_ID_DCID);
    struct smtp_client_params p = {
        .dcid = c->dcid,
        .helo_name = cfg->delivery.helo_name,
        .host = k->host,
        .addr = (const struct sockaddr *)&k->sa,
        .addrlen = k->salen,
        .tls = dc->tls == CFG_TLS_NONE       ? SMTP_TLS_NONE
               : dc->tls == CFG_TLS_REQUIRED ? SMTP_TLS_REQUIRED
                                             : SMTP_TLS_PREFERRED,
        .tls_ctx = c->ob->tls,
        .connect_timeout_ms = cfg->delivery.connect_timeout,
        .command_timeout_ms = cfg->delivery.command_timeout,
        .data_block_timeout_ms = cfg->delivery.data_block_timeout,
        .data_done_timeout_ms = cfg->delivery.data_done_timeout,
    };
    c->st = C_CONNECT;
    c->cl = smtp_client_start(scheduler_base(c->ob->s), &p, &client_ops, c);
    snprintf(c->local_ip, sizeof(c->local_ip), "%s", smtp_client_info(c->cl)->local_ip);
    maillog(LOG_INFO, "New SMTP DCID %llu interface %s address %s port %u",
            (unsigned long long)c->dcid, c->local_ip[0] ? c->local_ip : "0.0.0.0", k->ip, k->port);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void conn_free(struct conn *c)
{
    struct outbound *ob = c->ob;
    struct dest *d = c->d;
    struct resolver *res = scheduler_resolver(ob->s);
    if (c->mx_id)
        resolver_cancel(res, c->mx_id);
    for (size_t i = 0; i < c->nlookups; i++)
        if (c->lookups[i].id)
            resolver_cancel(res, c->lookups[i].id);
    free(c->lookups);
    if (c->cl)
        smtp_client_abort(c->cl);
    if (c->body_open)
        spool_body_close(&c->body);
    for (size_t i = 0; i < c->nbatch; i++)
        give_back(c, c->batch[i], Q_DEFERRED, Q_HARD_OTHER, "4.3.2", "delivery interrupted", NULL);
    if (c->dcid)
        maillog(LOG_INFO, "DCID %llu close", (unsigned long long)c->dcid);
    if (c->connecting)
        d->connecting--;
    d->conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        ob->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    scheduler_kick(ob->s, d);
}

/* A /dev/null route: every ready recipient is dropped, logged. */
static void devnull_drain(struct outbound *ob, struct dest *d)
{
    struct q_rcpt *rs[64];
    size_t n;
    while ((n = scheduler_take(ob->s, d, rs, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            struct q_result res = {Q_DROPPED, Q_HARD_OTHER, "2.0.0", "dropped by route /dev/null",
                                   NULL};
            maillog(LOG_INFO, "MID %llu RID [%u] dropped: SMTP route for %s is /dev/null",
                    (unsigned long long)rs[i]->msg->mid, rs[i]->rid, d->domain);
            scheduler_result(ob->s, rs[i], &res);
        }
    }
}

int outbound_start(struct outbound *ob, struct dest *d)
{
    const struct cfg_route *rt = config_route_for(scheduler_config(ob->s), d->domain);
    uint16_t rport;
    if (rt && rt->kind == ROUTE_DEVNULL && scheduler_redirect(ob->s, &rport) == NULL) {
        devnull_drain(ob, d);
        return -1;
    }
    struct conn *c = xcalloc(1, sizeof(*c));
    c->ob = ob;
    c->d = d;
    c->connecting = true;
    d->connecting++;
    d->conns++;
    c->next = ob->conns;
    if (ob->conns)
        ob->conns->prev = c;
    ob->conns = c;
    c->st = C_RESOLVE;
    conn_resolve(c);
    return 0;
}

struct outbound *outbound_new(struct scheduler *s)
{
    char err[256];
    struct outbound *ob = xcalloc(1, sizeof(*ob));
    ob->s = s;
    ob->tls = smtp_client_tls_ctx_new(err, sizeof(err));
    if (ob->tls == NULL)
        maillog(LOG_WARNING, "Outbound TLS unavailable: %s", err);
    return ob;
}

void outbound_foreach_active(struct outbound *ob, void (*fn)(void *ctx, const struct q_rcpt *r),
                             void *ctx)
{
    for (const struct conn *c = ob->conns; c != NULL; c = c->next)
        for (size_t i = 0; i < c->nbatch; i++)
            fn(ctx, c->batch[i]);
}

void outbound_abort_all(struct outbound *ob)
{
    /* conn_free kicks the destination; a stopping scheduler starts nothing */
    while (ob->conns)
        conn_free(ob->conns);
}

void outbound_free(struct outbound *ob)
{
    if (ob == NULL)
        return;
    outbound_abort_all(ob);
    if (ob->tls)
        SSL_CTX_free(ob->tls);
    free(ob);
}
