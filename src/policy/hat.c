/*
 * hat: compile a listener's host access table (HAT) and decide a
 * connecting host's sender group and mail flow policy from its facts.
 *
 * Design. policy_table_compile() turns each HAT row (a sender group and its
 * mail flow policy, both from the loaded configuration) into lookup
 * structures, once per configuration load:
 *   - IPv4 members (single addresses, CIDRs, ranges, partial addresses) as
 *     sorted, disjoint [lo, hi] uint32 ranges, searched by binary search;
 *   - IPv6 members the same, with 128-bit bounds;
 *   - exact host names and ".suffix" names as sorted arrays (a PTR name is
 *     looked up once whole and once per label boundary);
 *   - SBRS ranges, SBRS[none], dnslist zones, ALL, and the group's three
 *     PTR checks, which are short by nature and scanned.
 * Overlapping address members are clipped, not merged away: each range
 * keeps the index of a member that really contains it (the one that starts
 * lowest), so the decision can say which member matched ("10.0.0.0/8")
 * without scanning the text. Adjacent pieces of one member are joined.
 *
 * policy_decide() is a pure function of the table and the facts: rows in
 * order, first match wins; a matched row whose policy is CONTINUE is
 * skipped. Every table ends in an implicit row, group "ALL", member "ALL",
 * with the listener type's default policy (public: ACCEPTED, private:
 * BLOCKED); the configuration refuses CONTINUE for those two, so the last
 * row always decides.
 *
 * Host names match only the verified (forward-confirmed) PTR name: an
 * unverified name is whatever the owner of the reverse zone chose to
 * publish, so it never matches a host name member, as on the appliance.
 * The PTR checks are the way to act on missing, failed or unverified PTRs.
 *
 * Invariants: a table owns copies of every string it hands out
 * (decision.group points into it), so it may outlive the configuration it
 * was compiled from. Nothing is allocated by policy_decide().
 */
#include "policy/policy.h"

#include "core/alloc.h"
#include "core/config.h"
#include "policy/member.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALL_GROUP "ALL"

struct v6addr {
    uint64_t hi, lo;
};

struct v4seg {
    uint32_t lo, hi;
    uint32_t member; /* index into the row's member texts */
};

struct v6seg {
    struct v6addr lo, hi;
    uint32_t member;
};

struct name_ent {
    char *name; /* lower-case; suffixes keep their leading dot */
    uint32_t member;
};

struct sbrs_ent {
    double lo, hi;
    uint32_t member;
};

#define NO_MEMBER UINT32_MAX

struct hat_row {
    char *group;
    char **members; /* member texts, as configured (normalised) */
    size_t nmembers;
    struct v4seg *v4;
    size_t nv4;
    struct v6seg *v6;
    size_t nv6;
    struct name_ent *hosts, *suffixes; /* sorted by name */
    size_t nhosts, nsuffixes;
    struct sbrs_ent *sbrs;
    size_t nsbrs;
    struct name_ent *zones; /* dnslist[] members */
    size_t nzones;
    uint32_t sbrs_none, all; /* member index, or NO_MEMBER */
    bool ptr_missing, ptr_tempfail, ptr_mismatch;
    struct policy_params params;
};

struct policy_table {
    struct hat_row *rows; /* the last one is the implicit ALL */
    size_t nrows;
    char *zones[POLICY_MAX_DNSLISTS]; /* union for the lookups */
    size_t nzones;
    bool needs_ptr;
};

/* ---- 128-bit helpers ------------------------------------------------------ */

static struct v6addr v6_from_bytes(const unsigned char b[16])
{
    struct v6addr a = {0, 0};
    for (int i = 0; i < 8; i++) {
        a.hi = a.hi << 8 | b[i];
        a.lo = a.lo << 8 | b[i + 8];
    }
    return a;
}

static int v6_cmp(struct v6addr a, struct v6addr b)
{
    if (a.hi != b.hi)
        return a.hi < b.hi ? -1 : 1;
    if (a.lo != b.lo)
        return a.lo < b.lo ? -1 : 1;
    return 0;
}

static struct v6addr v6_inc(struct v6addr a)
{
    if (++a.lo == 0)
        a.hi++;
    return a;
}

/* ---- compiling address ranges --------------------------------------------- */

static int v4seg_cmp(const void *a, const void *b)
{
    const struct v4seg *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member;
}

/* Sort, then clip each range to what the ranges before it do not cover
 * (the running maximum is the last output's hi, since the output is sorted
 * and disjoint), joining adjacent pieces of the same member. In place. */
static size_t v4_disjoint(struct v4seg *s, size_t n)
{
    size_t out = 0;
    if (n == 0)
        return 0; /* s may be NULL, which qsort must not see */
    qsort(s, n, sizeof *s, v4seg_cmp);
    for (size_t i = 0; i < n; i++) {
        struct v4seg r = s[i];
        if (out > 0) {
            struct v4seg *last = &s[out - 1];
            if (r.lo <= last->hi) {
                if (r.hi <= last->hi)
                    continue;
                r.lo = last->hi + 1; /* no overflow: last->hi < r.hi */
            }
            if (last->hi + 1 == r.lo && last->member == r.member) {
                last->hi = r.hi;
                continue;
            }
        }
        s[out++] = r;
    }
    return out;
}

static int v6seg_cmp(const void *a, const void *b)
{
    const struct v6seg *x = a, *y = b;
    int c = v6_cmp(x->lo, y->lo);
    if (c != 0)
        return c;
    return x->member < y->member ? -1 : x->member > y->member;
}

static size_t v6_disjoint(struct v6seg *s, size_t n)
{
    size_t out = 0;
    if (n == 0)
        return 0;
    qsort(s, n, sizeof *s, v6seg_cmp);
    for (size_t i = 0; i < n; i++) {
        struct v6seg r = s[i];
        if (out > 0) {
            struct v6seg *last = &s[out - 1];
            if (v6_cmp(r.lo, last->hi) <= 0) {
                if (v6_cmp(r.hi, last->hi) <= 0)
                    continue;
                r.lo = v6_inc(last->hi);
            }
            if (v6_cmp(v6_inc(last->hi), r.lo) == 0 && last->member == r.member) {
                last->hi = r.hi;
                continue;
            }
        }
        s[out++] = r;
    }
    return out;
}

static int name_cmp(const void *a, const void *b)
{
    const struct name_ent *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->member < y->member ? -1 : x->member > y->member;
}

/* ---- compiling one row ---------------------------------------------------- */

static const enum policy_access access_map[] = {
    [CFG_ACCESS_ACCEPT] = ACCESS_ACCEPT,       [CFG_ACCESS_REJECT] = ACCESS_REJECT,
    [CFG_ACCESS_TCPREFUSE] = ACCESS_TCPREFUSE, [CFG_ACCESS_RELAY] = ACCESS_RELAY,
    [CFG_ACCESS_CONTINUE] = ACCESS_CONTINUE,
};

static const enum policy_tls tls_map[] = {
    [CFG_PTLS_OFF] = POLICY_TLS_OFF,
    [CFG_PTLS_PREFERRED] = POLICY_TLS_PREFERRED,
    [CFG_PTLS_REQUIRED] = POLICY_TLS_REQUIRED,
};

static void params_from_cfg(const struct cfg_mail_flow_policy *p, struct policy_params *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", p->name);
    o->access = access_map[p->access];
    o->reject_at_rcpt = p->reject_at_rcpt;
    o->max_message_size = p->max_message_size;
    o->max_concurrent_connections = p->max_concurrent_connections;
    o->max_messages_per_connection = p->max_messages_per_connection;
    o->max_recipients_per_message = p->max_recipients_per_message;
    o->max_recipients_per_hour = p->max_recipients_per_hour;
    o->rate_limit_code = (uint16_t)p->rate_limit_code;
    snprintf(o->rate_limit_text, sizeof o->rate_limit_text, "%s",
             p->rate_limit_text ? p->rate_limit_text : "");
    o->banner_code = (uint16_t)p->banner_code;
    snprintf(o->banner_text, sizeof o->banner_text, "%s", p->banner_text ? p->banner_text : "");
    snprintf(o->banner_hostname, sizeof o->banner_hostname, "%s",
             p->banner_hostname ? p->banner_hostname : "");
    o->reject_code = (uint16_t)p->reject_code;
    snprintf(o->reject_text, sizeof o->reject_text, "%s", p->reject_text ? p->reject_text : "");
    o->tls = tls_map[p->tls];
}

/* Add one parsed member to the row's lookup arrays (grown with caps). */
struct row_caps {
    size_t v4, v6, hosts, suffixes, sbrs, zones;
};

static void row_add(struct hat_row *r, struct row_caps *cap, const struct member *m, uint32_t idx)
{
    switch (m->kind) {
    case MEMBER_IPV4:
        xgrow((void **)&r->v4, &cap->v4, r->nv4 + 1, sizeof *r->v4);
        r->v4[r->nv4++] = (struct v4seg){m->v4_lo, m->v4_hi, idx};
        return;
    case MEMBER_IPV6:
        xgrow((void **)&r->v6, &cap->v6, r->nv6 + 1, sizeof *r->v6);
        r->v6[r->nv6++] = (struct v6seg){v6_from_bytes(m->v6_lo), v6_from_bytes(m->v6_hi), idx};
        return;
    case MEMBER_HOST:
        xgrow((void **)&r->hosts, &cap->hosts, r->nhosts + 1, sizeof *r->hosts);
        r->hosts[r->nhosts++] = (struct name_ent){xstrdup(m->name), idx};
        return;
    case MEMBER_SUFFIX:
        xgrow((void **)&r->suffixes, &cap->suffixes, r->nsuffixes + 1, sizeof *r->suffixes);
        r->suffixes[r->nsuffixes++] = (struct name_ent){xstrdup(m->name), idx};
        return;
    case MEMBER_SBRS:
        xgrow((void **)&r->sbrs, &cap->sbrs, r->nsbrs + 1, sizeof *r->sbrs);
        r->sbrs[r->nsbrs++] = (struct sbrs_ent){m->sbrs_lo, m->sbrs_hi, idx};
        return;
    case MEMBER_SBRS_NONE:
        if (r->sbrs_none == NO_MEMBER)
            r->sbrs_none = idx;
        return;
    case MEMBER_DNSLIST:
        xgrow((void **)&r->zones, &cap->zones, r->nzones + 1, sizeof *r->zones);
        r->zones[r->nzones++] = (struct name_ent){xstrdup(m->name), idx};
        return;
    case MEMBER_ALL:
        if (r->all == NO_MEMBER)
            r->all = idx;
        return;
    }
}

static bool row_compile(struct hat_row *r, const char *group, char *const *members, size_t n,
                        char *err, size_t errlen)
{
    struct row_caps cap = {0, 0, 0, 0, 0, 0};
    r->group = xstrdup(group);
    r->sbrs_none = r->all = NO_MEMBER;
    r->members = xcalloc(n ? n : 1, sizeof *r->members);
    for (size_t i = 0; i < n; i++) {
        struct member m;
        const char *why = member_parse(members[i], &m);
        r->members[r->nmembers++] = xstrdup(members[i]);
        if (why != NULL) {
            snprintf(err, errlen, "sender group %s: member '%s': %s", group, members[i], why);
            return false;
        }
        row_add(r, &cap, &m, (uint32_t)i);
    }
    r->nv4 = v4_disjoint(r->v4, r->nv4);
    r->nv6 = v6_disjoint(r->v6, r->nv6);
    if (r->nhosts > 0)
        qsort(r->hosts, r->nhosts, sizeof *r->hosts, name_cmp);
    if (r->nsuffixes > 0)
        qsort(r->suffixes, r->nsuffixes, sizeof *r->suffixes, name_cmp);
    return true;
}

static void row_free(struct hat_row *r)
{
    for (size_t i = 0; i < r->nmembers; i++)
        free(r->members[i]);
    for (size_t i = 0; i < r->nhosts; i++)
        free(r->hosts[i].name);
    for (size_t i = 0; i < r->nsuffixes; i++)
        free(r->suffixes[i].name);
    for (size_t i = 0; i < r->nzones; i++)
        free(r->zones[i].name);
    free(r->group);
    free(r->members);
    free(r->v4);
    free(r->v6);
    free(r->hosts);
    free(r->suffixes);
    free(r->sbrs);
    free(r->zones);
}

/* Add zone to the table's union unless present; false when full. */
static bool table_add_zone(struct policy_table *t, const char *zone)
{
    for (size_t i = 0; i < t->nzones; i++)
        if (strcasecmp(t->zones[i], zone) == 0)
            return true;
    if (t->nzones == POLICY_MAX_DNSLISTS)
        return false;
    t->zones[t->nzones++] = xstrdup(zone);
    return true;
}

struct policy_table *policy_table_compile(const struct config *cfg, const struct cfg_listener *l,
                                          char *err, size_t errlen)
{
    static char *const all_members[] = {ALL_GROUP};
    struct policy_table *t = xcalloc(1, sizeof *t);
    const char *def_policy = l->type == LISTENER_PRIVATE ? "BLOCKED" : "ACCEPTED";

    t->rows = xcalloc(l->nhat + 1, sizeof *t->rows);
    for (size_t i = 0; i <= l->nhat; i++) {
        struct hat_row *r = &t->rows[t->nrows++];
        const struct cfg_sender_group *g = NULL;
        const char *pname = def_policy;
        if (i < l->nhat) {
            g = config_sender_group(cfg, l->hat[i]);
            if (g == NULL) {
                snprintf(err, errlen, "listener %s: no sender group '%s'", l->name, l->hat[i]);
                goto fail;
            }
            pname = g->policy;
        }
        const struct cfg_mail_flow_policy *p = config_policy(cfg, pname);
        if (p == NULL) {
            snprintf(err, errlen, "listener %s: no mail flow policy '%s'", l->name, pname);
            goto fail;
        }
        if (!row_compile(r, g ? g->name : ALL_GROUP, g ? g->members : all_members,
                         g ? g->nmembers : 1, err, errlen))
            goto fail;
        params_from_cfg(p, &r->params);
        if (g != NULL) {
            r->ptr_missing = g->ptr_missing;
            r->ptr_tempfail = g->ptr_tempfail;
            r->ptr_mismatch = g->ptr_mismatch;
        } else if (r->params.access == ACCESS_CONTINUE) {
            /* The configuration refuses this; the last row must decide. */
            snprintf(err, errlen, "listener %s: default policy %s is CONTINUE", l->name, pname);
            goto fail;
        }
        if (r->nhosts || r->nsuffixes || r->ptr_missing || r->ptr_tempfail || r->ptr_mismatch)
            t->needs_ptr = true;
    }
    for (size_t i = 0; i < cfg->reputation.nlists; i++)
        if (!table_add_zone(t, cfg->reputation.lists[i].zone))
            goto full;
    for (size_t i = 0; i < t->nrows; i++)
        for (size_t k = 0; k < t->rows[i].nzones; k++)
            if (!table_add_zone(t, t->rows[i].zones[k].name))
                goto full;
    return t;
full:
    snprintf(err, errlen, "listener %s: more than %d DNS lists", l->name, POLICY_MAX_DNSLISTS);
fail:
    policy_table_free(t);
    return NULL;
}

void policy_table_free(struct policy_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows; i++)
        row_free(&t->rows[i]);
    for (size_t i = 0; i < t->nzones; i++)
        free(t->zones[i]);
    free(t->rows);
    free(t);
}

size_t policy_table_dnslists(const struct policy_table *t, const char **zones, size_t max)
{
    size_t n = 0;
    for (; n < t->nzones && n < max; n++)
        zones[n] = t->zones[n];
    return n;
}

bool policy_table_needs_ptr(const struct policy_table *t)
{
    return t->needs_ptr;
}

/* ---- deciding ------------------------------------------------------------- */

/* The segment containing a, or NULL: the last one starting at or below a. */
static const struct v4seg *v4_find(const struct v4seg *s, size_t n, uint32_t a)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s[mid].lo <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && a <= s[lo - 1].hi ? &s[lo - 1] : NULL;
}

static const struct v6seg *v6_find(const struct v6seg *s, size_t n, struct v6addr a)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v6_cmp(s[mid].lo, a) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && v6_cmp(a, s[lo - 1].hi) <= 0 ? &s[lo - 1] : NULL;
}

static const struct name_ent *name_find(const struct name_ent *s, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s[mid].name, name);
        if (c == 0)
            return &s[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The facts' address as IPv4 (family AF_INET, or an IPv4-mapped IPv6 from
 * a dual-stack socket): such a client is an IPv4 client and is matched
 * against IPv4 members only, even by an IPv6 member like ::/0. */
static bool facts_v4(const struct policy_facts *f, uint32_t *out)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *b = f->addr6.s6_addr;
    if (f->family != AF_INET && memcmp(b, mapped, sizeof mapped) != 0)
        return false;
    *out = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
    return true;
}

/* Which member of row r matches f (in the order addresses, host names,
 * suffixes, SBRS, SBRS[none], dnslist, ALL, then the PTR checks); the
 * reported text goes to member. */
static bool row_match(const struct hat_row *r, const struct policy_facts *f, const char *ptr_name,
                      char *member, size_t mlen)
{
    uint32_t idx = NO_MEMBER;
    const char *text = NULL;
    uint32_t a4;

    if (facts_v4(f, &a4)) {
        const struct v4seg *s = v4_find(r->v4, r->nv4, a4);
        if (s != NULL)
            idx = s->member;
    } else if (f->family == AF_INET6) {
        const struct v6seg *s = v6_find(r->v6, r->nv6, v6_from_bytes(f->addr6.s6_addr));
        if (s != NULL)
            idx = s->member;
    }
    if (idx == NO_MEMBER && ptr_name != NULL) {
        const struct name_ent *e = name_find(r->hosts, r->nhosts, ptr_name);
        /* ".example.com" is strictly below example.com: try each proper
         * suffix starting at a dot, longest first. */
        for (const char *d = strchr(ptr_name, '.'); e == NULL && d != NULL; d = strchr(d + 1, '.'))
            e = name_find(r->suffixes, r->nsuffixes, d);
        if (e != NULL)
            idx = e->member;
    }
    if (idx == NO_MEMBER && !f->sbrs_none)
        for (size_t i = 0; i < r->nsbrs && idx == NO_MEMBER; i++)
            if (f->sbrs >= r->sbrs[i].lo && f->sbrs <= r->sbrs[i].hi)
                idx = r->sbrs[i].member;
    if (idx == NO_MEMBER && f->sbrs_none)
        idx = r->sbrs_none;
    for (size_t i = 0; i < r->nzones && idx == NO_MEMBER; i++)
        for (size_t k = 0; k < f->ndnslists && k < POLICY_MAX_DNSLISTS; k++)
            if (f->dnslists[k].listed && strcasecmp(f->dnslists[k].zone, r->zones[i].name) == 0)
                idx = r->zones[i].member;
    if (idx == NO_MEMBER)
        idx = r->all;
    if (idx != NO_MEMBER)
        text = r->members[idx];
    else if (r->ptr_missing && f->ptr == PTR_MISSING)
        text = "PTR missing";
    else if (r->ptr_tempfail && f->ptr == PTR_TEMPFAIL)
        text = "PTR lookup failed temporarily";
    else if (r->ptr_mismatch && f->ptr == PTR_OK && !f->verified)
        text = "PTR does not match forward lookup";
    if (text == NULL)
        return false;
    snprintf(member, mlen, "%s", text);
    return true;
}

void policy_decide(const struct policy_table *t, const struct policy_facts *f,
                   struct policy_decision *out)
{
    char name[256];
    const char *ptr_name = NULL;

    /* Only a verified name can match a host name member. Compared
     * lower-case and without a trailing dot, whatever the lookup gave. */
    if (f->ptr == PTR_OK && f->verified && f->ptr_name[0] != '\0') {
        size_t n = strnlen(f->ptr_name, sizeof f->ptr_name - 1);
        for (size_t i = 0; i < n; i++) {
            char c = f->ptr_name[i];
            name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
        }
        if (n > 0 && name[n - 1] == '.')
            n--;
        name[n] = '\0';
        ptr_name = name;
    }
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < t->nrows; i++) {
        const struct hat_row *r = &t->rows[i];
        bool last = i + 1 == t->nrows;
        if (!row_match(r, f, ptr_name, out->member, sizeof out->member))
            continue;
        if (r->params.access == ACCESS_CONTINUE && !last)
            continue;
        out->group = r->group;
        out->params = r->params;
        return;
    }
    abort(); /* the implicit ALL row always matches: a compile bug */
}

/* ---- banner and names ----------------------------------------------------- */

/* Append s to out[*o..], replacing control characters, always leaving room
 * for the NUL: the result goes into an SMTP reply line, so CR and LF must
 * never come out, whatever a DNS answer held. */
static void append_clean(char *out, size_t outlen, size_t *o, const char *s)
{
    for (; *s != '\0' && *o + 1 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        out[(*o)++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
}

void policy_expand_banner(const char *text, const struct policy_facts *f, const char *group,
                          char *out, size_t outlen)
{
    /* $Hostname: the verified PTR name; "None" when a name was found but
     * not forward-confirmed; "Unknown" when there is no name at all
     * (missing, lookup failed, or not looked up). */
    const char *host = "Unknown";
    if (f->ptr == PTR_OK && f->ptr_name[0] != '\0')
        host = f->verified ? f->ptr_name : "None";
    const struct {
        const char *name;
        const char *value;
        int max; /* ip and ptr_name are fixed arrays: never read past them */
    } vars[] = {
        {"$Hostname", host, (int)sizeof f->ptr_name - 1},
        {"$Group", group ? group : "None", 255},
        {"$RemoteIP", f->ip, (int)sizeof f->ip - 1},
    };
    size_t o = 0;

    if (outlen == 0)
        return;
    while (*text != '\0' && o + 1 < outlen) {
        size_t k = 0;
        for (; k < sizeof vars / sizeof vars[0]; k++)
            if (strncasecmp(text, vars[k].name, strlen(vars[k].name)) == 0)
                break;
        if (k < sizeof vars / sizeof vars[0]) {
            char value[256];
            snprintf(value, sizeof value, "%.*s", vars[k].max, vars[k].value);
            append_clean(out, outlen, &o, value);
            text += strlen(vars[k].name);
            continue;
        }
        char one[2] = {*text++, '\0'};
        append_clean(out, outlen, &o, one);
    }
    out[o] = '\0';
}

const char *policy_access_name(enum policy_access a)
{
    static const char *const names[] = {
        [ACCESS_ACCEPT] = "ACCEPT",       [ACCESS_REJECT] = "REJECT",
        [ACCESS_TCPREFUSE] = "TCPREFUSE", [ACCESS_RELAY] = "RELAY",
        [ACCESS_CONTINUE] = "CONTINUE",
    };
    return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "?";
}
