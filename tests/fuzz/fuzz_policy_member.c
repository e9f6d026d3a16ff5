/*
 * fuzz_policy_member: libFuzzer harness for the sender group member parser
 * (src/policy/member.c) and, through it, the HAT compiler (src/policy/hat.c).
 *
 * The input is one member text. When it parses, the harness checks the
 * parser's invariants (ranges ordered, scores within [-10, 10], names
 * lower-case), that the normalised text parses to the same member, and
 * then loads a configuration with that one member, compiles the HAT and
 * decides for the range's edges: both ends must match the member's group,
 * and the addresses just outside it must fall to the implicit ALL row.
 */
#include "core/config.h"
#include "policy/member.h"
#include "policy/policy.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void facts_v4(struct policy_facts *f, uint32_t a)
{
    memset(f, 0, sizeof *f);
    f->family = AF_INET;
    f->ptr = PTR_NOT_LOOKED;
    f->sbrs_none = true;
    f->addr6.s6_addr[10] = f->addr6.s6_addr[11] = 0xff;
    f->addr6.s6_addr[12] = (uint8_t)(a >> 24);
    f->addr6.s6_addr[13] = (uint8_t)(a >> 16);
    f->addr6.s6_addr[14] = (uint8_t)(a >> 8);
    f->addr6.s6_addr[15] = (uint8_t)a;
    snprintf(f->ip, sizeof f->ip, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static const char *decide_group(const struct policy_table *t, const struct policy_facts *f)
{
    struct policy_decision d;
    policy_decide(t, f, &d);
    if (d.group == NULL)
        abort();
    return d.group;
}

/* The one-member configuration, its table, and the edge decisions. */
static void check_table(const char *text, const struct member *m)
{
    char yaml[600];
    struct config_error err;
    char msg[256];

    snprintf(yaml, sizeof yaml,
             "sender_groups: [{name: G, policy: ACCEPTED, members: [\"%s\"]}]\n"
             "listeners: [{name: a, type: private, hat: [G]}]\n",
             text);
    struct config *cfg = config_load_buffer("fuzz", yaml, strlen(yaml), &err);
    if (cfg == NULL) {
        fprintf(stderr, "member '%s' parses but the config refuses it: %s\n", text, err.msg);
        abort();
    }
    struct policy_table *t = policy_table_compile(cfg, &cfg->listeners[0], msg, sizeof msg);
    if (t == NULL) {
        fprintf(stderr, "compile: %s\n", msg);
        abort();
    }
    struct policy_facts f;
    if (m->kind == MEMBER_IPV4) {
        facts_v4(&f, m->v4_lo);
        if (strcmp(decide_group(t, &f), "G") != 0)
            abort();
        facts_v4(&f, m->v4_hi);
        if (strcmp(decide_group(t, &f), "G") != 0)
            abort();
        if (m->v4_lo > 0) {
            facts_v4(&f, m->v4_lo - 1);
            if (strcmp(decide_group(t, &f), "ALL") != 0)
                abort();
        }
        if (m->v4_hi < UINT32_MAX) {
            facts_v4(&f, m->v4_hi + 1);
            if (strcmp(decide_group(t, &f), "ALL") != 0)
                abort();
        }
    } else if (m->kind == MEMBER_IPV6) {
        memset(&f, 0, sizeof f);
        f.family = AF_INET6;
        f.sbrs_none = true;
        memcpy(f.addr6.s6_addr, m->v6_lo, 16);
        if (strcmp(decide_group(t, &f), "G") != 0)
            abort();
        memcpy(f.addr6.s6_addr, m->v6_hi, 16);
        /* An IPv4-mapped address is an IPv4 client: IPv4 members only. */
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        bool is_v4 = memcmp(m->v6_hi, mapped, sizeof mapped) == 0;
        if (strcmp(decide_group(t, &f), is_v4 ? "ALL" : "G") != 0)
            abort();
    }
    char out[64];
    facts_v4(&f, 0x0a000001);
    policy_expand_banner(text, &f, "G", out, sizeof out);
    for (const char *c = out; *c; c++)
        if (*c == '\r' || *c == '\n')
            abort();
    policy_table_free(t);
    config_unref(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[MEMBER_MAX_LEN + 16], norm[sizeof text];
    struct member m, m2;

    /* Why the cut: longer texts are refused by length before parsing. */
    if (size >= sizeof text)
        size = sizeof text - 1;
    memcpy(text, data, size);
    text[size] = '\0';
    size = strlen(text); /* the parser sees up to the first NUL */
    if (member_parse(text, &m) != NULL)
        return 0;
    if (m.kind == MEMBER_IPV4 && m.v4_lo > m.v4_hi)
        abort();
    if (m.kind == MEMBER_IPV6 && memcmp(m.v6_lo, m.v6_hi, 16) > 0)
        abort();
    if (m.kind == MEMBER_SBRS && (m.sbrs_lo > m.sbrs_hi || m.sbrs_lo < -10.0 || m.sbrs_hi > 10.0))
        abort();
    for (const char *c = m.name; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            abort();
    memcpy(norm, text, size + 1);
    if (member_normalize(norm) != NULL || strlen(norm) != size)
        abort();
    if (member_parse(norm, &m2) != NULL || memcmp(&m, &m2, sizeof m) != 0)
        abort();
    (void)member_kind_name(m.kind);
    check_table(norm, &m);
    return 0;
}
