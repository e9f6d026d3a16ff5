/*
 * config: load the YAML configuration into an immutable struct config.
 *
 * Design. Every parameter is declared exactly once, in the schema tables
 * below (struct cfg_param): its key, its type, where it lives in the target
 * struct (offset and width), its default written in the same syntax a user
 * would write, its bounds and a one-line help. Everything else is driven from
 * those tables through one small set of functions per type (struct
 * type_ops): applying defaults, parsing a YAML node, printing it back
 * (config_dump) and releasing it. Adding a parameter therefore means adding a
 * struct field and one table line; the loader, the dump, the free path and
 * the docs' "every key" list cannot drift apart.
 *
 * Loading is two steps. libyaml's yaml_parser_load() builds a document tree
 * (it reports syntax errors with a mark); then walk_section() walks a mapping
 * node against a section table, so every error carries the line and column
 * of the node that caused it. Sections nest (paths, limits, listeners[].tls,
 * ...); a nested section's offsets are relative to the same base struct as
 * its parent, except list items, whose base is their own element struct.
 *
 * Lists of sections (listeners, smtp_routes and their hosts,
 * destination_controls, bounce_profiles) are one type, PT_LIST, described by
 * table fields too: element size, item-count bounds, which first key must be
 * unique, an entry that always exists at [0] ("default"), scalar forms that
 * stand instead of a list (hosts: USEDNS), and at most one per-item check
 * and one finishing step for what a table cannot say (listener sockets,
 * max_retry >= initial_retry, sorting hosts by priority). The first key of
 * every list section is its key: dumped on the "- " line and used for
 * uniqueness and lookups.
 *
 * Lists whose entries partly exist before the file says anything
 * (sender_groups, mail_flow_policies) carry presets: a table of named
 * entries, each a list of key/value overrides in config syntax applied on
 * top of the section's schema defaults. Every preset entry always exists,
 * first and in table order; an entry of the file with a preset's name gets
 * the preset's value for every key it does not give. So the schema
 * defaults of mail_flow_policies are the ACCEPTED policy's values (the base
 * of a new policy), and TRUSTED, BLOCKED, THROTTLED and RELAYED are ACCEPTED
 * plus their overrides. Sender group and policy names are case-insensitive:
 * they are stored upper-case (aliases ALLOWED_LIST and BLOCKED_LIST as
 * WHITELIST and BLACKLIST), so comparisons are plain strcmp.
 *
 * Cross-references (a destination control's bounce_profile, a sender
 * group's policy, a listener's hat entries) name an entry of a top-level
 * list that may come later in the file, so they are recorded with their
 * node while walking and checked once the whole file is loaded; the error
 * still points at the referring node.
 *
 * Invariants: a config under construction is always freeable by
 * config_free() (values are stored into it as soon as they are parsed, and
 * counts are only raised for initialised elements), so every error path is a
 * plain "return false" and the single caller frees. A returned config is
 * complete (all defaults filled, listener hostnames set) and never modified
 * again; only refs changes, from the loop thread, so it is a plain int.
 *
 * The walk never recurses into nodes the schema does not know, and the schema
 * is three sections deep (top level, a list item, a list item or section
 * inside it), so anchors/aliases (even self-referencing ones) cannot make it
 * loop or blow up; every list has an item bound.
 */
#include "core/config.h"

#include "core/alloc.h"
#include "policy/member.h"
#include "policy/policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* Why 1 MiB: a real configuration is a few kilobytes; anything this large is
 * a wrong path (a log, a core file), and the whole file is held in memory. */
#define CONFIG_MAX_BYTES (1024 * 1024)

/* Why 24: the widest sections (top level, mail_flow_policies items) have 17
 * and 16 keys; walk_section keeps a "seen" array of this size on the stack
 * for duplicate and required checks (nested lists add one such array per
 * level, three at most). */
#define SECTION_MAX_PARAMS 24

/* Item bounds of the lists. Why: uniqueness checks are pairwise, so a
 * generated or hostile 1 MiB file must not turn a reload into seconds of CPU;
 * the numbers are far above any real gateway. A listener is a bound socket;
 * a route's hosts are tried in order for every message, so more than 100
 * is a mistake rather than a plan. */
#define LISTENERS_MAX       256
#define ROUTES_MAX          10000
#define ROUTE_HOSTS_MAX     100
#define DEST_CONTROLS_MAX   10000
#define BOUNCE_PROFILES_MAX 1000
/* Sender groups and policies are matched per connection through compiled
 * tables, so their number costs nothing at run time; the bounds only keep
 * the pairwise name checks cheap. A HAT longer than 100 rows is unreadable
 * and a group of more than 100000 members belongs in a DNS list. */
#define SENDER_GROUPS_MAX 1000
#define POLICIES_MAX      1000
#define GROUP_MEMBERS_MAX 100000
#define HAT_MAX           100
/* Why 8 + 8: a connection's facts hold POLICY_MAX_DNSLISTS list answers,
 * shared by the reputation lists and the dnslist[] members of all groups;
 * more lists would also mean more pre-banner queries per connection. */
#define REPUTATION_LISTS_MAX 8
#define MEMBER_DNSLISTS_MAX  8
_Static_assert(REPUTATION_LISTS_MAX + MEMBER_DNSLISTS_MAX <= POLICY_MAX_DNSLISTS,
               "a connection's facts must hold every DNS list answer");
#define DNSLIST_CODES_MAX 32
/* Why 63: a policy name is copied into struct policy_params.name[64]. */
#define NAME_MAX_LEN 63
/* Why 199: reply texts are copied into struct policy_params' text[200]. */
#define REPLY_TEXT_MAX 199

#define DEFAULT_LISTENER_NAME "InboundMail"
/* Key of the destination control and bounce profile that always exist. */
#define DEFAULT_ENTRY_NAME "default"
/* The route domain that matches every domain, after exact and suffix routes. */
#define ROUTE_ALL "ALL"

#define KIB (UINT64_C(1024))
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

#define MS_PER_S (UINT64_C(1000))
#define MS_PER_M (MS_PER_S * 60)
#define MS_PER_H (MS_PER_M * 60)
#define MS_PER_D (MS_PER_H * 24)

enum param_type {
    PT_STRING,
    PT_BOOL,
    PT_UINT,
    PT_SIZE,
    PT_DURATION,
    PT_ENUM,
    PT_DOUBLE, /* a decimal with up to 3 places, stored as double */
    PT_STRLIST,
    PT_SECTION,
    PT_LIST, /* a sequence of sections (listeners, routes, ...) */
};

/* Validates one string value, normalising it in place if needed (relay
 * domains are lower-cased). Returns NULL, or why the value is invalid. */
typedef const char *(*string_check_fn)(char *s);

struct cfg_section;
struct cfg_param;
struct load_ctx;

/* PT_LIST: validates item i (already walked; seen holds its value nodes)
 * against items 0..i-1 or against itself. Returns false with the error set. */
typedef bool (*item_check_fn)(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                              size_t i, yaml_node_t *const *seen, yaml_node_t *item);

/* A preset list entry: key/value overrides in config syntax. */
struct cfg_preset_value {
    const char *key, *value;
};
struct cfg_preset {
    const char *name;
    const struct cfg_preset_value *values;
    size_t nvalues;
};

struct cfg_param {
    const char *key;
    enum param_type type;
    size_t offset;       /* of the value, from the section's base struct */
    size_t width;        /* numeric types, PT_LIST kind: sizeof the field */
    size_t count_offset; /* PT_STRLIST, PT_LIST: of the size_t count */
    /* Default in config syntax; NULL = none. PT_LIST: key of the one element
     * the list holds when absent (NULL: empty). */
    const char *def;
    char *(*def_fn)(void);
    uint64_t min, max; /* PT_LIST, PT_STRLIST: item count bounds (STRLIST max 0: none) */
    double dmin, dmax; /* PT_DOUBLE bounds */
    bool required;
    bool allow_empty;      /* PT_STRING: "" is a value */
    bool optional_section; /* PT_SECTION: absent (not dumped) until given */
    /* PT_ENUM: value = index. PT_LIST: names[1..] are scalars accepted
     * instead of a list, stored as their index at kind_offset (0 = a list). */
    const char *const *names;
    string_check_fn check;             /* PT_STRING, PT_STRLIST items */
    const struct cfg_section *section; /* PT_SECTION, PT_LIST items */
    const char *ref; /* PT_STRING: must be the key of an entry of this top-level list */
    /* PT_LIST only. */
    size_t elem_size;
    size_t kind_offset;
    const char *item_name;            /* "listener": "must list at least one listener" */
    const char *unique_what;          /* non-NULL: keys are unique ("listener name") */
    bool default_first;               /* an entry keyed def always exists, at [0] */
    const struct cfg_preset *presets; /* entries that always exist, first */
    size_t npresets;
    item_check_fn item_check;
    void (*finish)(void *arr, size_t n); /* after all items (sorting) */
    const char *help;
};

struct cfg_section {
    const char *name; /* NULL for the top level */
    const struct cfg_param *params;
    size_t nparams;
};

/* A PT_STRING value with a ref, checked once the whole file is loaded. */
struct pending_ref {
    const struct cfg_param *p;
    yaml_node_t *node;
};

struct load_ctx {
    yaml_document_t *doc;
    struct config *cfg;
    struct config_error *err;
    struct pending_ref *refs;
    size_t nrefs, refs_cap;
    /* distinct dnslist[] member zones of the sender groups read so far */
    char member_zones[MEMBER_DNSLISTS_MAX][256];
    size_t nmember_zones;
};

struct type_ops {
    void (*set_default)(const struct cfg_param *p, void *base);
    bool (*parse)(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node, void *base);
    void (*dump)(const struct cfg_param *p, const void *base, FILE *out, int indent);
    void (*release)(const struct cfg_param *p, void *base);
    /* Scalar numeric types only: text <-> value. */
    const char *(*conv)(const struct cfg_param *p, const char *s, uint64_t *out);
    void (*fmt)(const struct cfg_param *p, uint64_t v, char *buf, size_t len);
};

static const struct type_ops type_ops[];

/* ---- small helpers ------------------------------------------------------ */

#define FIELD_AT(base, off)  ((void *)((char *)(base) + (off)))
#define CFIELD_AT(base, off) ((const void *)((const char *)(base) + (off)))

static bool ascii_isdigit(int c)
{
    return c >= '0' && c <= '9';
}

static bool ascii_isalnum(int c)
{
    return ascii_isdigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int ascii_tolower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Case-insensitive comparison of n bytes, ASCII only (no locale). */
static bool ascii_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_tolower((unsigned char)a[i]) != ascii_tolower((unsigned char)b[i]))
            return false;
    return true;
}

/* Copy user text into buf for an error message: printable ASCII only, and
 * short, so a hostile key cannot flood or garble a terminal. */
static const char *sanitize(const char *s, size_t len, char *buf, size_t buflen)
{
    size_t o = 0, i = 0;
    for (; i < len && o + 4 < buflen; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (i < len) { /* cut: say so */
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static uint64_t load_uint(const void *field, size_t width)
{
    switch (width) {
    case 1:
        return *(const uint8_t *)field;
    case 2:
        return *(const uint16_t *)field;
    case 4:
        return *(const uint32_t *)field;
    case 8:
        return *(const uint64_t *)field;
    }
    abort(); /* schema table bug */
}

static void store_uint(void *field, size_t width, uint64_t v)
{
    switch (width) {
    case 1:
        *(uint8_t *)field = (uint8_t)v;
        return;
    case 2:
        *(uint16_t *)field = (uint16_t)v;
        return;
    case 4:
        *(uint32_t *)field = (uint32_t)v;
        return;
    case 8:
        *(uint64_t *)field = v;
        return;
    }
    abort(); /* schema table bug */
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- errors ------------------------------------------------------------- */

static bool load_error(struct load_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record an error at node's position (or none when node is NULL); returns
 * false so callers can "return load_error(...)". */
static bool load_error(struct load_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    ctx->err->line = node ? (unsigned)node->start_mark.line + 1 : 0;
    ctx->err->column = node ? (unsigned)node->start_mark.column + 1 : 0;
    va_start(ap, fmt);
    vsnprintf(ctx->err->msg, sizeof ctx->err->msg, fmt, ap);
    va_end(ap);
    return false;
}

static void set_error(struct config_error *err, unsigned line, unsigned column, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

static void set_error(struct config_error *err, unsigned line, unsigned column, const char *fmt,
                      ...)
{
    va_list ap;
    err->line = line;
    err->column = column;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}

static const char *section_where(const struct cfg_section *sec, char *buf, size_t len)
{
    if (sec->name == NULL)
        snprintf(buf, len, "at top level");
    else
        snprintf(buf, len, "in section '%s'", sec->name);
    return buf;
}

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    default:
        return "a scalar";
    }
}

/* ---- YAML node access --------------------------------------------------- */

/* A plain empty, "~" or "null" scalar: YAML's null. "key:" with nothing after
 * it is how a user writes an empty section with all children commented out. */
static bool node_is_null(const yaml_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (strcmp((const char *)n->data.scalar.value, nulls[i]) == 0)
            return true;
    return false;
}

/* The text of a scalar value node, refusing non-scalars, null and control
 * characters (which includes an embedded NUL from a "\0" escape: the value
 * would silently be cut, and CR/LF would end up inside an SMTP banner). */
static bool node_text(struct load_ctx *ctx, const struct cfg_param *p, const yaml_node_t *n,
                      const char **out)
{
    if (n->type != YAML_SCALAR_NODE)
        return load_error(ctx, n, "'%s' must be a scalar, not %s", p->key, node_kind(n));
    if (node_is_null(n))
        return load_error(ctx, n, "'%s' has no value", p->key);
    const unsigned char *v = n->data.scalar.value;
    for (size_t i = 0; i < n->data.scalar.length; i++)
        if (v[i] < 0x20 || v[i] == 0x7f)
            return load_error(ctx, n, "'%s' contains a control character", p->key);
    if (n->data.scalar.length == 0 && !p->allow_empty)
        return load_error(ctx, n, "'%s' must not be empty", p->key);
    *out = (const char *)v;
    return true;
}

/* ---- value checks (string_check_fn) ------------------------------------- */

/* hostname and user go into SMTP replies and getpwnam(): one word. */
static const char *check_word(char *s)
{
    return strchr(s, ' ') ? "must not contain spaces" : NULL;
}

static const char *check_ip_literal(char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1)
        return NULL;
    return "not an IPv4 or IPv6 address literal";
}

/* A relay domain: LDH labels separated by dots, an optional leading '.'
 * ("any subdomain of"), lower-cased in place. No trailing dot: domains from
 * RCPT TO never carry one, so such an entry could never match. */
static const char *check_relay_domain(char *s)
{
    char *p = s;
    if (*p == '.')
        p++;
    if (*p == '\0')
        return "empty domain";
    /* Why 253/63: RFC 1035 2.3.4 (a name's text form, and one label). */
    if (strlen(p) > 253)
        return "domain longer than 253 characters";
    while (*p != '\0') {
        char *label = p;
        for (; *p != '\0' && *p != '.'; p++) {
            if (!ascii_isalnum((unsigned char)*p) && *p != '-')
                return "only letters, digits, hyphens and dots are allowed";
            *p = (char)ascii_tolower((unsigned char)*p);
        }
        size_t len = (size_t)(p - label);
        if (len == 0)
            return "empty label";
        if (len > 63)
            return "label longer than 63 characters";
        /* RFC 1123 2.1 / RFC 5321 Ldh-str: no hyphen at either end. */
        if (label[0] == '-' || p[-1] == '-')
            return "label starts or ends with a hyphen";
        if (*p == '.' && *++p == '\0')
            return "trailing dot is not allowed";
    }
    return NULL;
}

/* A route's domain: a relay-style domain, or ALL in any case (stored as ALL,
 * so it cannot be confused with a lower-cased domain named "all"). */
static const char *check_route_domain(char *s)
{
    if (strlen(s) == strlen(ROUTE_ALL) && ascii_caseeq(s, ROUTE_ALL, strlen(ROUTE_ALL))) {
        memcpy(s, ROUTE_ALL, strlen(ROUTE_ALL));
        return NULL;
    }
    return check_relay_domain(s);
}

/* A route host: an IPv4/IPv6 literal or a host name, lower-cased in place.
 * A name whose last label is all digits is refused (RFC 3696 2): it is
 * almost always a mistyped address ("192.168.0.256"). */
static const char *check_route_host(char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1) {
        for (char *c = s; *c != '\0'; c++)
            *c = (char)ascii_tolower((unsigned char)*c);
        return NULL;
    }
    if (strchr(s, ':') != NULL)
        return "not an IPv6 address literal";
    if (s[0] == '.')
        return "a host name cannot start with a dot";
    const char *why = check_relay_domain(s);
    if (why != NULL)
        return why;
    const char *last = strrchr(s, '.');
    last = last ? last + 1 : s;
    while (ascii_isdigit((unsigned char)*last))
        last++;
    return *last == '\0' ? "not an IPv4 address, nor a host name (last label all digits)" : NULL;
}

static bool port_ok(const char *s)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; ascii_isdigit((unsigned char)s[n]); n++) {
        if (n == 5)
            return false;
        v = v * 10 + (unsigned long)(s[n] - '0');
    }
    return n > 0 && s[n] == '\0' && v >= 1 && v <= 65535;
}

/* A DNS server: "ip", "ip:port" (IPv4) or "[ipv6]:port"; a bare IPv6
 * literal is an "ip" too. */
/* An executable's path: absolute, since it is run without a shell or PATH. */
static const char *check_abs_path(char *s)
{
    return s[0] == '/' ? NULL : "must be an absolute path";
}

static const char *check_resolver_server(char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];
    char host[INET6_ADDRSTRLEN];

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return "missing ']'";
        size_t hlen = (size_t)(close - s - 1);
        if (hlen >= sizeof host)
            return "not an IPv6 address literal";
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, addr) != 1)
            return "not an IPv6 address literal";
        if (close[1] != ':')
            return "expected ':port' after ']'";
        return port_ok(close + 2) ? NULL : "port must be 1..65535";
    }
    if (inet_pton(AF_INET6, s, addr) == 1 || inet_pton(AF_INET, s, addr) == 1)
        return NULL;
    const char *colon = strchr(s, ':');
    if (colon == NULL || strchr(colon + 1, ':') != NULL)
        return "expected \"ip\", \"ip:port\" or \"[ipv6]:port\"";
    size_t hlen = (size_t)(colon - s);
    if (hlen >= sizeof host)
        return "not an IPv4 address literal";
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, addr) != 1)
        return "not an IPv4 address literal";
    return port_ok(colon + 1) ? NULL : "port must be 1..65535";
}

/* A sender group or mail flow policy name: letters, digits, '_' and '-',
 * upper-cased in place (names are case-insensitive). */
static const char *check_name(char *s)
{
    if (strlen(s) > NAME_MAX_LEN)
        return "name longer than 63 characters";
    for (char *c = s; *c != '\0'; c++) {
        if (!ascii_isalnum((unsigned char)*c) && *c != '_' && *c != '-')
            return "only letters, digits, '_' and '-' are allowed";
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - ('a' - 'A'));
    }
    return NULL;
}

/* Newer appliance names of two predefined groups; stored canonical. */
static const struct {
    const char *alias, *name;
} group_aliases[] = {{"ALLOWED_LIST", "WHITELIST"}, {"BLOCKED_LIST", "BLACKLIST"}};

#define GROUP_ALL "ALL"

/* A sender group name (also a listener's hat entry): a name, aliases
 * resolved in place (they are longer than what they stand for), and not
 * ALL, which is the implicit last row of every HAT. */
static const char *check_group_name(char *s)
{
    const char *why = check_name(s);
    if (why != NULL)
        return why;
    if (strcmp(s, GROUP_ALL) == 0)
        return "ALL is the implicit last row of every HAT and cannot be named";
    for (size_t i = 0; i < sizeof group_aliases / sizeof group_aliases[0]; i++)
        if (strcmp(s, group_aliases[i].alias) == 0)
            memcpy(s, group_aliases[i].name, strlen(group_aliases[i].name) + 1);
    return NULL;
}

/* A DNS list zone: a domain name, no leading dot (member.c's rule, shared
 * with dnslist[] members). */
static const char *check_zone(char *s)
{
    return member_check_domain(s);
}

static const char *check_ipv4_literal(char *s)
{
    unsigned char addr[sizeof(struct in_addr)];
    return inet_pton(AF_INET, s, addr) == 1 ? NULL : "not an IPv4 address literal";
}

/* A reply text after the code. Control characters (CR, LF) are already
 * refused by node_text; the length bound is the policy's buffer. */
static const char *check_reply_text(char *s)
{
    return strlen(s) > REPLY_TEXT_MAX ? "longer than 199 characters" : NULL;
}

/* A host name shown in banners, EHLO and Received headers: one word of at
 * most 253 octets (RFC 1035 2.3.4), so every line built from it has a
 * known bound. */
static const char *check_hostname(char *s)
{
    if (strlen(s) > 253)
        return "longer than 253 characters";
    return check_word(s);
}

/* The hostname a policy shows in its banner: one word, or "" for the
 * listener's hostname. */
static const char *check_banner_hostname(char *s)
{
    return check_hostname(s);
}

/* ---- numeric conversions (type_ops.conv / type_ops.fmt) ----------------- */

/* Leading decimal digits of *sp into *out, advancing *sp; NULL or why not. */
static const char *conv_digits(const char **sp, uint64_t *out)
{
    const char *s = *sp;
    uint64_t v = 0;
    if (!ascii_isdigit((unsigned char)*s))
        return "expected a non-negative integer";
    for (; ascii_isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return "number too large";
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return NULL;
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

/* Digits followed by one of units (matched case-insensitively, whole). */
static const char *conv_with_units(const char *s, const struct unit *units, size_t nunits,
                                   uint64_t *out, const char *what)
{
    uint64_t v;
    const char *why = conv_digits(&s, &v);
    if (why != NULL)
        return why;
    for (size_t i = 0; i < nunits; i++) {
        size_t ul = strlen(units[i].suffix);
        if (strlen(s) == ul && ascii_caseeq(s, units[i].suffix, ul)) {
            if (units[i].mult != 0 && v > UINT64_MAX / units[i].mult)
                return "number too large";
            *out = v * units[i].mult;
            return NULL;
        }
    }
    return what;
}

static const struct unit size_units[] = {{"", 1}, {"K", KIB}, {"M", MIB}, {"G", GIB}};
/* "s" before "": fmt_with_units keeps the first of equal units, so a dump
 * says "2s" rather than a bare "2". */
static const struct unit duration_units[] = {
    {"s", MS_PER_S}, {"", MS_PER_S}, {"ms", 1}, {"m", MS_PER_M}, {"h", MS_PER_H}};

static const char *conv_uint(const struct cfg_param *p, const char *s, uint64_t *out)
{
    uint64_t v;
    const char *why = conv_digits(&s, &v);
    if (why != NULL)
        return why;
    if (*s != '\0')
        return "expected a non-negative integer";
    *out = v;
    return NULL;
}

static const char *conv_size(const struct cfg_param *p, const char *s, uint64_t *out)
{
    return conv_with_units(s, size_units, sizeof size_units / sizeof size_units[0], out,
                           "expected a size: bytes, or a number with K, M or G");
}

static const char *conv_duration(const struct cfg_param *p, const char *s, uint64_t *out)
{
    return conv_with_units(s, duration_units, sizeof duration_units / sizeof duration_units[0], out,
                           "expected a duration: seconds, or a number with ms, s, m or h");
}

static const char *conv_bool(const struct cfg_param *p, const char *s, uint64_t *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strlen(s) == strlen(yes[i]) && ascii_caseeq(s, yes[i], strlen(yes[i]))) {
            *out = 1;
            return NULL;
        }
        if (strlen(s) == strlen(no[i]) && ascii_caseeq(s, no[i], strlen(no[i]))) {
            *out = 0;
            return NULL;
        }
    }
    return "expected true or false";
}

/* names[from..] as "a, b or c" into buf (last_sep: " or ", or ", " when the
 * caller appends its own last alternative). */
static const char *join_names(const char *const *names, size_t from, const char *last_sep,
                              char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = from; names[i] != NULL && o < len; i++) {
        const char *sep = i == from ? "" : names[i + 1] == NULL ? last_sep : ", ";
        int w = snprintf(buf + o, len - o, "%s%s", sep, names[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    return buf;
}

/* Exact, case-sensitive: the names are lower-case words. num_parse words
 * the error, since it lists the names. */
static const char *conv_enum(const struct cfg_param *p, const char *s, uint64_t *out)
{
    for (size_t i = 0; p->names[i] != NULL; i++) {
        if (strcmp(s, p->names[i]) == 0) {
            *out = i;
            return NULL;
        }
    }
    return "unknown value";
}

static void fmt_uint(const struct cfg_param *p, uint64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Largest unit that divides v exactly, so dump output loads back equal. */
static void fmt_with_units(uint64_t v, const struct unit *units, size_t nunits, char *buf,
                           size_t len, const char *zero)
{
    if (v == 0) {
        snprintf(buf, len, "%s", zero);
        return;
    }
    size_t best = nunits; /* the unit with mult 1 always qualifies */
    for (size_t i = 0; i < nunits; i++)
        if (v % units[i].mult == 0 && (best == nunits || units[i].mult > units[best].mult))
            best = i;
    snprintf(buf, len, "%llu%s", (unsigned long long)(v / units[best].mult), units[best].suffix);
}

static void fmt_size(const struct cfg_param *p, uint64_t v, char *buf, size_t len)
{
    fmt_with_units(v, size_units, sizeof size_units / sizeof size_units[0], buf, len, "0");
}

static void fmt_duration(const struct cfg_param *p, uint64_t v, char *buf, size_t len)
{
    fmt_with_units(v, duration_units, sizeof duration_units / sizeof duration_units[0], buf, len,
                   "0s");
}

static void fmt_bool(const struct cfg_param *p, uint64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%s", v ? "true" : "false");
}

static void fmt_enum(const struct cfg_param *p, uint64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%s", p->names[v]);
}

/* ---- dump helpers ------------------------------------------------------- */

/* A YAML double-quoted string; escapes keep any byte sequence loadable. */
static void dump_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void dump_help(const struct cfg_param *p, FILE *out)
{
    if (p->help != NULL)
        fprintf(out, "  # %s", p->help);
    fputc('\n', out);
}

static void section_dump(const struct cfg_section *sec, const void *base, FILE *out, int indent);
static void section_defaults(const struct cfg_section *sec, void *base);
static void section_release(const struct cfg_section *sec, void *base);
static bool walk_section(struct load_ctx *ctx, const struct cfg_section *sec, yaml_node_t *node,
                         void *base, yaml_node_t **seen);

/* ---- PT_STRING ---------------------------------------------------------- */

static void string_default(const struct cfg_param *p, void *base)
{
    char **field = FIELD_AT(base, p->offset);
    *field = p->def_fn ? p->def_fn() : p->def ? xstrdup(p->def) : NULL;
}

static bool string_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                         void *base)
{
    char **field = FIELD_AT(base, p->offset);
    const char *text;
    char buf[64];

    if (!node_text(ctx, p, node, &text))
        return false;
    char *v = xstrdup(text);
    const char *why = p->check ? p->check(v) : NULL;
    if (why != NULL) {
        load_error(ctx, node, "'%s': invalid value '%s': %s", p->key,
                   sanitize(text, strlen(text), buf, sizeof buf), why);
        free(v);
        return false;
    }
    free(*field);
    *field = v;
    if (p->ref != NULL) {
        xgrow((void **)&ctx->refs, &ctx->refs_cap, ctx->nrefs + 1, sizeof *ctx->refs);
        ctx->refs[ctx->nrefs++] = (struct pending_ref){p, node};
    }
    return true;
}

static void string_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    const char *const *field = CFIELD_AT(base, p->offset);
    if (*field == NULL)
        return;
    fprintf(out, "%*s%s: ", indent, "", p->key);
    dump_quoted(out, *field);
    dump_help(p, out);
}

static void string_release(const struct cfg_param *p, void *base)
{
    char **field = FIELD_AT(base, p->offset);
    free(*field);
    *field = NULL;
}

/* ---- numeric scalars: PT_BOOL, PT_UINT, PT_SIZE, PT_DURATION, PT_ENUM --- */

static void num_default(const struct cfg_param *p, void *base)
{
    uint64_t v;
    /* A default that does not parse or is out of its own bounds is a schema
     * table bug: fail loudly on the first load, in every test. */
    if (p->def == NULL || type_ops[p->type].conv(p, p->def, &v) != NULL || v < p->min || v > p->max)
        abort();
    store_uint(FIELD_AT(base, p->offset), p->width, v);
}

static bool num_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                      void *base)
{
    const struct type_ops *ops = &type_ops[p->type];
    const char *text, *why;
    uint64_t v;
    char buf[64], lo[32], hi[32], expected[128];

    if (!node_text(ctx, p, node, &text))
        return false;
    why = ops->conv(p, text, &v);
    if (why != NULL && p->type == PT_ENUM) {
        size_t o = (size_t)snprintf(expected, sizeof expected, "expected ");
        join_names(p->names, 0, " or ", expected + o, sizeof expected - o);
        why = expected;
    }
    if (why != NULL)
        return load_error(ctx, node, "'%s': invalid value '%s': %s", p->key,
                          sanitize(text, strlen(text), buf, sizeof buf), why);
    if (v < p->min || v > p->max) {
        ops->fmt(p, p->min, lo, sizeof lo);
        ops->fmt(p, p->max, hi, sizeof hi);
        return load_error(ctx, node, "'%s' out of range: '%s' is not between %s and %s", p->key,
                          sanitize(text, strlen(text), buf, sizeof buf), lo, hi);
    }
    store_uint(FIELD_AT(base, p->offset), p->width, v);
    return true;
}

static void num_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    char buf[32];
    type_ops[p->type].fmt(p, load_uint(CFIELD_AT(base, p->offset), p->width), buf, sizeof buf);
    fprintf(out, "%*s%s: %s", indent, "", p->key, buf);
    dump_help(p, out);
}

static void num_release(const struct cfg_param *p, void *base)
{
}

/* ---- PT_DOUBLE ---------------------------------------------------------- */

/* Optional sign, digits, optional '.' and 1..3 digits; no exponent, no
 * "nan"/"inf" (strtod would take them). Why at most 3 places: the dump
 * prints 3 places, so every accepted value loads back equal. */
static const char *conv_double(const char *s, double *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    const char *d0 = p;
    while (ascii_isdigit((unsigned char)*p))
        p++;
    /* Why 6 digits: far beyond any bound, and strtod stays exact. */
    if (p == d0 || p - d0 > 6)
        return "expected a decimal number such as -5 or 2.5";
    if (*p == '.') {
        const char *f0 = ++p;
        while (ascii_isdigit((unsigned char)*p))
            p++;
        if (p == f0 || p - f0 > 3)
            return "expected a decimal number with at most 3 decimal places";
    }
    if (*p != '\0')
        return "expected a decimal number such as -5 or 2.5";
    *out = strtod(s, NULL);
    return NULL;
}

/* Three places, trailing zeros dropped but one kept: "-5.0", "2.25". */
static void fmt_double(double v, char *buf, size_t len)
{
    snprintf(buf, len, "%.3f", v);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0' && buf[n - 2] != '.')
        buf[--n] = '\0';
}

static void double_default(const struct cfg_param *p, void *base)
{
    double v;
    if (p->def == NULL || conv_double(p->def, &v) != NULL || v < p->dmin || v > p->dmax)
        abort(); /* schema table bug */
    *(double *)FIELD_AT(base, p->offset) = v;
}

static bool double_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                         void *base)
{
    const char *text, *why;
    double v;
    char buf[64], lo[32], hi[32];

    if (!node_text(ctx, p, node, &text))
        return false;
    why = conv_double(text, &v);
    if (why != NULL)
        return load_error(ctx, node, "'%s': invalid value '%s': %s", p->key,
                          sanitize(text, strlen(text), buf, sizeof buf), why);
    if (v < p->dmin || v > p->dmax) {
        fmt_double(p->dmin, lo, sizeof lo);
        fmt_double(p->dmax, hi, sizeof hi);
        return load_error(ctx, node, "'%s' out of range: '%s' is not between %s and %s", p->key,
                          sanitize(text, strlen(text), buf, sizeof buf), lo, hi);
    }
    *(double *)FIELD_AT(base, p->offset) = v;
    return true;
}

static void double_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    char buf[32];
    fmt_double(*(const double *)CFIELD_AT(base, p->offset), buf, sizeof buf);
    fprintf(out, "%*s%s: %s", indent, "", p->key, buf);
    dump_help(p, out);
}

/* Set a scalar parameter from text in config syntax (a preset's value);
 * text the schema itself refuses is a table bug. */
static void param_set_text(const struct cfg_param *p, void *base, const char *text)
{
    uint64_t v;
    double d;
    char **field;

    switch (p->type) {
    case PT_STRING:
        field = FIELD_AT(base, p->offset);
        free(*field);
        *field = xstrdup(text);
        return;
    case PT_DOUBLE:
        if (conv_double(text, &d) != NULL || d < p->dmin || d > p->dmax)
            abort();
        *(double *)FIELD_AT(base, p->offset) = d;
        return;
    case PT_BOOL:
    case PT_UINT:
    case PT_SIZE:
    case PT_DURATION:
    case PT_ENUM:
        if (type_ops[p->type].conv(p, text, &v) != NULL || v < p->min || v > p->max)
            abort();
        store_uint(FIELD_AT(base, p->offset), p->width, v);
        return;
    default:
        abort(); /* presets set scalars only */
    }
}

/* ---- PT_STRLIST --------------------------------------------------------- */

static void strlist_default(const struct cfg_param *p, void *base)
{
    *(char ***)FIELD_AT(base, p->offset) = NULL;
    *(size_t *)FIELD_AT(base, p->count_offset) = 0;
}

static void strlist_release(const struct cfg_param *p, void *base)
{
    char ***list = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    free_strv(*list, *n);
    *list = NULL;
    *n = 0;
}

static bool strlist_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                          void *base)
{
    char ***list = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    size_t cap = 0;

    strlist_release(p, base);
    if (node_is_null(node))
        return true;
    if (node->type != YAML_SEQUENCE_NODE)
        return load_error(ctx, node, "'%s' must be a sequence, not %s", p->key, node_kind(node));
    size_t count = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (count < p->min)
        return load_error(ctx, node, "'%s' must list at least one %s", p->key, p->item_name);
    if (p->max != 0 && count > p->max)
        return load_error(
            ctx, yaml_document_get_node(ctx->doc, node->data.sequence.items.start[p->max]),
            "'%s' lists more than %llu %ss", p->key, (unsigned long long)p->max, p->item_name);
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, *it);
        const char *text;
        char buf[64];
        if (!node_text(ctx, p, item, &text))
            return false;
        char *v = xstrdup(text);
        const char *why = p->check ? p->check(v) : NULL;
        if (why != NULL) {
            load_error(ctx, item, "'%s': invalid value '%s': %s", p->key,
                       sanitize(text, strlen(text), buf, sizeof buf), why);
            free(v);
            return false;
        }
        xgrow((void **)list, &cap, *n + 1, sizeof **list);
        (*list)[(*n)++] = v;
        if (p->ref != NULL) {
            xgrow((void **)&ctx->refs, &ctx->refs_cap, ctx->nrefs + 1, sizeof *ctx->refs);
            ctx->refs[ctx->nrefs++] = (struct pending_ref){p, item};
        }
    }
    return true;
}

static void strlist_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    char *const *list = *(char **const *)CFIELD_AT(base, p->offset);
    size_t n = *(const size_t *)CFIELD_AT(base, p->count_offset);

    fprintf(out, "%*s%s: [", indent, "", p->key);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            fputs(", ", out);
        dump_quoted(out, list[i]);
    }
    fputc(']', out);
    dump_help(p, out);
}

/* ---- PT_SECTION --------------------------------------------------------- */

static void sectionp_default(const struct cfg_param *p, void *base)
{
    section_defaults(p->section, base);
}

static bool sectionp_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                           void *base)
{
    return walk_section(ctx, p->section, node, base, NULL);
}

static void sectionp_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    /* An optional section (tls) exists only when its first, required, key is set. */
    if (p->optional_section &&
        *(char *const *)CFIELD_AT(base, p->section->params[0].offset) == NULL)
        return;
    fprintf(out, "%*s%s:", indent, "", p->key);
    dump_help(p, out);
    section_dump(p->section, base, out, indent + 2);
}

static void sectionp_release(const struct cfg_param *p, void *base)
{
    section_release(p->section, base);
}

/* ---- PT_LIST ------------------------------------------------------------ */

static void *list_elem(const struct cfg_param *p, void *arr, size_t i)
{
    return (char *)arr + i * p->elem_size;
}

static const void *list_celem(const struct cfg_param *p, const void *arr, size_t i)
{
    return (const char *)arr + i * p->elem_size;
}

/* The key of a list element: its section's first parameter, a string. */
static const char *list_key(const struct cfg_param *p, const void *elem)
{
    return *(char *const *)CFIELD_AT(elem, p->section->params[0].offset);
}

/* The element of list p (stored in base) whose key is key, or NULL. */
static const void *list_find(const struct cfg_param *p, const void *base, const char *key)
{
    const void *arr = *(const void *const *)CFIELD_AT(base, p->offset);
    size_t n = *(const size_t *)CFIELD_AT(base, p->count_offset);
    for (size_t i = 0; i < n; i++)
        if (strcmp(list_key(p, list_celem(p, arr, i)), key) == 0)
            return list_celem(p, arr, i);
    return NULL;
}

static void list_release(const struct cfg_param *p, void *base)
{
    void **arr = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    for (size_t i = 0; i < *n; i++)
        section_release(p->section, list_elem(p, *arr, i));
    free(*arr);
    *arr = NULL;
    *n = 0;
}

/* Insert a fresh element keyed p->def, all defaults, at [0]. */
static void list_insert_default(const struct cfg_param *p, void *base)
{
    void **arr = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    size_t cap = *n;

    xgrow(arr, &cap, *n + 1, p->elem_size);
    memmove(list_elem(p, *arr, 1), *arr, *n * p->elem_size);
    void *e = *arr;
    memset(e, 0, p->elem_size);
    section_defaults(p->section, e);
    char **key = FIELD_AT(e, p->section->params[0].offset);
    free(*key);
    *key = xstrdup(p->def);
    (*n)++;
}

/* default_first: the entry keyed p->def goes to [0], the others keep their
 * file order; a fresh one is made when the file has none. */
static void list_default_first(const struct cfg_param *p, void *base)
{
    void *arr = *(void **)FIELD_AT(base, p->offset);
    size_t n = *(size_t *)FIELD_AT(base, p->count_offset);

    for (size_t k = 0; k < n; k++) {
        if (strcmp(list_key(p, list_elem(p, arr, k)), p->def) != 0)
            continue;
        if (k > 0) {
            void *tmp = xmalloc(p->elem_size);
            memcpy(tmp, list_elem(p, arr, k), p->elem_size);
            memmove(list_elem(p, arr, 1), arr, k * p->elem_size);
            memcpy(arr, tmp, p->elem_size);
            free(tmp);
        }
        return;
    }
    list_insert_default(p, base);
}

static size_t param_index(const struct cfg_section *sec, const char *key);

/* The preset entry named key, or NULL. */
static const struct cfg_preset *list_preset(const struct cfg_param *p, const char *key)
{
    for (size_t i = 0; i < p->npresets; i++)
        if (strcmp(p->presets[i].name, key) == 0)
            return &p->presets[i];
    return NULL;
}

/* A preset's values for the keys the file did not give (seen: the item's
 * value nodes; NULL for an entry the file does not have at all). */
static void preset_apply(const struct cfg_param *p, const struct cfg_preset *ps, void *elem,
                         yaml_node_t *const *seen)
{
    for (size_t i = 0; i < ps->nvalues; i++) {
        size_t idx = param_index(p->section, ps->values[i].key);
        if (seen == NULL || seen[idx] == NULL)
            param_set_text(&p->section->params[idx], elem, ps->values[i].value);
    }
}

/* Every preset entry exists, first, in table order; the others keep their
 * file order after them. Missing ones are made from defaults + preset. */
static void list_presets_first(const struct cfg_param *p, void *base)
{
    void **arr = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    size_t cap = *n;

    for (size_t k = 0; k < p->npresets; k++) {
        if (list_find(p, base, p->presets[k].name) != NULL)
            continue;
        xgrow(arr, &cap, *n + 1, p->elem_size);
        void *e = list_elem(p, *arr, *n);
        memset(e, 0, p->elem_size);
        section_defaults(p->section, e);
        char **key = FIELD_AT(e, p->section->params[0].offset);
        free(*key);
        *key = xstrdup(p->presets[k].name);
        preset_apply(p, &p->presets[k], e, NULL);
        (*n)++;
    }
    void *tmp = xmalloc(p->elem_size);
    for (size_t k = 0; k < p->npresets; k++) {
        size_t j = k;
        while (strcmp(list_key(p, list_elem(p, *arr, j)), p->presets[k].name) != 0)
            j++; /* present: made above if the file lacked it */
        if (j == k)
            continue;
        memcpy(tmp, list_elem(p, *arr, j), p->elem_size);
        memmove(list_elem(p, *arr, k + 1), list_elem(p, *arr, k), (j - k) * p->elem_size);
        memcpy(list_elem(p, *arr, k), tmp, p->elem_size);
    }
    free(tmp);
}

static void list_default(const struct cfg_param *p, void *base)
{
    *(void **)FIELD_AT(base, p->offset) = NULL;
    *(size_t *)FIELD_AT(base, p->count_offset) = 0;
    if (p->names != NULL)
        store_uint(FIELD_AT(base, p->kind_offset), p->width, 0);
    if (p->def != NULL)
        list_insert_default(p, base);
    if (p->presets != NULL)
        list_presets_first(p, base);
}

/* Item i's key against items 0..i-1 (keys are normalised, so strcmp). */
static bool list_check_unique(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                              size_t i, yaml_node_t *key_node)
{
    const char *ki = list_key(p, list_celem(p, arr, i));
    char buf[64];
    for (size_t j = 0; j < i; j++)
        if (strcmp(ki, list_key(p, list_celem(p, arr, j))) == 0)
            return load_error(ctx, key_node, "duplicate %s '%s'", p->unique_what,
                              sanitize(ki, strlen(ki), buf, sizeof buf));
    return true;
}

/* One of the scalar forms (names[1..]) standing instead of the list. */
static bool list_parse_scalar(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                              void *base)
{
    const char *text;
    char buf[64], alts[128];

    if (!node_text(ctx, p, node, &text))
        return false;
    for (size_t i = 1; p->names[i] != NULL; i++) {
        if (strcmp(text, p->names[i]) == 0) {
            store_uint(FIELD_AT(base, p->kind_offset), p->width, i);
            return true;
        }
    }
    return load_error(ctx, node, "'%s': invalid value '%s': expected %s or a list of %ss", p->key,
                      sanitize(text, strlen(text), buf, sizeof buf),
                      join_names(p->names, 1, ", ", alts, sizeof alts), p->item_name);
}

static bool list_parse(struct load_ctx *ctx, const struct cfg_param *p, yaml_node_t *node,
                       void *base)
{
    void **arr = FIELD_AT(base, p->offset);
    size_t *n = FIELD_AT(base, p->count_offset);
    size_t cap = 0, count = 0;
    yaml_node_t *seen[SECTION_MAX_PARAMS];

    list_release(p, base);
    if (p->names != NULL) {
        store_uint(FIELD_AT(base, p->kind_offset), p->width, 0);
        if (node->type == YAML_SCALAR_NODE && !node_is_null(node))
            return list_parse_scalar(ctx, p, node, base);
    }
    if (!node_is_null(node) && node->type != YAML_SEQUENCE_NODE)
        return load_error(ctx, node, "'%s' must be a sequence, not %s", p->key, node_kind(node));
    if (!node_is_null(node))
        count = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    /* A gateway that listens nowhere, or a route to no host, is a mistake,
     * not a configuration. */
    if (count < p->min)
        return load_error(ctx, node, "'%s' must list at least one %s", p->key, p->item_name);
    if (count > p->max)
        return load_error(
            ctx, yaml_document_get_node(ctx->doc, node->data.sequence.items.start[p->max]),
            "'%s' lists more than %llu %ss", p->key, (unsigned long long)p->max, p->item_name);
    for (size_t k = 0; k < count; k++) {
        yaml_node_t *item = yaml_document_get_node(ctx->doc, node->data.sequence.items.start[k]);
        if (item->type != YAML_MAPPING_NODE)
            return load_error(ctx, item, "each entry of '%s' must be a mapping, not %s", p->key,
                              node_kind(item));
        xgrow(arr, &cap, *n + 1, p->elem_size);
        void *e = list_elem(p, *arr, *n);
        memset(e, 0, p->elem_size);
        section_defaults(p->section, e);
        (*n)++;
        if (!walk_section(ctx, p->section, item, e, seen))
            return false;
        const struct cfg_preset *ps = list_preset(p, list_key(p, e));
        if (ps != NULL)
            preset_apply(p, ps, e, seen);
        if (p->unique_what != NULL && !list_check_unique(ctx, p, *arr, *n - 1, seen[0]))
            return false;
        if (p->item_check != NULL && !p->item_check(ctx, p, *arr, *n - 1, seen, item))
            return false;
    }
    if (p->default_first)
        list_default_first(p, base);
    if (p->presets != NULL)
        list_presets_first(p, base);
    if (p->finish != NULL)
        p->finish(*arr, *n);
    return true;
}

static void list_dump(const struct cfg_param *p, const void *base, FILE *out, int indent)
{
    const void *arr = *(const void *const *)CFIELD_AT(base, p->offset);
    size_t n = *(const size_t *)CFIELD_AT(base, p->count_offset);

    fprintf(out, "%*s%s:", indent, "", p->key);
    if (p->names != NULL) {
        uint64_t kind = load_uint(CFIELD_AT(base, p->kind_offset), p->width);
        if (kind != 0) { /* USEDNS, /dev/null: plain scalars that need no quotes */
            fprintf(out, " %s", p->names[kind]);
            dump_help(p, out);
            return;
        }
    }
    if (n == 0)
        fputs(" []", out);
    dump_help(p, out);
    for (size_t i = 0; i < n; i++) {
        /* "- " then the first key (a scalar) on the same line; the rest of
         * the mapping indented under it. */
        const void *e = list_celem(p, arr, i);
        fprintf(out, "%*s- ", indent + 2, "");
        const struct cfg_param *first = &p->section->params[0];
        type_ops[first->type].dump(first, e, out, 0);
        for (size_t k = 1; k < p->section->nparams; k++) {
            const struct cfg_param *q = &p->section->params[k];
            type_ops[q->type].dump(q, e, out, indent + 4);
        }
    }
}

/* ---- list item checks and finishing steps ------------------------------- */

/* Binary form of a validated address literal, for duplicate detection that
 * sees "::1" and "0:0::1" as the same socket. */
static void listener_sockkey(const struct cfg_listener *l, unsigned char key[19])
{
    memset(key, 0, 19);
    if (inet_pton(AF_INET, l->address, key + 3) == 1)
        key[0] = 4;
    else if (inet_pton(AF_INET6, l->address, key + 3) == 1)
        key[0] = 6;
    key[1] = (unsigned char)(l->port >> 8);
    key[2] = (unsigned char)(l->port & 0xff);
}

static size_t param_index(const struct cfg_section *sec, const char *key)
{
    for (size_t i = 0; i < sec->nparams; i++)
        if (strcmp(sec->params[i].key, key) == 0)
            return i;
    abort(); /* schema table bug */
}

/* Listener i against listeners 0..i-1: address:port is unique (names are
 * checked by the generic unique key). */
static bool listener_check(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                           size_t i, yaml_node_t *const *seen, yaml_node_t *item)
{
    const struct cfg_listener *list = arr;
    const struct cfg_section *sec = p->section;
    yaml_node_t *addr_node = seen[param_index(sec, "address")];
    yaml_node_t *port_node = seen[param_index(sec, "port")];
    unsigned char ki[19], kj[19];
    char buf[64];

    /* A group twice in one HAT: the second row could never match. */
    yaml_node_t *hat_node = seen[param_index(sec, "hat")];
    const struct cfg_listener *l = &list[i];
    for (size_t k = 1; k < l->nhat; k++)
        for (size_t j = 0; j < k; j++)
            if (strcmp(l->hat[k], l->hat[j]) == 0)
                return load_error(
                    ctx, yaml_document_get_node(ctx->doc, hat_node->data.sequence.items.start[k]),
                    "duplicate sender group '%s' in 'hat'", l->hat[k]);

    listener_sockkey(&list[i], ki);
    for (size_t j = 0; j < i; j++) {
        listener_sockkey(&list[j], kj);
        if (memcmp(ki, kj, sizeof ki) == 0)
            return load_error(ctx,
                              addr_node   ? addr_node
                              : port_node ? port_node
                                          : item,
                              "duplicate listener address %s port %u (already used by '%s')",
                              list[i].address, (unsigned)list[i].port,
                              sanitize(list[j].name, strlen(list[j].name), buf, sizeof buf));
    }
    return true;
}

/* Retry waits double from initial_retry up to max_retry, so the cap must not
 * be below the start. Reported at max_retry, or at initial_retry when only
 * that was given. */
static bool bounce_profile_check(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                                 size_t i, yaml_node_t *const *seen, yaml_node_t *item)
{
    const struct cfg_bounce_profile *b = &((const struct cfg_bounce_profile *)arr)[i];
    yaml_node_t *at = seen[param_index(p->section, "max_retry")];
    char lo[32], hi[32];

    if (b->max_retry >= b->initial_retry)
        return true;
    if (at == NULL)
        at = seen[param_index(p->section, "initial_retry")];
    fmt_duration(NULL, b->max_retry, hi, sizeof hi);
    fmt_duration(NULL, b->initial_retry, lo, sizeof lo);
    return load_error(ctx, at ? at : item, "'max_retry' (%s) is less than 'initial_retry' (%s)", hi,
                      lo);
}

/* A new sender group needs a policy (a predefined one has its own). The
 * distinct dnslist[] zones of all groups are bounded, reported at the
 * member that goes over. */
static bool sender_group_check(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                               size_t i, yaml_node_t *const *seen, yaml_node_t *item)
{
    const struct cfg_sender_group *g = &((const struct cfg_sender_group *)arr)[i];
    yaml_node_t *members = seen[param_index(p->section, "members")];

    if (g->policy == NULL)
        return load_error(ctx, item, "missing required key 'policy' in section '%s'",
                          p->section->name);
    for (size_t k = 0; k < g->nmembers; k++) {
        struct member m;
        if (member_parse(g->members[k], &m) != NULL || m.kind != MEMBER_DNSLIST)
            continue;
        size_t z = 0;
        while (z < ctx->nmember_zones && strcmp(ctx->member_zones[z], m.name) != 0)
            z++;
        if (z < ctx->nmember_zones)
            continue;
        if (ctx->nmember_zones == MEMBER_DNSLISTS_MAX)
            return load_error(
                ctx, yaml_document_get_node(ctx->doc, members->data.sequence.items.start[k]),
                "more than %d distinct dnslist[] zones in sender groups", MEMBER_DNSLISTS_MAX);
        snprintf(ctx->member_zones[ctx->nmember_zones++], sizeof ctx->member_zones[0], "%s",
                 m.name);
    }
    return true;
}

/* ACCEPTED and BLOCKED are the implicit ALL row of public and private
 * listeners: the last row must decide, so they cannot be CONTINUE. */
static bool policy_check(struct load_ctx *ctx, const struct cfg_param *p, const void *arr, size_t i,
                         yaml_node_t *const *seen, yaml_node_t *item)
{
    const struct cfg_mail_flow_policy *pol = &((const struct cfg_mail_flow_policy *)arr)[i];
    yaml_node_t *at = seen[param_index(p->section, "access")];

    if (pol->access == CFG_ACCESS_CONTINUE &&
        (strcmp(pol->name, "ACCEPTED") == 0 || strcmp(pol->name, "BLOCKED") == 0))
        return load_error(ctx, at ? at : item,
                          "'access': %s is the policy of the implicit ALL row and cannot be "
                          "continue",
                          pol->name);
    return true;
}

/* Derived default: an allow list's weight is +5.0 unless given. */
static bool dnslist_check(struct load_ctx *ctx, const struct cfg_param *p, const void *arr,
                          size_t i, yaml_node_t *const *seen, yaml_node_t *item)
{
    struct cfg_dnslist *d = &((struct cfg_dnslist *)arr)[i];
    if (seen[param_index(p->section, "weight")] == NULL && d->kind == DNSLIST_ALLOW)
        d->weight = 5.0;
    return true;
}

/* Hosts by priority, lowest first; a stable insertion sort, so hosts of
 * equal priority keep their file order (n <= ROUTE_HOSTS_MAX). */
static void route_hosts_sort(void *arr, size_t n)
{
    struct cfg_route_host *h = arr;
    for (size_t i = 1; i < n; i++) {
        struct cfg_route_host t = h[i];
        size_t j = i;
        for (; j > 0 && h[j - 1].priority > t.priority; j--)
            h[j] = h[j - 1];
        h[j] = t;
    }
}

/* ---- the type table ----------------------------------------------------- */

static const struct type_ops type_ops[] = {
    [PT_STRING] = {string_default, string_parse, string_dump, string_release, NULL, NULL},
    [PT_BOOL] = {num_default, num_parse, num_dump, num_release, conv_bool, fmt_bool},
    [PT_UINT] = {num_default, num_parse, num_dump, num_release, conv_uint, fmt_uint},
    [PT_SIZE] = {num_default, num_parse, num_dump, num_release, conv_size, fmt_size},
    [PT_DURATION] = {num_default, num_parse, num_dump, num_release, conv_duration, fmt_duration},
    [PT_ENUM] = {num_default, num_parse, num_dump, num_release, conv_enum, fmt_enum},
    [PT_DOUBLE] = {double_default, double_parse, double_dump, num_release, NULL, NULL},
    [PT_STRLIST] = {strlist_default, strlist_parse, strlist_dump, strlist_release, NULL, NULL},
    [PT_SECTION] = {sectionp_default, sectionp_parse, sectionp_dump, sectionp_release, NULL, NULL},
    [PT_LIST] = {list_default, list_parse, list_dump, list_release, NULL, NULL},
};

/* ---- the schema --------------------------------------------------------- */

#define FIELD_WIDTH(T, f) sizeof(((T *)0)->f)

#define P_STRING(T, k, f, d, chk, req, h)                                                          \
    {                                                                                              \
        .key = (k), .type = PT_STRING, .offset = offsetof(T, f), .def = (d), .check = (chk),       \
        .required = (req), .help = (h)                                                             \
    }
#define P_NUM(ty, T, k, f, d, lo, hi, h)                                                           \
    {                                                                                              \
        .key = (k), .type = (ty), .offset = offsetof(T, f), .width = FIELD_WIDTH(T, f),            \
        .def = (d), .min = (lo), .max = (hi), .help = (h)                                          \
    }
#define P_LIST(T, k, f, n, chk, h)                                                                 \
    {                                                                                              \
        .key = (k), .type = PT_STRLIST, .offset = offsetof(T, f), .count_offset = offsetof(T, n),  \
        .check = (chk), .help = (h)                                                                \
    }
#define P_SECTION(k, sec, h)                                                                       \
    {                                                                                              \
        .key = (k), .type = PT_SECTION, .section = &(sec), .help = (h)                             \
    }
/* A list of sections: T is the parent struct, E the element struct. */
#define P_LIST_OF(T, k, f, n, E, sec, item, lo, hi)                                                \
    .key = (k), .type = PT_LIST, .offset = offsetof(T, f), .count_offset = offsetof(T, n),         \
    .section = &(sec), .elem_size = sizeof(E), .item_name = (item), .min = (lo), .max = (hi)
#define SECTION(n, params)                                                                         \
    {                                                                                              \
        (n), (params), sizeof(params) / sizeof((params)[0])                                        \
    }

static char *default_hostname(void)
{
    char buf[256]; /* HOST_NAME_MAX is 64 on Linux, 255 by POSIX */
    if (gethostname(buf, sizeof buf) != 0 || buf[0] == '\0')
        return xstrdup("localhost");
    buf[sizeof buf - 1] = '\0';
    /* A name with a space would break the banner; such hosts are misconfigured. */
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            return xstrdup("localhost");
    return xstrdup(buf);
}

static const char *const listener_types[] = {"public", "private", NULL};

static const struct cfg_param tls_params[] = {
    P_STRING(struct cfg_listener, "certificate", tls_cert, NULL, NULL, true,
             "PEM certificate chain"),
    P_STRING(struct cfg_listener, "key", tls_key, NULL, NULL, true, "PEM private key"),
};
static const struct cfg_section tls_section = SECTION("tls", tls_params);

/* name must stay first: it is the list key (dumped on the "- " line). */
static const struct cfg_param listener_params[] = {
    P_STRING(struct cfg_listener, "name", name, NULL, NULL, true, "unique, used in logs"),
    {.key = "type",
     .type = PT_ENUM,
     .offset = offsetof(struct cfg_listener, type),
     .width = FIELD_WIDTH(struct cfg_listener, type),
     .def = "public",
     .min = LISTENER_PUBLIC,
     .max = LISTENER_PRIVATE,
     .names = listener_types,
     .help = "public (inbound from the Internet) or private (from inside)"},
    P_STRING(struct cfg_listener, "address", address, "127.0.0.1", check_ip_literal, false,
             "IPv4 or IPv6 literal"),
    /* Port 0 would mean "any free port": useless for a mail server. */
    P_NUM(PT_UINT, struct cfg_listener, "port", port, "2525", 1, 65535, "TCP port"),
    P_STRING(struct cfg_listener, "hostname", hostname, NULL, check_hostname, false,
             "name in banner and EHLO reply"),
    {.key = "tls",
     .type = PT_SECTION,
     .section = &tls_section,
     .optional_section = true,
     .help = "offer STARTTLS"},
    /* Absent: the type's default (config_build); "[]" is refused, since a
     * HAT of only the implicit ALL row is better said with UNKNOWNLIST. */
    {.key = "hat",
     .type = PT_STRLIST,
     .offset = offsetof(struct cfg_listener, hat),
     .count_offset = offsetof(struct cfg_listener, nhat),
     .check = check_group_name,
     .ref = "sender_groups",
     .min = 1,
     .max = HAT_MAX,
     .item_name = "sender group",
     .help = "sender groups in order; ALL is implicit"},
};
static const struct cfg_section listener_section = SECTION("listeners", listener_params);

static const struct cfg_param route_host_params[] = {
    P_STRING(struct cfg_route_host, "host", host, NULL, check_route_host, true,
             "IPv4/IPv6 literal or host name"),
    P_NUM(PT_UINT, struct cfg_route_host, "port", port, "25", 1, 65535, "TCP port"),
    P_NUM(PT_UINT, struct cfg_route_host, "priority", priority, "0", 0, 65535,
          "lowest first; equal = round robin"),
};
static const struct cfg_section route_host_section = SECTION("hosts", route_host_params);

/* Index = enum cfg_route_kind; [0] is the list form and never matches. */
static const char *const route_kinds[] = {"(list)", "USEDNS", "/dev/null", NULL};
_Static_assert(ROUTE_HOSTS == 0 && ROUTE_USEDNS == 1 && ROUTE_DEVNULL == 2,
               "route_kinds is indexed by enum cfg_route_kind");

/* domain must stay first: it is the list key. */
static const struct cfg_param route_params[] = {
    P_STRING(struct cfg_route, "domain", domain, NULL, check_route_domain, true,
             "exact, \".suffix\" or ALL"),
    {P_LIST_OF(struct cfg_route, "hosts", hosts, nhosts, struct cfg_route_host, route_host_section,
               "host", 1, ROUTE_HOSTS_MAX),
     .required = true, .names = route_kinds, .kind_offset = offsetof(struct cfg_route, kind),
     .width = FIELD_WIDTH(struct cfg_route, kind), .finish = route_hosts_sort,
     .help = "USEDNS = by MX; /dev/null = drop"},
};
static const struct cfg_section route_section = SECTION("smtp_routes", route_params);

static const char *const tls_policies[] = {"none", "preferred", "required", NULL};

/* domain must stay first: it is the list key. */
static const struct cfg_param dest_control_params[] = {
    P_STRING(struct cfg_dest_control, "domain", domain, NULL, check_relay_domain, true,
             "default, exact or \".suffix\""),
    /* Why these maxima: beyond them a single destination would take the whole
     * outbound side (10000 sockets) or one transaction would be unbounded. */
    P_NUM(PT_UINT, struct cfg_dest_control, "max_connections", max_connections, "20", 1, 10000,
          "concurrent outbound connections"),
    P_NUM(PT_UINT, struct cfg_dest_control, "max_messages_per_connection",
          max_messages_per_connection, "50", 1, 100000, NULL),
    P_NUM(PT_UINT, struct cfg_dest_control, "max_recipients_per_message",
          max_recipients_per_message, "100", 1, 100000, "RCPTs in one transaction"),
    {.key = "tls",
     .type = PT_ENUM,
     .offset = offsetof(struct cfg_dest_control, tls),
     .width = FIELD_WIDTH(struct cfg_dest_control, tls),
     .def = "preferred",
     .min = CFG_TLS_NONE,
     .max = CFG_TLS_REQUIRED,
     .names = tls_policies,
     .help = "none | preferred | required"},
    {.key = "bounce_profile",
     .type = PT_STRING,
     .offset = offsetof(struct cfg_dest_control, bounce_profile),
     .def = DEFAULT_ENTRY_NAME,
     .check = check_word,
     .ref = "bounce_profiles",
     .help = "a name in bounce_profiles"},
};
static const struct cfg_section dest_control_section =
    SECTION("destination_controls", dest_control_params);

/* name must stay first: it is the list key. */
static const struct cfg_param bounce_profile_params[] = {
    P_STRING(struct cfg_bounce_profile, "name", name, NULL, check_word, true, NULL),
    P_NUM(PT_UINT, struct cfg_bounce_profile, "max_retries", max_retries, "100", 0, 100000,
          "then bounce"),
    /* Why up to 30 days: RFC 5321 4.5.4.1 suggests 4-5 days; a month is the
     * longest anyone keeps mail for an unreachable domain. */
    P_NUM(PT_DURATION, struct cfg_bounce_profile, "max_queue_time", max_queue_time, "72h", MS_PER_S,
          30 * MS_PER_D, "then bounce"),
    /* Why at most a day: the first retry later than that is not a retry. */
    P_NUM(PT_DURATION, struct cfg_bounce_profile, "initial_retry", initial_retry, "60s", MS_PER_S,
          MS_PER_D, "first wait"),
    P_NUM(PT_DURATION, struct cfg_bounce_profile, "max_retry", max_retry, "1h", MS_PER_S,
          30 * MS_PER_D, "waits double up to this"),
};
static const struct cfg_section bounce_profile_section =
    SECTION("bounce_profiles", bounce_profile_params);

static const struct cfg_param delivery_params[] = {
    P_STRING(struct config, "helo_name", delivery.helo_name, NULL, check_hostname, false,
             "our name in EHLO; default hostname"),
    /* Why these bounds: RFC 5321 4.5.3.2 gives the client minimums (5m for
     * commands, 3m per data block, 10m after the final dot); below a second
     * every real server is "slow", above an hour a dead peer holds a slot. */
    P_NUM(PT_DURATION, struct config, "connect_timeout", delivery.connect_timeout, "30s", MS_PER_S,
          10 * MS_PER_M, "TCP connect"),
    P_NUM(PT_DURATION, struct config, "command_timeout", delivery.command_timeout, "5m", MS_PER_S,
          MS_PER_H, "each reply"),
    P_NUM(PT_DURATION, struct config, "data_block_timeout", delivery.data_block_timeout, "3m",
          MS_PER_S, MS_PER_H, "each data block sent"),
    P_NUM(PT_DURATION, struct config, "data_done_timeout", delivery.data_done_timeout, "10m",
          MS_PER_S, MS_PER_H, "reply to the final dot"),
    /* Why at most 64M: a DSN is built in memory, like a small body. */
    P_NUM(PT_SIZE, struct config, "bounce_max_original", delivery.bounce_max_original, "100K", 0,
          64 * MIB, "original included in DSNs up to this"),
};
static const struct cfg_section delivery_section = SECTION("delivery", delivery_params);

static const struct cfg_param paths_params[] = {
    P_STRING(struct config, "spool", spool_dir, "./var/spool", NULL, false,
             "queue.db and large bodies"),
    P_STRING(struct config, "logs", log_dir, "./var/log", NULL, false, "mail_logs"),
    P_STRING(struct config, "control", control_path, "./var/run/postern.sock", NULL, false,
             "operator control socket (posternctl)"),
    P_STRING(struct config, "tracking", tracking_path, NULL, NULL, false,
             "message tracking database; default SPOOL/tracking.db"),
};
static const struct cfg_section paths_section = SECTION("paths", paths_params);

static const struct cfg_param limits_params[] = {
    /* Why 1K..4G: below 1K not even the headers fit; above 4G is not email
     * and would overflow 32-bit size arithmetic in clients. */
    P_NUM(PT_SIZE, struct config, "max_message_size", limits.max_message_size, "10M", KIB, 4 * GIB,
          "SIZE, enforced while streaming"),
    /* Why up to 100000: each recipient is a queue row; RFC 5321 4.5.3.1.8
     * asks servers to accept at least 100, so lower values defer the rest. */
    P_NUM(PT_UINT, struct config, "max_recipients", limits.max_recipients, "100", 1, 100000,
          "per message"),
    /* Why at least 512/1000: RFC 5321 4.5.3.1.4 and 4.5.3.1.6 minimums; the
     * maxima bound per-session line buffers. */
    P_NUM(PT_UINT, struct config, "max_command_line", limits.max_command_line, "512", 512, 65536,
          "octets incl. CRLF"),
    P_NUM(PT_UINT, struct config, "max_text_line", limits.max_text_line, "1000", 1000, 1048576,
          "octets incl. CRLF"),
    /* Why up to 1000000: well past any fd limit; it bounds memory, not sockets. */
    P_NUM(PT_UINT, struct config, "max_connections", limits.max_connections, "1000", 1, 1000000,
          "concurrent, per listener"),
    P_NUM(PT_UINT, struct config, "max_errors", limits.max_errors, "10", 1, 1000,
          "protocol errors before disconnect"),
    /* Why 255: what an SMTP-inspecting firewall (ASA inspect esmtp, seed
     * 001) drops a connection for; up to 4096, the length mime_scan keeps. */
    /* Why at most 256: the RFC 5321 4.5.3.1.3 path limit, which the address
     * parser enforces anyway (an inspecting firewall allows 320); lower it
     * to refuse long VERP/SRS senders. */
    P_NUM(PT_UINT, struct config, "max_sender_length", limits.max_sender_length, "256", 8, 256,
          "MAIL FROM path incl. <>"),
    P_NUM(PT_UINT, struct config, "max_mime_filename", limits.max_mime_filename, "255", 0, 4096,
          "longest MIME attachment filename; 0 = unchecked"),
    /* Why 1000 by default: 8 kbit/s, below any real link, so only a client
     * that trickles on purpose (holding a slot for free) is cut off; up to
     * 1G/s because anything above is no "minimum". */
    P_NUM(PT_UINT, struct config, "min_data_rate", limits.min_data_rate, "1000", 0, 1000000000,
          "bytes/s during DATA/BDAT; 0 = none"),
    /* Why 1s..1h: shorter windows measure TCP burstiness, not the client;
     * longer ones let a trickler hold a slot for too long. */
    P_NUM(PT_DURATION, struct config, "min_data_rate_window", limits.min_data_rate_window, "10s",
          MS_PER_S, MS_PER_H, "the rate is measured over this window"),
    P_NUM(PT_DURATION, struct config, "min_data_rate_grace", limits.min_data_rate_grace, "30s",
          MS_PER_S, MS_PER_H, "no check in a transfer's first seconds (slow start)"),
    /* Why up to 1000000: a counter bound; 0 keeps the old behaviour. */
    P_NUM(PT_UINT, struct config, "max_connection_rate", limits.max_connection_rate, "0", 0,
          1000000, "connections per minute per IP; 0 = unlimited"),
};
static const struct cfg_section limits_section = SECTION("limits", limits_params);

static const struct cfg_param timeouts_params[] = {
    /* Why 1s..1h: under a second every real client times out; RFC 5321
     * 4.5.3.2 suggests minutes, and an hour-long idle session is an attack. */
    P_NUM(PT_DURATION, struct config, "command", timeouts.command, "5m", MS_PER_S, MS_PER_H,
          "waiting for a command"),
    P_NUM(PT_DURATION, struct config, "data", timeouts.data, "5m", MS_PER_S, MS_PER_H,
          "between data blocks in DATA/BDAT"),
    P_NUM(PT_DURATION, struct config, "tls_handshake", timeouts.tls_handshake, "1m", MS_PER_S,
          10 * MS_PER_M, "STARTTLS handshake"),
    /* Why 1s..1d: the deadline bounds how long one client can hold a slot
     * whatever it does; a day is far beyond any honest session. */
    P_NUM(PT_DURATION, struct config, "session", timeouts.session, "30m", MS_PER_S, MS_PER_D,
          "deadline for a whole session"),
};
static const struct cfg_section timeouts_section = SECTION("timeouts", timeouts_params);

static const struct cfg_param spool_params[] = {
    /* Why at most 64M: that much per session times max_connections is RAM. */
    P_NUM(PT_SIZE, struct config, "memory_threshold", spool.memory_threshold, "256K", 0, 64 * MIB,
          "bodies above this stream to files"),
    /* 0 disables the check; 1P is "no practical bound" without overflow risk. */
    P_NUM(PT_SIZE, struct config, "min_free_space", spool.min_free_space, "100M", 0,
          1024 * 1024 * GIB, "below this MAIL gets 452 4.3.1"),
};
static const struct cfg_section spool_section = SECTION("spool", spool_params);

/* Why percentages up to 100 (backlog too, though its pressure can pass
 * 100): a start/halt pair of 0/0 turns that pressure off; any other 0 would
 * tarpit an idle gateway, so rescon_check refuses it. */
#define P_PCT(k, f, d, h) P_NUM(PT_UINT, struct config, k, rescon.f, d, 0, 100, h)

static const struct cfg_param rescon_params[] = {
    /* Why up to 1T: no practical bound without overflow risk; 0 = RAM. */
    P_NUM(PT_SIZE, struct config, "memory_limit", rescon.memory_limit, "0", 0, 1024 * GIB,
          "RSS that counts as 100%; 0 = physical memory"),
    P_NUM(PT_UINT, struct config, "backlog_limit", rescon.backlog_limit, "100000", 1, 100000000,
          "spooled messages that count as 100%"),
    P_PCT("memory_start", memory_start, "75", "tarpit from here"),
    P_PCT("memory_halt", memory_halt, "90", "refuse mail from here"),
    /* Why off by default: spool.min_free_space already refuses MAIL (452
     * 4.3.1) on a nearly full spool, and on a small or shared filesystem a
     * percentage would halt a gateway that still has room. */
    P_PCT("disk_start", disk_start, "0", "spool filesystem used; 0/0 = off"),
    P_PCT("disk_halt", disk_halt, "0", NULL),
    P_PCT("backlog_start", backlog_start, "50", NULL),
    P_PCT("backlog_halt", backlog_halt, "90", NULL),
    P_NUM(PT_UINT, struct config, "backlog_suspend", rescon.backlog_suspend, "95", 1, 100,
          "listeners stop accepting"),
    P_NUM(PT_UINT, struct config, "backlog_resume", rescon.backlog_resume, "80", 1, 100,
          "listeners accept again"),
    /* Why at most 50: a wider band could keep a state at any pressure. */
    P_NUM(PT_UINT, struct config, "hysteresis", rescon.hysteresis, "5", 0, 50,
          "points below a threshold before leaving its state"),
    P_STRING(struct config, "alert_command", rescon.alert_command, NULL, check_abs_path, false,
             "run with execve (no shell) on every change"),
    P_STRING(struct config, "test_pressure_file", rescon.test_pressure_file, NULL, NULL, false,
             "testing aid: \"memory=N disk=N backlog=N\" read each second"),
};
static const struct cfg_section rescon_section = SECTION("resource_conservation", rescon_params);

static const struct cfg_param resolver_params[] = {
    P_LIST(struct config, "servers", resolver.servers, resolver.nservers, check_resolver_server,
           "empty = /etc/resolv.conf"),
    /* Why 100ms..60s: faster than a LAN round trip is noise; slower than a
     * minute outlives the SMTP command timeout it runs under. */
    P_NUM(PT_DURATION, struct config, "timeout", resolver.timeout, "2s", 100, 60 * MS_PER_S,
          "per query"),
    P_NUM(PT_UINT, struct config, "attempts", resolver.attempts, "2", 1, 10, "tries per query"),
};
static const struct cfg_section resolver_section = SECTION("resolver", resolver_params);

/* ---- host access: sender groups, mail flow policies, reputation -------- */

/* name must stay first: it is the list key. */
static const struct cfg_param sender_group_params[] = {
    P_STRING(struct cfg_sender_group, "name", name, NULL, check_group_name, true,
             "case-insensitive; ALLOWED_LIST = WHITELIST, BLOCKED_LIST = BLACKLIST"),
    /* Required for new groups only: checked by sender_group_check. */
    {.key = "policy",
     .type = PT_STRING,
     .offset = offsetof(struct cfg_sender_group, policy),
     .check = check_name,
     .ref = "mail_flow_policies",
     .help = "a name in mail_flow_policies"},
    {.key = "members",
     .type = PT_STRLIST,
     .offset = offsetof(struct cfg_sender_group, members),
     .count_offset = offsetof(struct cfg_sender_group, nmembers),
     .check = member_normalize,
     .max = GROUP_MEMBERS_MAX,
     .item_name = "member",
     .help = "addresses, CIDRs, ranges, names, SBRS[..], dnslist[..], ALL"},
    P_NUM(PT_BOOL, struct cfg_sender_group, "ptr_missing", ptr_missing, "false", 0, 1,
          "match hosts without a PTR record"),
    P_NUM(PT_BOOL, struct cfg_sender_group, "ptr_tempfail", ptr_tempfail, "false", 0, 1,
          "match when the PTR lookup failed temporarily"),
    P_NUM(PT_BOOL, struct cfg_sender_group, "ptr_mismatch", ptr_mismatch, "false", 0, 1,
          "match when the PTR name is not forward-confirmed"),
};
static const struct cfg_section sender_group_section =
    SECTION("sender_groups", sender_group_params);

#define PRESET(n, v)                                                                               \
    {                                                                                              \
        (n), (v), sizeof(v) / sizeof((v)[0])                                                       \
    }

static const struct cfg_preset_value whitelist_values[] = {{"policy", "TRUSTED"}};
static const struct cfg_preset_value blacklist_values[] = {{"policy", "BLOCKED"}};
static const struct cfg_preset_value suspectlist_values[] = {{"policy", "THROTTLED"}};
static const struct cfg_preset_value unknownlist_values[] = {{"policy", "ACCEPTED"}};
static const struct cfg_preset_value relaylist_values[] = {{"policy", "RELAYED"}};

/* The appliance's predefined sender groups, in this order, members empty. */
static const struct cfg_preset sender_group_presets[] = {
    PRESET("WHITELIST", whitelist_values),     PRESET("BLACKLIST", blacklist_values),
    PRESET("SUSPECTLIST", suspectlist_values), PRESET("UNKNOWNLIST", unknownlist_values),
    PRESET("RELAYLIST", relaylist_values),
};

/* Index = enum cfg_access / enum cfg_policy_tls. */
static const char *const access_names[] = {"accept", "reject",   "tcprefuse",
                                           "relay",  "continue", NULL};
static const char *const policy_tls_names[] = {"off", "preferred", "required", NULL};
_Static_assert(CFG_ACCESS_ACCEPT == 0 && CFG_ACCESS_CONTINUE == 4 && CFG_PTLS_REQUIRED == 2,
               "access_names and policy_tls_names are indexed by their enums");

/* name must stay first: it is the list key. The defaults are the ACCEPTED
 * policy's (appliance defaults), the base of every policy; the predefined
 * ones override some of them (presets below). */
static const struct cfg_param policy_params[] = {
    P_STRING(struct cfg_mail_flow_policy, "name", name, NULL, check_name, true, "case-insensitive"),
    {.key = "access",
     .type = PT_ENUM,
     .offset = offsetof(struct cfg_mail_flow_policy, access),
     .width = FIELD_WIDTH(struct cfg_mail_flow_policy, access),
     .def = "accept",
     .min = CFG_ACCESS_ACCEPT,
     .max = CFG_ACCESS_CONTINUE,
     .names = access_names,
     .help = "accept | reject | tcprefuse | relay | continue"},
    P_NUM(PT_BOOL, struct cfg_mail_flow_policy, "reject_at_rcpt", reject_at_rcpt, "false", 0, 1,
          "reject at RCPT (5.7.1) instead of the banner"),
    /* Why 1K..4G: as limits.max_message_size. */
    P_NUM(PT_SIZE, struct cfg_mail_flow_policy, "max_message_size", max_message_size, "10M", KIB,
          4 * GIB, NULL),
    /* Why up to 1000000: as limits.max_connections; it bounds a counter. */
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "max_concurrent_connections",
          max_concurrent_connections, "10", 1, 1000000, "from one IP"),
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "max_messages_per_connection",
          max_messages_per_connection, "10", 1, 1000000, NULL),
    /* Why up to 100000: as limits.max_recipients (a queue row each). */
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "max_recipients_per_message",
          max_recipients_per_message, "50", 1, 100000, NULL),
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "max_recipients_per_hour", max_recipients_per_hour,
          "0", 0, 100000000, "per client IP; 0 = unlimited"),
    /* Codes: a rate limit or a rejection is a failure (4xx temporary, 5xx
     * permanent, RFC 5321 4.2.1); a banner that lets the client in is 2xx. */
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "rate_limit_code", rate_limit_code, "452", 400, 599,
          "4xx or 5xx"),
    P_STRING(struct cfg_mail_flow_policy, "rate_limit_text", rate_limit_text,
             "Too many recipients received this hour", check_reply_text, false, NULL),
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "banner_code", banner_code, "220", 200, 299, "2xx"),
    P_STRING(struct cfg_mail_flow_policy, "banner_text", banner_text, "ESMTP", check_reply_text,
             false, "$Hostname $Group $RemoteIP expanded"),
    {.key = "banner_hostname",
     .type = PT_STRING,
     .offset = offsetof(struct cfg_mail_flow_policy, banner_hostname),
     .def = "",
     .check = check_banner_hostname,
     .allow_empty = true,
     .help = "\"\" = the listener's hostname"},
    P_NUM(PT_UINT, struct cfg_mail_flow_policy, "reject_code", reject_code, "554", 400, 599,
          "4xx or 5xx"),
    P_STRING(struct cfg_mail_flow_policy, "reject_text", reject_text, "Access denied",
             check_reply_text, false, NULL),
    {.key = "tls",
     .type = PT_ENUM,
     .offset = offsetof(struct cfg_mail_flow_policy, tls),
     .width = FIELD_WIDTH(struct cfg_mail_flow_policy, tls),
     /* The appliance ships "off"; we offer STARTTLS wherever the listener
      * has a certificate (opportunistic security, RFC 7435): an operator
      * who configured a certificate expects it to be used. */
     .def = "preferred",
     .min = CFG_PTLS_OFF,
     .max = CFG_PTLS_REQUIRED,
     .names = policy_tls_names,
     .help = "off | preferred | required"},
};
static const struct cfg_section policy_section = SECTION("mail_flow_policies", policy_params);

/* Appliance defaults: a trusted or relaying peer is limited only loosely;
 * a throttled one tightly (gateway-behaviour.md section 1). */
static const struct cfg_preset_value trusted_values[] = {
    {"max_message_size", "100M"},
    {"max_concurrent_connections", "600"},
    {"max_messages_per_connection", "5000"},
    {"max_recipients_per_message", "5000"},
};
static const struct cfg_preset_value blocked_values[] = {{"access", "reject"}};
static const struct cfg_preset_value throttled_values[] = {
    {"max_message_size", "1M"},
    {"max_concurrent_connections", "10"},
    {"max_messages_per_connection", "10"},
    {"max_recipients_per_message", "20"},
    {"max_recipients_per_hour", "20"},
};
static const struct cfg_preset_value accepted_values[] = {{"access", "accept"}};
static const struct cfg_preset_value relayed_values[] = {
    {"access", "relay"},
    {"max_message_size", "100M"},
    {"max_concurrent_connections", "600"},
    {"max_messages_per_connection", "5000"},
    {"max_recipients_per_message", "5000"},
};

static const struct cfg_preset policy_presets[] = {
    PRESET("TRUSTED", trusted_values),     PRESET("BLOCKED", blocked_values),
    PRESET("THROTTLED", throttled_values), PRESET("ACCEPTED", accepted_values),
    PRESET("RELAYED", relayed_values),
};

static const char *const dnslist_kinds[] = {"block", "allow", NULL};

/* zone must stay first: it is the list key. */
static const struct cfg_param dnslist_params[] = {
    P_STRING(struct cfg_dnslist, "zone", zone, NULL, check_zone, true, NULL),
    {.key = "type",
     .type = PT_ENUM,
     .offset = offsetof(struct cfg_dnslist, kind),
     .width = FIELD_WIDTH(struct cfg_dnslist, kind),
     .def = "block",
     .min = DNSLIST_BLOCK,
     .max = DNSLIST_ALLOW,
     .names = dnslist_kinds,
     .help = "block | allow"},
    /* Why [-10, 10]: one list can move the score across its whole range,
     * no further. Default -5.0, or +5.0 for allow (dnslist_check). */
    {.key = "weight",
     .type = PT_DOUBLE,
     .offset = offsetof(struct cfg_dnslist, weight),
     .def = "-5.0",
     .dmin = -10.0,
     .dmax = 10.0,
     .help = "added to the score when listed"},
    {.key = "codes",
     .type = PT_STRLIST,
     .offset = offsetof(struct cfg_dnslist, codes),
     .count_offset = offsetof(struct cfg_dnslist, ncodes),
     .check = check_ipv4_literal,
     .max = DNSLIST_CODES_MAX,
     .item_name = "code",
     .help = "answers that count; empty = any 127.0.0.0/8"},
};
static const struct cfg_section dnslist_section = SECTION("lists", dnslist_params);

static const struct cfg_param reputation_params[] = {
    {P_LIST_OF(struct config, "lists", reputation.lists, reputation.nlists, struct cfg_dnslist,
               dnslist_section, "list", 0, REPUTATION_LISTS_MAX),
     .unique_what = "reputation list zone", .item_check = dnslist_check,
     .help = "DNS block/allow lists"},
    P_NUM(PT_BOOL, struct config, "lookup_private", reputation.lookup_private, "false", 0, 1,
          "look up loopback/private ranges too"),
};
static const struct cfg_section reputation_section = SECTION("reputation", reputation_params);

static const struct cfg_param connection_dns_params[] = {
    /* Why 100ms..1m: below 100ms a remote DNS server rarely answers at all;
     * above a minute clients give up before the banner (the "banner delay"
     * of gateway-behaviour.md section 1) while each one holds a slot. */
    P_NUM(PT_DURATION, struct config, "deadline", connection_dns_deadline, "10s", 100,
          60 * MS_PER_S, "all pre-banner lookups of one connection"),
};
static const struct cfg_section connection_dns_section =
    SECTION("connection_dns", connection_dns_params);

static const struct cfg_param logging_params[] = {
    /* Why 1s..1h: the appliance writes one a minute; shorter is for tests,
     * longer than an hour leaves gaps a monitoring script would alarm on. */
    P_NUM(PT_DURATION, struct config, "status_interval", status_interval, "60s", MS_PER_S,
          3600 * MS_PER_S, "between the Status: lines of mail_logs"),
};
static const struct cfg_section logging_section = SECTION("logging", logging_params);

static const struct cfg_param tracking_params[] = {
    /* Why up to a year: tracking answers "what happened to this mail", a
     * question asked within days; 0 = keep until max_size. */
    P_NUM(PT_DURATION, struct config, "max_age", tracking.max_age, "720h", 0, 366 * MS_PER_D,
          "events older than this are purged; 0 = no limit"),
    P_NUM(PT_SIZE, struct config, "max_size", tracking.max_size, "1G", 0, 1024 * GIB,
          "oldest events purged above this; 0 = no limit"),
};
static const struct cfg_section tracking_section = SECTION("tracking", tracking_params);

static const struct cfg_param root_params[] = {
    {.key = "hostname",
     .type = PT_STRING,
     .offset = offsetof(struct config, hostname),
     .def_fn = default_hostname,
     .check = check_hostname,
     .help = "default name in banner and EHLO"},
    P_STRING(struct config, "user", user, "postern", check_word, false,
             "user to become after binding; root = stay"),
    P_SECTION("paths", paths_section, NULL),
    P_SECTION("tracking", tracking_section, "message tracking (docs/tracking.md)"),
    P_LIST(struct config, "relay_domains", relay_domains, nrelay_domains, check_relay_domain,
           "accepted; \".x\" = any subdomain of x"),
    {P_LIST_OF(struct config, "listeners", listeners, nlisteners, struct cfg_listener,
               listener_section, "listener", 1, LISTENERS_MAX),
     .def = DEFAULT_LISTENER_NAME, .unique_what = "listener name", .item_check = listener_check},
    P_SECTION("limits", limits_section, NULL),
    P_SECTION("timeouts", timeouts_section, "milliseconds precision"),
    P_SECTION("spool", spool_section, NULL),
    P_SECTION("resource_conservation", rescon_section, NULL),
    P_SECTION("resolver", resolver_section, NULL),
    {P_LIST_OF(struct config, "sender_groups", sender_groups, nsender_groups,
               struct cfg_sender_group, sender_group_section, "sender group", 0, SENDER_GROUPS_MAX),
     .unique_what = "sender group name", .presets = sender_group_presets,
     .npresets = sizeof sender_group_presets / sizeof sender_group_presets[0],
     .item_check = sender_group_check, .help = "predefined ones first"},
    {P_LIST_OF(struct config, "mail_flow_policies", policies, npolicies,
               struct cfg_mail_flow_policy, policy_section, "mail flow policy", 0, POLICIES_MAX),
     .unique_what = "mail flow policy name", .presets = policy_presets,
     .npresets = sizeof policy_presets / sizeof policy_presets[0], .item_check = policy_check,
     .help = "predefined ones first"},
    P_SECTION("reputation", reputation_section, NULL),
    P_SECTION("connection_dns", connection_dns_section, NULL),
    P_SECTION("logging", logging_section, NULL),
    {P_LIST_OF(struct config, "smtp_routes", routes, nroutes, struct cfg_route, route_section,
               "route", 0, ROUTES_MAX),
     .unique_what = "route domain", .help = "none: deliver by MX"},
    {P_LIST_OF(struct config, "destination_controls", dest_controls, ndest_controls,
               struct cfg_dest_control, dest_control_section, "destination control", 0,
               DEST_CONTROLS_MAX),
     .def = DEFAULT_ENTRY_NAME, .default_first = true, .unique_what = "destination control domain"},
    {P_LIST_OF(struct config, "bounce_profiles", bounce_profiles, nbounce_profiles,
               struct cfg_bounce_profile, bounce_profile_section, "bounce profile", 0,
               BOUNCE_PROFILES_MAX),
     .def = DEFAULT_ENTRY_NAME, .default_first = true, .unique_what = "bounce profile name",
     .item_check = bounce_profile_check},
    P_SECTION("delivery", delivery_section, NULL),
};
static const struct cfg_section root_section = SECTION(NULL, root_params);

/* ---- table walkers ------------------------------------------------------ */

static void section_defaults(const struct cfg_section *sec, void *base)
{
    for (size_t i = 0; i < sec->nparams; i++)
        type_ops[sec->params[i].type].set_default(&sec->params[i], base);
}

static void section_release(const struct cfg_section *sec, void *base)
{
    for (size_t i = 0; i < sec->nparams; i++)
        type_ops[sec->params[i].type].release(&sec->params[i], base);
}

static void section_dump(const struct cfg_section *sec, const void *base, FILE *out, int indent)
{
    for (size_t i = 0; i < sec->nparams; i++)
        type_ops[sec->params[i].type].dump(&sec->params[i], base, out, indent);
}

static const struct cfg_param *section_find(const struct cfg_section *sec, const char *key,
                                            size_t *idx)
{
    for (size_t i = 0; i < sec->nparams; i++) {
        if (strcmp(sec->params[i].key, key) == 0) {
            *idx = i;
            return &sec->params[i];
        }
    }
    return NULL;
}

/* Walk a mapping node against a section table, storing into base. seen (or
 * a local array) receives each parameter's value node, NULL when absent. A
 * null node is an empty mapping: only the required-key check applies. */
static bool walk_section(struct load_ctx *ctx, const struct cfg_section *sec, yaml_node_t *node,
                         void *base, yaml_node_t **seen)
{
    yaml_node_t *local[SECTION_MAX_PARAMS];
    char where[64], buf[64];

    if (sec->nparams > SECTION_MAX_PARAMS)
        abort(); /* schema table bug */
    if (seen == NULL)
        seen = local;
    memset(seen, 0, sizeof(*seen) * SECTION_MAX_PARAMS);

    if (!node_is_null(node) && node->type != YAML_MAPPING_NODE)
        return load_error(ctx, node, "'%s' must be a mapping, not %s", sec->name ? sec->name : "",
                          node_kind(node));
    if (node->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top; pair++) {
            yaml_node_t *k = yaml_document_get_node(ctx->doc, pair->key);
            yaml_node_t *v = yaml_document_get_node(ctx->doc, pair->value);
            if (k->type != YAML_SCALAR_NODE)
                return load_error(ctx, k, "keys must be scalars, not %s %s", node_kind(k),
                                  section_where(sec, where, sizeof where));
            const char *key = (const char *)k->data.scalar.value;
            size_t idx;
            const struct cfg_param *p = section_find(sec, key, &idx);
            if (p == NULL || strlen(key) != k->data.scalar.length)
                return load_error(ctx, k, "unknown key '%s' %s",
                                  sanitize(key, k->data.scalar.length, buf, sizeof buf),
                                  section_where(sec, where, sizeof where));
            if (seen[idx] != NULL)
                return load_error(ctx, k, "duplicate key '%s' %s", p->key,
                                  section_where(sec, where, sizeof where));
            seen[idx] = v;
            if (!type_ops[p->type].parse(ctx, p, v, base))
                return false;
        }
    }
    for (size_t i = 0; i < sec->nparams; i++)
        if (sec->params[i].required && seen[i] == NULL)
            return load_error(ctx, node, "missing required key '%s' %s", sec->params[i].key,
                              section_where(sec, where, sizeof where));
    return true;
}

/* ---- loading ------------------------------------------------------------ */

static void config_free(struct config *cfg)
{
    section_release(&root_section, cfg);
    free(cfg->file);
    free(cfg);
}

/* Line and column (1-based) of byte offset off in buf, for reader errors,
 * which libyaml reports as an offset rather than a mark. */
static void offset_position(const char *buf, size_t len, size_t off, unsigned *line, unsigned *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static void yaml_syntax_error(const yaml_parser_t *parser, const char *buf, size_t len,
                              struct config_error *err)
{
    const char *problem = parser->problem ? parser->problem : "syntax error";
    unsigned line, col;

    switch (parser->error) {
    case YAML_MEMORY_ERROR:
        set_error(err, 0, 0, "out of memory parsing YAML");
        return;
    case YAML_READER_ERROR:
        offset_position(buf, len, parser->problem_offset, &line, &col);
        set_error(err, line, col, "%s", problem);
        return;
    default:
        /* problem_mark is where it went wrong; context_mark is where the
         * construct began and is only a fallback when the mark is unset. */
        if (parser->problem_mark.line == 0 && parser->problem_mark.column == 0 &&
            parser->problem_mark.index == 0 && parser->context != NULL) {
            line = (unsigned)parser->context_mark.line + 1;
            col = (unsigned)parser->context_mark.column + 1;
        } else {
            line = (unsigned)parser->problem_mark.line + 1;
            col = (unsigned)parser->problem_mark.column + 1;
        }
        if (parser->context != NULL)
            set_error(err, line, col, "%s: %s", parser->context, problem);
        else
            set_error(err, line, col, "%s", problem);
        return;
    }
}

/* The recorded references against the lists they name: only now, since the
 * list may come later in the file than the reference. */
static bool refs_check(struct load_ctx *ctx)
{
    char buf[64];
    for (size_t i = 0; i < ctx->nrefs; i++) {
        const struct cfg_param *p = ctx->refs[i].p;
        yaml_node_t *node = ctx->refs[i].node;
        size_t idx;
        const struct cfg_param *lp = section_find(&root_section, p->ref, &idx);
        if (lp == NULL || lp->type != PT_LIST)
            abort(); /* schema table bug */
        /* The node was accepted by string_parse: redo its normalisation. */
        char *v = xstrdup((const char *)node->data.scalar.value);
        if (p->check != NULL)
            (void)p->check(v);
        bool found = list_find(lp, ctx->cfg, v) != NULL;
        if (!found)
            load_error(ctx, node, "'%s': no entry '%s' in '%s'", p->key,
                       sanitize(v, strlen(v), buf, sizeof buf), lp->key);
        free(v);
        if (!found)
            return false;
    }
    return true;
}

/* The value node of key in the mapping node map, or NULL. */
static yaml_node_t *mapping_get(struct load_ctx *ctx, yaml_node_t *map, const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(ctx->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(ctx->doc, pair->value);
    }
    return NULL;
}

/* resource_conservation: each start below its halt (or both 0: that
 * pressure is off), resume below suspend; otherwise a state could never be
 * entered, or never left. Reported at the upper key when it was given,
 * else at the lower one, else at the section. */
static bool rescon_check(struct load_ctx *ctx, yaml_node_t *root)
{
    const struct cfg_rescon *r = &ctx->cfg->rescon;
    const struct {
        uint32_t lo, hi;
        const char *lo_key, *hi_key;
        bool may_be_off;
    } pairs[] = {
        {r->memory_start, r->memory_halt, "memory_start", "memory_halt", true},
        {r->disk_start, r->disk_halt, "disk_start", "disk_halt", true},
        {r->backlog_start, r->backlog_halt, "backlog_start", "backlog_halt", true},
        {r->backlog_resume, r->backlog_suspend, "backlog_resume", "backlog_suspend", false},
    };
    yaml_node_t *sec = mapping_get(ctx, root, "resource_conservation");
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (pairs[i].may_be_off && pairs[i].lo == 0 && pairs[i].hi == 0)
            continue;
        if (pairs[i].lo > 0 && pairs[i].lo < pairs[i].hi)
            continue;
        if (pairs[i].lo == 0) {
            yaml_node_t *at = mapping_get(ctx, sec, pairs[i].lo_key);
            return load_error(ctx, at ? at : sec, "'%s' may be 0 only with '%s' 0 (off)",
                              pairs[i].lo_key, pairs[i].hi_key);
        }
        yaml_node_t *at = mapping_get(ctx, sec, pairs[i].hi_key);
        if (at == NULL)
            at = mapping_get(ctx, sec, pairs[i].lo_key);
        return load_error(ctx, at ? at : sec, "'%s' (%u) must be above '%s' (%u)", pairs[i].hi_key,
                          pairs[i].hi, pairs[i].lo_key, pairs[i].lo);
    }
    return true;
}

/* Everything after the tree is built: walk it, then fill derived defaults. */
static bool config_build(struct load_ctx *ctx, yaml_node_t *root)
{
    struct config *cfg = ctx->cfg;

    if (root != NULL && !node_is_null(root)) {
        if (root->type != YAML_MAPPING_NODE)
            return load_error(ctx, root, "the top level must be a mapping, not %s",
                              node_kind(root));
        if (!walk_section(ctx, &root_section, root, cfg, NULL))
            return false;
    }
    /* Derived default: known only once the whole document has been read,
     * since hostname may come after listeners. */
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (cfg->listeners[i].hostname == NULL)
            cfg->listeners[i].hostname = xstrdup(cfg->hostname);
    if (cfg->delivery.helo_name == NULL)
        cfg->delivery.helo_name = xstrdup(cfg->hostname);
    /* A listener without a hat gets its type's (gateway-behaviour.md
     * section 1); the implicit ALL row follows either (policy/hat.c). */
    static const char *const public_hat[] = {"WHITELIST", "BLACKLIST", "SUSPECTLIST",
                                             "UNKNOWNLIST"};
    static const char *const private_hat[] = {"RELAYLIST"};
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        if (l->nhat > 0)
            continue;
        const char *const *hat = l->type == LISTENER_PRIVATE ? private_hat : public_hat;
        size_t n = l->type == LISTENER_PRIVATE ? sizeof private_hat / sizeof private_hat[0]
                                               : sizeof public_hat / sizeof public_hat[0];
        l->hat = xcalloc(n, sizeof *l->hat);
        for (; l->nhat < n; l->nhat++)
            l->hat[l->nhat] = xstrdup(hat[l->nhat]);
    }
    return rescon_check(ctx, root) && refs_check(ctx);
}

/* Parse the first YAML document of buf and refuse a second one: a stray
 * "---" would otherwise silently drop the rest of the file. */
static bool config_parse(struct load_ctx *ctx, const char *buf, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool ok = false;

    if (!yaml_parser_initialize(&parser)) {
        set_error(ctx->err, 0, 0, "out of memory initialising the YAML parser");
        return false;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_syntax_error(&parser, buf, len, ctx->err);
        yaml_parser_delete(&parser);
        return false;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root != NULL) {
        if (!yaml_parser_load(&parser, &extra)) {
            yaml_syntax_error(&parser, buf, len, ctx->err);
            goto out;
        }
        yaml_node_t *second = yaml_document_get_root_node(&extra);
        if (second != NULL) {
            load_error(ctx, second, "only one YAML document is allowed");
            yaml_document_delete(&extra);
            goto out;
        }
        yaml_document_delete(&extra);
    }
    ctx->doc = &doc;
    ok = config_build(ctx, root);
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return ok;
}

struct config *config_load_buffer(const char *name, const char *buf, size_t len,
                                  struct config_error *err)
{
    struct config_error dummy;
    struct load_ctx ctx;

    if (err == NULL)
        err = &dummy;
    memset(err, 0, sizeof *err);
    if (len > CONFIG_MAX_BYTES) {
        set_error(err, 0, 0, "file larger than %d bytes", CONFIG_MAX_BYTES);
        return NULL;
    }
    struct config *cfg = xcalloc(1, sizeof *cfg);
    cfg->refs = 1;
    cfg->file = xstrdup(name ? name : "(buffer)");
    section_defaults(&root_section, cfg);

    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = cfg;
    ctx.err = err;
    bool ok = config_parse(&ctx, buf, len);
    free(ctx.refs);
    if (!ok) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct config *config_load(const char *file, struct config_error *err)
{
    struct config_error dummy;
    if (err == NULL)
        err = &dummy;
    memset(err, 0, sizeof *err);

    FILE *fp = fopen(file, "rb");
    if (fp == NULL) {
        set_error(err, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    /* Read one byte past the limit so "too large" is detected without stat(),
     * which would be wrong for pipes and /dev/fd paths. */
    char *buf = xmalloc(CONFIG_MAX_BYTES + 1);
    size_t len = fread(buf, 1, CONFIG_MAX_BYTES + 1, fp);
    if (ferror(fp)) {
        set_error(err, 0, 0, "cannot read: %s", strerror(errno));
        fclose(fp);
        free(buf);
        return NULL;
    }
    fclose(fp);
    struct config *cfg = config_load_buffer(file, buf, len, err);
    free(buf);
    return cfg;
}

void config_error_format(const struct config_error *err, const char *file, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    if (file == NULL)
        file = "(config)";
    if (err->line == 0)
        snprintf(out, outlen, "%s: %s", file, err->msg);
    else
        snprintf(out, outlen, "%s:%u:%u: %s", file, err->line, err->column, err->msg);
}

struct config *config_ref(struct config *cfg)
{
    cfg->refs++;
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL)
        return;
    if (cfg->refs <= 0)
        abort(); /* unref of a freed config: a use-after-free in the making */
    if (--cfg->refs == 0)
        config_free(cfg);
}

void config_dump(const struct config *cfg, FILE *out)
{
    fprintf(out, "# effective configuration");
    if (cfg->file != NULL) {
        fputs(" loaded from ", out);
        for (const char *c = cfg->file; *c; c++)
            fputc(((unsigned char)*c < 0x20 || *c == 0x7f) ? '?' : *c, out);
    }
    fputs(" (defaults filled in)\n", out);
    section_dump(&root_section, cfg, out, 0);
}

bool config_is_relay_domain(const struct config *cfg, const char *domain, size_t len)
{
    if (cfg == NULL || domain == NULL)
        return false;
    for (size_t i = 0; i < cfg->nrelay_domains; i++) {
        const char *e = cfg->relay_domains[i];
        size_t elen = strlen(e);
        if (e[0] == '.') {
            /* ".example.org": strictly below it, so the name must be longer
             * than the entry (at least one label before the dot). */
            if (len > elen && ascii_caseeq(domain + len - elen, e, elen))
                return true;
        } else if (len == elen && ascii_caseeq(domain, e, elen)) {
            return true;
        }
    }
    return false;
}

/* Index of the best entry for domain in an array of n elements of size
 * bytes whose key (a lower-cased domain) is at key_off: an exact entry, else
 * the longest ".suffix" entry strictly above domain; n when none. Keys
 * without a leading dot that are not domains (ALL, default) only match a
 * recipient domain spelled the same, which resolves to the same entry. */
static size_t domain_best(const void *arr, size_t n, size_t size, size_t key_off,
                          const char *domain)
{
    size_t dlen = strlen(domain), best = n, best_len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k = *(char *const *)CFIELD_AT((const char *)arr + i * size, key_off);
        size_t klen = strlen(k);
        if (k[0] != '.') {
            if (klen == dlen && ascii_caseeq(k, domain, dlen))
                return i;
        } else if (dlen > klen && klen > best_len && ascii_caseeq(domain + dlen - klen, k, klen)) {
            best = i;
            best_len = klen;
        }
    }
    return best;
}

const struct cfg_route *config_route_for(const struct config *cfg, const char *domain)
{
    if (cfg == NULL || domain == NULL)
        return NULL;
    size_t i = domain_best(cfg->routes, cfg->nroutes, sizeof *cfg->routes,
                           offsetof(struct cfg_route, domain), domain);
    if (i < cfg->nroutes)
        return &cfg->routes[i];
    for (i = 0; i < cfg->nroutes; i++)
        if (strcmp(cfg->routes[i].domain, ROUTE_ALL) == 0)
            return &cfg->routes[i];
    return NULL;
}

const struct cfg_dest_control *config_dest_control_for(const struct config *cfg, const char *domain)
{
    if (cfg == NULL || cfg->ndest_controls == 0)
        return NULL;
    if (domain == NULL)
        return &cfg->dest_controls[0];
    size_t i = domain_best(cfg->dest_controls, cfg->ndest_controls, sizeof *cfg->dest_controls,
                           offsetof(struct cfg_dest_control, domain), domain);
    return &cfg->dest_controls[i < cfg->ndest_controls ? i : 0];
}

/* name in stored form (upper-case, alias resolved) into buf; false when
 * it cannot be a name. */
static bool name_lookup_key(const char *name, char *buf, size_t len, const char *(*check)(char *))
{
    if (name == NULL || strlen(name) >= len)
        return false;
    memcpy(buf, name, strlen(name) + 1);
    return check(buf) == NULL;
}

const struct cfg_sender_group *config_sender_group(const struct config *cfg, const char *name)
{
    char key[NAME_MAX_LEN + 1];
    if (cfg == NULL || !name_lookup_key(name, key, sizeof key, check_group_name))
        return NULL;
    for (size_t i = 0; i < cfg->nsender_groups; i++)
        if (strcmp(cfg->sender_groups[i].name, key) == 0)
            return &cfg->sender_groups[i];
    return NULL;
}

const struct cfg_mail_flow_policy *config_policy(const struct config *cfg, const char *name)
{
    char key[NAME_MAX_LEN + 1];
    if (cfg == NULL || !name_lookup_key(name, key, sizeof key, check_name))
        return NULL;
    for (size_t i = 0; i < cfg->npolicies; i++)
        if (strcmp(cfg->policies[i].name, key) == 0)
            return &cfg->policies[i];
    return NULL;
}

const struct cfg_bounce_profile *config_bounce_profile(const struct config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nbounce_profiles; i++)
        if (strcmp(cfg->bounce_profiles[i].name, name) == 0)
            return &cfg->bounce_profiles[i];
    return NULL;
}
