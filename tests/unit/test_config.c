/*
 * test_config: the YAML configuration loader (src/core/config.c).
 *
 * Table-driven: each table row is one YAML snippet and what loading it must
 * give, a value or an error at an exact line and column. Everything runs
 * from in-memory buffers except the config_load() file tests, which use a
 * private temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/config.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct config *load(const char *yaml, struct config_error *err)
{
    return config_load_buffer("t.yaml", yaml, strlen(yaml), err);
}

/* Load yaml and fail the test, with the error, if it does not load. */
static struct config *load_ok(const char *yaml)
{
    struct config_error err;
    struct config *cfg = load(yaml, &err);
    if (cfg == NULL)
        fail_msg("unexpected error %u:%u: %s\n--- input ---\n%s", err.line, err.column, err.msg,
                 yaml);
    return cfg;
}

static bool str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool strv_eq(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

static bool route_equal(const struct cfg_route *x, const struct cfg_route *y)
{
    if (!str_eq(x->domain, y->domain) || x->kind != y->kind || x->nhosts != y->nhosts)
        return false;
    for (size_t i = 0; i < x->nhosts; i++)
        if (!str_eq(x->hosts[i].host, y->hosts[i].host) || x->hosts[i].port != y->hosts[i].port ||
            x->hosts[i].priority != y->hosts[i].priority)
            return false;
    return true;
}

static bool dest_control_equal(const struct cfg_dest_control *x, const struct cfg_dest_control *y)
{
    return str_eq(x->domain, y->domain) && x->max_connections == y->max_connections &&
           x->max_messages_per_connection == y->max_messages_per_connection &&
           x->max_recipients_per_message == y->max_recipients_per_message && x->tls == y->tls &&
           str_eq(x->bounce_profile, y->bounce_profile);
}

static bool bounce_profile_equal(const struct cfg_bounce_profile *x,
                                 const struct cfg_bounce_profile *y)
{
    return str_eq(x->name, y->name) && x->max_retries == y->max_retries &&
           x->max_queue_time == y->max_queue_time && x->initial_retry == y->initial_retry &&
           x->max_retry == y->max_retry;
}

/* The outbound half: routes, destination controls, bounce profiles, delivery. */
static bool config_equal_outbound(const struct config *a, const struct config *b)
{
    if (a->nroutes != b->nroutes || a->ndest_controls != b->ndest_controls ||
        a->nbounce_profiles != b->nbounce_profiles)
        return false;
    for (size_t i = 0; i < a->nroutes; i++)
        if (!route_equal(&a->routes[i], &b->routes[i]))
            return false;
    for (size_t i = 0; i < a->ndest_controls; i++)
        if (!dest_control_equal(&a->dest_controls[i], &b->dest_controls[i]))
            return false;
    for (size_t i = 0; i < a->nbounce_profiles; i++)
        if (!bounce_profile_equal(&a->bounce_profiles[i], &b->bounce_profiles[i]))
            return false;
    const struct cfg_delivery *x = &a->delivery, *y = &b->delivery;
    return str_eq(x->helo_name, y->helo_name) && x->connect_timeout == y->connect_timeout &&
           x->command_timeout == y->command_timeout &&
           x->data_block_timeout == y->data_block_timeout &&
           x->data_done_timeout == y->data_done_timeout &&
           x->bounce_max_original == y->bounce_max_original;
}

static bool sender_group_equal(const struct cfg_sender_group *x, const struct cfg_sender_group *y)
{
    return str_eq(x->name, y->name) && str_eq(x->policy, y->policy) &&
           strv_eq(x->members, x->nmembers, y->members, y->nmembers) &&
           x->ptr_missing == y->ptr_missing && x->ptr_tempfail == y->ptr_tempfail &&
           x->ptr_mismatch == y->ptr_mismatch;
}

static bool policy_equal(const struct cfg_mail_flow_policy *x, const struct cfg_mail_flow_policy *y)
{
    return str_eq(x->name, y->name) && x->access == y->access &&
           x->reject_at_rcpt == y->reject_at_rcpt && x->max_message_size == y->max_message_size &&
           x->max_concurrent_connections == y->max_concurrent_connections &&
           x->max_messages_per_connection == y->max_messages_per_connection &&
           x->max_recipients_per_message == y->max_recipients_per_message &&
           x->max_recipients_per_hour == y->max_recipients_per_hour &&
           x->rate_limit_code == y->rate_limit_code &&
           str_eq(x->rate_limit_text, y->rate_limit_text) && x->banner_code == y->banner_code &&
           str_eq(x->banner_text, y->banner_text) &&
           str_eq(x->banner_hostname, y->banner_hostname) && x->reject_code == y->reject_code &&
           str_eq(x->reject_text, y->reject_text) && x->tls == y->tls;
}

/* The host access half: groups, policies, reputation, connection DNS. */
static bool config_equal_hat(const struct config *a, const struct config *b)
{
    if (a->nsender_groups != b->nsender_groups || a->npolicies != b->npolicies ||
        a->reputation.nlists != b->reputation.nlists ||
        a->reputation.lookup_private != b->reputation.lookup_private ||
        a->connection_dns_deadline != b->connection_dns_deadline)
        return false;
    for (size_t i = 0; i < a->nsender_groups; i++)
        if (!sender_group_equal(&a->sender_groups[i], &b->sender_groups[i]))
            return false;
    for (size_t i = 0; i < a->npolicies; i++)
        if (!policy_equal(&a->policies[i], &b->policies[i]))
            return false;
    for (size_t i = 0; i < a->reputation.nlists; i++) {
        const struct cfg_dnslist *x = &a->reputation.lists[i], *y = &b->reputation.lists[i];
        if (!str_eq(x->zone, y->zone) || x->kind != y->kind || x->weight != y->weight ||
            !strv_eq(x->codes, x->ncodes, y->codes, y->ncodes))
            return false;
    }
    return true;
}

/* Field-by-field equality of everything a config carries (not refs/file). */
static bool config_equal(const struct config *a, const struct config *b)
{
    if (!config_equal_outbound(a, b) || !config_equal_hat(a, b))
        return false;
    if (!str_eq(a->hostname, b->hostname) || !str_eq(a->user, b->user) ||
        !str_eq(a->spool_dir, b->spool_dir) || !str_eq(a->log_dir, b->log_dir) ||
        !strv_eq(a->relay_domains, a->nrelay_domains, b->relay_domains, b->nrelay_domains) ||
        a->nlisteners != b->nlisteners)
        return false;
    for (size_t i = 0; i < a->nlisteners; i++) {
        const struct cfg_listener *x = &a->listeners[i], *y = &b->listeners[i];
        if (!str_eq(x->name, y->name) || x->type != y->type || !str_eq(x->address, y->address) ||
            x->port != y->port || !str_eq(x->hostname, y->hostname) ||
            !str_eq(x->tls_cert, y->tls_cert) || !str_eq(x->tls_key, y->tls_key) ||
            !strv_eq(x->hat, x->nhat, y->hat, y->nhat))
            return false;
    }
    return memcmp(&a->limits, &b->limits, sizeof a->limits) == 0 &&
           memcmp(&a->timeouts, &b->timeouts, sizeof a->timeouts) == 0 &&
           memcmp(&a->spool, &b->spool, sizeof a->spool) == 0 &&
           strv_eq(a->resolver.servers, a->resolver.nservers, b->resolver.servers,
                   b->resolver.nservers) &&
           a->resolver.timeout == b->resolver.timeout &&
           a->resolver.attempts == b->resolver.attempts;
}

/* ---- defaults ----------------------------------------------------------- */

static const char *const predefined_groups[] = {"WHITELIST", "BLACKLIST", "SUSPECTLIST",
                                                "UNKNOWNLIST", "RELAYLIST"};
static const char *const predefined_group_policies[] = {"TRUSTED", "BLOCKED", "THROTTLED",
                                                        "ACCEPTED", "RELAYED"};

/* One predefined policy's appliance values. */
static const struct policy_want {
    const char *name;
    enum cfg_access access;
    uint64_t size;
    uint32_t conns, msgs, rcpts, per_hour;
} predefined_policies[] = {
    {"TRUSTED", CFG_ACCESS_ACCEPT, 100 * 1024 * 1024, 600, 5000, 5000, 0},
    {"BLOCKED", CFG_ACCESS_REJECT, 10 * 1024 * 1024, 10, 10, 50, 0},
    {"THROTTLED", CFG_ACCESS_ACCEPT, 1024 * 1024, 10, 10, 20, 20},
    {"ACCEPTED", CFG_ACCESS_ACCEPT, 10 * 1024 * 1024, 10, 10, 50, 0},
    {"RELAYED", CFG_ACCESS_RELAY, 100 * 1024 * 1024, 600, 5000, 5000, 0},
};

static void check_policy(const struct cfg_mail_flow_policy *p, const struct policy_want *w)
{
    assert_string_equal(p->name, w->name);
    assert_int_equal(p->access, w->access);
    assert_false(p->reject_at_rcpt);
    assert_int_equal(p->max_message_size, w->size);
    assert_int_equal(p->max_concurrent_connections, w->conns);
    assert_int_equal(p->max_messages_per_connection, w->msgs);
    assert_int_equal(p->max_recipients_per_message, w->rcpts);
    assert_int_equal(p->max_recipients_per_hour, w->per_hour);
    assert_int_equal(p->rate_limit_code, 452);
    assert_string_equal(p->rate_limit_text, "Too many recipients received this hour");
    assert_int_equal(p->banner_code, 220);
    assert_string_equal(p->banner_text, "ESMTP");
    assert_string_equal(p->banner_hostname, "");
    assert_int_equal(p->reject_code, 554);
    assert_string_equal(p->reject_text, "Access denied");
    assert_int_equal(p->tls, CFG_PTLS_PREFERRED); /* ours: STARTTLS where a certificate is */
}

/* Predefined groups and policies first, in their fixed order. */
static void check_hat_defaults(const struct config *cfg)
{
    assert_true(cfg->nsender_groups >= ARRAY_LEN(predefined_groups));
    for (size_t i = 0; i < ARRAY_LEN(predefined_groups); i++)
        assert_string_equal(cfg->sender_groups[i].name, predefined_groups[i]);
    assert_true(cfg->npolicies >= ARRAY_LEN(predefined_policies));
    for (size_t i = 0; i < ARRAY_LEN(predefined_policies); i++)
        assert_string_equal(cfg->policies[i].name, predefined_policies[i].name);
}

static void check_defaults(const struct config *cfg)
{
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = '\0';

    assert_string_equal(cfg->hostname, host);
    assert_string_equal(cfg->user, "postern");
    assert_string_equal(cfg->spool_dir, "./var/spool");
    assert_string_equal(cfg->log_dir, "./var/log");
    assert_int_equal(cfg->nrelay_domains, 0);
    assert_int_equal(cfg->nlisteners, 1);
    assert_string_equal(cfg->listeners[0].name, "InboundMail");
    assert_int_equal(cfg->listeners[0].type, LISTENER_PUBLIC);
    assert_string_equal(cfg->listeners[0].address, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].port, 2525);
    assert_string_equal(cfg->listeners[0].hostname, host);
    assert_null(cfg->listeners[0].tls_cert);
    assert_null(cfg->listeners[0].tls_key);
    assert_int_equal(cfg->listeners[0].nhat, 4);
    assert_string_equal(cfg->listeners[0].hat[0], "WHITELIST");
    assert_string_equal(cfg->listeners[0].hat[3], "UNKNOWNLIST");
    check_hat_defaults(cfg);
    assert_int_equal(cfg->limits.max_message_size, 10 * 1024 * 1024);
    assert_int_equal(cfg->limits.max_recipients, 100);
    assert_int_equal(cfg->limits.max_command_line, 512);
    assert_int_equal(cfg->limits.max_text_line, 1000);
    assert_int_equal(cfg->limits.max_connections, 1000);
    assert_int_equal(cfg->limits.max_errors, 10);
    assert_int_equal(cfg->timeouts.command, 5 * 60 * 1000);
    assert_int_equal(cfg->timeouts.data, 5 * 60 * 1000);
    assert_int_equal(cfg->timeouts.tls_handshake, 60 * 1000);
    assert_int_equal(cfg->spool.memory_threshold, 256 * 1024);
    assert_int_equal(cfg->spool.min_free_space, 100 * 1024 * 1024);
    assert_int_equal(cfg->resolver.nservers, 0);
    assert_int_equal(cfg->resolver.timeout, 2000);
    assert_int_equal(cfg->resolver.attempts, 2);
    assert_int_equal(cfg->nroutes, 0);
    assert_null(cfg->routes);
    assert_int_equal(cfg->ndest_controls, 1);
    const struct cfg_dest_control *dc = &cfg->dest_controls[0];
    assert_string_equal(dc->domain, "default");
    assert_int_equal(dc->max_connections, 20);
    assert_int_equal(dc->max_messages_per_connection, 50);
    assert_int_equal(dc->max_recipients_per_message, 100);
    assert_int_equal(dc->tls, CFG_TLS_PREFERRED);
    assert_string_equal(dc->bounce_profile, "default");
    assert_int_equal(cfg->nbounce_profiles, 1);
    const struct cfg_bounce_profile *bp = &cfg->bounce_profiles[0];
    assert_string_equal(bp->name, "default");
    assert_int_equal(bp->max_retries, 100);
    assert_int_equal(bp->max_queue_time, UINT64_C(72) * 3600 * 1000);
    assert_int_equal(bp->initial_retry, 60 * 1000);
    assert_int_equal(bp->max_retry, 3600 * 1000);
    assert_string_equal(cfg->delivery.helo_name, host);
    assert_int_equal(cfg->delivery.connect_timeout, 30 * 1000);
    assert_int_equal(cfg->delivery.command_timeout, 5 * 60 * 1000);
    assert_int_equal(cfg->delivery.data_block_timeout, 3 * 60 * 1000);
    assert_int_equal(cfg->delivery.data_done_timeout, 10 * 60 * 1000);
    assert_int_equal(cfg->delivery.bounce_max_original, 100 * 1024);
    assert_int_equal(cfg->refs, 1);
}

static void test_defaults(void **state)
{
    /* Every way of saying "nothing": all defaults. */
    static const char *const empties[] = {
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "---\n...\n",
        "~\n",
        "{}\n",
        "limits:\npaths:\ntimeouts:\nspool:\nresolver:\n",
        "resolver:\n  # servers: [127.0.0.1]\n",
        "smtp_routes:\ndestination_controls:\nbounce_profiles:\ndelivery:\n",
        "smtp_routes: []\ndestination_controls: []\nbounce_profiles: []\ndelivery: {}\n",
        "destination_controls: [{domain: default}]\nbounce_profiles: [{name: default}]\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(empties); i++) {
        struct config *cfg = load_ok(empties[i]);
        check_defaults(cfg);
        assert_string_equal(cfg->file, "t.yaml");
        config_unref(cfg);
    }
}

/* ---- every key ---------------------------------------------------------- */

static const char full_yaml[] = "hostname: mx.example.com\n"
                                "user: mailer\n"
                                "paths:\n"
                                "  spool: /var/spool/postern\n"
                                "  logs: /var/log/postern\n"
                                "relay_domains: [Example.COM, .example.org]\n"
                                "listeners:\n"
                                "  - name: InboundMail\n"
                                "    type: public\n"
                                "    address: 0.0.0.0\n"
                                "    port: 25\n"
                                "    tls:\n"
                                "      certificate: /etc/postern/cert.pem\n"
                                "      key: /etc/postern/key.pem\n"
                                "  - name: OutboundMail\n"
                                "    type: private\n"
                                "    address: \"::1\"\n"
                                "    port: 587\n"
                                "    hostname: relay.example.com\n"
                                "limits:\n"
                                "  max_message_size: 50M\n"
                                "  max_recipients: 500\n"
                                "  max_command_line: 2048\n"
                                "  max_text_line: 2000\n"
                                "  max_connections: 50\n"
                                "  max_errors: 3\n"
                                "timeouts:\n"
                                "  command: 10m\n"
                                "  data: 90s\n"
                                "  tls_handshake: 30\n"
                                "spool:\n"
                                "  memory_threshold: 1M\n"
                                "  min_free_space: 2G\n"
                                "resolver:\n"
                                "  servers: [\"127.0.0.1:53\", \"[::1]:5353\", 9.9.9.9]\n"
                                "  timeout: 500ms\n"
                                "  attempts: 4\n"
                                "smtp_routes:\n"
                                "  - domain: Example.COM\n"
                                "    hosts:\n"
                                "      - host: 192.168.0.10\n"
                                "        port: 2526\n"
                                "        priority: 10\n"
                                "      - host: MX1.Example.com\n"
                                "      - host: \"2001:DB8::1\"\n"
                                "        priority: 10\n"
                                "  - domain: .example.org\n"
                                "    hosts: USEDNS\n"
                                "  - domain: all\n"
                                "    hosts: /dev/null\n"
                                "destination_controls:\n"
                                "  - domain: .Example.org\n"
                                "    max_connections: 5\n"
                                "    max_messages_per_connection: 10\n"
                                "    max_recipients_per_message: 20\n"
                                "    tls: required\n"
                                "    bounce_profile: slow\n"
                                "  - domain: default\n"
                                "    tls: none\n"
                                "bounce_profiles:\n"
                                "  - name: slow\n"
                                "    max_retries: 10\n"
                                "    max_queue_time: 120h\n"
                                "    initial_retry: 5m\n"
                                "    max_retry: 4h\n"
                                "delivery:\n"
                                "  helo_name: out.example.com\n"
                                "  connect_timeout: 10s\n"
                                "  command_timeout: 2m\n"
                                "  data_block_timeout: 1m\n"
                                "  data_done_timeout: 15m\n"
                                "  bounce_max_original: 1M\n";

static const char hat_yaml[] =
    "listeners:\n"
    "  - name: in\n"
    "    hat: [allowed_list, Blocked_List, PARTNERS, suspectlist, UNKNOWNLIST]\n"
    "  - name: out\n"
    "    type: private\n"
    "    port: 2526\n"
    "  - name: out2\n"
    "    type: private\n"
    "    port: 2527\n"
    "    hat: [RELAYLIST, PARTNERS]\n"
    "sender_groups:\n"
    "  - name: partners\n"
    "    policy: partner_policy\n"
    "    members: [10.1.1.0/24, \"10.1.2.10-20\", \"10.2.\", 2001:DB8::/32, MX.Example.COM,\n"
    "              .example.org, \"sbrs[-1:2.5]\", \"sbrs[NONE]\", \"DNSLIST[Zen.Example]\", all]\n"
    "    ptr_missing: true\n"
    "    ptr_tempfail: yes\n"
    "    ptr_mismatch: on\n"
    "  - name: ALLOWED_LIST\n"
    "    members: [192.0.2.1]\n"
    "  - name: blacklist\n"
    "    policy: THROTTLED\n"
    "mail_flow_policies:\n"
    "  - name: Partner_Policy\n"
    "    access: relay\n"
    "    reject_at_rcpt: true\n"
    "    max_message_size: 20M\n"
    "    max_concurrent_connections: 50\n"
    "    max_messages_per_connection: 100\n"
    "    max_recipients_per_message: 200\n"
    "    max_recipients_per_hour: 1000\n"
    "    rate_limit_code: 421\n"
    "    rate_limit_text: \"Slow down\"\n"
    "    banner_code: 220\n"
    "    banner_text: \"ESMTP $Hostname ($Group, $RemoteIP)\"\n"
    "    banner_hostname: partners.example.com\n"
    "    reject_code: 550\n"
    "    reject_text: \"Not you\"\n"
    "    tls: required\n"
    "  - name: throttled\n"
    "    max_recipients_per_hour: 5\n"
    "    tls: preferred\n"
    "reputation:\n"
    "  lists:\n"
    "    - zone: Zen.Example\n"
    "      codes: [127.0.0.2, 127.0.0.4]\n"
    "    - zone: allow.example\n"
    "      type: allow\n"
    "    - zone: mild.example\n"
    "      type: block\n"
    "      weight: -1.25\n"
    "    - zone: strong.example\n"
    "      type: allow\n"
    "      weight: 10\n"
    "  lookup_private: true\n"
    "connection_dns:\n"
    "  deadline: 2500ms\n";

static void test_every_key(void **state)
{
    struct config *cfg = load_ok(full_yaml);

    assert_string_equal(cfg->hostname, "mx.example.com");
    assert_string_equal(cfg->user, "mailer");
    assert_string_equal(cfg->spool_dir, "/var/spool/postern");
    assert_string_equal(cfg->log_dir, "/var/log/postern");
    assert_int_equal(cfg->nrelay_domains, 2);
    assert_string_equal(cfg->relay_domains[0], "example.com"); /* lower-cased */
    assert_string_equal(cfg->relay_domains[1], ".example.org");

    assert_int_equal(cfg->nlisteners, 2);
    const struct cfg_listener *in = &cfg->listeners[0], *out = &cfg->listeners[1];
    assert_string_equal(in->name, "InboundMail");
    assert_int_equal(in->type, LISTENER_PUBLIC);
    assert_string_equal(in->address, "0.0.0.0");
    assert_int_equal(in->port, 25);
    assert_string_equal(in->hostname, "mx.example.com"); /* from the top level */
    assert_string_equal(in->tls_cert, "/etc/postern/cert.pem");
    assert_string_equal(in->tls_key, "/etc/postern/key.pem");
    assert_string_equal(out->name, "OutboundMail");
    assert_int_equal(out->type, LISTENER_PRIVATE);
    assert_string_equal(out->address, "::1");
    assert_int_equal(out->port, 587);
    assert_string_equal(out->hostname, "relay.example.com");
    assert_null(out->tls_cert);
    assert_null(out->tls_key);

    assert_int_equal(cfg->limits.max_message_size, 50 * 1024 * 1024);
    assert_int_equal(cfg->limits.max_recipients, 500);
    assert_int_equal(cfg->limits.max_command_line, 2048);
    assert_int_equal(cfg->limits.max_text_line, 2000);
    assert_int_equal(cfg->limits.max_connections, 50);
    assert_int_equal(cfg->limits.max_errors, 3);
    assert_int_equal(cfg->timeouts.command, 600000);
    assert_int_equal(cfg->timeouts.data, 90000);
    assert_int_equal(cfg->timeouts.tls_handshake, 30000);
    assert_int_equal(cfg->spool.memory_threshold, 1024 * 1024);
    assert_int_equal(cfg->spool.min_free_space, UINT64_C(2) * 1024 * 1024 * 1024);
    assert_int_equal(cfg->resolver.nservers, 3);
    assert_string_equal(cfg->resolver.servers[0], "127.0.0.1:53");
    assert_string_equal(cfg->resolver.servers[1], "[::1]:5353");
    assert_string_equal(cfg->resolver.servers[2], "9.9.9.9");
    assert_int_equal(cfg->resolver.timeout, 500);
    assert_int_equal(cfg->resolver.attempts, 4);

    /* Routes: domains lower-cased (ALL upper-cased), hosts lower-cased and
     * sorted by priority, equal priorities in file order. */
    assert_int_equal(cfg->nroutes, 3);
    const struct cfg_route *r = &cfg->routes[0];
    assert_string_equal(r->domain, "example.com");
    assert_int_equal(r->kind, ROUTE_HOSTS);
    assert_int_equal(r->nhosts, 3);
    assert_string_equal(r->hosts[0].host, "mx1.example.com");
    assert_int_equal(r->hosts[0].port, 25);
    assert_int_equal(r->hosts[0].priority, 0);
    assert_string_equal(r->hosts[1].host, "192.168.0.10");
    assert_int_equal(r->hosts[1].port, 2526);
    assert_int_equal(r->hosts[1].priority, 10);
    assert_string_equal(r->hosts[2].host, "2001:db8::1");
    assert_int_equal(r->hosts[2].port, 25);
    assert_int_equal(r->hosts[2].priority, 10);
    assert_string_equal(cfg->routes[1].domain, ".example.org");
    assert_int_equal(cfg->routes[1].kind, ROUTE_USEDNS);
    assert_int_equal(cfg->routes[1].nhosts, 0);
    assert_string_equal(cfg->routes[2].domain, "ALL");
    assert_int_equal(cfg->routes[2].kind, ROUTE_DEVNULL);
    assert_int_equal(cfg->routes[2].nhosts, 0);

    /* "default" moved to [0]. */
    assert_int_equal(cfg->ndest_controls, 2);
    const struct cfg_dest_control *dd = &cfg->dest_controls[0], *dc = &cfg->dest_controls[1];
    assert_string_equal(dd->domain, "default");
    assert_int_equal(dd->tls, CFG_TLS_NONE);
    assert_int_equal(dd->max_connections, 20);
    assert_string_equal(dd->bounce_profile, "default");
    assert_string_equal(dc->domain, ".example.org");
    assert_int_equal(dc->max_connections, 5);
    assert_int_equal(dc->max_messages_per_connection, 10);
    assert_int_equal(dc->max_recipients_per_message, 20);
    assert_int_equal(dc->tls, CFG_TLS_REQUIRED);
    assert_string_equal(dc->bounce_profile, "slow");

    /* "default" inserted at [0] with all defaults. */
    assert_int_equal(cfg->nbounce_profiles, 2);
    assert_string_equal(cfg->bounce_profiles[0].name, "default");
    assert_int_equal(cfg->bounce_profiles[0].max_retries, 100);
    const struct cfg_bounce_profile *bp = &cfg->bounce_profiles[1];
    assert_string_equal(bp->name, "slow");
    assert_int_equal(bp->max_retries, 10);
    assert_int_equal(bp->max_queue_time, UINT64_C(120) * 3600 * 1000);
    assert_int_equal(bp->initial_retry, 5 * 60 * 1000);
    assert_int_equal(bp->max_retry, 4 * 3600 * 1000);

    assert_string_equal(cfg->delivery.helo_name, "out.example.com");
    assert_int_equal(cfg->delivery.connect_timeout, 10 * 1000);
    assert_int_equal(cfg->delivery.command_timeout, 2 * 60 * 1000);
    assert_int_equal(cfg->delivery.data_block_timeout, 60 * 1000);
    assert_int_equal(cfg->delivery.data_done_timeout, 15 * 60 * 1000);
    assert_int_equal(cfg->delivery.bounce_max_original, 1024 * 1024);
    config_unref(cfg);
}

/* hostname given after listeners and delivery still becomes their default. */
static void test_listener_hostname_order(void **state)
{
    struct config *cfg = load_ok("listeners:\n  - name: a\ndelivery:\n  connect_timeout: 5s\n"
                                 "hostname: late.example\n");
    assert_string_equal(cfg->listeners[0].hostname, "late.example");
    assert_string_equal(cfg->delivery.helo_name, "late.example");
    config_unref(cfg);
}

/* ---- sizes, durations, integers ----------------------------------------- */

enum field {
    F_MSGSIZE,
    F_THRESHOLD,
    F_FREE,
    F_CMD,
    F_RESOLV_TIMEOUT,
    F_RECIPIENTS,
    F_PORT,
    F_HOST_PORT,
    F_HOST_PRIORITY,
    F_DC_CONNECTIONS,
    F_DC_MESSAGES,
    F_DC_RECIPIENTS,
    F_DC_TLS,
    F_BP_RETRIES,
    F_BP_QUEUE_TIME,
    F_BP_INITIAL,
    F_BP_MAX,
    F_DL_CONNECT,
    F_DL_COMMAND,
    F_DL_DATA_BLOCK,
    F_DL_DATA_DONE,
    F_DL_BOUNCE_ORIGINAL,
};

static uint64_t field_value(const struct config *cfg, enum field f)
{
    switch (f) {
    case F_MSGSIZE:
        return cfg->limits.max_message_size;
    case F_THRESHOLD:
        return cfg->spool.memory_threshold;
    case F_FREE:
        return cfg->spool.min_free_space;
    case F_CMD:
        return cfg->timeouts.command;
    case F_RESOLV_TIMEOUT:
        return cfg->resolver.timeout;
    case F_RECIPIENTS:
        return cfg->limits.max_recipients;
    case F_PORT:
        return cfg->listeners[0].port;
    case F_HOST_PORT:
        return cfg->routes[0].hosts[0].port;
    case F_HOST_PRIORITY:
        return cfg->routes[0].hosts[0].priority;
    case F_DC_CONNECTIONS:
        return cfg->dest_controls[0].max_connections;
    case F_DC_MESSAGES:
        return cfg->dest_controls[0].max_messages_per_connection;
    case F_DC_RECIPIENTS:
        return cfg->dest_controls[0].max_recipients_per_message;
    case F_DC_TLS:
        return cfg->dest_controls[0].tls;
    case F_BP_RETRIES:
        return cfg->bounce_profiles[0].max_retries;
    case F_BP_QUEUE_TIME:
        return cfg->bounce_profiles[0].max_queue_time;
    case F_BP_INITIAL:
        return cfg->bounce_profiles[0].initial_retry;
    case F_BP_MAX:
        return cfg->bounce_profiles[0].max_retry;
    case F_DL_CONNECT:
        return cfg->delivery.connect_timeout;
    case F_DL_COMMAND:
        return cfg->delivery.command_timeout;
    case F_DL_DATA_BLOCK:
        return cfg->delivery.data_block_timeout;
    case F_DL_DATA_DONE:
        return cfg->delivery.data_done_timeout;
    case F_DL_BOUNCE_ORIGINAL:
        return cfg->delivery.bounce_max_original;
    }
    return 0;
}

static void test_values(void **state)
{
    static const struct {
        const char *yaml;
        enum field f;
        uint64_t want;
    } rows[] = {
        {"limits: {max_message_size: 2048}", F_MSGSIZE, 2048},
        {"limits: {max_message_size: 1K}", F_MSGSIZE, 1024},
        {"limits: {max_message_size: 256k}", F_MSGSIZE, 256 * 1024},
        {"limits: {max_message_size: 10M}", F_MSGSIZE, 10 * 1024 * 1024},
        {"limits: {max_message_size: 1G}", F_MSGSIZE, UINT64_C(1) << 30},
        {"limits: {max_message_size: 4G}", F_MSGSIZE, UINT64_C(4) << 30},
        {"limits: {max_message_size: \"10M\"}", F_MSGSIZE, 10 * 1024 * 1024},
        {"spool: {memory_threshold: 0}", F_THRESHOLD, 0},
        {"spool: {memory_threshold: 64M}", F_THRESHOLD, 64 * 1024 * 1024},
        {"spool: {min_free_space: 1024G}", F_FREE, UINT64_C(1) << 40},
        {"timeouts: {command: 30}", F_CMD, 30000},
        {"timeouts: {command: 30s}", F_CMD, 30000},
        {"timeouts: {command: 1500ms}", F_CMD, 1500},
        {"timeouts: {command: 5m}", F_CMD, 300000},
        {"timeouts: {command: 1h}", F_CMD, 3600000},
        {"timeouts: {command: 1S}", F_CMD, 1000},
        {"resolver: {timeout: 100ms}", F_RESOLV_TIMEOUT, 100},
        {"resolver: {timeout: 1m}", F_RESOLV_TIMEOUT, 60000},
        {"limits: {max_recipients: 1}", F_RECIPIENTS, 1},
        {"limits: {max_recipients: 100000}", F_RECIPIENTS, 100000},
        {"limits: {max_recipients: 007}", F_RECIPIENTS, 7},
        {"listeners: [{name: a, port: 1}]", F_PORT, 1},
        {"listeners: [{name: a, port: 65535}]", F_PORT, 65535},
        {"smtp_routes: [{domain: a, hosts: [{host: b}]}]", F_HOST_PORT, 25},
        {"smtp_routes: [{domain: a, hosts: [{host: b, port: 1}]}]", F_HOST_PORT, 1},
        {"smtp_routes: [{domain: a, hosts: [{host: b, port: 65535}]}]", F_HOST_PORT, 65535},
        {"smtp_routes: [{domain: a, hosts: [{host: b}]}]", F_HOST_PRIORITY, 0},
        {"smtp_routes: [{domain: a, hosts: [{host: b, priority: 65535}]}]", F_HOST_PRIORITY, 65535},
        {"destination_controls: [{domain: default, max_connections: 1}]", F_DC_CONNECTIONS, 1},
        {"destination_controls: [{domain: default, max_connections: 10000}]", F_DC_CONNECTIONS,
         10000},
        {"destination_controls: [{domain: default, max_messages_per_connection: 1}]", F_DC_MESSAGES,
         1},
        {"destination_controls: [{domain: default, max_messages_per_connection: 100000}]",
         F_DC_MESSAGES, 100000},
        {"destination_controls: [{domain: default, max_recipients_per_message: 100000}]",
         F_DC_RECIPIENTS, 100000},
        {"destination_controls: [{domain: default, tls: none}]", F_DC_TLS, CFG_TLS_NONE},
        {"destination_controls: [{domain: default, tls: preferred}]", F_DC_TLS, CFG_TLS_PREFERRED},
        {"destination_controls: [{domain: default, tls: required}]", F_DC_TLS, CFG_TLS_REQUIRED},
        {"bounce_profiles: [{name: default, max_retries: 0}]", F_BP_RETRIES, 0},
        {"bounce_profiles: [{name: default, max_retries: 100000}]", F_BP_RETRIES, 100000},
        {"bounce_profiles: [{name: default, max_queue_time: 1s}]", F_BP_QUEUE_TIME, 1000},
        {"bounce_profiles: [{name: default, max_queue_time: 720h}]", F_BP_QUEUE_TIME,
         UINT64_C(720) * 3600 * 1000},
        {"bounce_profiles: [{name: default, initial_retry: 1s}]", F_BP_INITIAL, 1000},
        {"bounce_profiles: [{name: default, initial_retry: 24h, max_retry: 24h}]", F_BP_INITIAL,
         24 * 3600 * 1000},
        {"bounce_profiles: [{name: default, initial_retry: 1s, max_retry: 1s}]", F_BP_MAX, 1000},
        {"bounce_profiles: [{name: default, max_retry: 720h}]", F_BP_MAX,
         UINT64_C(720) * 3600 * 1000},
        {"delivery: {connect_timeout: 1s}", F_DL_CONNECT, 1000},
        {"delivery: {connect_timeout: 10m}", F_DL_CONNECT, 600000},
        {"delivery: {command_timeout: 1h}", F_DL_COMMAND, 3600000},
        {"delivery: {data_block_timeout: 1500ms}", F_DL_DATA_BLOCK, 1500},
        {"delivery: {data_done_timeout: 1h}", F_DL_DATA_DONE, 3600000},
        {"delivery: {bounce_max_original: 0}", F_DL_BOUNCE_ORIGINAL, 0},
        {"delivery: {bounce_max_original: 64M}", F_DL_BOUNCE_ORIGINAL, 64 * 1024 * 1024},
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        struct config *cfg = load_ok(rows[i].yaml);
        if (field_value(cfg, rows[i].f) != rows[i].want)
            fail_msg("%s: got %llu, want %llu", rows[i].yaml,
                     (unsigned long long)field_value(cfg, rows[i].f),
                     (unsigned long long)rows[i].want);
        config_unref(cfg);
    }
}

/* Valid values that exercise the string checks. */
static void test_valid_strings(void **state)
{
    static const char *const rows[] = {
        "relay_domains: [a, a-b.c, xn--bcher-kva.example, 1.2.3, .sub.example.org]",
        "relay_domains: []",
        "relay_domains:",
        "resolver: {servers: [\"::1\", \"fe80::1\", \"[2001:db8::1]:53\", \"10.0.0.1:1\"]}",
        "listeners: [{name: a, address: \"::\"}, {name: b, address: 0.0.0.0}]",
        "listeners: [{name: a, address: 127.0.0.1}, {name: b, address: 127.0.0.2}]",
        "listeners: [{name: a, port: 25}, {name: b, port: 26}]",
        "listeners: [{name: a, type: private}]",
        "user: root",
        "paths: {spool: \"/a dir/with spaces\"}",
        "smtp_routes: [{domain: ALL, hosts: USEDNS}, {domain: .a.b, hosts: \"/dev/null\"}]",
        "smtp_routes: [{domain: a, hosts: [{host: \"::1\"}, {host: 10.0.0.1}, {host: x-y.z9}]}]",
        "smtp_routes: [{domain: a, hosts: [{host: localhost}, {host: 1.example}]}]",
        "smtp_routes: [{domain: a, hosts: USEDNS}, {domain: .a, hosts: USEDNS}]",
        /* a reference to a profile defined later in the file */
        "destination_controls: [{domain: .x, bounce_profile: p}]\nbounce_profiles: [{name: p}]",
        "destination_controls: [{domain: x, bounce_profile: default}]",
        "delivery: {helo_name: relay.example}",
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        config_unref(load_ok(rows[i]));
}

/* ---- errors ------------------------------------------------------------- */

static const struct error_row {
    const char *yaml;
    unsigned line, column;
    const char *msg; /* exact */
} error_rows[] = {
    /* unknown keys */
    {"bogus: 1\n", 1, 1, "unknown key 'bogus' at top level"},
    {"limits:\n  max_recipients: 5\n  max_foo: 1\n", 3, 3,
     "unknown key 'max_foo' in section 'limits'"},
    {"listeners:\n  - name: a\n    colour: red\n", 3, 5,
     "unknown key 'colour' in section 'listeners'"},
    {"listeners:\n  - name: a\n    tls:\n      cert: x\n", 4, 7,
     "unknown key 'cert' in section 'tls'"},
    {"\"evil\\x1b[31m\": 1\n", 1, 1, "unknown key 'evil?[31m' at top level"},
    {"? [a, b]\n: 1\n", 1, 3, "keys must be scalars, not a sequence at top level"},
    /* wrong types */
    {"limits: 5\n", 1, 9, "'limits' must be a mapping, not a scalar"},
    {"paths: [a]\n", 1, 8, "'paths' must be a mapping, not a sequence"},
    {"user: [a]\n", 1, 7, "'user' must be a scalar, not a sequence"},
    {"user:\n", 1, 6, "'user' has no value"},
    {"user: ~\n", 1, 7, "'user' has no value"},
    {"user: \"\"\n", 1, 7, "'user' must not be empty"},
    {"user: \"a\\tb\"\n", 1, 7, "'user' contains a control character"},
    {"user: \"a\\0b\"\n", 1, 7, "'user' contains a control character"},
    {"user: a b\n", 1, 7, "'user': invalid value 'a b': must not contain spaces"},
    {"hostname: \"mx example\"\n", 1, 11,
     "'hostname': invalid value 'mx example': must not contain spaces"},
    {"relay_domains: example.com\n", 1, 16, "'relay_domains' must be a sequence, not a scalar"},
    {"relay_domains: [[a]]\n", 1, 17, "'relay_domains' must be a scalar, not a sequence"},
    {"listeners: {name: a}\n", 1, 12, "'listeners' must be a sequence, not a mapping"},
    {"listeners:\n  - a\n", 2, 5, "each entry of 'listeners' must be a mapping, not a scalar"},
    {"limits:\n  max_recipients: lots\n", 2, 19,
     "'max_recipients': invalid value 'lots': expected a non-negative integer"},
    {"limits:\n  max_recipients: -1\n", 2, 19,
     "'max_recipients': invalid value '-1': expected a non-negative integer"},
    {"limits:\n  max_recipients: 10K\n", 2, 19,
     "'max_recipients': invalid value '10K': expected a non-negative integer"},
    {"limits:\n  max_recipients: 99999999999999999999999\n", 2, 19,
     "'max_recipients': invalid value '99999999999999999999999': number too large"},
    {"limits: {max_message_size: 10MB}\n", 1, 28,
     "'max_message_size': invalid value '10MB': expected a size: bytes, or a number with K, M "
     "or G"},
    {"limits: {max_message_size: 17179869184G}\n", 1, 28,
     "'max_message_size': invalid value '17179869184G': number too large"},
    {"timeouts: {data: 5x}\n", 1, 18,
     "'data': invalid value '5x': expected a duration: seconds, or a number with ms, s, m or h"},
    {"timeouts: {data: 1.5s}\n", 1, 18,
     "'data': invalid value '1.5s': expected a duration: seconds, or a number with ms, s, m or "
     "h"},
    {"listeners: [{name: a, type: secret}]\n", 1, 29,
     "'type': invalid value 'secret': expected public or private"},
    {"listeners: [{name: a, type: Public}]\n", 1, 29,
     "'type': invalid value 'Public': expected public or private"},
    /* out of range */
    {"listeners:\n  - name: a\n    port: 0\n", 3, 11,
     "'port' out of range: '0' is not between 1 and 65535"},
    {"listeners:\n  - name: a\n    port: 65536\n", 3, 11,
     "'port' out of range: '65536' is not between 1 and 65535"},
    {"limits: {max_message_size: 5G}\n", 1, 28,
     "'max_message_size' out of range: '5G' is not between 1K and 4G"},
    {"limits: {max_message_size: 1023}\n", 1, 28,
     "'max_message_size' out of range: '1023' is not between 1K and 4G"},
    {"limits: {max_command_line: 511}\n", 1, 28,
     "'max_command_line' out of range: '511' is not between 512 and 65536"},
    {"limits: {max_text_line: 999}\n", 1, 25,
     "'max_text_line' out of range: '999' is not between 1000 and 1048576"},
    {"limits: {max_recipients: 0}\n", 1, 26,
     "'max_recipients' out of range: '0' is not between 1 and 100000"},
    {"timeouts: {command: 500ms}\n", 1, 21,
     "'command' out of range: '500ms' is not between 1s and 1h"},
    {"timeouts: {tls_handshake: 11m}\n", 1, 27,
     "'tls_handshake' out of range: '11m' is not between 1s and 10m"},
    {"resolver: {timeout: 99ms}\n", 1, 21,
     "'timeout' out of range: '99ms' is not between 100ms and 1m"},
    {"resolver: {attempts: 11}\n", 1, 22, "'attempts' out of range: '11' is not between 1 and 10"},
    {"spool: {memory_threshold: 65M}\n", 1, 27,
     "'memory_threshold' out of range: '65M' is not between 0 and 64M"},
    /* duplicates */
    {"user: a\nuser: b\n", 2, 1, "duplicate key 'user' at top level"},
    {"limits:\n  max_errors: 1\n  max_errors: 2\n", 3, 3,
     "duplicate key 'max_errors' in section 'limits'"},
    {"listeners:\n  - name: a\n    port: 1\n    port: 2\n", 4, 5,
     "duplicate key 'port' in section 'listeners'"},
    {"limits: {}\nlimits: {}\n", 2, 1, "duplicate key 'limits' at top level"},
    {"listeners:\n  - name: a\n    port: 25\n  - name: a\n    port: 26\n", 4, 11,
     "duplicate listener name 'a'"},
    {"listeners:\n  - name: a\n    address: \"::1\"\n    port: 25\n"
     "  - name: b\n    address: \"0:0::1\"\n    port: 25\n",
     6, 14, "duplicate listener address 0:0::1 port 25 (already used by 'a')"},
    {"listeners:\n  - name: a\n  - name: b\n", 3, 5,
     "duplicate listener address 127.0.0.1 port 2525 (already used by 'a')"},
    {"listeners:\n  - name: a\n  - name: b\n    port: 2525\n", 4, 11,
     "duplicate listener address 127.0.0.1 port 2525 (already used by 'a')"},
    /* missing required keys, tls */
    {"listeners:\n  - port: 25\n", 2, 5, "missing required key 'name' in section 'listeners'"},
    {"listeners:\n  - name: a\n    tls:\n", 3, 9,
     "missing required key 'certificate' in section 'tls'"},
    {"listeners:\n  - name: a\n    tls:\n      certificate: c.pem\n", 4, 7,
     "missing required key 'key' in section 'tls'"},
    {"listeners:\n  - name: a\n    tls:\n      key: k.pem\n", 4, 7,
     "missing required key 'certificate' in section 'tls'"},
    {"listeners:\n  - name: a\n    tls: yes\n", 3, 10, "'tls' must be a mapping, not a scalar"},
    {"listeners: []\n", 1, 12, "'listeners' must list at least one listener"},
    {"listeners:\n", 1, 11, "'listeners' must list at least one listener"},
    /* addresses */
    {"listeners:\n  - name: a\n    address: 1.2.3\n", 3, 14,
     "'address': invalid value '1.2.3': not an IPv4 or IPv6 address literal"},
    {"listeners:\n  - name: a\n    address: localhost\n", 3, 14,
     "'address': invalid value 'localhost': not an IPv4 or IPv6 address literal"},
    {"listeners:\n  - name: a\n    address: \"[::1]\"\n", 3, 14,
     "'address': invalid value '[::1]': not an IPv4 or IPv6 address literal"},
    {"listeners:\n  - name: a\n    address: 256.0.0.1\n", 3, 14,
     "'address': invalid value '256.0.0.1': not an IPv4 or IPv6 address literal"},
    /* relay domains */
    {"relay_domains: [ok.example, example.com.]\n", 1, 29,
     "'relay_domains': invalid value 'example.com.': trailing dot is not allowed"},
    {"relay_domains: [a..b]\n", 1, 17, "'relay_domains': invalid value 'a..b': empty label"},
    {"relay_domains: [\"..a\"]\n", 1, 17, "'relay_domains': invalid value '..a': empty label"},
    {"relay_domains: [\".\"]\n", 1, 17, "'relay_domains': invalid value '.': empty domain"},
    {"relay_domains: [a_b.com]\n", 1, 17,
     "'relay_domains': invalid value 'a_b.com': only letters, digits, hyphens and dots are "
     "allowed"},
    {"relay_domains: [\"*.example.com\"]\n", 1, 17,
     "'relay_domains': invalid value '*.example.com': only letters, digits, hyphens and dots "
     "are allowed"},
    {"relay_domains: [-a.com]\n", 1, 17,
     "'relay_domains': invalid value '-a.com': label starts or ends with a hyphen"},
    {"relay_domains: [a-.com]\n", 1, 17,
     "'relay_domains': invalid value 'a-.com': label starts or ends with a hyphen"},
    {"relay_domains: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com]\n", 1,
     17,
     "'relay_domains': invalid value "
     "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...': "
     "label longer than 63 characters"},
    /* resolver servers */
    {"resolver:\n  servers: [foo]\n", 2, 13,
     "'servers': invalid value 'foo': expected \"ip\", \"ip:port\" or \"[ipv6]:port\""},
    {"resolver:\n  servers: [\"1.2.3.4:0\"]\n", 2, 13,
     "'servers': invalid value '1.2.3.4:0': port must be 1..65535"},
    {"resolver:\n  servers: [\"1.2.3.4:65536\"]\n", 2, 13,
     "'servers': invalid value '1.2.3.4:65536': port must be 1..65535"},
    {"resolver:\n  servers: [\"1.2.3.4:\"]\n", 2, 13,
     "'servers': invalid value '1.2.3.4:': port must be 1..65535"},
    {"resolver:\n  servers: [\"[::1]\"]\n", 2, 13,
     "'servers': invalid value '[::1]': expected ':port' after ']'"},
    {"resolver:\n  servers: [\"[::1\"]\n", 2, 13, "'servers': invalid value '[::1': missing ']'"},
    {"resolver:\n  servers: [\"[1.2.3.4]:53\"]\n", 2, 13,
     "'servers': invalid value '[1.2.3.4]:53': not an IPv6 address literal"},
    {"resolver:\n  servers: [\"host:53\"]\n", 2, 13,
     "'servers': invalid value 'host:53': not an IPv4 address literal"},
    /* smtp_routes */
    {"smtp_routes:\n  - domain: a.example\n    hosts: USEDNS\n  - domain: A.example\n"
     "    hosts: USEDNS\n",
     4, 13, "duplicate route domain 'a.example'"},
    {"smtp_routes:\n  - domain: ALL\n    hosts: USEDNS\n  - domain: all\n    hosts: /dev/null\n", 4,
     13, "duplicate route domain 'ALL'"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: h.example\n        port: 0\n", 5, 15,
     "'port' out of range: '0' is not between 1 and 65535"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: h.example\n        port: 65536\n", 5,
     15, "'port' out of range: '65536' is not between 1 and 65535"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: h.example\n        port: smtp\n", 5,
     15, "'port': invalid value 'smtp': expected a non-negative integer"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: h.example\n"
     "        priority: 65536\n",
     5, 19, "'priority' out of range: '65536' is not between 0 and 65535"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: h.example\n"
     "        priority: -1\n",
     5, 19, "'priority': invalid value '-1': expected a non-negative integer"},
    {"smtp_routes:\n  - domain: a\n    hosts: []\n", 3, 12, "'hosts' must list at least one host"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n", 3, 11, "'hosts' must list at least one host"},
    {"smtp_routes:\n  - domain: a\n    hosts: usedns\n", 3, 12,
     "'hosts': invalid value 'usedns': expected USEDNS, /dev/null or a list of hosts"},
    {"smtp_routes:\n  - domain: a\n    hosts: 10.0.0.1\n", 3, 12,
     "'hosts': invalid value '10.0.0.1': expected USEDNS, /dev/null or a list of hosts"},
    {"smtp_routes:\n  - domain: a\n    hosts: \"\"\n", 3, 12, "'hosts' must not be empty"},
    {"smtp_routes:\n  - domain: a\n    hosts: {host: b}\n", 3, 12,
     "'hosts' must be a sequence, not a mapping"},
    {"smtp_routes:\n  - domain: a\n    hosts: [b]\n", 3, 13,
     "each entry of 'hosts' must be a mapping, not a scalar"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - port: 25\n", 4, 9,
     "missing required key 'host' in section 'hosts'"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: b\n        weight: 1\n", 5, 9,
     "unknown key 'weight' in section 'hosts'"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: 192.168.0.256\n", 4, 15,
     "'host': invalid value '192.168.0.256': not an IPv4 address, nor a host name (last label "
     "all digits)"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: \"[::1]\"\n", 4, 15,
     "'host': invalid value '[::1]': not an IPv6 address literal"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: .b.example\n", 4, 15,
     "'host': invalid value '.b.example': a host name cannot start with a dot"},
    {"smtp_routes:\n  - domain: a\n    hosts:\n      - host: b_c.example\n", 4, 15,
     "'host': invalid value 'b_c.example': only letters, digits, hyphens and dots are allowed"},
    {"smtp_routes:\n  - hosts: USEDNS\n", 2, 5,
     "missing required key 'domain' in section 'smtp_routes'"},
    {"smtp_routes:\n  - domain: a\n", 2, 5,
     "missing required key 'hosts' in section 'smtp_routes'"},
    {"smtp_routes:\n  - domain: example.com.\n    hosts: USEDNS\n", 2, 13,
     "'domain': invalid value 'example.com.': trailing dot is not allowed"},
    {"smtp_routes:\n  - domain: \"*.example.com\"\n    hosts: USEDNS\n", 2, 13,
     "'domain': invalid value '*.example.com': only letters, digits, hyphens and dots are "
     "allowed"},
    {"smtp_routes: {domain: a}\n", 1, 14, "'smtp_routes' must be a sequence, not a mapping"},
    {"smtp_routes: [a]\n", 1, 15, "each entry of 'smtp_routes' must be a mapping, not a scalar"},
    /* destination_controls */
    {"destination_controls:\n  - domain: a.example\n    bounce_profile: slow\n", 3, 21,
     "'bounce_profile': no entry 'slow' in 'bounce_profiles'"},
    {"bounce_profiles: [{name: slow}]\ndestination_controls:\n  - domain: a\n"
     "    bounce_profile: Slow\n",
     4, 21, "'bounce_profile': no entry 'Slow' in 'bounce_profiles'"},
    {"destination_controls:\n  - domain: default\n    tls: yes\n", 3, 10,
     "'tls': invalid value 'yes': expected none, preferred or required"},
    {"destination_controls:\n  - domain: default\n    tls: Required\n", 3, 10,
     "'tls': invalid value 'Required': expected none, preferred or required"},
    {"destination_controls:\n  - domain: default\n  - domain: DEFAULT\n", 3, 13,
     "duplicate destination control domain 'default'"},
    {"destination_controls:\n  - domain: .a\n  - domain: b\n  - domain: .A\n", 4, 13,
     "duplicate destination control domain '.a'"},
    {"destination_controls:\n  - domain: default\n    max_connections: 0\n", 3, 22,
     "'max_connections' out of range: '0' is not between 1 and 10000"},
    {"destination_controls:\n  - domain: default\n    max_connections: 10001\n", 3, 22,
     "'max_connections' out of range: '10001' is not between 1 and 10000"},
    {"destination_controls: [{domain: x, max_messages_per_connection: 100001}]\n", 1, 65,
     "'max_messages_per_connection' out of range: '100001' is not between 1 and 100000"},
    {"destination_controls: [{domain: x, max_recipients_per_message: 0}]\n", 1, 64,
     "'max_recipients_per_message' out of range: '0' is not between 1 and 100000"},
    {"destination_controls:\n  - max_connections: 1\n", 2, 5,
     "missing required key 'domain' in section 'destination_controls'"},
    {"destination_controls:\n  - domain: default\n    bounce_profile: a b\n", 3, 21,
     "'bounce_profile': invalid value 'a b': must not contain spaces"},
    /* bounce_profiles */
    {"bounce_profiles:\n  - name: x\n    initial_retry: 2h\n    max_retry: 1h\n", 4, 16,
     "'max_retry' (1h) is less than 'initial_retry' (2h)"},
    {"bounce_profiles:\n  - name: x\n    initial_retry: 2h\n", 3, 20,
     "'max_retry' (1h) is less than 'initial_retry' (2h)"},
    {"bounce_profiles:\n  - name: x\n    max_retry: 30s\n", 3, 16,
     "'max_retry' (30s) is less than 'initial_retry' (1m)"},
    {"bounce_profiles:\n  - name: x\n  - name: y\n  - name: x\n", 4, 11,
     "duplicate bounce profile name 'x'"},
    {"bounce_profiles:\n  - name: default\n  - name: default\n", 3, 11,
     "duplicate bounce profile name 'default'"},
    {"bounce_profiles:\n  - name: my profile\n", 2, 11,
     "'name': invalid value 'my profile': must not contain spaces"},
    {"bounce_profiles:\n  - max_retries: 1\n", 2, 5,
     "missing required key 'name' in section 'bounce_profiles'"},
    {"bounce_profiles: [{name: x, max_retries: 100001}]\n", 1, 42,
     "'max_retries' out of range: '100001' is not between 0 and 100000"},
    {"bounce_profiles: [{name: x, max_queue_time: 721h}]\n", 1, 45,
     "'max_queue_time' out of range: '721h' is not between 1s and 720h"},
    {"bounce_profiles: [{name: x, max_queue_time: 999ms}]\n", 1, 45,
     "'max_queue_time' out of range: '999ms' is not between 1s and 720h"},
    {"bounce_profiles: [{name: x, initial_retry: 25h}]\n", 1, 44,
     "'initial_retry' out of range: '25h' is not between 1s and 24h"},
    {"bounce_profiles: [{name: x, max_retry: 0}]\n", 1, 40,
     "'max_retry' out of range: '0' is not between 1s and 720h"},
    /* delivery */
    {"delivery:\n  connect_timeout: 11m\n", 2, 20,
     "'connect_timeout' out of range: '11m' is not between 1s and 10m"},
    {"delivery:\n  command_timeout: 61m\n", 2, 20,
     "'command_timeout' out of range: '61m' is not between 1s and 1h"},
    {"delivery:\n  data_block_timeout: 0\n", 2, 23,
     "'data_block_timeout' out of range: '0' is not between 1s and 1h"},
    {"delivery:\n  data_done_timeout: 2h\n", 2, 22,
     "'data_done_timeout' out of range: '2h' is not between 1s and 1h"},
    {"delivery:\n  bounce_max_original: 65M\n", 2, 24,
     "'bounce_max_original' out of range: '65M' is not between 0 and 64M"},
    {"delivery:\n  helo_name: \"a b\"\n", 2, 14,
     "'helo_name': invalid value 'a b': must not contain spaces"},
    {"delivery:\n  helo: x\n", 2, 3, "unknown key 'helo' in section 'delivery'"},
    {"delivery: [a]\n", 1, 11, "'delivery' must be a mapping, not a sequence"},
    /* sender_groups */
    {"sender_groups:\n  - name: G\n    policy: ACCEPTED\n    members: [10.1.1.5/24]\n", 4, 15,
     "'members': invalid value '10.1.1.5/24': address has bits set beyond the prefix length"},
    {"sender_groups:\n  - name: G\n    policy: ACCEPTED\n    members: [\"dnslist[zen\"]\n", 4, 15,
     "'members': invalid value 'dnslist[zen': dnslist must end with ']'"},
    {"sender_groups:\n  - name: G\n    policy: ACCEPTED\n    members: 10.0.0.1\n", 4, 14,
     "'members' must be a sequence, not a scalar"},
    {"sender_groups:\n  - name: G\n", 2, 5,
     "missing required key 'policy' in section 'sender_groups'"},
    {"sender_groups:\n  - name: G\n    policy: NOPE\n", 3, 13,
     "'policy': no entry 'NOPE' in 'mail_flow_policies'"},
    {"sender_groups:\n  - name: G\n    policy: ACCEPTED\n    colour: red\n", 4, 5,
     "unknown key 'colour' in section 'sender_groups'"},
    {"sender_groups:\n  - {name: G, policy: ACCEPTED}\n  - {name: g, policy: ACCEPTED}\n", 3, 12,
     "duplicate sender group name 'G'"},
    {"sender_groups:\n  - name: WHITELIST\n  - name: allowed_list\n", 3, 11,
     "duplicate sender group name 'WHITELIST'"},
    {"sender_groups:\n  - {name: all, policy: ACCEPTED}\n", 2, 12,
     "'name': invalid value 'all': ALL is the implicit last row of every HAT and cannot be named"},
    {"sender_groups:\n  - {name: \"a.b\", policy: ACCEPTED}\n", 2, 12,
     "'name': invalid value 'a.b': only letters, digits, '_' and '-' are allowed"},
    {"sender_groups:\n  - name: WHITELIST\n    ptr_missing: maybe\n", 3, 18,
     "'ptr_missing': invalid value 'maybe': expected true or false"},
    /* listeners[].hat */
    {"listeners:\n  - name: a\n    hat: [WHITELIST, NOPE]\n", 3, 22,
     "'hat': no entry 'NOPE' in 'sender_groups'"},
    {"listeners:\n  - name: a\n    hat: [ALL]\n", 3, 11,
     "'hat': invalid value 'ALL': ALL is the implicit last row of every HAT and cannot be named"},
    {"listeners:\n  - name: a\n    hat: []\n", 3, 10, "'hat' must list at least one sender group"},
    {"listeners:\n  - name: a\n    hat: WHITELIST\n", 3, 10,
     "'hat' must be a sequence, not a scalar"},
    {"listeners:\n  - name: a\n    hat: [WHITELIST, allowed_list]\n", 3, 22,
     "duplicate sender group 'WHITELIST' in 'hat'"},
    /* mail_flow_policies */
    {"mail_flow_policies:\n  - name: trusted\n  - name: TRUSTED\n", 3, 11,
     "duplicate mail flow policy name 'TRUSTED'"},
    {"mail_flow_policies:\n  - name: \"my policy\"\n", 2, 11,
     "'name': invalid value 'my policy': only letters, digits, '_' and '-' are allowed"},
    {"mail_flow_policies:\n  - name: P\n    banner_code: 554\n", 3, 18,
     "'banner_code' out of range: '554' is not between 200 and 299"},
    {"mail_flow_policies:\n  - name: P\n    reject_code: 250\n", 3, 18,
     "'reject_code' out of range: '250' is not between 400 and 599"},
    {"mail_flow_policies:\n  - name: P\n    rate_limit_code: 600\n", 3, 22,
     "'rate_limit_code' out of range: '600' is not between 400 and 599"},
    {"mail_flow_policies:\n  - name: P\n    banner_text: \"a\\r\\nb\"\n", 3, 18,
     "'banner_text' contains a control character"},
    {"mail_flow_policies:\n  - name: P\n    reject_text: \"\"\n", 3, 18,
     "'reject_text' must not be empty"},
    {"mail_flow_policies:\n  - name: P\n    banner_hostname: \"a b\"\n", 3, 22,
     "'banner_hostname': invalid value 'a b': must not contain spaces"},
    {"mail_flow_policies:\n  - name: accepted\n    access: continue\n", 3, 13,
     "'access': ACCEPTED is the policy of the implicit ALL row and cannot be continue"},
    {"mail_flow_policies:\n  - name: P\n    access: allow\n", 3, 13,
     "'access': invalid value 'allow': expected accept, reject, tcprefuse, relay or continue"},
    {"mail_flow_policies:\n  - name: P\n    tls: on\n", 3, 10,
     "'tls': invalid value 'on': expected off, preferred or required"},
    {"mail_flow_policies:\n  - name: P\n    max_recipients_per_message: 0\n", 3, 33,
     "'max_recipients_per_message' out of range: '0' is not between 1 and 100000"},
    {"mail_flow_policies:\n  - name: P\n    max_message_size: 5G\n", 3, 23,
     "'max_message_size' out of range: '5G' is not between 1K and 4G"},
    /* reputation, connection_dns */
    {"reputation:\n  lists:\n    - zone: .zen.example\n", 3, 13,
     "'zone': invalid value '.zen.example': a name cannot start with a dot"},
    {"reputation:\n  lists:\n    - type: block\n", 3, 7,
     "missing required key 'zone' in section 'lists'"},
    {"reputation:\n  lists:\n    - zone: a.example\n    - zone: A.example\n", 4, 13,
     "duplicate reputation list zone 'a.example'"},
    {"reputation:\n  lists:\n    - {zone: a.example, weight: 10.5}\n", 3, 33,
     "'weight' out of range: '10.5' is not between -10.0 and 10.0"},
    {"reputation:\n  lists:\n    - {zone: a.example, weight: -10.001}\n", 3, 33,
     "'weight' out of range: '-10.001' is not between -10.0 and 10.0"},
    {"reputation:\n  lists:\n    - {zone: a.example, weight: 1e3}\n", 3, 33,
     "'weight': invalid value '1e3': expected a decimal number such as -5 or 2.5"},
    {"reputation:\n  lists:\n    - {zone: a.example, weight: nan}\n", 3, 33,
     "'weight': invalid value 'nan': expected a decimal number such as -5 or 2.5"},
    {"reputation:\n  lists:\n    - {zone: a.example, weight: 1.2345}\n", 3, 33,
     "'weight': invalid value '1.2345': expected a decimal number with at most 3 decimal places"},
    {"reputation:\n  lists:\n    - {zone: a.example, codes: [127.0.0.256]}\n", 3, 33,
     "'codes': invalid value '127.0.0.256': not an IPv4 address literal"},
    {"reputation:\n  lists:\n    - {zone: a.example, type: grey}\n", 3, 31,
     "'type': invalid value 'grey': expected block or allow"},
    {"connection_dns:\n  deadline: 2m\n", 2, 13,
     "'deadline' out of range: '2m' is not between 100ms and 1m"},
    {"connection_dns:\n  deadline: 99ms\n", 2, 13,
     "'deadline' out of range: '99ms' is not between 100ms and 1m"},
    /* YAML syntax and document shape */
    {"a: [\n", 2, 1, "while parsing a flow node: did not find expected node content"},
    {"key: value\n bad: x\n", 2, 5, "mapping values are not allowed in this context"},
    {"limits:\n\tmax_errors: 1\n", 2, 1,
     "while scanning for the next token: found character that cannot start any token"},
    {"user: \"\xff\"\n", 1, 8, "invalid leading UTF-8 octet"},
    {"user: *nothing\n", 1, 7, "found undefined alias"},
    {"- a\n", 1, 1, "the top level must be a mapping, not a sequence"},
    {"just text\n", 1, 1, "the top level must be a mapping, not a scalar"},
    {"user: a\n---\nuser: b\n", 3, 1, "only one YAML document is allowed"},
    /* Anchors cannot make the walk recurse. An alias is the anchored node
     * itself in libyaml's tree, so errors point at the anchor. */
    {"paths: &p {spool: *p}\n", 1, 8, "'spool' must be a scalar, not a mapping"},
    {"listeners: &l [*l]\n", 1, 12, "each entry of 'listeners' must be a mapping, not a sequence"},
};

static void test_errors(void **state)
{
    for (size_t i = 0; i < ARRAY_LEN(error_rows); i++) {
        const struct error_row *r = &error_rows[i];
        struct config_error err;
        struct config *cfg = load(r->yaml, &err);
        if (cfg != NULL)
            fail_msg("row %zu loaded but should fail:\n%s", i, r->yaml);
        if (err.line != r->line || err.column != r->column || strcmp(err.msg, r->msg) != 0)
            fail_msg("row %zu:\n%s\n got %u:%u: %s\nwant %u:%u: %s", i, r->yaml, err.line,
                     err.column, err.msg, r->line, r->column, r->msg);
    }
}

/* A NULL err pointer is allowed: the caller only wants yes/no. */
static void test_error_null_err(void **state)
{
    assert_null(config_load_buffer("t", "bogus: 1", 8, NULL));
}

static void test_error_format(void **state)
{
    struct config_error err = {.line = 3, .column = 7};
    char out[300];
    strcpy(err.msg, "unknown key 'x' in section 'limits'");
    config_error_format(&err, "etc/postern.yaml", out, sizeof out);
    assert_string_equal(out, "etc/postern.yaml:3:7: unknown key 'x' in section 'limits'");
    err.line = 0;
    err.column = 0;
    strcpy(err.msg, "cannot open: No such file or directory");
    config_error_format(&err, "missing.yaml", out, sizeof out);
    assert_string_equal(out, "missing.yaml: cannot open: No such file or directory");
    config_error_format(&err, "missing.yaml", out, 8);
    assert_string_equal(out, "missing");
}

/* ---- files -------------------------------------------------------------- */

static void test_load_file(void **state)
{
    char dir[] = "/tmp/test_config.XXXXXX";
    char path[64];
    struct config_error err;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/p.yaml", dir);

    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(full_yaml, fp);
    fclose(fp);
    struct config *cfg = config_load(path, &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->file, path);
    assert_string_equal(cfg->user, "mailer");
    config_unref(cfg);

    /* Too large: refused before parsing. */
    fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 1024 * 1024 / 8 + 1; i++)
        fputs("# pad  \n", fp);
    fclose(fp);
    assert_null(config_load(path, &err));
    assert_int_equal(err.line, 0);
    assert_string_equal(err.msg, "file larger than 1048576 bytes");

    unlink(path);
    assert_null(config_load(path, &err));
    assert_int_equal(err.line, 0);
    assert_string_equal(err.msg, "cannot open: No such file or directory");
    rmdir(dir);
}

/* Path of etc/postern.yaml in the source tree. __FILE__ is relative to the
 * build root when meson compiles, and the build root is two levels above this
 * executable (tests/unit/), so the answer does not depend on the cwd. */
static void example_config_path(char *out, size_t outlen)
{
    char exe[4096];
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    int dirlen = slash ? (int)(slash - file) : 0;

    if (file[0] == '/') {
        snprintf(out, outlen, "%.*s/../../etc/postern.yaml", dirlen, file);
        return;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    snprintf(out, outlen, "%s/../../%.*s/../../etc/postern.yaml", dirname(exe), dirlen, file);
}

/* The shipped example configuration must load. */
static void test_example_config(void **state)
{
    struct config_error err;
    char path[8192];
    example_config_path(path, sizeof path);
    struct config *cfg = config_load(path, &err);
    if (cfg == NULL)
        fail_msg("%s:%u:%u: %s", path, err.line, err.column, err.msg);
    assert_string_equal(cfg->user, "postern");
    assert_int_equal(cfg->nrelay_domains, 1);
    assert_string_equal(cfg->relay_domains[0], "example.com");
    assert_int_equal(cfg->nlisteners, 1);
    assert_string_equal(cfg->listeners[0].name, "InboundMail");
    assert_int_equal(cfg->listeners[0].port, 2525);
    assert_null(cfg->listeners[0].tls_cert);
    /* Routes are only an example (commented out): mail goes by MX. */
    assert_int_equal(cfg->nroutes, 0);
    assert_int_equal(cfg->ndest_controls, 1);
    assert_string_equal(cfg->dest_controls[0].domain, "default");
    assert_int_equal(cfg->nbounce_profiles, 1);
    assert_string_equal(cfg->bounce_profiles[0].name, "default");
    assert_string_equal(cfg->delivery.helo_name, cfg->hostname);
    /* The values it spells out are the defaults. */
    struct config *defaults = load_ok("user: postern\nrelay_domains: [example.com]\n");
    assert_true(config_equal(cfg, defaults));
    config_unref(defaults);
    config_unref(cfg);
}

/* ---- dump and round trip ------------------------------------------------ */

static struct config *round_trip(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    struct config_error err;
    FILE *mem = open_memstream(&text, &len);
    assert_non_null(mem);
    config_dump(cfg, mem);
    fclose(mem);
    struct config *back = config_load_buffer("dump", text, len, &err);
    if (back == NULL)
        fail_msg("dump does not load: %u:%u: %s\n%s", err.line, err.column, err.msg, text);
    if (!config_equal(cfg, back))
        fail_msg("dump loads to a different config:\n%s", text);
    free(text);
    return back;
}

static void test_round_trip(void **state)
{
    static const char *const rows[] = {
        "",
        full_yaml,
        "paths:\n  spool: \"/tmp/a \\\"quoted\\\" \\\\ dir: #x\"\n  logs: "
        "\"/tmp/\xc3\xa9t\xc3\xa9\"\n"
        "hostname: \"'single'\"\nuser: \"#1\"\n",
        "timeouts: {command: 1500ms, data: 61s, tls_handshake: 3600ms}\n"
        "limits: {max_message_size: 1025, max_recipients: 7}\n"
        "spool: {memory_threshold: 0, min_free_space: 0}\n"
        "resolver: {timeout: 100ms, servers: [\"::1\"]}\n",
        "listeners:\n  - name: \"a: b\"\n    type: private\n  - name: \"- c\"\n    port: 1\n"
        "    tls: {certificate: \"[x]\", key: \"{y}\"}\n",
        "smtp_routes:\n  - domain: ALL\n    hosts: USEDNS\n  - domain: .example.net\n"
        "    hosts: /dev/null\n  - domain: b.example\n    hosts:\n      - {host: \"::1\", port: "
        "1}\n"
        "      - {host: b.example, priority: 65535}\n      - {host: 10.0.0.1, priority: 3}\n",
        "smtp_routes: []\n",
        "destination_controls:\n  - {domain: .x, tls: none, bounce_profile: p}\n"
        "  - {domain: default, max_connections: 1, bounce_profile: p}\n"
        "bounce_profiles:\n  - {name: p, max_retries: 0, initial_retry: 1500ms, max_retry: "
        "1501ms}\n"
        "delivery:\n  helo_name: \"h\\u00e9\"\n  bounce_max_original: 0\n",
        hat_yaml,
        "reputation:\n  lists:\n    - {zone: a.b, weight: -0.001}\n    - {zone: c.d, weight: "
        "9.999}\n"
        "    - {zone: e.f, weight: \"-0\"}\n    - {zone: g.h, weight: +3.5, type: allow}\n"
        "connection_dns: {deadline: 100ms}\n",
        "mail_flow_policies:\n  - {name: X, banner_text: \"q\\\"uote $Group\", banner_hostname: "
        "\"\"}\n"
        "sender_groups: [{name: Y, policy: x, members: [ALL]}]\n"
        "listeners: [{name: l, hat: [y, blocked_list]}]\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        struct config *cfg = load_ok(rows[i]);
        struct config *back = round_trip(cfg);
        /* Dumping twice is stable. */
        config_unref(round_trip(back));
        config_unref(back);
        config_unref(cfg);
    }
}

/* The comparison itself must notice a difference, or round_trip proves nothing. */
static void test_config_equal_detects(void **state)
{
    struct config *a = load_ok(full_yaml);
    struct config *b = load_ok(full_yaml);
    assert_true(config_equal(a, b));
    b->listeners[1].port++;
    assert_false(config_equal(a, b));
    b->listeners[1].port--;
    b->resolver.timeout++;
    assert_false(config_equal(a, b));
    b->resolver.timeout--;
    assert_true(config_equal(a, b));
    /* Each outbound field, one at a time. */
    b->routes[0].hosts[2].priority++;
    assert_false(config_equal(a, b));
    b->routes[0].hosts[2].priority--;
    b->routes[1].kind = ROUTE_DEVNULL;
    assert_false(config_equal(a, b));
    b->routes[1].kind = ROUTE_USEDNS;
    b->routes[0].hosts[1].host[0] = 'X';
    assert_false(config_equal(a, b));
    b->routes[0].hosts[1].host[0] = '1';
    b->dest_controls[1].tls = CFG_TLS_NONE;
    assert_false(config_equal(a, b));
    b->dest_controls[1].tls = CFG_TLS_REQUIRED;
    b->dest_controls[0].max_recipients_per_message++;
    assert_false(config_equal(a, b));
    b->dest_controls[0].max_recipients_per_message--;
    b->bounce_profiles[1].max_retry++;
    assert_false(config_equal(a, b));
    b->bounce_profiles[1].max_retry--;
    b->delivery.bounce_max_original++;
    assert_false(config_equal(a, b));
    b->delivery.bounce_max_original--;
    b->nroutes--;
    assert_false(config_equal(a, b));
    b->nroutes++;
    assert_true(config_equal(a, b));
    config_unref(a);
    config_unref(b);

    /* The host access half. */
    a = load_ok(hat_yaml);
    b = load_ok(hat_yaml);
    assert_true(config_equal(a, b));
    b->listeners[0].hat[2][0] = 'X';
    assert_false(config_equal(a, b));
    b->listeners[0].hat[2][0] = 'P';
    b->sender_groups[5].members[3][0] = 'X';
    assert_false(config_equal(a, b));
    b->sender_groups[5].members[3][0] = '2';
    b->sender_groups[5].ptr_tempfail = false;
    assert_false(config_equal(a, b));
    b->sender_groups[5].ptr_tempfail = true;
    b->policies[5].tls = CFG_PTLS_OFF;
    assert_false(config_equal(a, b));
    b->policies[5].tls = CFG_PTLS_REQUIRED;
    b->policies[2].max_recipients_per_hour++;
    assert_false(config_equal(a, b));
    b->policies[2].max_recipients_per_hour--;
    b->policies[5].banner_hostname[0] = 'X';
    assert_false(config_equal(a, b));
    b->policies[5].banner_hostname[0] = 'p';
    b->reputation.lists[2].weight = -1.0;
    assert_false(config_equal(a, b));
    b->reputation.lists[2].weight = -1.25;
    b->reputation.lists[0].codes[0][8] = '9';
    assert_false(config_equal(a, b));
    b->reputation.lists[0].codes[0][8] = '2';
    b->connection_dns_deadline++;
    assert_false(config_equal(a, b));
    b->connection_dns_deadline--;
    assert_true(config_equal(a, b));
    config_unref(a);
    config_unref(b);
}

/* ---- relay domains ------------------------------------------------------ */

static void test_relay_domains(void **state)
{
    static const struct {
        const char *domain;
        bool want;
    } rows[] = {
        {"example.com", true},       {"EXAMPLE.com", true},
        {"Example.Com", true},       {"a.example.com", false}, /* no leading dot: exact only */
        {"example.co", false},       {"xexample.com", false},
        {"example.com.evil", false}, {"example.org", false}, /* ".example.org" is strictly below */
        {"a.example.org", true},     {"B.A.EXAMPLE.ORG", true},
        {"aexample.org", false},     {"", false},
        {"exact.net", true},
    };
    struct config *cfg = load_ok("relay_domains: [Example.COM, .example.org, exact.net]\n");
    for (size_t i = 0; i < ARRAY_LEN(rows); i++)
        if (config_is_relay_domain(cfg, rows[i].domain, strlen(rows[i].domain)) != rows[i].want)
            fail_msg("%s: want %d", rows[i].domain, rows[i].want);
    /* len, not NUL, delimits the domain. */
    assert_true(config_is_relay_domain(cfg, "exact.netXYZ", 9));
    assert_false(config_is_relay_domain(cfg, "exact.net", 8));
    assert_false(config_is_relay_domain(NULL, "exact.net", 9));
    config_unref(cfg);

    cfg = load_ok("");
    assert_false(config_is_relay_domain(cfg, "example.com", 11));
    config_unref(cfg);
}

/* ---- routes, destination controls, bounce profiles --------------------- */

/* Hosts sort by priority; equal priorities keep their file order. */
static void test_route_hosts_sort(void **state)
{
    static const char *const want[] = {"h4", "h2", "h5", "h1", "h3", "h6", "h7"};
    struct config *cfg = load_ok("smtp_routes:\n"
                                 "  - domain: a\n"
                                 "    hosts:\n"
                                 "      - {host: h1, priority: 5}\n"
                                 "      - {host: h2, priority: 1}\n"
                                 "      - {host: h3, priority: 5}\n"
                                 "      - {host: h4}\n"
                                 "      - {host: h5, priority: 1}\n"
                                 "      - {host: h6, priority: 5}\n"
                                 "      - {host: h7, priority: 65535}\n");
    assert_int_equal(cfg->routes[0].nhosts, ARRAY_LEN(want));
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        if (strcmp(cfg->routes[0].hosts[i].host, want[i]) != 0)
            fail_msg("hosts[%zu] = %s, want %s", i, cfg->routes[0].hosts[i].host, want[i]);
    config_unref(cfg);

    /* All equal: file order, untouched. */
    cfg = load_ok("smtp_routes: [{domain: a, hosts: [{host: c}, {host: b}, {host: a}]}]");
    assert_string_equal(cfg->routes[0].hosts[0].host, "c");
    assert_string_equal(cfg->routes[0].hosts[1].host, "b");
    assert_string_equal(cfg->routes[0].hosts[2].host, "a");
    config_unref(cfg);
}

static const char lookup_yaml[] = "smtp_routes:\n"
                                  "  - {domain: .example.com, hosts: [{host: suffix}]}\n"
                                  "  - {domain: .a.example.com, hosts: [{host: longer-suffix}]}\n"
                                  "  - {domain: c.example.com, hosts: [{host: exact-c}]}\n"
                                  "  - {domain: example.com, hosts: [{host: exact}]}\n"
                                  "  - {domain: All, hosts: USEDNS}\n"
                                  "  - {domain: other.net, hosts: /dev/null}\n"
                                  "destination_controls:\n"
                                  "  - {domain: .example.com, max_connections: 1}\n"
                                  "  - {domain: .a.example.com, max_connections: 2}\n"
                                  "  - {domain: c.example.com, max_connections: 3}\n"
                                  "  - {domain: example.com, max_connections: 4}\n"
                                  "  - {domain: other.net, max_connections: 6}\n"
                                  "  - {domain: default, max_connections: 5}\n";

/* The name a lookup row expects: the route's first host, or its domain
 * for USEDNS and /dev/null. */
static const char *route_name(const struct cfg_route *r)
{
    if (r == NULL)
        return "(none)";
    return r->kind == ROUTE_HOSTS ? r->hosts[0].host : r->domain;
}

static void test_route_lookup(void **state)
{
    static const struct {
        const char *domain, *route;
        unsigned dest_connections;
    } rows[] = {
        {"example.com", "exact", 4},
        {"EXAMPLE.Com", "exact", 4},
        {"a.example.com", "suffix", 1},
        {"b.example.com", "suffix", 1},
        {"b.a.example.com", "longer-suffix", 2},
        {"x.b.a.example.com", "longer-suffix", 2},
        {"B.A.Example.COM", "longer-suffix", 2},
        {"c.example.com", "exact-c", 3},  /* exact beats an earlier suffix */
        {"d.c.example.com", "suffix", 1}, /* exact entries do not cover subdomains */
        {"xexample.com", "ALL", 5},       /* a suffix matches at a dot only */
        {"example.com.evil", "ALL", 5},
        {"com", "ALL", 5},
        {"other.net", "other.net", 6},
        {"sub.other.net", "ALL", 5},
        {"", "ALL", 5},
        {"all", "ALL", 5},
    };
    struct config *cfg = load_ok(lookup_yaml);
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        const char *got = route_name(config_route_for(cfg, rows[i].domain));
        if (strcmp(got, rows[i].route) != 0)
            fail_msg("route for '%s': got %s, want %s", rows[i].domain, got, rows[i].route);
        const struct cfg_dest_control *dc = config_dest_control_for(cfg, rows[i].domain);
        assert_non_null(dc);
        if (dc->max_connections != rows[i].dest_connections)
            fail_msg("dest control for '%s': got %u, want %u", rows[i].domain, dc->max_connections,
                     rows[i].dest_connections);
    }
    assert_int_equal(config_route_for(cfg, "other.net")->kind, ROUTE_DEVNULL);
    assert_int_equal(config_route_for(cfg, "elsewhere.org")->kind, ROUTE_USEDNS);
    assert_null(config_route_for(cfg, NULL));
    assert_null(config_route_for(NULL, "example.com"));
    assert_ptr_equal(config_dest_control_for(cfg, NULL), &cfg->dest_controls[0]);
    assert_null(config_dest_control_for(NULL, "example.com"));
    config_unref(cfg);

    /* Without ALL, an unrouted domain has no route: deliver by MX. */
    cfg = load_ok("smtp_routes: [{domain: .example.com, hosts: [{host: h}]}]");
    assert_null(config_route_for(cfg, "example.com"));
    assert_null(config_route_for(cfg, "elsewhere.org"));
    assert_non_null(config_route_for(cfg, "a.example.com"));
    config_unref(cfg);

    /* No routes at all; the default destination control for everything. */
    cfg = load_ok("");
    assert_null(config_route_for(cfg, "example.com"));
    assert_ptr_equal(config_dest_control_for(cfg, "example.com"), &cfg->dest_controls[0]);
    config_unref(cfg);
}

static void test_bounce_profile_lookup(void **state)
{
    struct config *cfg = load_ok("bounce_profiles:\n  - {name: slow, max_retries: 7}\n"
                                 "  - {name: fast, max_retries: 1}\n");
    assert_int_equal(config_bounce_profile(cfg, "slow")->max_retries, 7);
    assert_int_equal(config_bounce_profile(cfg, "fast")->max_retries, 1);
    assert_ptr_equal(config_bounce_profile(cfg, "default"), &cfg->bounce_profiles[0]);
    assert_null(config_bounce_profile(cfg, "Slow")); /* names are exact */
    assert_null(config_bounce_profile(cfg, "nope"));
    assert_null(config_bounce_profile(cfg, NULL));
    assert_null(config_bounce_profile(NULL, "default"));
    /* Every destination control's profile exists. */
    for (size_t i = 0; i < cfg->ndest_controls; i++)
        assert_non_null(config_bounce_profile(cfg, cfg->dest_controls[i].bounce_profile));
    config_unref(cfg);
}

/* "default" is always [0]: inserted with defaults when missing, moved to the
 * front when listed elsewhere; the others keep their file order. */
static void test_default_entries(void **state)
{
    struct config *cfg = load_ok("destination_controls:\n  - domain: a\n  - domain: b\n"
                                 "bounce_profiles:\n  - name: x\n  - name: y\n");
    assert_int_equal(cfg->ndest_controls, 3);
    assert_string_equal(cfg->dest_controls[0].domain, "default");
    assert_int_equal(cfg->dest_controls[0].max_connections, 20);
    assert_string_equal(cfg->dest_controls[0].bounce_profile, "default");
    assert_string_equal(cfg->dest_controls[1].domain, "a");
    assert_string_equal(cfg->dest_controls[2].domain, "b");
    assert_int_equal(cfg->nbounce_profiles, 3);
    assert_string_equal(cfg->bounce_profiles[0].name, "default");
    assert_int_equal(cfg->bounce_profiles[0].max_retries, 100);
    assert_string_equal(cfg->bounce_profiles[1].name, "x");
    assert_string_equal(cfg->bounce_profiles[2].name, "y");
    config_unref(cfg);

    cfg = load_ok("destination_controls:\n  - domain: a\n  - domain: b\n"
                  "  - {domain: Default, max_connections: 7}\n  - domain: c\n"
                  "bounce_profiles:\n  - name: x\n  - {name: default, max_retries: 3}\n");
    assert_int_equal(cfg->ndest_controls, 4);
    assert_string_equal(cfg->dest_controls[0].domain, "default");
    assert_int_equal(cfg->dest_controls[0].max_connections, 7);
    assert_string_equal(cfg->dest_controls[1].domain, "a");
    assert_string_equal(cfg->dest_controls[2].domain, "b");
    assert_string_equal(cfg->dest_controls[3].domain, "c");
    assert_int_equal(cfg->nbounce_profiles, 2);
    assert_string_equal(cfg->bounce_profiles[0].name, "default");
    assert_int_equal(cfg->bounce_profiles[0].max_retries, 3);
    assert_string_equal(cfg->bounce_profiles[1].name, "x");
    config_unref(cfg);

    /* Already first: unchanged. */
    cfg = load_ok("destination_controls: [{domain: default, tls: required}, {domain: a}]");
    assert_int_equal(cfg->ndest_controls, 2);
    assert_int_equal(cfg->dest_controls[0].tls, CFG_TLS_REQUIRED);
    assert_string_equal(cfg->dest_controls[1].domain, "a");
    config_unref(cfg);
}

/* Item bounds: at most 100 hosts per route, reported at the first extra. */
static void test_list_bounds(void **state)
{
    char *yaml = malloc(64 + 102 * 32);
    struct config_error err;
    assert_non_null(yaml);
    for (int nhosts = 100; nhosts <= 101; nhosts++) {
        strcpy(yaml, "smtp_routes:\n  - domain: a\n    hosts:\n");
        for (int i = 0; i < nhosts; i++)
            sprintf(yaml + strlen(yaml), "      - host: h%d\n", i);
        struct config *cfg = load(yaml, &err);
        if (nhosts == 100) {
            assert_non_null(cfg);
            assert_int_equal(cfg->routes[0].nhosts, 100);
            config_unref(cfg);
        } else {
            assert_null(cfg);
            assert_int_equal(err.line, 104);
            assert_int_equal(err.column, 9);
            assert_string_equal(err.msg, "'hosts' lists more than 100 hosts");
        }
    }
    free(yaml);
}

/* ---- host access: sender groups, policies, reputation, hat ------------- */

static void test_hat_defaults(void **state)
{
    struct config *cfg =
        load_ok("listeners:\n  - name: a\n  - {name: b, type: private, port: 1}\n");
    assert_int_equal(cfg->nsender_groups, 5);
    for (size_t i = 0; i < cfg->nsender_groups; i++) {
        const struct cfg_sender_group *g = &cfg->sender_groups[i];
        assert_string_equal(g->name, predefined_groups[i]);
        assert_string_equal(g->policy, predefined_group_policies[i]);
        assert_int_equal(g->nmembers, 0);
        assert_false(g->ptr_missing || g->ptr_tempfail || g->ptr_mismatch);
    }
    assert_int_equal(cfg->npolicies, 5);
    for (size_t i = 0; i < cfg->npolicies; i++)
        check_policy(&cfg->policies[i], &predefined_policies[i]);
    assert_int_equal(cfg->reputation.nlists, 0);
    assert_false(cfg->reputation.lookup_private);
    assert_int_equal(cfg->connection_dns_deadline, 10000);
    /* hat by listener type */
    assert_int_equal(cfg->listeners[0].nhat, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(cfg->listeners[0].hat[i], predefined_groups[i]);
    assert_int_equal(cfg->listeners[1].nhat, 1);
    assert_string_equal(cfg->listeners[1].hat[0], "RELAYLIST");
    config_unref(cfg);

    /* "hat:" with nothing after it is the default too. */
    cfg = load_ok("listeners:\n  - name: a\n    type: private\n    hat:\n");
    assert_int_equal(cfg->listeners[0].nhat, 1);
    assert_string_equal(cfg->listeners[0].hat[0], "RELAYLIST");
    config_unref(cfg);
}

static void test_hat_every_key(void **state)
{
    struct config *cfg = load_ok(hat_yaml);

    /* hats: names upper-cased, aliases resolved; defaults by type */
    static const char *const in_hat[] = {"WHITELIST", "BLACKLIST", "PARTNERS", "SUSPECTLIST",
                                         "UNKNOWNLIST"};
    assert_int_equal(cfg->listeners[0].nhat, ARRAY_LEN(in_hat));
    for (size_t i = 0; i < ARRAY_LEN(in_hat); i++)
        assert_string_equal(cfg->listeners[0].hat[i], in_hat[i]);
    assert_int_equal(cfg->listeners[1].nhat, 1);
    assert_string_equal(cfg->listeners[1].hat[0], "RELAYLIST");
    assert_int_equal(cfg->listeners[2].nhat, 2);
    assert_string_equal(cfg->listeners[2].hat[1], "PARTNERS");

    /* groups: predefined first in their order, then the file's */
    check_hat_defaults(cfg);
    assert_int_equal(cfg->nsender_groups, 6);
    const struct cfg_sender_group *w = &cfg->sender_groups[0];
    assert_string_equal(w->name, "WHITELIST");
    assert_string_equal(w->policy, "TRUSTED"); /* not given: predefined */
    assert_int_equal(w->nmembers, 1);
    assert_string_equal(w->members[0], "192.0.2.1");
    assert_string_equal(cfg->sender_groups[1].policy, "THROTTLED"); /* overridden */
    assert_int_equal(cfg->sender_groups[1].nmembers, 0);
    const struct cfg_sender_group *g = &cfg->sender_groups[5];
    assert_string_equal(g->name, "PARTNERS");
    assert_string_equal(g->policy, "PARTNER_POLICY");
    static const char *const members[] = {
        "10.1.1.0/24",  "10.1.2.10-20", "10.2.",      "2001:db8::/32",        "mx.example.com",
        ".example.org", "SBRS[-1:2.5]", "SBRS[none]", "dnslist[zen.example]", "ALL"};
    assert_int_equal(g->nmembers, ARRAY_LEN(members));
    for (size_t i = 0; i < ARRAY_LEN(members); i++)
        assert_string_equal(g->members[i], members[i]);
    assert_true(g->ptr_missing && g->ptr_tempfail && g->ptr_mismatch);

    /* policies: predefined first; a predefined one keeps what is not given */
    assert_int_equal(cfg->npolicies, 6);
    const struct cfg_mail_flow_policy *t = &cfg->policies[2];
    assert_string_equal(t->name, "THROTTLED");
    assert_int_equal(t->max_recipients_per_hour, 5);
    assert_int_equal(t->tls, CFG_PTLS_PREFERRED);
    assert_int_equal(t->max_message_size, 1024 * 1024);
    assert_int_equal(t->max_recipients_per_message, 20);
    assert_int_equal(t->max_messages_per_connection, 10);
    const struct cfg_mail_flow_policy *p = &cfg->policies[5];
    assert_string_equal(p->name, "PARTNER_POLICY");
    assert_int_equal(p->access, CFG_ACCESS_RELAY);
    assert_true(p->reject_at_rcpt);
    assert_int_equal(p->max_message_size, 20 * 1024 * 1024);
    assert_int_equal(p->max_concurrent_connections, 50);
    assert_int_equal(p->max_messages_per_connection, 100);
    assert_int_equal(p->max_recipients_per_message, 200);
    assert_int_equal(p->max_recipients_per_hour, 1000);
    assert_int_equal(p->rate_limit_code, 421);
    assert_string_equal(p->rate_limit_text, "Slow down");
    assert_int_equal(p->banner_code, 220);
    assert_string_equal(p->banner_text, "ESMTP $Hostname ($Group, $RemoteIP)");
    assert_string_equal(p->banner_hostname, "partners.example.com");
    assert_int_equal(p->reject_code, 550);
    assert_string_equal(p->reject_text, "Not you");
    assert_int_equal(p->tls, CFG_PTLS_REQUIRED);

    /* reputation: weights by type unless given */
    assert_int_equal(cfg->reputation.nlists, 4);
    const struct cfg_dnslist *l = cfg->reputation.lists;
    assert_string_equal(l[0].zone, "zen.example");
    assert_int_equal(l[0].kind, DNSLIST_BLOCK);
    assert_true(l[0].weight == -5.0);
    assert_int_equal(l[0].ncodes, 2);
    assert_string_equal(l[0].codes[1], "127.0.0.4");
    assert_int_equal(l[1].kind, DNSLIST_ALLOW);
    assert_true(l[1].weight == 5.0);
    assert_int_equal(l[1].ncodes, 0);
    assert_true(l[2].weight == -1.25);
    assert_true(l[3].weight == 10.0);
    assert_true(cfg->reputation.lookup_private);
    assert_int_equal(cfg->connection_dns_deadline, 2500);
    config_unref(cfg);
}

/* A new policy starts from the ACCEPTED values; a predefined name written
 * in any case overrides only what it gives; lookups ignore case and know
 * the aliases. */
static void test_hat_overrides(void **state)
{
    struct config *cfg = load_ok("mail_flow_policies:\n"
                                 "  - {name: mine, banner_text: Hi}\n"
                                 "  - {name: Trusted, max_message_size: 1M}\n"
                                 "  - {name: accepted, max_recipients_per_message: 7}\n"
                                 "  - {name: blocked, access: tcprefuse}\n"
                                 "sender_groups:\n"
                                 "  - {name: Z, policy: MINE}\n"
                                 "  - {name: A, policy: accepted}\n"
                                 "  - {name: relaylist, members: [10.0.0.0/8]}\n");
    assert_int_equal(cfg->npolicies, 6);
    static const char *const order[] = {"TRUSTED",  "BLOCKED", "THROTTLED",
                                        "ACCEPTED", "RELAYED", "MINE"};
    for (size_t i = 0; i < ARRAY_LEN(order); i++)
        assert_string_equal(cfg->policies[i].name, order[i]);
    const struct cfg_mail_flow_policy *mine = config_policy(cfg, "Mine");
    assert_ptr_equal(mine, &cfg->policies[5]);
    struct policy_want base = predefined_policies[3]; /* ACCEPTED */
    assert_string_equal(mine->banner_text, "Hi");
    assert_int_equal(mine->max_message_size, base.size);
    assert_int_equal(mine->max_recipients_per_message, 50); /* not ACCEPTED's override */
    const struct cfg_mail_flow_policy *tr = config_policy(cfg, "trusted");
    assert_int_equal(tr->max_message_size, 1024 * 1024);
    assert_int_equal(tr->max_concurrent_connections, 600);
    assert_int_equal(tr->max_recipients_per_message, 5000);
    assert_int_equal(config_policy(cfg, "ACCEPTED")->max_recipients_per_message, 7);
    assert_int_equal(config_policy(cfg, "BLOCKED")->access, CFG_ACCESS_TCPREFUSE);
    assert_null(config_policy(cfg, "nope"));
    assert_null(config_policy(cfg, NULL));
    assert_null(config_policy(NULL, "TRUSTED"));

    assert_int_equal(cfg->nsender_groups, 7);
    assert_string_equal(cfg->sender_groups[4].name, "RELAYLIST");
    assert_string_equal(cfg->sender_groups[4].policy, "RELAYED");
    assert_int_equal(cfg->sender_groups[4].nmembers, 1);
    assert_string_equal(cfg->sender_groups[5].name, "Z");
    assert_string_equal(cfg->sender_groups[5].policy, "MINE");
    assert_string_equal(cfg->sender_groups[6].name, "A");
    assert_ptr_equal(config_sender_group(cfg, "allowed_list"), &cfg->sender_groups[0]);
    assert_ptr_equal(config_sender_group(cfg, "Blocked_List"), &cfg->sender_groups[1]);
    assert_ptr_equal(config_sender_group(cfg, "z"), &cfg->sender_groups[5]);
    assert_null(config_sender_group(cfg, "ALL"));
    assert_null(config_sender_group(cfg, "no such"));
    assert_null(config_sender_group(cfg, NULL));
    config_unref(cfg);
}

/* Bounds that need generated input: distinct dnslist[] zones across groups,
 * reputation lists, reply text length. */
static void test_hat_bounds(void **state)
{
    char yaml[2048];
    struct config_error err;

    /* 8 distinct zones (one repeated, across two groups) load; a 9th does not. */
    strcpy(yaml, "sender_groups:\n  - name: A\n    policy: BLOCKED\n    members: [");
    for (int i = 0; i < 5; i++)
        sprintf(yaml + strlen(yaml), "\"dnslist[z%d.example]\", ", i);
    strcat(yaml, "\"dnslist[z0.example]\"]\n  - name: B\n    policy: BLOCKED\n    members: [");
    for (int i = 5; i < 8; i++)
        sprintf(yaml + strlen(yaml), "\"dnslist[Z%d.example]\", ", i);
    strcat(yaml, "\"dnslist[z1.example]\"]\n");
    config_unref(load_ok(yaml));
    yaml[strlen(yaml) - 2] = '\0';
    strcat(yaml, ", \"dnslist[z8.example]\"]\n");
    assert_null(load(yaml, &err));
    assert_int_equal(err.line, 7);
    assert_int_equal(err.column, 107);
    assert_string_equal(err.msg, "more than 8 distinct dnslist[] zones in sender groups");

    strcpy(yaml, "reputation:\n  lists:\n");
    for (int i = 0; i < 9; i++)
        sprintf(yaml + strlen(yaml), "    - zone: l%d.example\n", i);
    assert_null(load(yaml, &err));
    assert_int_equal(err.line, 11);
    assert_int_equal(err.column, 7);
    assert_string_equal(err.msg, "'lists' lists more than 8 lists");

    for (int len = 199; len <= 200; len++) {
        snprintf(yaml, sizeof yaml, "mail_flow_policies:\n  - name: P\n    reject_text: \"%0*d\"\n",
                 len, 0);
        struct config *cfg = load(yaml, &err);
        if (len == 199) {
            assert_non_null(cfg);
            assert_int_equal(strlen(config_policy(cfg, "P")->reject_text), 199);
            config_unref(cfg);
        } else {
            assert_null(cfg);
            assert_int_equal(err.line, 3);
            assert_int_equal(err.column, 18);
            assert_non_null(strstr(err.msg, "': longer than 199 characters"));
        }
    }
}

/* ---- reference counting ------------------------------------------------- */

static void test_refcount(void **state)
{
    struct config *cfg = load_ok(full_yaml);
    assert_int_equal(cfg->refs, 1);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(cfg->refs, 3);
    config_unref(cfg);
    config_unref(cfg);
    assert_int_equal(cfg->refs, 1);
    assert_string_equal(cfg->hostname, "mx.example.com"); /* still alive */
    config_unref(cfg);                                    /* freed: LeakSanitizer checks */
    config_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_listener_hostname_order),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_valid_strings),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_null_err),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_example_config),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_config_equal_detects),
        cmocka_unit_test(test_relay_domains),
        cmocka_unit_test(test_route_hosts_sort),
        cmocka_unit_test(test_route_lookup),
        cmocka_unit_test(test_bounce_profile_lookup),
        cmocka_unit_test(test_default_entries),
        cmocka_unit_test(test_list_bounds),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_hat_defaults),
        cmocka_unit_test(test_hat_every_key),
        cmocka_unit_test(test_hat_overrides),
        cmocka_unit_test(test_hat_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
