/*
 * scheduler: the delivery queue and its clock (see scheduler.h, queue.h).
 *
 * Flow of a recipient:
 *   scheduler_add/scheduler_load -> QR_READY on its dest -> scheduler_take
 *   lends it to an outbound connection (QR_ACTIVE) -> scheduler_result:
 *     delivered/dropped/bounced -> "finished" list -> end of loop turn:
 *        DSNs built, rows deleted in one spool transaction, objects freed
 *     deferred -> attempts+1, next attempt from the bounce profile,
 *        QR_WAITING in the retry heap (or bounced as expired)
 *   retry timer -> QR_READY again.
 *
 * Timing: one binary min-heap of waiting recipients keyed by next_ms and one
 * libevent timer armed for its top: no polling. Backoff: initial_retry,
 * doubled per attempt, capped at max_retry (bounce profile of the
 * destination). A recipient is bounced as expired when its attempts exceed
 * max_retries or its message has been queued max_queue_time.
 *
 * Grouped results: every result of one loop turn is written by one spool
 * transaction (spool_txn), committed from a flush event that runs at the
 * end of the turn; DSNs are built in that flush, before the original's
 * rows and body are deleted, and stored in the same transaction. A crash
 * before the commit makes the delivered recipients deliverable again
 * (at least once), never lost.
 */
#include "queue/scheduler.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/hmap.h"
#include "core/log.h"
#include "delivery/outbound.h"
#include "queue/bounce.h"
#include "queue/spool.h"

/* A recipient that finished, waiting for the end-of-turn flush. */
struct finished {
    struct q_rcpt *r;
    enum q_outcome outcome;
    char status[16];
    char *diagnostic;
    char *remote;
    int64_t when_ms;
    bool by_operator; /* bouncerecipients: our words in the DSN */
    struct finished *next;
};

struct scheduler {
    struct event_base *base;
    struct spool *spool;
    struct resolver *resolver;
    struct config *cfg;
    struct outbound *ob;
    struct hmap dests;
    struct q_rcpt **heap;
    size_t nheap, capheap;
    struct event *timer;
    struct event *flush_ev;
    struct spool_txn *txn;
    struct finished *finished, **finished_tail;
    bool stopping;
    /* operator commands (scheduler.h): suspenddel, redirectrecipients */
    bool suspend_all;
    struct hmap suspended; /* domain -> its own copy (char *) */
    char *redirect_host;   /* or NULL */
    uint16_t redirect_port;
};

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- retry heap ------------------------------------------------------- */

static void heap_swap(struct scheduler *s, size_t a, size_t b)
{
    struct q_rcpt *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_idx = a;
    s->heap[b]->heap_idx = b;
}

static void heap_up(struct scheduler *s, size_t i)
{
    while (i > 0 && s->heap[(i - 1) / 2]->next_ms > s->heap[i]->next_ms) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct scheduler *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && s->heap[l]->next_ms < s->heap[m]->next_ms)
            m = l;
        if (r < s->nheap && s->heap[r]->next_ms < s->heap[m]->next_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static void heap_push(struct scheduler *s, struct q_rcpt *r)
{
    xgrow((void **)&s->heap, &s->capheap, s->nheap + 1, sizeof(*s->heap));
    r->heap_idx = s->nheap;
    s->heap[s->nheap++] = r;
    heap_up(s, r->heap_idx);
}

static void heap_remove(struct scheduler *s, struct q_rcpt *r)
{
    size_t i = r->heap_idx;
    s->nheap--;
    if (i != s->nheap) {
        s->heap[i] = s->heap[s->nheap];
        s->heap[i]->heap_idx = i;
        heap_down(s, i);
        heap_up(s, i);
    }
}

static void timer_arm(struct scheduler *s)
{
    if (s->nheap == 0) {
        evtimer_del(s->timer);
        return;
    }
    int64_t wait = s->heap[0]->next_ms - now_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

/* ---- destinations ------------------------------------------------------ */

static struct dest *dest_get(struct scheduler *s, const char *domain)
{
    size_t len = strlen(domain);
    struct dest *d = hmap_get(&s->dests, domain, len);
    if (d)
        return d;
    d = xcalloc(1, sizeof(*d));
    d->domain = xstrdup(domain);
    TAILQ_INIT(&d->ready);
    hmap_put(&s->dests, domain, len, d);
    return d;
}

struct dest *scheduler_dest(struct scheduler *s, const char *domain)
{
    return hmap_get(&s->dests, domain, strlen(domain));
}

struct dest *scheduler_dest_next(struct scheduler *s, size_t *iter)
{
    void *v;
    return hmap_next(&s->dests, iter, NULL, &v) ? v : NULL;
}

static const struct cfg_bounce_profile *dest_profile(struct scheduler *s, const struct dest *d)
{
    const struct cfg_dest_control *dc = config_dest_control_for(s->cfg, d->domain);
    const struct cfg_bounce_profile *p = config_bounce_profile(s->cfg, dc->bounce_profile);
    return p ? p : &s->cfg->bounce_profiles[0];
}

static bool dest_suspended(const struct scheduler *s, const struct dest *d)
{
    return s->suspend_all || hmap_get(&s->suspended, d->domain, strlen(d->domain)) != NULL;
}

void scheduler_kick(struct scheduler *s, struct dest *d)
{
    if (s->stopping || dest_suspended(s, d))
        return;
    uint32_t limit = config_dest_control_for(s->cfg, d->domain)->max_connections;
    /* Slow start: at most one connection on its way up per destination.
     * Each one that becomes ready kicks again while work remains, so a
     * busy destination ramps up at the speed its host accepts
     * connections, and a dead host costs one connect timeout, not twenty. */
    if (d->nready > 0 && d->connecting == 0 && d->conns < limit)
        outbound_start(s->ob, d);
}

static void rcpt_make_ready(struct scheduler *s, struct q_rcpt *r)
{
    r->state = QR_READY;
    TAILQ_INSERT_TAIL(&r->dest->ready, r, link);
    r->dest->nready++;
}

/* ---- adding messages ---------------------------------------------------- */

/* The destination domain of a recipient; the bare postmaster goes to the
 * first relay domain's postmaster (RFC 5321 4.5.1 requires accepting it). */
static const char *rcpt_domain(struct scheduler *s, const char *addr, char **rewritten)
{
    const char *at = strrchr(addr, '@');
    *rewritten = NULL;
    if (at)
        return at + 1;
    const char *dom = s->cfg->nrelay_domains ? s->cfg->relay_domains[0] : s->cfg->hostname;
    if (dom[0] == '.')
        dom++;
    size_t n = strlen(addr) + strlen(dom) + 2;
    *rewritten = xmalloc(n);
    snprintf(*rewritten, n, "%s@%s", addr, dom);
    return strrchr(*rewritten, '@') + 1;
}

static struct q_msg *msg_new(const struct spool_envelope *env, uint64_t size)
{
    struct q_msg *m = xcalloc(1, sizeof(*m));
    m->mid = env->mid;
    m->sender = xstrdup(env->sender ? env->sender : "");
    m->flags = env->flags;
    m->size = size;
    m->received_ms = env->received_ms;
    m->envid = env->envid ? xstrdup(env->envid) : NULL;
    m->ret = env->ret;
    return m;
}

/* Create one recipient and queue it (ready now or waiting until next_ms);
 * returns its destination. */
static struct dest *rcpt_add(struct scheduler *s, struct q_msg *m, uint32_t rid, const char *addr,
                             const char *orcpt, unsigned notify, uint32_t attempts, int64_t next_ms)
{
    char *rewritten;
    const char *domain = rcpt_domain(s, addr, &rewritten);
    struct q_rcpt *r = xcalloc(1, sizeof(*r));
    r->msg = m;
    r->rid = rid;
    r->dest = dest_get(s, domain);
    r->addr = rewritten ? rewritten : xstrdup(addr);
    r->orcpt = orcpt ? xstrdup(orcpt) : NULL;
    r->notify = notify;
    r->attempts = attempts;
    r->next_ms = next_ms;
    m->pending++;
    if (attempts == 0)
        r->dest->nunattempted++;
    if (r->dest->oldest_ms == 0 || m->received_ms < r->dest->oldest_ms)
        r->dest->oldest_ms = m->received_ms;
    if (next_ms > now_ms()) {
        r->state = QR_WAITING;
        r->dest->nwaiting++;
        heap_push(s, r);
    } else {
        rcpt_make_ready(s, r);
    }
    return r->dest;
}

void scheduler_add(struct scheduler *s, const struct spool_envelope *env, uint64_t size,
                   char *const *rcpts, size_t nrcpts)
{
    struct q_msg *m = msg_new(env, size);
    struct dest **ds = xcalloc(nrcpts ? nrcpts : 1, sizeof(*ds));
    for (size_t i = 0; i < nrcpts; i++)
        ds[i] = rcpt_add(s, m, (uint32_t)i, rcpts[i], NULL, 0, 0, 0);
    /* kick after all recipients are queued, so one connection takes them
     * all (one transaction per message and destination) */
    for (size_t i = 0; i < nrcpts; i++)
        scheduler_kick(s, ds[i]);
    free(ds);
    timer_arm(s);
}

static void load_one(void *ctx, const struct spool_msg_rec *rec)
{
    struct scheduler *s = ctx;
    struct q_msg *m = msg_new(&rec->env, rec->size);
    for (size_t i = 0; i < rec->nrcpts; i++) {
        const struct spool_rcpt_rec *rr = &rec->rcpts[i];
        rcpt_add(s, m, rr->rid, rr->addr, rr->orcpt, rr->notify, rr->attempts, rr->next_attempt_ms);
    }
    if (m->pending == 0) {
        free(m->sender);
        free(m->envid);
        free(m);
    }
}

int scheduler_load(struct scheduler *s)
{
    int rc = spool_load(s->spool, load_one, s);
    size_t it = 0;
    struct dest *d;
    while ((d = scheduler_dest_next(s, &it)) != NULL)
        scheduler_kick(s, d);
    timer_arm(s);
    return rc;
}

/* ---- borrowing ------------------------------------------------------------- */

size_t scheduler_take(struct scheduler *s, struct dest *d, struct q_rcpt **out, size_t max)
{
    struct q_rcpt *first = TAILQ_FIRST(&d->ready), *r, *next;
    size_t n = 0;
    if (first == NULL || max == 0 || dest_suspended(s, d))
        return 0;
    for (r = first; r && n < max; r = next) {
        next = TAILQ_NEXT(r, link);
        if (r->msg != first->msg)
            continue;
        TAILQ_REMOVE(&d->ready, r, link);
        d->nready--;
        d->nactive++;
        r->state = QR_ACTIVE;
        out[n++] = r;
    }
    return n;
}

/* ---- results ------------------------------------------------------------------- */

static void flush_schedule(struct scheduler *s)
{
    if (s->txn == NULL)
        s->txn = spool_txn_new(s->spool);
    event_active(s->flush_ev, EV_TIMEOUT, 0);
}

static void format_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%a %b %e %H:%M:%S %Y", &tm);
}

static int64_t backoff_ms(const struct cfg_bounce_profile *p, uint32_t attempts)
{
    uint64_t wait = p->initial_retry;
    for (uint32_t i = 1; i < attempts && wait < p->max_retry; i++)
        wait *= 2;
    return (int64_t)(wait < p->max_retry ? wait : p->max_retry);
}

static struct finished *rcpt_finish(struct scheduler *s, struct q_rcpt *r,
                                    const struct q_result *res)
{
    struct finished *f = xcalloc(1, sizeof(*f));
    f->r = r;
    f->outcome = res->outcome;
    snprintf(f->status, sizeof(f->status), "%s", res->enhanced ? res->enhanced : "");
    f->diagnostic = res->diagnostic ? xstrdup(res->diagnostic) : NULL;
    f->remote = res->remote ? xstrdup(res->remote) : NULL;
    f->when_ms = now_ms();
    *s->finished_tail = f;
    s->finished_tail = &f->next;
    flush_schedule(s);
    return f;
}

static void rcpt_defer(struct scheduler *s, struct q_rcpt *r, const struct q_result *res)
{
    const struct cfg_bounce_profile *p = dest_profile(s, r->dest);
    int64_t now = now_ms();
    char when[64];
    if (r->attempts > p->max_retries || now - r->msg->received_ms >= (int64_t)p->max_queue_time) {
        struct q_result exp = {Q_BOUNCED, Q_HARD_EXPIRED, "5.4.7",
                               res->diagnostic ? res->diagnostic : "delivery time expired",
                               res->remote};
        maillog(LOG_INFO, "MID %llu RID [%u] expired after %u attempts [%s]",
                (unsigned long long)r->msg->mid, r->rid, r->attempts, p->name);
        r->dest->c.hard_expired++;
        r->dest->c.completed++;
        rcpt_finish(s, r, &exp);
        return;
    }
    r->next_ms = now + backoff_ms(p, r->attempts);
    r->state = QR_WAITING;
    r->dest->nwaiting++;
    heap_push(s, r);
    format_time(r->next_ms, when, sizeof(when));
    maillog(LOG_INFO, "MID %llu to [%u] pending till %s [%s]", (unsigned long long)r->msg->mid,
            r->rid, when, p->name);
    flush_schedule(s);
    spool_txn_rcpt_defer(s->txn, r->msg->mid, r->rid, r->attempts, r->next_ms, res->diagnostic);
    timer_arm(s);
}

void scheduler_result(struct scheduler *s, struct q_rcpt *r, const struct q_result *res)
{
    struct dest *d = r->dest;
    d->nactive--;
    d->last_activity_ms = now_ms();
    if (res->outcome != Q_DROPPED) {
        if (r->attempts == 0)
            d->nunattempted--;
        r->attempts++;
    }
    switch (res->outcome) {
    case Q_DELIVERED:
    case Q_DROPPED:
        d->c.delivered++;
        d->c.completed++;
        rcpt_finish(s, r, res);
        break;
    case Q_BOUNCED:
        switch (res->kind) {
        case Q_HARD_DNS:
            d->c.hard_dns++;
            break;
        case Q_HARD_5XX:
            d->c.hard_5xx++;
            break;
        case Q_HARD_EXPIRED:
            d->c.hard_expired++;
            break;
        case Q_HARD_FILTER:
            d->c.hard_filter++;
            break;
        case Q_HARD_OTHER:
            d->c.hard_other++;
            break;
        }
        d->c.completed++;
        rcpt_finish(s, r, res);
        break;
    case Q_DEFERRED:
        d->c.soft_bounced++;
        rcpt_defer(s, r, res);
        break;
    }
}

/* ---- end-of-turn flush: DSNs, commit, frees ---------------------------------- */

struct body_reader {
    struct spool_body b;
    uint64_t off;
};

static long dsn_read(void *ctx, char *buf, size_t len)
{
    struct body_reader *br = ctx;
    uint64_t left = br->b.size - br->off;
    if (len > left)
        len = (size_t)left;
    if (len == 0)
        return 0;
    if (br->b.data) {
        memcpy(buf, br->b.data + br->off, len);
    } else {
        ssize_t n = pread(br->b.fd, buf, len, (off_t)br->off);
        if (n <= 0)
            return -1;
        len = (size_t)n;
    }
    br->off += len;
    return (long)len;
}

static int dsn_write(void *ctx, const char *data, size_t len)
{
    return spool_msg_write(ctx, data, len) == 0 ? 0 : -1;
}

/* A DSN committed: queue it for delivery like any message. */
struct dsn_pending {
    struct spool_envelope env;
    char *rcpt;
    uint64_t size;
    struct dsn_pending *next;
};

struct flush_done {
    struct scheduler *s;
    struct dsn_pending *dsns;
};

/* Build one DSN for the bounced recipients f[0..n) of message m. */
static struct dsn_pending *dsn_build(struct scheduler *s, struct q_msg *m, struct finished **f,
                                     size_t n)
{
    struct bounce_rcpt *br = xcalloc(n, sizeof(*br));
    struct body_reader rd = {0};
    char seed[64];
    if (m->sender[0] == '\0') {
        maillog(LOG_INFO, "MID %llu %s: no DSN to the null sender, dropped",
                (unsigned long long)m->mid,
                (m->flags & SPOOL_F_BOUNCE) ? "double bounce" : "hard bounce");
        free(br);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        br[i] = (struct bounce_rcpt){
            .addr = f[i]->r->addr,
            .orcpt = f[i]->r->orcpt,
            .action = BOUNCE_FAILED,
            .status = f[i]->status[0] ? f[i]->status : "5.0.0",
            .remote_mta = f[i]->remote,
            .diagnostic = f[i]->diagnostic,
            .reason = f[i]->by_operator ? "bounced by operator" : "delivery failed permanently",
            .last_attempt_ms = f[i]->when_ms,
        };
    }
    if (spool_body_open(s->spool, m->mid, &rd.b) < 0) {
        maillog(LOG_WARNING, "MID %llu cannot read the original for its DSN; DSN without it",
                (unsigned long long)m->mid);
        memset(&rd.b, 0, sizeof(rd.b));
        rd.b.fd = -1;
    }
    uint64_t dmid = spool_next_id(s->spool, SPOOL_ID_MID);
    snprintf(seed, sizeof(seed), "%llu.%llu", (unsigned long long)dmid,
             (unsigned long long)now_ms());
    struct bounce_input in = {
        .reporting_mta = s->cfg->hostname,
        .sender = m->sender,
        .orig_mid = m->mid,
        .envid = m->envid,
        .arrival_ms = m->received_ms,
        .now_ms = now_ms(),
        .rcpts = br,
        .nrcpts = n,
        .headers_only = m->ret == 2,
        .max_original = s->cfg->delivery.bounce_max_original,
        .original_size = rd.b.size,
        .read = dsn_read,
        .read_ctx = &rd,
        .boundary_seed = seed,
    };
    struct spool_msg *sm = spool_msg_new(s->spool, dmid);
    int rc = bounce_build(&in, dsn_write, sm);
    spool_body_close(&rd.b);
    free(br);
    if (rc < 0) {
        maillog(LOG_WARNING, "MID %llu DSN could not be built", (unsigned long long)m->mid);
        spool_msg_discard(sm);
        return NULL;
    }
    struct dsn_pending *dp = xcalloc(1, sizeof(*dp));
    dp->env = (struct spool_envelope){.mid = dmid,
                                      .sender = "",
                                      .flags = SPOOL_F_BOUNCE,
                                      .received_ms = now_ms(),
                                      .client_ip = "",
                                      .helo = "",
                                      .listener = ""};
    dp->rcpt = xstrdup(m->sender);
    dp->size = spool_msg_size(sm);
    spool_msg_set_envelope(sm, &dp->env);
    spool_msg_add_rcpt(sm, dp->rcpt, NULL, SPOOL_NOTIFY_DEFAULT);
    spool_txn_add_msg(s->txn, sm);
    maillog(LOG_INFO, "MID %llu generated for bounce of MID %llu", (unsigned long long)dmid,
            (unsigned long long)m->mid);
    return dp;
}

static void on_flush_committed(void *arg, int err)
{
    struct flush_done *fd = arg;
    struct dsn_pending *dp, *next;
    if (err < 0)
        maillog(LOG_WARNING,
                "Delivery results could not be committed: %s; they will be "
                "retried after a restart",
                strerror(-err));
    for (dp = fd->dsns; dp; dp = next) {
        next = dp->next;
        if (err == 0 && !fd->s->stopping)
            scheduler_add(fd->s, &dp->env, dp->size, &dp->rcpt, 1);
        free(dp->rcpt);
        free(dp);
    }
    free(fd);
}

static void finished_free(struct finished *f)
{
    free(f->r->addr);
    free(f->r->orcpt);
    free(f->r);
    free(f->diagnostic);
    free(f->remote);
    free(f);
}

/* Handle the finished recipients of one message (consecutive in the list
 * is not required: collect them by msg). */
static void flush_message(struct scheduler *s, struct q_msg *m, struct finished **all, size_t n,
                          struct flush_done *fd)
{
    struct finished **bounced = xcalloc(n ? n : 1, sizeof(*bounced));
    size_t nb = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i]->outcome == Q_BOUNCED)
            bounced[nb++] = all[i];
    if (nb > 0) {
        struct dsn_pending *dp = dsn_build(s, m, bounced, nb);
        if (dp) {
            dp->next = fd->dsns;
            fd->dsns = dp;
        }
    }
    free(bounced);
    for (size_t i = 0; i < n; i++) {
        spool_txn_rcpt_done(s->txn, m->mid, all[i]->r->rid);
        m->pending--;
    }
    if (m->pending == 0) {
        spool_txn_msg_done(s->txn, m->mid);
        maillog(LOG_INFO, "Message finished MID %llu done", (unsigned long long)m->mid);
    }
}

static void on_flush(evutil_socket_t fd_, short what, void *arg)
{
    struct scheduler *s = arg;
    struct finished *list = s->finished;
    struct flush_done *fd = xcalloc(1, sizeof(*fd));
    fd->s = s;
    s->finished = NULL;
    s->finished_tail = &s->finished;
    if (s->txn == NULL)
        s->txn = spool_txn_new(s->spool);
    /* group by message: the list is short (one turn's results) */
    while (list) {
        struct q_msg *m = list->r->msg;
        size_t n = 0, cap = 0;
        struct finished **mine = NULL, **pp = &list;
        while (*pp) {
            if ((*pp)->r->msg == m) {
                xgrow((void **)&mine, &cap, n + 1, sizeof(*mine));
                mine[n++] = *pp;
                *pp = (*pp)->next;
            } else {
                pp = &(*pp)->next;
            }
        }
        flush_message(s, m, mine, n, fd);
        for (size_t i = 0; i < n; i++)
            finished_free(mine[i]);
        free(mine);
        if (m->pending == 0) {
            free(m->sender);
            free(m->envid);
            free(m);
        }
    }
    struct spool_txn *txn = s->txn;
    s->txn = NULL;
    spool_txn_commit(txn, on_flush_committed, fd);
}

/* ---- timer ---------------------------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct scheduler *s = arg;
    int64_t now = now_ms();
    while (s->nheap > 0 && s->heap[0]->next_ms <= now) {
        struct q_rcpt *r = s->heap[0];
        heap_remove(s, r);
        r->dest->nwaiting--;
        rcpt_make_ready(s, r);
        scheduler_kick(s, r->dest);
    }
    timer_arm(s);
}

void scheduler_deliver_now(struct scheduler *s, const char *domain)
{
    size_t i = 0;
    while (i < s->nheap) {
        struct q_rcpt *r = s->heap[i];
        if (domain == NULL || strcmp(r->dest->domain, domain) == 0) {
            r->next_ms = 0;
            heap_up(s, i);
        }
        i++;
    }
    on_timer(-1, 0, s);
}

/* ---- operator commands ---------------------------------------------------------- */

void scheduler_foreach_rcpt(struct scheduler *s, scheduler_rcpt_fn fn, void *ctx)
{
    struct dest *d;
    const struct q_rcpt *r;
    for (size_t i = 0; (d = scheduler_dest_next(s, &i)) != NULL;)
        TAILQ_FOREACH(r, &d->ready, link)
    fn(ctx, r);
    for (size_t i = 0; i < s->nheap; i++)
        fn(ctx, s->heap[i]);
    outbound_foreach_active(s->ob, fn, ctx);
}

static bool rcpt_selected(const struct q_rcpt *r, const struct sched_select *sel)
{
    if (sel->domain != NULL && strcmp(r->dest->domain, sel->domain) != 0)
        return false;
    return sel->sender == NULL || strcasecmp(r->msg->sender, sel->sender) == 0;
}

struct remove_pick {
    const struct sched_select *sel;
    struct q_rcpt **rs;
    size_t n, cap;
    uint64_t skipped;
};

static void remove_pick(void *ctx, const struct q_rcpt *r)
{
    struct remove_pick *p = ctx;
    if (!rcpt_selected(r, p->sel))
        return;
    if (r->state == QR_ACTIVE) {
        p->skipped++;
        return;
    }
    xgrow((void **)&p->rs, &p->cap, p->n + 1, sizeof(*p->rs));
    p->rs[p->n++] = (struct q_rcpt *)r;
}

/* Take r out of its ready list or the retry heap, as if just returned. */
static void rcpt_detach(struct scheduler *s, struct q_rcpt *r)
{
    struct dest *d = r->dest;
    if (r->state == QR_READY) {
        TAILQ_REMOVE(&d->ready, r, link);
        d->nready--;
    } else {
        heap_remove(s, r);
        d->nwaiting--;
    }
    if (r->attempts == 0)
        d->nunattempted--;
    d->last_activity_ms = now_ms();
}

static int remove_cmp(const void *a, const void *b)
{
    const struct q_rcpt *x = *(struct q_rcpt *const *)a, *y = *(struct q_rcpt *const *)b;
    if (x->msg->mid != y->msg->mid)
        return x->msg->mid < y->msg->mid ? -1 : 1;
    return x->rid < y->rid ? -1 : x->rid > y->rid;
}

void scheduler_remove(struct scheduler *s, const struct sched_select *sel,
                      enum sched_remove_how how, struct sched_remove_counts *out)
{
    struct remove_pick p = {.sel = sel};
    memset(out, 0, sizeof(*out));
    scheduler_foreach_rcpt(s, remove_pick, &p);
    out->skipped = p.skipped;
    if (p.n > 0)
        qsort(p.rs, p.n, sizeof(*p.rs), remove_cmp);
    for (size_t i = 0; i < p.n;) {
        struct q_msg *m = p.rs[i]->msg;
        size_t j = i;
        for (; j < p.n && p.rs[j]->msg == m; j++) {
            struct q_rcpt *r = p.rs[j];
            struct q_result res = {how == SCHED_BOUNCE ? Q_BOUNCED : Q_DROPPED, Q_HARD_OTHER,
                                   how == SCHED_BOUNCE ? "5.0.0" : "", NULL, NULL};
            rcpt_detach(s, r);
            r->dest->c.completed++;
            if (how == SCHED_BOUNCE)
                r->dest->c.hard_other++;
            else
                r->dest->c.deleted++;
            rcpt_finish(s, r, &res)->by_operator = true;
        }
        maillog(LOG_INFO, "MID %llu %s by operator (%zu recipients)", (unsigned long long)m->mid,
                how == SCHED_BOUNCE ? "bounced" : "deleted", j - i);
        out->msgs++;
        out->rcpts += j - i;
        i = j;
    }
    free(p.rs);
    timer_arm(s);
}

size_t scheduler_suspend(struct scheduler *s, const char *domain, bool on)
{
    struct dest *d;
    size_t n = 0;
    void *v;
    if (domain == NULL) {
        s->suspend_all = on;
        if (!on) {
            for (size_t i = 0; hmap_next(&s->suspended, &i, NULL, &v);)
                free(v);
            hmap_free(&s->suspended);
            hmap_init(&s->suspended);
        }
    } else if (on) {
        if (hmap_get(&s->suspended, domain, strlen(domain)) == NULL)
            hmap_put(&s->suspended, domain, strlen(domain), xstrdup(domain));
    } else {
        free(hmap_del(&s->suspended, domain, strlen(domain)));
    }
    for (size_t i = 0; (d = scheduler_dest_next(s, &i)) != NULL;) {
        if (domain != NULL && strcmp(d->domain, domain) != 0)
            continue;
        n++;
        if (!on)
            scheduler_kick(s, d);
    }
    return n;
}

bool scheduler_suspended_all(const struct scheduler *s)
{
    return s->suspend_all;
}

bool scheduler_suspended(const struct scheduler *s, const char *domain)
{
    return s->suspend_all || hmap_get(&s->suspended, domain, strlen(domain)) != NULL;
}

const char *scheduler_suspended_next(const struct scheduler *s, size_t *iter)
{
    void *v;
    return hmap_next(&s->suspended, iter, NULL, &v) ? v : NULL;
}

void scheduler_set_redirect(struct scheduler *s, const char *host, uint16_t port)
{
    free(s->redirect_host);
    s->redirect_host = host ? xstrdup(host) : NULL;
    s->redirect_port = port;
}

const char *scheduler_redirect(const struct scheduler *s, uint16_t *port)
{
    *port = s->redirect_port;
    return s->redirect_host;
}

/* ---- lifecycle ---------------------------------------------------------------- */

struct scheduler *scheduler_new(struct event_base *base, struct spool *spool,
                                struct resolver *resolver, struct config *cfg)
{
    struct scheduler *s = xcalloc(1, sizeof(*s));
    s->base = base;
    s->spool = spool;
    s->resolver = resolver;
    s->cfg = config_ref(cfg);
    hmap_init(&s->dests);
    s->timer = evtimer_new(base, on_timer, s);
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    s->finished_tail = &s->finished;
    hmap_init(&s->suspended);
    s->ob = outbound_new(s);
    return s;
}

void scheduler_set_config(struct scheduler *s, struct config *cfg)
{
    config_ref(cfg);
    config_unref(s->cfg);
    s->cfg = cfg;
}

struct config *scheduler_config(struct scheduler *s)
{
    return s->cfg;
}

struct resolver *scheduler_resolver(struct scheduler *s)
{
    return s->resolver;
}

struct event_base *scheduler_base(struct scheduler *s)
{
    return s->base;
}

struct spool *scheduler_spool(struct scheduler *s)
{
    return s->spool;
}

void scheduler_shutdown(struct scheduler *s)
{
    s->stopping = true;
    outbound_abort_all(s->ob); /* active recipients come back deferred */
    if (s->finished || s->txn)
        on_flush(-1, 0, s);
}

static void rcpt_free(struct q_rcpt *r)
{
    free(r->addr);
    free(r->orcpt);
    free(r);
}

void scheduler_free(struct scheduler *s)
{
    size_t it = 0;
    struct dest *d;
    struct hmap msgs;
    if (s == NULL)
        return;
    outbound_free(s->ob);
    /* free every remaining recipient and message (each message once) */
    hmap_init(&msgs);
    while ((d = scheduler_dest_next(s, &it)) != NULL) {
        struct q_rcpt *r;
        while ((r = TAILQ_FIRST(&d->ready)) != NULL) {
            TAILQ_REMOVE(&d->ready, r, link);
            hmap_put(&msgs, (const char *)&r->msg, sizeof(r->msg), r->msg);
            rcpt_free(r);
        }
    }
    for (size_t i = 0; i < s->nheap; i++) {
        hmap_put(&msgs, (const char *)&s->heap[i]->msg, sizeof(s->heap[i]->msg), s->heap[i]->msg);
        rcpt_free(s->heap[i]);
    }
    it = 0;
    void *v;
    while (hmap_next(&msgs, &it, NULL, &v)) {
        struct q_msg *m = v;
        free(m->sender);
        free(m->envid);
        free(m);
    }
    hmap_free(&msgs);
    it = 0;
    while ((d = scheduler_dest_next(s, &it)) != NULL) {
        free(d->domain);
        free(d);
    }
    hmap_free(&s->dests);
    it = 0;
    while (hmap_next(&s->suspended, &it, NULL, &v))
        free(v);
    hmap_free(&s->suspended);
    free(s->redirect_host);
    free(s->heap);
    event_free(s->timer);
    event_free(s->flush_ev);
    config_unref(s->cfg);
    free(s);
}
