/*
 * test_resolver: the resolver against a real authoritative server on
 * loopback (tests/tools/dns_server.py, started once for the group) and a
 * real event_base. Every test gets a fresh resolver (empty cache) and uses
 * its own names, so the server's query log counts exactly what each test
 * sent. Covers: A, AAAA, MX, null MX, PTR v4/v6, TXT (DNSBL style and one
 * big enough to need TCP), CNAME chains, NXDOMAIN, NODATA (with and without
 * SOA), SERVFAIL, REFUSED, timeout, a slow answer not delaying a fast one,
 * positive/negative/failure caching, coalescing, cancel, TTL expiry with
 * answers changed on the fly, LRU eviction, reconfigure with queries in
 * flight, resolver_free with everything pending (LeakSanitizer), and
 * callbacks never running inside resolver_query.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tool_spawn.h"

#include "core/config.h"
#include "dns/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RR 8

/* The test zone; %s is the address of ttl1.test, changed on the fly. */
static const char zone_fmt[] =
    "{\"zone\": \"test\", \"soa\": {\"ttl\": 3600, \"minimum\": 60}, \"names\": {\n"
    "\"a.test\": {\"A\": [\"192.0.2.1\", {\"value\": \"192.0.2.2\", \"ttl\": 120}],\n"
    "   \"AAAA\": [\"2001:db8::1\"], \"MX\": [\"20 mx2.test\", \"10 mx1.test\", \"10 "
    "mx3.test\"],\n"
    "   \"TXT\": [\"v=spf1 -all\"]},\n"
    "\"nullmx.test\": {\"MX\": [\"0 .\"]},\n"
    "\"1.2.0.192.in-addr.arpa\": {\"PTR\": [\"a.test\"]},\n"
    "\"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa\": "
    "{\"PTR\": [\"v6host.test\"]},\n"
    "\"2.0.0.127.zen.test\": {\"A\": [\"127.0.0.2\"], \"TXT\": [\"listed: see "
    "https://zen.test/q\"]},\n"
    "\"long.test\": {\"TXT\": [\"%s\"]},\n"
    "\"www.test\": {\"CNAME\": \"web.test\", \"ttl\": 30},\n"
    "\"web.test\": {\"CNAME\": \"a.test\"},\n"
    "\"nodata.test\": {\"A\": [\"192.0.2.7\"]},\n"
    "\"nosoa.test\": {\"A\": [\"192.0.2.9\"], \"no_soa\": true},\n"
    "\"servfail.test\": {\"rcode\": \"SERVFAIL\"},\n"
    "\"refused.test\": {\"rcode\": \"REFUSED\"},\n"
    "\"drop.test\": {\"drop\": true},\n"
    "\"slow.test\": {\"A\": [\"192.0.2.50\"], \"delay_ms\": 600},\n"
    "\"slowfree.test\": {\"A\": [\"192.0.2.50\"], \"delay_ms\": 300},\n"
    "\"slowre.test\": {\"A\": [\"192.0.2.52\"], \"delay_ms\": 300},\n"
    "\"fast.test\": {\"A\": [\"192.0.2.51\"]},\n"
    "\"cache.test\": {\"A\": [\"192.0.2.10\"]},\n"
    "\"mixed.test\": {\"A\": [\"192.0.2.11\"]},\n"
    "\"coalesce.test\": {\"A\": [\"192.0.2.12\"], \"delay_ms\": 200},\n"
    "\"cancel.test\": {\"A\": [\"192.0.2.13\"], \"delay_ms\": 200},\n"
    "\"lru1.test\": {\"A\": [\"192.0.2.21\"]}, \"lru2.test\": {\"A\": [\"192.0.2.22\"]},\n"
    "\"lru3.test\": {\"A\": [\"192.0.2.23\"]},\n"
    "\"ttl1.test\": {\"A\": [{\"value\": \"%s\", \"ttl\": 1}]}\n"
    "}}\n";

/* Shared by the group: the server and its files. */
static struct {
    char dir[PATH_MAX];
    char zone[PATH_MAX + 16];
    char log[PATH_MAX + 16];
    pid_t pid;
    int port;
    char server[32];
} S;

struct fx {
    struct event_base *base;
    struct resolver *r;
    struct cfg_resolver cfg;
    char *servers[1];
};

/* What a callback saw. */
struct got {
    int calls;
    int order; /* global completion order, from 1 */
    bool reentrant;
    uint64_t id;
    enum dns_status status;
    size_t n;
    char rr[MAX_RR][320];
    uint32_t rr_ttl[MAX_RR];
    size_t text_len[MAX_RR];
    uint32_t ttl;
    double elapsed_ms;
    bool from_cache;
    char name[300];
    struct fx *free_from_cb; /* resolver_free from inside this callback */
};

static bool in_query; /* set while the test is inside resolver_query */
static int completions;

static void write_zone(const char *ttl1_addr)
{
    char longtxt[1501], tmp[PATH_MAX + 32];
    for (size_t i = 0; i < 1500; i++)
        longtxt[i] = (char)('a' + i % 26);
    longtxt[1500] = '\0';
    snprintf(tmp, sizeof tmp, "%s.tmp", S.zone);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, zone_fmt, longtxt, ttl1_addr);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, S.zone), 0);
}

/* Lines "<name> <TYPE>" the server logged. */
static int server_count(const char *name, const char *type)
{
    char want[400], line[512];
    int n = 0;
    snprintf(want, sizeof want, "%s %s\n", name, type);
    FILE *f = fopen(S.log, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f))
        n += strcmp(line, want) == 0;
    fclose(f);
    return n;
}

static int server_start(void **state)
{
    snprintf(S.dir, sizeof S.dir, "/tmp/test_resolver.XXXXXX");
    if (mkdtemp(S.dir) == NULL)
        return -1;
    snprintf(S.zone, sizeof S.zone, "%s/zone.json", S.dir);
    snprintf(S.log, sizeof S.log, "%s/queries.log", S.dir);
    write_zone("192.0.2.60");
    const char *args[] = {"--port", "0", "--zone", S.zone, "--log", S.log, NULL};
    S.pid = tool_spawn("dns_server.py", args, &S.port);
    if (S.pid < 0)
        return -1;
    snprintf(S.server, sizeof S.server, "127.0.0.1:%d", S.port);
    (void)state;
    return 0;
}

static int server_stop(void **state)
{
    char cmd[PATH_MAX + 16];
    if (S.pid > 0) {
        kill(S.pid, SIGTERM);
        waitpid(S.pid, NULL, 0);
    }
    snprintf(cmd, sizeof cmd, "%s/zone.json", S.dir);
    unlink(cmd);
    unlink(S.log);
    rmdir(S.dir);
    (void)state;
    return 0;
}

static struct resolver *fx_resolver(struct fx *f, uint64_t timeout_ms, uint32_t attempts)
{
    char err[256] = "";
    f->servers[0] = S.server;
    f->cfg = (struct cfg_resolver){
        .servers = f->servers, .nservers = 1, .timeout = timeout_ms, .attempts = attempts};
    struct resolver *r = resolver_new(f->base, &f->cfg, err, sizeof err);
    if (r == NULL)
        fail_msg("resolver_new: %s", err);
    return r;
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->base = event_base_new();
    f->r = fx_resolver(f, 1000, 2);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    resolver_free(f->r);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void on_answer(void *arg, const struct dns_answer *ans)
{
    struct got *g = arg;
    g->calls++;
    g->order = ++completions;
    g->reentrant = in_query;
    g->id = ans->id;
    g->status = ans->status;
    g->n = ans->n;
    g->ttl = ans->ttl;
    g->elapsed_ms = ans->elapsed_ms;
    g->from_cache = ans->from_cache;
    snprintf(g->name, sizeof g->name, "%s", ans->name);
    for (size_t i = 0; i < ans->n && i < MAX_RR; i++) {
        const struct dns_rr *rr = &ans->rr[i];
        g->rr_ttl[i] = rr->ttl;
        switch (ans->type) {
        case DNS_A:
        case DNS_AAAA:
            snprintf(g->rr[i], sizeof g->rr[i], "%s", rr->addr_str);
            break;
        case DNS_MX:
            snprintf(g->rr[i], sizeof g->rr[i], "%u %s", rr->pref, rr->host);
            break;
        case DNS_PTR:
            snprintf(g->rr[i], sizeof g->rr[i], "%s", rr->host);
            break;
        default:
            snprintf(g->rr[i], sizeof g->rr[i], "%s", rr->text);
            g->text_len[i] = rr->text_len;
            break;
        }
    }
    if (g->free_from_cb != NULL) {
        resolver_free(g->free_from_cb->r);
        g->free_from_cb->r = NULL;
    }
}

static uint64_t ask(struct fx *f, const char *name, enum dns_type type, struct got *g)
{
    in_query = true;
    uint64_t id = resolver_query(f->r, name, type, on_answer, g);
    in_query = false;
    assert_int_not_equal(id, 0);
    return id;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Run the loop until *calls reaches want or ms pass. */
static void run_until(struct fx *f, const int *calls, int want, int ms)
{
    bool expired = false;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *dl = evtimer_new(f->base, on_deadline, &expired);
    evtimer_add(dl, &tv);
    while ((calls == NULL || *calls < want) && !expired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(dl);
}

/* Ask and wait for the answer. */
static void resolve(struct fx *f, const char *name, enum dns_type type, struct got *g)
{
    memset(g, 0, sizeof *g);
    uint64_t id = ask(f, name, type, g);
    assert_int_equal(g->calls, 0); /* never from inside resolver_query */
    run_until(f, &g->calls, 1, 5000);
    assert_int_equal(g->calls, 1);
    assert_false(g->reentrant);
    assert_int_equal(g->id, id);
}

/* True if the n first records of g are exactly the strings given, in any order. */
static bool got_set(const struct got *g, size_t n, ...)
{
    va_list ap;
    bool ok = g->n == n;
    va_start(ap, n);
    for (size_t i = 0; i < n && ok; i++) {
        const char *want = va_arg(ap, const char *);
        bool found = false;
        for (size_t j = 0; j < g->n && j < MAX_RR; j++)
            found = found || strcmp(g->rr[j], want) == 0;
        ok = found;
    }
    va_end(ap);
    return ok;
}

/* ---- record types --------------------------------------------------------- */

static void test_a(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "a.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 2, "192.0.2.1", "192.0.2.2"));
    assert_int_equal(g.ttl, 120); /* the minimum record TTL */
    assert_false(g.from_cache);
    assert_true(g.elapsed_ms > 0 && g.elapsed_ms < 2000);
    assert_string_equal(g.name, "a.test");
}

static void test_aaaa(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "a.test", DNS_AAAA, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "2001:db8::1"));
    assert_int_equal(g.rr_ttl[0], 300);
}

static void test_mx(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "a.test", DNS_MX, &g);
    assert_int_equal(g.status, DNS_OK);
    /* answer order kept: ordering by preference is the consumer's job */
    assert_int_equal(g.n, 3);
    assert_string_equal(g.rr[0], "20 mx2.test");
    assert_string_equal(g.rr[1], "10 mx1.test");
    assert_string_equal(g.rr[2], "10 mx3.test");
}

static void test_null_mx(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "nullmx.test", DNS_MX, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "0 ."));
}

static void test_ptr_v4(void **state)
{
    struct fx *f = *state;
    struct got g;
    memset(&g, 0, sizeof g);
    in_query = true;
    resolver_query_ptr(f->r, "192.0.2.1", on_answer, &g);
    in_query = false;
    run_until(f, &g.calls, 1, 5000);
    assert_int_equal(g.calls, 1);
    assert_false(g.reentrant);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "a.test"));
    assert_string_equal(g.name, "1.2.0.192.in-addr.arpa");
}

static void test_ptr_v6(void **state)
{
    struct fx *f = *state;
    struct got g;
    char name[80];
    assert_true(dns_ptr_name("2001:db8::1", name, sizeof name));
    assert_string_equal(name,
                        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    assert_false(dns_ptr_name("2001:db8::1", name, 40));
    memset(&g, 0, sizeof g);
    resolver_query_ptr(f->r, "2001:db8::1", on_answer, &g);
    run_until(f, &g.calls, 1, 5000);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "v6host.test"));
}

static void test_txt_and_dnsbl(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "2.0.0.127.zen.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "127.0.0.2"));
    resolve(f, "2.0.0.127.zen.test", DNS_TXT, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 1, "listed: see https://zen.test/q"));
    resolve(f, "a.test", DNS_TXT, &g);
    assert_true(got_set(&g, 1, "v=spf1 -all"));
}

/* 1500 octets of TXT do not fit the 1232-octet EDNS payload: truncated
 * over UDP, then retried over TCP by c-ares. */
static void test_txt_over_tcp(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "long.test", DNS_TXT, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.text_len[0], 1500);
    assert_int_equal(server_count("long.test", "TXT"), 2);
}

static void test_cname_chain(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "www.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_OK);
    assert_true(got_set(&g, 2, "192.0.2.1", "192.0.2.2"));
    assert_int_equal(g.ttl, 30); /* the chain's first link has TTL 30 */
}

/* ---- negative answers and failures --------------------------------------- */

static void test_nxdomain(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "nx1.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_NXDOMAIN);
    assert_int_equal(g.n, 0);
    assert_int_equal(g.ttl, 60); /* min(SOA TTL 3600, MINIMUM 60) */
    assert_true(dns_status_is_final(g.status));
}

static void test_nodata(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "nodata.test", DNS_AAAA, &g);
    assert_int_equal(g.status, DNS_NODATA);
    assert_int_equal(g.n, 0);
    assert_int_equal(g.ttl, 60);
    resolve(f, "nosoa.test", DNS_MX, &g);
    assert_int_equal(g.status, DNS_NODATA);
    assert_int_equal(g.ttl, 300); /* no SOA: the default */
}

static void test_servfail_refused(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "servfail.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_SERVFAIL);
    assert_false(dns_status_is_final(g.status));
    resolve(f, "refused.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_REFUSED);
    /* failures are cached for 5 s */
    resolve(f, "servfail.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_SERVFAIL);
    assert_true(g.from_cache);
    assert_true(g.ttl <= 5 && g.ttl >= 4);
}

static void test_timeout(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolver_free(f->r);
    f->r = fx_resolver(f, 200, 1);
    resolve(f, "drop.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_TIMEOUT);
    assert_true(g.elapsed_ms >= 150 && g.elapsed_ms < 1500);
    assert_int_equal(server_count("drop.test", "A"), 1);
}

/* ---- concurrency ------------------------------------------------------------ */

static void test_slow_does_not_delay_fast(void **state)
{
    struct fx *f = *state;
    struct got slow = {0}, fast = {0};
    ask(f, "slow.test", DNS_A, &slow);
    ask(f, "fast.test", DNS_A, &fast);
    run_until(f, &fast.calls, 1, 5000);
    assert_int_equal(fast.calls, 1);
    assert_int_equal(slow.calls, 0);
    assert_true(fast.elapsed_ms < 400);
    run_until(f, &slow.calls, 1, 5000);
    assert_int_equal(slow.status, DNS_OK);
    assert_true(fast.order < slow.order);
    assert_true(slow.elapsed_ms >= 550);
}

static void test_coalescing(void **state)
{
    struct fx *f = *state;
    struct got g[5];
    int done = 0;
    memset(g, 0, sizeof g);
    for (int i = 0; i < 5; i++)
        ask(f, "coalesce.test", DNS_A, &g[i]);
    for (int i = 0; i < 5; i++) {
        run_until(f, &g[i].calls, 1, 5000);
        done += g[i].calls;
        assert_int_equal(g[i].status, DNS_OK);
        assert_false(g[i].from_cache);
        assert_true(got_set(&g[i], 1, "192.0.2.12"));
    }
    assert_int_equal(done, 5);
    assert_int_equal(server_count("coalesce.test", "A"), 1);
    struct resolver_stats st;
    resolver_get_stats(f->r, &st);
    assert_int_equal(st.queries, 5);
    assert_int_equal(st.coalesced, 4);
    assert_int_equal(st.sent, 1);
    assert_int_equal(st.outcomes[DNS_OK], 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.in_flight, 0);
}

/* ---- cache -------------------------------------------------------------------- */

static void test_cache_hit(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "cache.test", DNS_A, &g);
    assert_false(g.from_cache);
    resolve(f, "cache.test", DNS_A, &g); /* resolve() checks: not synchronous */
    assert_true(g.from_cache);
    assert_true(got_set(&g, 1, "192.0.2.10"));
    assert_true(g.ttl <= 300 && g.ttl >= 299);
    assert_int_equal(server_count("cache.test", "A"), 1);
    /* the key is case-insensitive and ignores the trailing dot */
    resolve(f, "mixed.test", DNS_A, &g);
    resolve(f, "MiXeD.TEST.", DNS_A, &g);
    assert_true(g.from_cache);
    assert_string_equal(g.name, "mixed.test");
    assert_int_equal(server_count("mixed.test", "A"), 1);
    struct resolver_stats st;
    resolver_get_stats(f->r, &st);
    assert_int_equal(st.cache_hits, 2);
    assert_int_equal(st.cache_entries, 2);
}

static void test_negative_cache(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolve(f, "nx2.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_NXDOMAIN);
    resolve(f, "nx2.test", DNS_A, &g);
    assert_int_equal(g.status, DNS_NXDOMAIN);
    assert_true(g.from_cache);
    assert_true(g.ttl <= 60 && g.ttl >= 59);
    assert_int_equal(server_count("nx2.test", "A"), 1);
    /* NODATA is per type: A of the same name is a different key */
    resolve(f, "nodata.test", DNS_MX, &g);
    resolve(f, "nodata.test", DNS_MX, &g);
    assert_true(g.from_cache);
    assert_int_equal(g.status, DNS_NODATA);
    resolve(f, "nodata.test", DNS_A, &g);
    assert_false(g.from_cache);
    assert_int_equal(g.status, DNS_OK);
}

static void test_ttl_expiry(void **state)
{
    struct fx *f = *state;
    struct got g;
    write_zone("192.0.2.60");
    resolve(f, "ttl1.test", DNS_A, &g);
    assert_true(got_set(&g, 1, "192.0.2.60"));
    assert_int_equal(g.ttl, 1);
    write_zone("192.0.2.61"); /* the server answers differently from now on */
    resolve(f, "ttl1.test", DNS_A, &g);
    assert_true(g.from_cache);
    assert_true(got_set(&g, 1, "192.0.2.60"));
    run_until(f, NULL, 0, 1100);
    resolve(f, "ttl1.test", DNS_A, &g);
    assert_false(g.from_cache);
    assert_true(got_set(&g, 1, "192.0.2.61"));
    assert_int_equal(server_count("ttl1.test", "A"), 2);
    write_zone("192.0.2.60");
}

static void test_lru_eviction(void **state)
{
    struct fx *f = *state;
    struct got g;
    resolver_set_cache_max(f->r, 2);
    resolve(f, "lru1.test", DNS_A, &g);
    resolve(f, "lru2.test", DNS_A, &g);
    resolve(f, "lru1.test", DNS_A, &g); /* lru1 becomes the most recent */
    assert_true(g.from_cache);
    resolve(f, "lru3.test", DNS_A, &g); /* evicts lru2 */
    resolve(f, "lru1.test", DNS_A, &g);
    assert_true(g.from_cache);
    resolve(f, "lru2.test", DNS_A, &g);
    assert_false(g.from_cache);
    assert_int_equal(server_count("lru2.test", "A"), 2);
    struct resolver_stats st;
    resolver_get_stats(f->r, &st);
    assert_int_equal(st.cache_entries, 2);
}

/* ---- cancel, free, reconfigure, bad input ------------------------------------ */

static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct got a = {0}, b = {0}, c = {0}, d;
    uint64_t ida = ask(f, "cancel.test", DNS_A, &a);
    ask(f, "cancel.test", DNS_A, &b); /* coalesced with a */
    resolver_cancel(f->r, ida);
    run_until(f, &b.calls, 1, 5000);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, DNS_OK);
    /* a cache hit cancelled before its turn */
    uint64_t idc = ask(f, "cancel.test", DNS_A, &c);
    resolver_cancel(f->r, idc);
    resolve(f, "fast.test", DNS_A, &d);
    run_until(f, NULL, 0, 300);
    assert_int_equal(a.calls, 0);
    assert_int_equal(c.calls, 0);
    /* finished, unknown and repeated ids are harmless */
    resolver_cancel(f->r, b.id);
    resolver_cancel(f->r, ida);
    resolver_cancel(f->r, 987654321);
    struct resolver_stats st;
    resolver_get_stats(f->r, &st);
    assert_int_equal(st.cancelled, 2);
    assert_int_equal(st.pending, 0);
}

static void test_free_with_pending(void **state)
{
    struct fx *f = *state;
    struct got warm, g[4];
    memset(g, 0, sizeof g);
    resolve(f, "cache.test", DNS_A, &warm);
    ask(f, "slowfree.test", DNS_A, &g[0]); /* in flight */
    ask(f, "slowfree.test", DNS_A, &g[1]); /* coalesced */
    ask(f, "cache.test", DNS_A, &g[2]);    /* cache hit, not yet delivered */
    ask(f, "bad..name", DNS_A, &g[3]);     /* error, not yet delivered */
    resolver_free(f->r);
    f->r = NULL;
    run_until(f, NULL, 0, 500);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g[i].calls, 0);
}

static void test_free_inside_callback(void **state)
{
    struct fx *f = *state;
    struct got warm, g[2];
    resolve(f, "cache.test", DNS_A, &warm);
    memset(g, 0, sizeof g);
    g[0].free_from_cb = f;
    ask(f, "cache.test", DNS_A, &g[0]);
    ask(f, "cache.test", DNS_A, &g[1]);
    run_until(f, &g[0].calls, 1, 2000);
    run_until(f, NULL, 0, 100);
    assert_int_equal(g[0].calls, 1);
    assert_int_equal(g[1].calls, 0);
    assert_null(f->r);
}

static void test_reconfigure(void **state)
{
    struct fx *f = *state;
    struct got slow = {0}, g;
    char err[256] = "";
    resolve(f, "cache.test", DNS_A, &g);
    ask(f, "slowre.test", DNS_A, &slow);
    run_until(f, NULL, 0, 50); /* the query is on the wire */

    char *bad[] = {"not-an-ip"};
    struct cfg_resolver badcfg = {.servers = bad, .nservers = 1, .timeout = 500, .attempts = 1};
    assert_int_equal(resolver_reconfigure(f->r, &badcfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "not-an-ip"));

    struct cfg_resolver cfg = f->cfg;
    cfg.timeout = 1500;
    assert_int_equal(resolver_reconfigure(f->r, &cfg, err, sizeof err), 0);
    run_until(f, &slow.calls, 1, 5000);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, DNS_OK);
    assert_true(got_set(&slow, 1, "192.0.2.52"));
    resolve(f, "cache.test", DNS_A, &g); /* the cache was emptied */
    assert_false(g.from_cache);
}

static void test_bad_input(void **state)
{
    struct fx *f = *state;
    struct got g;
    char label64[80];
    memset(label64, 'x', 64);
    strcpy(label64 + 64, ".test");
    resolve(f, "bad..name", DNS_A, &g);
    assert_int_equal(g.status, DNS_ERROR);
    resolve(f, "", DNS_A, &g);
    assert_int_equal(g.status, DNS_ERROR);
    resolve(f, label64, DNS_A, &g);
    assert_int_equal(g.status, DNS_ERROR);
    resolve(f, "a.test", (enum dns_type)42, &g);
    assert_int_equal(g.status, DNS_ERROR);
    memset(&g, 0, sizeof g);
    in_query = true;
    resolver_query_ptr(f->r, "999.1.2.3", on_answer, &g);
    in_query = false;
    assert_int_equal(g.calls, 0);
    run_until(f, &g.calls, 1, 2000);
    assert_int_equal(g.status, DNS_ERROR);
    assert_false(g.reentrant);

    char err[256] = "";
    char *srv[] = {"[::1]"};
    struct cfg_resolver cfg = {.servers = srv, .nservers = 1, .timeout = 500, .attempts = 1};
    assert_null(resolver_new(f->base, &cfg, err, sizeof err));
    assert_true(strlen(err) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_aaaa, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mx, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_null_mx, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_v4, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_v6, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_txt_and_dnsbl, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_txt_over_tcp, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cname_chain, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_nxdomain, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_nodata, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_servfail_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_does_not_delay_fast, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_coalescing, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cache_hit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_negative_cache, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lru_eviction, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reconfigure, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, fx_setup, fx_teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, server_start, server_stop);
}
