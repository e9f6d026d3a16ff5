/*
 * test_policy_lookup: the pre-banner lookups against a real authoritative
 * server on loopback (tests/tools/dns_server.py, started once for the
 * group), a real event_base and a real resolver. Every test gets a fresh
 * resolver (empty cache) and uses its own client addresses, so the server's
 * query log says exactly what each test sent.
 *
 * Covers: the pure helpers (private ranges, DNS list names v4/v6/mapped);
 * PTR verified, unverified, missing (NXDOMAIN, NODATA), SERVFAIL, dropped
 * (callback at the deadline and not before), forward lookup dropped;
 * reputation block/allow/both, code filter, clamp at +-10, lists timing out
 * (resolver timeout and lookup deadline), SERVFAIL vs NXDOMAIN lists, extra
 * dnslist[] zones (deduplicated, no weight, 127/8 filter); private clients
 * (no DNS list query, rfc1918) and lookup_private; a slow lookup not
 * holding up a later one; cancel (before the loop, while pending, from
 * inside the callback); IPv6 and IPv4-mapped clients; bad input; the
 * callback never running inside policy_lookup_start.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tool_spawn.h"

#include "core/config.h"
#include "dns/resolver.h"
#include "policy/lookup.h"

#include <arpa/inet.h>
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

/* The nibble name of 2001:db8:abcd::42 (RFC 5782 §2.4). */
#define V6_NIBBLES "2.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.8.b.d.0.1.0.0.2"

/* Earliest acceptable callback time for a deadline of ms. Why the slack:
 * libevent times timers with CLOCK_MONOTONIC_COARSE (a few ms of
 * granularity) and epoll rounds its timeout, while the test measures with
 * CLOCK_MONOTONIC, so a timer may look a few ms early. */
#define EARLIEST(ms) ((ms)-15.0)

static const char zone_json[] =
    "{\"zone\": \"test\", \"soa\": {\"ttl\": 3600, \"minimum\": 60}, \"names\": {\n"
    /* PTR chains */
    "\"1.113.0.203.in-addr.arpa\": {\"PTR\": [\"Mail.Good.Test\", \"second.test\"]},\n"
    "\"mail.good.test\": {\"A\": [\"198.51.100.7\", \"203.0.113.1\"]},\n"
    "\"2.113.0.203.in-addr.arpa\": {\"PTR\": [\"elsewhere.test\"]},\n"
    "\"elsewhere.test\": {\"A\": [\"198.51.100.9\"], \"AAAA\": [\"2001:db8::9\"]},\n"
    "\"4.113.0.203.in-addr.arpa\": {\"TXT\": [\"no ptr here\"]},\n"
    "\"5.113.0.203.in-addr.arpa\": {\"rcode\": \"SERVFAIL\"},\n"
    "\"6.113.0.203.in-addr.arpa\": {\"drop\": true},\n"
    "\"7.113.0.203.in-addr.arpa\": {\"PTR\": [\"fwddrop.test\"]},\n"
    "\"fwddrop.test\": {\"drop\": true},\n"
    "\"5.0.0.127.in-addr.arpa\": {\"PTR\": [\"loop5.test\"]},\n"
    "\"loop5.test\": {\"A\": [\"127.0.0.5\"]},\n"
    "\"20.113.0.203.in-addr.arpa\": {\"PTR\": [\"slow.test\"], \"delay_ms\": 1500},\n"
    "\"21.113.0.203.in-addr.arpa\": {\"PTR\": [\"fast.test\"]},\n"
    "\"fast.test\": {\"A\": [\"203.0.113.21\"]},\n"
    "\"30.113.0.203.in-addr.arpa\": {\"PTR\": [\"cancel.test\"], \"delay_ms\": 300},\n"
    "\"" V6_NIBBLES ".ip6.arpa\": {\"PTR\": [\"v6.test\"]},\n"
    "\"v6.test\": {\"A\": [\"203.0.113.42\"], \"AAAA\": [\"2001:db8:abcd::42\"]},\n"
    /* DNS lists for 203.0.113.10 */
    "\"10.113.0.203.block.test\": {\"A\": [\"127.0.0.2\"]},\n"
    "\"10.113.0.203.block2.test\": {\"A\": [\"127.0.0.2\"]},\n"
    "\"10.113.0.203.block3.test\": {\"A\": [\"127.0.0.4\", \"127.0.0.2\"]},\n"
    "\"10.113.0.203.allow.test\": {\"A\": [\"127.0.0.2\"]},\n"
    "\"10.113.0.203.allow2.test\": {\"A\": [\"127.0.0.2\"]},\n"
    "\"10.113.0.203.codes.test\": {\"A\": [\"127.0.0.3\"]},\n"
    "\"10.113.0.203.extra.test\": {\"A\": [\"127.0.0.5\"]},\n"
    "\"10.113.0.203.wild.test\": {\"A\": [\"192.0.2.1\"]},\n"
    "\"10.113.0.203.nodata.test\": {\"TXT\": [\"x\"]},\n"
    "\"10.113.0.203.servfail.test\": {\"rcode\": \"SERVFAIL\"},\n"
    "\"10.113.0.203.drop1.test\": {\"drop\": true},\n"
    "\"11.113.0.203.drop1.test\": {\"drop\": true},\n"
    "\"11.113.0.203.drop2.test\": {\"drop\": true},\n"
    "\"12.113.0.203.drop1.test\": {\"drop\": true},\n"
    "\"12.113.0.203.drop2.test\": {\"drop\": true},\n"
    "\"6.0.0.127.priv.test\": {\"A\": [\"127.0.0.2\"]},\n"
    "\"" V6_NIBBLES ".bl6.test\": {\"A\": [\"127.0.0.2\"]}\n"
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

/* What a lookup callback saw. */
struct res {
    int calls;
    int order; /* global completion order, from 1 */
    bool reentrant;
    double t0, at_ms; /* start, callback time after start */
    struct policy_facts f;
    struct policy_lookup *self;
    bool cancel_in_cb;
};

static bool in_start; /* set while the test is inside policy_lookup_start */
static int completions;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
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

/* Lines of the server log that end in suffix (e.g. ".priv.test A"). */
static int server_count_suffix(const char *suffix)
{
    char line[512];
    size_t sl = strlen(suffix);
    int n = 0;
    FILE *f = fopen(S.log, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        size_t ll = strlen(line);
        n += ll >= sl && strcmp(line + ll - sl, suffix) == 0;
    }
    fclose(f);
    return n;
}

static int server_start(void **state)
{
    snprintf(S.dir, sizeof S.dir, "/tmp/test_policy_lookup.XXXXXX");
    if (mkdtemp(S.dir) == NULL)
        return -1;
    snprintf(S.zone, sizeof S.zone, "%s/zone.json", S.dir);
    snprintf(S.log, sizeof S.log, "%s/queries.log", S.dir);
    FILE *zf = fopen(S.zone, "w");
    if (zf == NULL || fputs(zone_json, zf) < 0 || fclose(zf) != 0)
        return -1;
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
    if (S.pid > 0) {
        kill(S.pid, SIGTERM);
        waitpid(S.pid, NULL, 0);
    }
    unlink(S.zone);
    unlink(S.log);
    rmdir(S.dir);
    (void)state;
    return 0;
}

static void fx_resolver(struct fx *f, uint64_t timeout_ms, uint32_t attempts)
{
    char err[256] = "";
    if (f->r != NULL)
        resolver_free(f->r);
    f->servers[0] = S.server;
    f->cfg = (struct cfg_resolver){
        .servers = f->servers, .nservers = 1, .timeout = timeout_ms, .attempts = attempts};
    f->r = resolver_new(f->base, &f->cfg, err, sizeof err);
    if (f->r == NULL)
        fail_msg("resolver_new: %s", err);
}

/* The resolver's own timeout (2 s, one try) is longer than the deadlines
 * the tests use, so a dropped query ends at the lookup's deadline. */
static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->base = event_base_new();
    fx_resolver(f, 2000, 1);
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

static void on_facts(void *arg, const struct policy_facts *facts)
{
    struct res *r = arg;
    r->calls++;
    r->order = ++completions;
    r->reentrant = in_start;
    r->at_ms = now_ms() - r->t0;
    r->f = *facts;
    if (r->cancel_in_cb)
        policy_lookup_cancel(r->self); /* a no-op: freed when we return */
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Run the loop until *calls reaches want or ms pass. */
static void run_until(struct fx *f, const int *calls, int want, int ms)
{
    bool expired = false;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *dl = evtimer_new(f->base, on_timer, &expired);
    evtimer_add(dl, &tv);
    while ((calls == NULL || *calls < want) && !expired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(dl);
}

/* Start a lookup; the callback must not have run yet. */
static struct policy_lookup *start(struct fx *f, const char *ip,
                                   const struct policy_lookup_params *p, struct res *r)
{
    memset(r, 0, sizeof *r);
    r->t0 = now_ms();
    in_start = true;
    struct policy_lookup *l = policy_lookup_start(f->base, f->r, ip, p, on_facts, r);
    in_start = false;
    assert_non_null(l);
    assert_int_equal(r->calls, 0);
    r->self = l;
    return l;
}

/* Start, wait for the callback, check it ran once from the loop. */
static void lookup(struct fx *f, const char *ip, const struct policy_lookup_params *p,
                   struct res *r)
{
    start(f, ip, p, r);
    run_until(f, &r->calls, 1, 5000);
    assert_int_equal(r->calls, 1);
    assert_false(r->reentrant);
    run_until(f, NULL, 0, 20); /* and only once */
    assert_int_equal(r->calls, 1);
}

static const struct policy_lookup_params no_lists = {.deadline_ms = 3000};

/* facts.dnslists entry of zone, or NULL. */
static const void *zone_entry(const struct policy_facts *f, const char *zone, bool *answered,
                              bool *listed)
{
    for (size_t i = 0; i < f->ndnslists; i++) {
        if (strcmp(f->dnslists[i].zone, zone) == 0) {
            *answered = f->dnslists[i].answered;
            *listed = f->dnslists[i].listed;
            return &f->dnslists[i];
        }
    }
    return NULL;
}

static void assert_zone(const struct policy_facts *f, const char *zone, bool answered, bool listed)
{
    bool a = false, l = false;
    if (zone_entry(f, zone, &a, &l) == NULL)
        fail_msg("zone %s not in facts", zone);
    if (a != answered || l != listed)
        fail_msg("zone %s: answered %d listed %d, want %d %d", zone, a, l, answered, listed);
}

/* ---- pure helpers ------------------------------------------------------- */

static void test_ip_is_private(void **state)
{
    static const char *yes[] = {
        "127.0.0.1",  "127.255.255.254", "10.0.0.1",         "10.255.255.255",
        "172.16.0.1", "172.31.255.255",  "192.168.1.1",      "169.254.1.1",
        "100.64.0.1", "100.127.255.255", "0.0.0.0",          "::1",
        "::",         "fe80::1",         "febf::1",          "fc00::1",
        "fdff::1",    "::ffff:10.1.2.3", "::ffff:127.0.0.1",
    };
    static const char *no[] = {
        "8.8.8.8",     "172.15.255.255", "172.32.0.1",   "192.169.0.1",    "100.63.255.255",
        "100.128.0.1", "11.0.0.1",       "128.0.0.1",    "203.0.113.1",    "2001:db8::1",
        "fec0::1",     "fe00::1",        "::2",          "::ffff:8.8.8.8", "",
        "not an ip",   "10.0.0",         "fe80::1%eth0",
    };
    (void)state;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!policy_ip_is_private(yes[i]))
            fail_msg("%s should be private", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (policy_ip_is_private(no[i]))
            fail_msg("%s should not be private", no[i]);
    assert_false(policy_ip_is_private(NULL));
}

static void test_dnsbl_name(void **state)
{
    char out[200];
    (void)state;
    assert_true(policy_dnsbl_name("192.0.2.99", "zen.example", out, sizeof out));
    assert_string_equal(out, "99.2.0.192.zen.example");
    assert_true(policy_dnsbl_name("192.0.2.99", "zen.example.", out, sizeof out));
    assert_string_equal(out, "99.2.0.192.zen.example");
    assert_true(policy_dnsbl_name("::ffff:192.0.2.99", "zen.example", out, sizeof out));
    assert_string_equal(out, "99.2.0.192.zen.example");
    /* RFC 5782 §2.4's own example */
    assert_true(
        policy_dnsbl_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com", out, sizeof out));
    assert_string_equal(out, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2."
                             "ugly.example.com");
    assert_true(policy_dnsbl_name("2001:db8:abcd::42", "bl6.test", out, sizeof out));
    assert_string_equal(out, V6_NIBBLES ".bl6.test");
    /* exactly fitting, one byte short */
    assert_true(policy_dnsbl_name("1.2.3.4", "z", out, 10));
    assert_string_equal(out, "4.3.2.1.z");
    assert_false(policy_dnsbl_name("1.2.3.4", "z", out, 9));
    assert_false(policy_dnsbl_name("1.2.3", "z", out, sizeof out));
    assert_false(policy_dnsbl_name("1.2.3.4", "", out, sizeof out));
    assert_false(policy_dnsbl_name("1.2.3.4", ".", out, sizeof out));
    assert_false(policy_dnsbl_name(NULL, "z", out, sizeof out));
}

static void test_bad_ip(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    assert_null(policy_lookup_start(f->base, f->r, "999.1.2.3", &no_lists, on_facts, &r));
    assert_null(policy_lookup_start(f->base, f->r, "mail.example", &no_lists, on_facts, &r));
    run_until(f, NULL, 0, 50);
    assert_int_equal(r.calls, 0);
    policy_lookup_cancel(NULL); /* harmless */
}

/* ---- PTR and forward confirmation ------------------------------------- */

static void test_ptr_verified(void **state)
{
    struct fx *f = *state;
    struct res r;
    lookup(f, "203.0.113.1", &no_lists, &r);
    assert_string_equal(r.f.ip, "203.0.113.1");
    assert_int_equal(r.f.family, AF_INET);
    struct in6_addr want;
    inet_pton(AF_INET6, "::ffff:203.0.113.1", &want);
    assert_memory_equal(&r.f.addr6, &want, sizeof want);
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_string_equal(r.f.ptr_name, "mail.good.test"); /* first name, lower-cased */
    assert_true(r.f.verified);
    assert_false(r.f.rfc1918);
    assert_true(r.f.sbrs_none); /* no lists configured */
    assert_int_equal(r.f.ndnslists, 0);
    assert_true(r.f.ms_ptr >= 0 && r.f.ms_ptr < 2000);
    assert_true(r.f.ms_forward >= 0 && r.f.ms_forward < 2000);
    assert_true(r.f.ms_reputation < 0); /* nothing queried */
    assert_true(r.f.ms_total >= r.f.ms_ptr);
    /* only the first PTR name is confirmed */
    assert_int_equal(server_count("mail.good.test", "A"), 1);
    assert_int_equal(server_count("second.test", "A"), 0);
}

static void test_ptr_unverified(void **state)
{
    struct fx *f = *state;
    struct res r;
    lookup(f, "203.0.113.2", &no_lists, &r);
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_string_equal(r.f.ptr_name, "elsewhere.test");
    assert_false(r.f.verified);
    assert_true(r.f.ms_forward >= 0);
}

static void test_ptr_missing(void **state)
{
    struct fx *f = *state;
    struct res r;
    lookup(f, "203.0.113.3", &no_lists, &r); /* NXDOMAIN */
    assert_int_equal(r.f.ptr, PTR_MISSING);
    assert_string_equal(r.f.ptr_name, "");
    assert_false(r.f.verified);
    assert_true(r.f.ms_ptr >= 0);
    assert_true(r.f.ms_forward < 0);
    lookup(f, "203.0.113.4", &no_lists, &r); /* NODATA */
    assert_int_equal(r.f.ptr, PTR_MISSING);
}

static void test_ptr_servfail(void **state)
{
    struct fx *f = *state;
    struct res r;
    lookup(f, "203.0.113.5", &no_lists, &r);
    assert_int_equal(r.f.ptr, PTR_TEMPFAIL);
    assert_false(r.f.verified);
    assert_true(r.f.ms_total < 1000); /* an answer, not a timeout */
}

/* A lost PTR answer: the callback comes at the deadline, not before. */
static void test_ptr_deadline(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct policy_lookup_params p = {.deadline_ms = 400};
    start(f, "203.0.113.6", &p, &r);
    run_until(f, &r.calls, 1, 300);
    assert_int_equal(r.calls, 0);
    run_until(f, &r.calls, 1, 3000);
    assert_int_equal(r.calls, 1);
    assert_false(r.reentrant);
    assert_true(r.at_ms >= EARLIEST(400) && r.at_ms < 1500);
    assert_int_equal(r.f.ptr, PTR_TEMPFAIL);
    assert_false(r.f.verified);
    assert_true(r.f.ms_ptr >= EARLIEST(400));
    assert_true(r.f.ms_total >= EARLIEST(400));
    run_until(f, NULL, 0, 100);
    assert_int_equal(r.calls, 1);
}

/* A lost forward answer: PTR_OK, not verified, at the deadline. */
static void test_forward_deadline(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct policy_lookup_params p = {.deadline_ms = 400};
    lookup(f, "203.0.113.7", &p, &r);
    assert_true(r.at_ms >= EARLIEST(400));
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_string_equal(r.f.ptr_name, "fwddrop.test");
    assert_false(r.f.verified);
    assert_true(r.f.ms_forward >= 0 && r.f.ms_forward <= r.f.ms_total);
}

/* ---- reputation -------------------------------------------------------- */

static char *code2[] = {"127.0.0.2"};

static void test_block_list(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {
        {.zone = "block.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "clean.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 2};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    int block0 = server_count("10.113.0.203.block.test", "A");
    int clean0 = server_count("10.113.0.203.clean.test", "A");
    lookup(f, "203.0.113.10", &p, &r);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == -5.0);
    assert_int_equal(r.f.ndnslists, 2);
    assert_zone(&r.f, "block.test", true, true);
    assert_zone(&r.f, "clean.test", true, false); /* NXDOMAIN: answered */
    assert_int_equal(r.f.ptr, PTR_MISSING);       /* in parallel with the lists */
    assert_true(r.f.ms_reputation >= 0 && r.f.ms_reputation <= r.f.ms_total);
    assert_int_equal(server_count("10.113.0.203.block.test", "A"), block0 + 1);
    assert_int_equal(server_count("10.113.0.203.clean.test", "A"), clean0 + 1);
}

static void test_allow_list(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {{.zone = "allow.test", .kind = DNSLIST_ALLOW, .weight = 3.5}};
    struct cfg_reputation rep = {.lists = lists, .nlists = 1};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "203.0.113.10", &p, &r);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == 3.5);
}

static void test_block_and_allow(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {
        {.zone = "block.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "allow.test", .kind = DNSLIST_ALLOW, .weight = 3.0, .codes = code2, .ncodes = 1},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 2};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "203.0.113.10", &p, &r);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == -2.0);
    assert_zone(&r.f, "block.test", true, true);
    assert_zone(&r.f, "allow.test", true, true);
}

static void test_codes_filter(void **state)
{
    struct fx *f = *state;
    struct res r;
    static char *bad_codes[] = {"not-an-ip"};
    struct cfg_dnslist lists[] = {
        /* answers 127.0.0.3, only 127.0.0.2 counts */
        {.zone = "codes.test", .kind = DNSLIST_BLOCK, .weight = -5.0, .codes = code2, .ncodes = 1},
        /* answers 127.0.0.4 and 127.0.0.2: one matching record is enough */
        {.zone = "block3.test", .kind = DNSLIST_BLOCK, .weight = -2.0, .codes = code2, .ncodes = 1},
        /* no usable code: nothing matches (not "any 127/8") */
        {.zone = "block2.test",
         .kind = DNSLIST_BLOCK,
         .weight = -4.0,
         .codes = bad_codes,
         .ncodes = 1},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 3};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "203.0.113.10", &p, &r);
    assert_zone(&r.f, "codes.test", true, false);
    assert_zone(&r.f, "block3.test", true, true);
    assert_zone(&r.f, "block2.test", true, false);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == -2.0);
}

static void test_clamp(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist low[] = {
        {.zone = "block.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "block2.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "block3.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
    };
    struct cfg_reputation rep = {.lists = low, .nlists = 3};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "203.0.113.10", &p, &r);
    assert_true(r.f.sbrs == -10.0);

    struct cfg_dnslist high[] = {
        {.zone = "allow.test", .kind = DNSLIST_ALLOW, .weight = 6.0},
        {.zone = "allow2.test", .kind = DNSLIST_ALLOW, .weight = 6.0},
    };
    rep = (struct cfg_reputation){.lists = high, .nlists = 2};
    lookup(f, "203.0.113.10", &p, &r);
    assert_true(r.f.sbrs == 10.0);
}

/* Every list lost: the score is None (not 0.0), at the lookup deadline. */
static void test_lists_deadline(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {
        {.zone = "drop1.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "drop2.test", .kind = DNSLIST_ALLOW, .weight = 5.0},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 2};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 400};
    lookup(f, "203.0.113.11", &p, &r);
    assert_true(r.at_ms >= EARLIEST(400) && r.at_ms < 1500);
    assert_true(r.f.sbrs_none);
    assert_int_equal(r.f.ptr, PTR_MISSING); /* answered before the deadline */
    assert_zone(&r.f, "drop1.test", false, false);
    assert_zone(&r.f, "drop2.test", false, false);
    assert_true(r.f.ms_reputation >= EARLIEST(400));
}

/* Every list times out in the resolver, well before the lookup deadline. */
static void test_lists_timeout(void **state)
{
    struct fx *f = *state;
    struct res r;
    fx_resolver(f, 200, 1);
    struct cfg_dnslist lists[] = {
        {.zone = "drop1.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "drop2.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 2};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 5000};
    lookup(f, "203.0.113.12", &p, &r);
    assert_true(r.at_ms < 2000);
    assert_true(r.f.sbrs_none);
    assert_zone(&r.f, "drop1.test", false, false);
    assert_zone(&r.f, "drop2.test", false, false);
}

/* SERVFAIL: not answered; NXDOMAIN and NODATA: answered, not listed. */
static void test_list_failures(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {
        {.zone = "servfail.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
        {.zone = "nodata.test", .kind = DNSLIST_BLOCK, .weight = -5.0},
    };
    struct cfg_reputation rep = {.lists = lists, .nlists = 2};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "203.0.113.10", &p, &r);
    assert_zone(&r.f, "servfail.test", false, false);
    assert_zone(&r.f, "nodata.test", true, false);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == 0.0);

    rep.nlists = 1; /* only the failing list: None */
    lookup(f, "203.0.113.10", &p, &r);
    assert_true(r.f.sbrs_none);
}

/* dnslist[] zones: deduplicated with the reputation lists, no weight, any
 * 127/8 answer lists, other answers do not. */
static void test_extra_zones(void **state)
{
    struct fx *f = *state;
    struct res r;
    const char *zones[] = {"BLOCK.test.", "extra.test", "wild.test", "clean.test", "extra.test"};
    struct cfg_dnslist lists[] = {{.zone = "block.test", .kind = DNSLIST_BLOCK, .weight = -3.0}};
    struct cfg_reputation rep = {.lists = lists, .nlists = 1};
    struct policy_lookup_params p = {
        .reputation = &rep, .zones = zones, .nzones = 5, .deadline_ms = 3000};
    int block0 = server_count("10.113.0.203.block.test", "A");
    int extra0 = server_count("10.113.0.203.extra.test", "A");
    lookup(f, "203.0.113.10", &p, &r);
    assert_int_equal(r.f.ndnslists, 4);
    assert_string_equal(r.f.dnslists[0].zone, "block.test");
    assert_zone(&r.f, "block.test", true, true);
    assert_zone(&r.f, "extra.test", true, true);
    assert_zone(&r.f, "wild.test", true, false);
    assert_zone(&r.f, "clean.test", true, false);
    assert_true(r.f.sbrs == -3.0); /* extra.test has no weight */
    /* one query per zone, whatever its spelling */
    assert_int_equal(server_count("10.113.0.203.block.test", "A"), block0 + 1);
    assert_int_equal(server_count("10.113.0.203.extra.test", "A"), extra0 + 1);

    /* extra zones alone never make a score */
    struct policy_lookup_params q = {.zones = zones, .nzones = 5, .deadline_ms = 3000};
    fx_resolver(f, 2000, 1);
    lookup(f, "203.0.113.10", &q, &r);
    assert_int_equal(r.f.ndnslists, 4);
    assert_zone(&r.f, "block.test", true, true);
    assert_true(r.f.sbrs_none);
}

/* More zones than facts can hold: the first POLICY_MAX_DNSLISTS are asked. */
static void test_zone_limit(void **state)
{
    struct fx *f = *state;
    struct res r;
    char names[POLICY_MAX_DNSLISTS + 4][32];
    const char *zones[POLICY_MAX_DNSLISTS + 4];
    for (size_t i = 0; i < POLICY_MAX_DNSLISTS + 4; i++) {
        snprintf(names[i], sizeof names[i], "many%zu.test", i);
        zones[i] = names[i];
    }
    struct policy_lookup_params p = {
        .zones = zones, .nzones = POLICY_MAX_DNSLISTS + 4, .deadline_ms = 3000};
    lookup(f, "203.0.113.13", &p, &r);
    assert_int_equal(r.f.ndnslists, POLICY_MAX_DNSLISTS);
    assert_int_equal(server_count_suffix(".many0.test A"), 1);
    assert_int_equal(server_count_suffix(".many16.test A"), 0);
}

/* ---- private clients --------------------------------------------------- */

static void test_private_no_lists(void **state)
{
    struct fx *f = *state;
    struct res r;
    const char *zones[] = {"priv.test"};
    struct cfg_dnslist lists[] = {{.zone = "priv.test", .kind = DNSLIST_BLOCK, .weight = -5.0}};
    struct cfg_reputation rep = {.lists = lists, .nlists = 1};
    struct policy_lookup_params p = {
        .reputation = &rep, .zones = zones, .nzones = 1, .deadline_ms = 3000};
    lookup(f, "127.0.0.5", &p, &r);
    assert_true(r.f.rfc1918);
    assert_true(r.f.sbrs_none);
    assert_int_equal(r.f.ndnslists, 0);
    assert_true(r.f.ms_reputation < 0);
    /* the PTR is still looked up (and confirmed) for loopback */
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_string_equal(r.f.ptr_name, "loop5.test");
    assert_true(r.f.verified);
    lookup(f, "10.1.2.3", &p, &r);
    assert_true(r.f.rfc1918);
    assert_int_equal(r.f.ptr, PTR_MISSING);
    assert_int_equal(server_count("3.2.1.10.in-addr.arpa", "PTR"), 1);
    assert_int_equal(server_count_suffix(".priv.test A"), 0);

    /* lookup_private: asked like any other host, still flagged rfc1918 */
    rep.lookup_private = true;
    lookup(f, "127.0.0.6", &p, &r);
    assert_true(r.f.rfc1918);
    assert_false(r.f.sbrs_none);
    assert_true(r.f.sbrs == -5.0);
    assert_zone(&r.f, "priv.test", true, true);
    assert_int_equal(server_count("6.0.0.127.priv.test", "A"), 1);
}

/* ---- concurrency, cancel ---------------------------------------------- */

/* A slow PTR for one connection never holds up a connection started after it. */
static void test_slow_does_not_delay_other(void **state)
{
    struct fx *f = *state;
    struct res slow, fast;
    struct policy_lookup_params p = {.deadline_ms = 5000};
    start(f, "203.0.113.20", &p, &slow);
    run_until(f, NULL, 0, 50); /* the slow query is on the wire */
    start(f, "203.0.113.21", &p, &fast);
    run_until(f, &fast.calls, 1, 3000);
    assert_int_equal(fast.calls, 1);
    assert_int_equal(slow.calls, 0);
    assert_true(fast.at_ms < 1000);
    assert_true(fast.f.verified);
    run_until(f, &slow.calls, 1, 4000);
    assert_int_equal(slow.calls, 1);
    assert_true(fast.order < slow.order);
    assert_true(slow.at_ms >= 1400);
    assert_int_equal(slow.f.ptr, PTR_OK);
    assert_string_equal(slow.f.ptr_name, "slow.test");
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    struct res a, b;
    struct cfg_dnslist lists[] = {{.zone = "block.test", .kind = DNSLIST_BLOCK, .weight = -5.0}};
    struct cfg_reputation rep = {.lists = lists, .nlists = 1};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 1000};

    /* before the loop ran at all */
    policy_lookup_cancel(start(f, "203.0.113.30", &p, &a));
    /* while the PTR (300 ms) is pending, the list answered */
    struct policy_lookup *l = start(f, "203.0.113.30", &p, &b);
    run_until(f, NULL, 0, 100);
    assert_int_equal(b.calls, 0);
    policy_lookup_cancel(l);
    run_until(f, NULL, 0, 1200); /* past the PTR answer and the deadline */
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
    struct resolver_stats st;
    resolver_get_stats(f->r, &st);
    assert_int_equal(st.pending, 0);
}

/* policy_lookup_cancel from inside the callback is harmless (ASan would see
 * a double free otherwise). */
static void test_cancel_in_callback(void **state)
{
    struct fx *f = *state;
    struct res r;
    start(f, "203.0.113.2", &no_lists, &r);
    r.cancel_in_cb = true;
    run_until(f, &r.calls, 1, 3000);
    assert_int_equal(r.calls, 1);
}

/* ---- IPv6 -------------------------------------------------------------- */

static void test_ipv6(void **state)
{
    struct fx *f = *state;
    struct res r;
    struct cfg_dnslist lists[] = {{.zone = "bl6.test", .kind = DNSLIST_BLOCK, .weight = -4.0}};
    struct cfg_reputation rep = {.lists = lists, .nlists = 1};
    struct policy_lookup_params p = {.reputation = &rep, .deadline_ms = 3000};
    lookup(f, "2001:DB8:abcd:0::42", &p, &r);
    assert_string_equal(r.f.ip, "2001:db8:abcd::42");
    assert_int_equal(r.f.family, AF_INET6);
    assert_false(r.f.rfc1918);
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_string_equal(r.f.ptr_name, "v6.test");
    assert_true(r.f.verified); /* by AAAA */
    assert_int_equal(server_count("v6.test", "AAAA"), 1);
    assert_int_equal(server_count("v6.test", "A"), 0);
    assert_int_equal(server_count(V6_NIBBLES ".ip6.arpa", "PTR"), 1);
    assert_int_equal(server_count(V6_NIBBLES ".bl6.test", "A"), 1);
    assert_zone(&r.f, "bl6.test", true, true);
    assert_true(r.f.sbrs == -4.0);
}

/* A dual-stack socket's view of an IPv4 client is an IPv4 client. */
static void test_ipv4_mapped(void **state)
{
    struct fx *f = *state;
    struct res r;
    lookup(f, "::ffff:203.0.113.1", &no_lists, &r);
    assert_string_equal(r.f.ip, "203.0.113.1");
    assert_int_equal(r.f.family, AF_INET);
    assert_int_equal(r.f.ptr, PTR_OK);
    assert_true(r.f.verified);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_is_private),
        cmocka_unit_test(test_dnsbl_name),
        cmocka_unit_test_setup_teardown(test_bad_ip, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_verified, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_unverified, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_missing, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_servfail, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ptr_deadline, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_forward_deadline, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_block_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_allow_list, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_block_and_allow, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_codes_filter, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_clamp, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lists_deadline, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lists_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_failures, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_extra_zones, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_zone_limit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_private_no_lists, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_slow_does_not_delay_other, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ipv6, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ipv4_mapped, fx_setup, fx_teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, server_start, server_stop);
}
