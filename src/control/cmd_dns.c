/*
 * cmd_dns: `nslookup` and `dig` through the daemon's own resolver (same
 * servers, same cache as delivery), so an operator sees what the gateway
 * sees, with the time each query took.
 *
 * Both are asynchronous: the handler starts one or two resolver queries and
 * returns CTL_PENDING; the job collects the answers (matched by resolver
 * request id) and completes the control request (by control request id)
 * when the last one arrives. If the client goes away first, cancel() drops
 * the queries, so the resolver never calls back into a freed job.
 *
 *   nslookup NAME   A and AAAA          nslookup IP   PTR
 *   dig [-t TYPE] NAME  one type (A, AAAA, MX, PTR, TXT); PTR of an IP
 *                       literal asks its in-addr.arpa / ip6.arpa name
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/log.h"
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why 2: nslookup of a name asks A and AAAA; everything else asks one. */
#define DNS_JOB_MAX 2
/* Why 1024: a DNS name is at most 253 octets; this only stops absurd input
 * before it reaches the resolver, which checks names itself. */
#define DNS_NAME_ARG_MAX 1024

struct dns_job {
    struct control *ctl;
    struct resolver *resolver;
    uint64_t call_id;
    bool is_dig;
    char *name; /* as given */
    size_t nq, pending;
    uint64_t qids[DNS_JOB_MAX];
    json_t *answers[DNS_JOB_MAX];
};

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A TXT record as dig shows it: quoted, with unprintable bytes escaped. */
static json_t *txt_data(const struct dns_rr *rr)
{
    size_t len = rr->text_len * 4 + 8;
    char *esc = xmalloc(len);
    log_escape(esc + 1, len - 2, rr->text, rr->text_len);
    esc[0] = '"';
    strcat(esc, "\"");
    json_t *s = json_string(esc);
    free(esc);
    return s;
}

/* The presentation form of one record's data. */
static json_t *rr_data(enum dns_type type, const struct dns_rr *rr)
{
    char buf[600];
    switch (type) {
    case DNS_A:
    case DNS_AAAA:
        return json_string(rr->addr_str);
    case DNS_MX:
        snprintf(buf, sizeof(buf), "%u %s%s", (unsigned)rr->pref, rr->host,
                 strcmp(rr->host, ".") == 0 ? "" : ".");
        return json_string(buf);
    case DNS_PTR:
        snprintf(buf, sizeof(buf), "%s.", rr->host);
        return json_string(buf);
    case DNS_TXT:
        return txt_data(rr);
    default:
        return json_string("?");
    }
}

/* One answer as JSON: status, timing and records. */
static json_t *answer_json(const struct dns_answer *ans)
{
    json_t *records = json_array();
    for (size_t i = 0; i < ans->n; i++)
        json_array_append_new(records,
                              json_pack("{s:s, s:I, s:s, s:o}", "name", ans->name, "ttl",
                                        (json_int_t)ans->rr[i].ttl, "type", dns_type_str(ans->type),
                                        "data", rr_data(ans->type, &ans->rr[i])));
    return json_pack("{s:s, s:s, s:s, s:f, s:b, s:I, s:o}", "name", ans->name, "type",
                     dns_type_str(ans->type), "status", dns_status_str(ans->status), "elapsed_ms",
                     ans->elapsed_ms, "from_cache", ans->from_cache, "ttl", (json_int_t)ans->ttl,
                     "records", records);
}

static void job_free(struct dns_job *job)
{
    for (size_t i = 0; i < job->nq; i++)
        json_decref(job->answers[i]);
    free(job->name);
    free(job);
}

/* The client went away (or the daemon stops): drop the queries unanswered. */
static void job_cancel(void *arg)
{
    struct dns_job *job = arg;
    for (size_t i = 0; i < job->nq; i++)
        if (job->answers[i] == NULL)
            resolver_cancel(job->resolver, job->qids[i]);
    job_free(job);
}

static void job_finish(struct dns_job *job)
{
    json_t *result;
    if (job->is_dig) {
        result = job->answers[0];
        job->answers[0] = NULL;
    } else {
        json_t *list = json_array();
        for (size_t i = 0; i < job->nq; i++) {
            json_array_append_new(list, job->answers[i]);
            job->answers[i] = NULL;
        }
        result = json_pack("{s:s, s:o}", "name", job->name, "answers", list);
    }
    control_complete(job->ctl, job->call_id, result, NULL);
    job_free(job);
}

static void job_on_answer(void *arg, const struct dns_answer *ans)
{
    struct dns_job *job = arg;
    for (size_t i = 0; i < job->nq; i++) {
        if (job->qids[i] == ans->id && job->answers[i] == NULL) {
            job->answers[i] = answer_json(ans);
            job->pending--;
        }
    }
    if (job->pending == 0)
        job_finish(job);
}

static struct dns_job *job_new(struct ctl_ctx *ctx, struct ctl_call *call, const char *name,
                               bool is_dig)
{
    struct dns_job *job = xcalloc(1, sizeof(*job));
    job->ctl = ctx->ctl;
    job->resolver = ctx->resolver;
    job->call_id = call->id;
    job->is_dig = is_dig;
    job->name = xstrdup(name);
    call->async = job;
    call->cancel = job_cancel;
    return job;
}

static void job_query(struct dns_job *job, enum dns_type type, bool ptr_of_ip)
{
    size_t i = job->nq++;
    job->pending++;
    job->qids[i] = ptr_of_ip ? resolver_query_ptr(job->resolver, job->name, job_on_answer, job)
                             : resolver_query(job->resolver, job->name, type, job_on_answer, job);
}

static bool arg_name(struct ctl_call *call, const char **name)
{
    if (!ctl_arg_string(call, "name", name))
        return false;
    if (*name == NULL || **name == '\0' || strlen(*name) > DNS_NAME_ARG_MAX) {
        ctl_error(call, "argument 'name' must be a host name or an IP address");
        return false;
    }
    return true;
}

enum ctl_status ctl_cmd_nslookup(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *name;
    if (!arg_name(call, &name))
        return CTL_ERROR;
    struct dns_job *job = job_new(ctx, call, name, false);
    if (is_ip_literal(name)) {
        job_query(job, DNS_PTR, true);
    } else {
        job_query(job, DNS_A, false);
        job_query(job, DNS_AAAA, false);
    }
    return CTL_PENDING;
}

enum ctl_status ctl_cmd_dig(struct ctl_ctx *ctx, struct ctl_call *call)
{
    const char *name, *tname;
    enum dns_type type = DNS_A;
    if (!arg_name(call, &name) || !ctl_arg_string(call, "type", &tname))
        return CTL_ERROR;
    if (tname != NULL && !dns_type_from_str(tname, &type))
        return ctl_error(call, "unsupported record type '%.32s'; use A, AAAA, MX, PTR or TXT",
                         tname);
    struct dns_job *job = job_new(ctx, call, name, true);
    job_query(job, type, type == DNS_PTR && is_ip_literal(name));
    return CTL_PENDING;
}
