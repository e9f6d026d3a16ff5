/*
 * cmd_trace: `trace IP [SENDER [RECIPIENT]] [--listener NAME]`, the
 * connection decision of a listener for a client address without a
 * connection (gateway-behaviour.md section 4).
 *
 * The same two halves a session runs (smtp_server.c sess_policy_start and
 * sess_policy_decided): policy_lookup_start() on the daemon's resolver
 * with the listener's DNS list zones, the reputation settings and the
 * connection_dns deadline, then policy_decide() on the listener's host
 * access table. With a sender and a recipient, the same parser
 * (smtp_path_parse) and the same relay decision (smtp_server_rcpt_relay)
 * as MAIL and RCPT, after the delayed rejection of a REJECT policy.
 * Asynchronous like cmd_dns.c: the lookup's callback completes the
 * request; cancel() drops the lookup if the client goes first. The
 * listener is referenced meanwhile, so a reload cannot free it.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "policy/lookup.h"
#include "policy/policy.h"
#include "queue/scheduler.h"
#include "smtp/listener.h"
#include "smtp/smtp_addr.h"
#include "smtp/smtp_server.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct trace_job {
    struct ctl_ctx *ctx;
    uint64_t call_id;
    struct listener *lst; /* referenced */
    struct policy_lookup *lookup;
    char *sender, *rcpt; /* as given, or NULL */
};

static void job_free(struct trace_job *job)
{
    listener_unref(job->lst);
    free(job->sender);
    free(job->rcpt);
    free(job);
}

static void job_cancel(void *arg)
{
    struct trace_job *job = arg;
    policy_lookup_cancel(job->lookup);
    job_free(job);
}

static json_t *ms_json(double ms)
{
    return ms < 0 ? json_null() : json_real(ms);
}

static const char *ptr_status_name(enum ptr_status p)
{
    switch (p) {
    case PTR_OK:
        return "ok";
    case PTR_MISSING:
        return "missing";
    case PTR_TEMPFAIL:
        return "temporary failure";
    default:
        return "not looked up";
    }
}

static json_t *lookups_json(const struct config *cfg, const struct policy_facts *f)
{
    json_t *lists = json_array();
    char sbrs[32];
    for (size_t i = 0; i < f->ndnslists; i++)
        json_array_append_new(lists,
                              json_pack("{s:s, s:b, s:b}", "zone", f->dnslists[i].zone, "answered",
                                        f->dnslists[i].answered, "listed", f->dnslists[i].listed));
    /* exactly as the "ICID ... SBRS" log line shows it */
    if (f->rfc1918 && !cfg->reputation.lookup_private)
        snprintf(sbrs, sizeof(sbrs), "rfc1918");
    else if (f->sbrs_none)
        snprintf(sbrs, sizeof(sbrs), "None");
    else
        snprintf(sbrs, sizeof(sbrs), "%.1f", f->sbrs);
    return json_pack("{s:{s:s, s:s?, s:b, s:o}, s:{s:o}, s:{s:s, s:o, s:o, s:o}, s:o}", "ptr",
                     "status", ptr_status_name(f->ptr), "name", f->ptr_name[0] ? f->ptr_name : NULL,
                     "verified", f->verified, "ms", ms_json(f->ms_ptr), "forward", "ms",
                     ms_json(f->ms_forward), "reputation", "sbrs", sbrs, "score",
                     f->sbrs_none ? json_null() : json_real(f->sbrs), "ms",
                     ms_json(f->ms_reputation), "lists", lists, "total_ms", ms_json(f->ms_total));
}

static const char *tls_name(enum policy_tls t)
{
    return t == POLICY_TLS_REQUIRED ? "required" : t == POLICY_TLS_PREFERRED ? "preferred" : "off";
}

/* The effective parameters, with the listener's hard caps applied as the
 * session applies them. */
static json_t *params_json(const struct config *cfg, const struct listener *l,
                           const struct policy_facts *f, const struct policy_decision *d)
{
    const struct policy_params *p = &d->params;
    char banner[512], text[200], reject[200];
    const char *host = p->banner_hostname[0] ? p->banner_hostname : l->hostname;
    uint64_t size = cfg->limits.max_message_size < p->max_message_size
                        ? cfg->limits.max_message_size
                        : p->max_message_size;
    uint64_t rcpts = cfg->limits.max_recipients < p->max_recipients_per_message
                         ? cfg->limits.max_recipients
                         : p->max_recipients_per_message;
    policy_expand_banner(p->banner_text, f, d->group, text, sizeof(text));
    policy_expand_banner(p->reject_text, f, d->group, reject, sizeof(reject));
    if (p->access == ACCESS_TCPREFUSE)
        snprintf(banner, sizeof(banner), "(none: the connection is closed)");
    else if (p->access == ACCESS_REJECT && !p->reject_at_rcpt)
        snprintf(banner, sizeof(banner), "%u %s %s", p->reject_code, host, reject);
    else
        snprintf(banner, sizeof(banner), "%u %s %s", p->banner_code, host, text);
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:b}", "max_message_size",
                     (json_int_t)size, "max_concurrent_connections",
                     (json_int_t)p->max_concurrent_connections, "max_messages_per_connection",
                     (json_int_t)p->max_messages_per_connection, "max_recipients_per_message",
                     (json_int_t)rcpts, "max_recipients_per_hour",
                     (json_int_t)p->max_recipients_per_hour, "banner", banner, "tls",
                     tls_name(p->tls), "reject_at_rcpt", p->reject_at_rcpt);
}

/* "<addr>" unless the operator already wrote the brackets. */
static enum smtp_addr_status parse_addr(const char *s, unsigned flags, struct smtp_path *out)
{
    char buf[SMTP_PATH_MAX + 8];
    if (s[0] == '<')
        return smtp_path_parse(s, strlen(s), flags, out);
    int n = snprintf(buf, sizeof(buf), "<%s>", s);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return SMTP_ADDR_TOO_LONG;
    return smtp_path_parse(buf, (size_t)n, flags, out);
}

static json_t *envelope_json(const struct config *cfg, const struct trace_job *job,
                             const struct policy_decision *d)
{
    struct smtp_path addr;
    const struct policy_params *p = &d->params;
    json_t *out = json_object();
    bool connects =
        p->access != ACCESS_TCPREFUSE && !(p->access == ACCESS_REJECT && !p->reject_at_rcpt);
    if (job->sender != NULL) {
        enum smtp_addr_status st = parse_addr(job->sender, SMTP_ADDR_ALLOW_NULL, &addr);
        json_object_set_new(
            out, "sender",
            json_pack("{s:s, s:b, s:s}", "address", st == SMTP_ADDR_OK ? addr.mailbox : job->sender,
                      "accepted", connects && st == SMTP_ADDR_OK, "reason",
                      !connects            ? "the connection is refused"
                      : st == SMTP_ADDR_OK ? "250 2.1.0 Sender OK"
                                           : "501 5.1.7 Bad sender address syntax"));
    }
    if (job->rcpt != NULL) {
        enum smtp_addr_status st = parse_addr(job->rcpt, SMTP_ADDR_ALLOW_POSTMASTER, &addr);
        char reason[400];
        bool ok = false;
        if (!connects) {
            snprintf(reason, sizeof(reason), "the connection is refused");
        } else if (st != SMTP_ADDR_OK) {
            snprintf(reason, sizeof(reason), "501 5.1.3 Bad recipient address syntax");
        } else if (p->access == ACCESS_REJECT) {
            snprintf(reason, sizeof(reason), "%u 5.7.1 (delayed rejection by policy %s)",
                     p->reject_code, p->name);
        } else {
            enum smtp_relay_verdict v = smtp_server_rcpt_relay(cfg, (int)p->access, &addr);
            ok = v == SMTP_RELAY_OK;
            if (ok)
                snprintf(reason, sizeof(reason), "250 2.1.5 Recipient OK (%s)",
                         p->access == ACCESS_RELAY ? "RELAY policy: any domain" : "relay domain");
            else
                snprintf(reason, sizeof(reason), "554 5.7.1 Relay access denied (%s)",
                         smtp_relay_verdict_text(v));
        }
        json_object_set_new(out, "recipient",
                            json_pack("{s:s, s:b, s:s}", "address",
                                      st == SMTP_ADDR_OK ? addr.mailbox : job->rcpt, "accepted", ok,
                                      "reason", reason));
    }
    return out;
}

static void trace_done(void *arg, const struct policy_facts *f)
{
    struct trace_job *job = arg;
    const struct config *cfg = scheduler_config(job->ctx->sched);
    struct policy_decision d;
    job->lookup = NULL;
    policy_decide(job->lst->hat, f, &d);
    json_t *result = json_pack(
        "{s:s, s:s, s:o, s:{s:s?, s:s, s:s, s:s}, s:o, s:o}", "listener", job->lst->name, "ip",
        f->ip, "lookups", lookups_json(cfg, f), "decision", "group", d.group, "member", d.member,
        "policy", d.params.name, "access", policy_access_name(d.params.access), "params",
        params_json(cfg, job->lst, f, &d), "envelope", envelope_json(cfg, job, &d));
    control_complete(job->ctx->ctl, job->call_id, result, NULL);
    job_free(job);
}

enum ctl_status ctl_cmd_trace(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *ip, *sender, *rcpt, *lname;
    unsigned char buf[sizeof(struct in6_addr)];
    const char *zones[POLICY_MAX_DNSLISTS];
    if (!ctl_arg_string(call, "ip", &ip) || !ctl_arg_string(call, "sender", &sender) ||
        !ctl_arg_string(call, "recipient", &rcpt) || !ctl_arg_string(call, "listener", &lname))
        return CTL_ERROR;
    if (ip == NULL || (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1))
        return ctl_error(call, "argument 'ip' must be an IPv4 or IPv6 address");
    if (rcpt != NULL && sender == NULL)
        return ctl_error(call, "a recipient needs a sender (use <> for the null sender)");
    struct listener *l = ctx->listeners ? listener_set_find(ctx->listeners, lname) : NULL;
    if (l == NULL)
        return ctl_error(call, lname ? "no listener called '%.64s'" : "no listener%.0s",
                         lname ? lname : "");
    struct trace_job *job = xcalloc(1, sizeof(*job));
    job->ctx = ctx;
    job->call_id = call->id;
    job->lst = listener_ref(l);
    job->sender = sender ? xstrdup(sender) : NULL;
    job->rcpt = rcpt ? xstrdup(rcpt) : NULL;
    size_t nz = policy_table_dnslists(l->hat, zones, POLICY_MAX_DNSLISTS);
    struct policy_lookup_params p = {
        .reputation = &ctx->cfg->reputation,
        .zones = zones,
        .nzones = nz,
        .deadline_ms = ctx->cfg->connection_dns_deadline,
    };
    job->lookup = policy_lookup_start(ctx->base, ctx->resolver, ip, &p, trace_done, job);
    if (job->lookup == NULL) {
        job_free(job);
        return ctl_error(call, "cannot look up '%.64s'", ip);
    }
    call->async = job;
    call->cancel = job_cancel;
    return CTL_PENDING;
}
