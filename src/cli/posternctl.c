/*
 * posternctl: the operator's command line for a running posternd.
 *
 *   posternctl [-s SOCKET] [--json] [--yes] COMMAND [ARGS]
 *
 * It sends one JSON request over the daemon's control socket (see
 * src/control/control.h and docs/operator.md), waits for the one-line
 * answer and renders it the way the appliance CLI prints it (aligned
 * columns, thousands separators, local times), or prints the result object
 * as JSON with --json, for scripts.
 *
 * Design: everything a command needs is in its row of `commands[]`: usage
 * and help text, whether it is destructive, how its words become JSON
 * arguments (one optional or required word, or a parser of its own), and
 * its renderer. Destructive commands ask "Are you sure? [y/N]" on the
 * terminal unless --yes; with no terminal on stdin and no --yes they are
 * refused, so a script never changes the gateway by accident.
 *
 * Exit status: 0 done; 1 the daemon answered with an error; 2 usage error
 * or not confirmed; 3 the daemon could not be reached or answered nonsense.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The same default as paths.control (core/config.c). */
#define DEFAULT_SOCKET "./var/run/postern.sock"
/* Why 16 MiB: the largest answer is `tail 1000` of long log lines; a bigger
 * one is not from posternd. */
#define MAX_RESPONSE (16 * 1024 * 1024)
/* Why 120 s: the slowest command waits for DNS (timeout x attempts, a few
 * seconds); two minutes means the daemon is stuck, not busy. */
#define RESPONSE_TIMEOUT_MS 120000

enum { EXIT_DAEMON_ERROR = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

/* How a command's words become its JSON arguments. */
enum arg_kind { ARG_NONE, ARG_OPTIONAL, ARG_REQUIRED };

struct cli_cmd {
    const char *name;
    const char *usage;
    const char *summary;
    const char *help;
    bool destructive;
    enum arg_kind arg_kind; /* one word, stored under arg_key */
    const char *arg_key;
    bool arg_int;
    /* a parser of its own instead (dig); returns false with a message */
    bool (*parse)(int argc, char **argv, json_t *args, char *err, size_t errlen);
    void (*render)(const json_t *result);
};

/* ---- formatting helpers -------------------------------------------------- */

static json_int_t jint(const json_t *obj, const char *key)
{
    return json_integer_value(json_object_get(obj, key));
}

static const char *jstr(const json_t *obj, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : def;
}

/* 2571967 -> "2,571,967", as the appliance prints counters. */
static const char *fmt_num(json_int_t v, char *buf, size_t len)
{
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%lld", (long long)(v < 0 ? -v : v));
    size_t o = 0;
    if (v < 0 && o + 1 < len)
        buf[o++] = '-';
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

/* Unix seconds (or null) -> "Thu Aug 13 14:29:42 2020 EDT" (or def). */
static const char *fmt_time(const json_t *t, const char *def, char *buf, size_t len)
{
    struct tm tm;
    if (!json_is_integer(t))
        return def;
    time_t secs = (time_t)json_integer_value(t);
    localtime_r(&secs, &tm);
    strftime(buf, len, "%a %b %e %H:%M:%S %Y %Z", &tm);
    return buf;
}

/* Seconds -> "1d 2h 3m 4s" (leading zero units left out). */
static const char *fmt_duration(long long s, char *buf, size_t len)
{
    long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
    if (s < 0)
        s = 0;
    if (d > 0)
        snprintf(buf, len, "%lldd %lldh %lldm %llds", d, h, m, sec);
    else if (h > 0)
        snprintf(buf, len, "%lldh %lldm %llds", h, m, sec);
    else if (m > 0)
        snprintf(buf, len, "%lldm %llds", m, sec);
    else
        snprintf(buf, len, "%llds", sec);
    return buf;
}

/* "Label:" padded to the value column of the header lines. */
static void print_field(const char *label, const char *value)
{
    printf("%-31s%s\n", label, value);
}

static void print_as_of(const json_t *r)
{
    char t[64];
    print_field("Status as of:", fmt_time(json_object_get(r, "as_of"), "?", t, sizeof(t)));
}

/* One row of a counters/gauges block: a heading when key is NULL. */
struct row {
    int indent;
    const char *label;
    const char *key;
};

#define LABEL_WIDTH 40
#define VALUE_WIDTH 13

/* Print rows whose values are obj[key] (cols == NULL) or obj[key][col]. */
static void print_rows(const struct row *rows, size_t n, const json_t *obj, const char *const *cols,
                       size_t ncols)
{
    char num[40];
    for (size_t i = 0; i < n; i++) {
        int w = LABEL_WIDTH - rows[i].indent;
        const json_t *v = rows[i].key ? json_object_get(obj, rows[i].key) : NULL;
        printf("%*s%-*s", rows[i].indent, "", v ? w : 0, rows[i].label);
        for (size_t c = 0; v != NULL && c < (cols ? ncols : 1); c++)
            printf("%*s", VALUE_WIDTH,
                   fmt_num(json_integer_value(cols ? json_object_get(v, cols[c]) : v), num,
                           sizeof(num)));
        printf("\n");
    }
}

/* ---- renderers ----------------------------------------------------------- */

static const struct row status_counter_rows[] = {
    {2, "Receiving", NULL},
    {5, "Messages Received", "messages_received"},
    {5, "Recipients Received", "recipients_received"},
    {2, "Rejection", NULL},
    {5, "Rejected Recipients", "rejected_recipients"},
    {2, "Queue", NULL},
    {5, "Soft Bounced Events", "soft_bounced"},
    {2, "Completion", NULL},
    {5, "Completed Recipients", "completed"},
    {7, "Hard Bounced Recipients", "hard_bounced"},
    {9, "DNS Hard Bounces", "hard_dns"},
    {9, "5XX Hard Bounces", "hard_5xx"},
    {9, "Filter Hard Bounces", "hard_filter"},
    {9, "Expired Hard Bounces", "hard_expired"},
    {9, "Other Hard Bounces", "hard_other"},
    {7, "Delivered Recipients", "delivered"},
    {7, "Deleted Recipients", "deleted"},
};

static const struct row status_id_rows[] = {
    {2, "Current IDs", NULL},
    {5, "Message ID (MID)", "mid"},
    {5, "Injection Conn. ID (ICID)", "icid"},
    {5, "Delivery Conn. ID (DCID)", "dcid"},
};

static const struct row status_gauge_rows[] = {
    {2, "Connections", NULL},
    {5, "Current Inbound Conn.", "conn_in"},
    {5, "Current Outbound Conn.", "conn_out"},
    {5, "Pending Outbound Conn.", "conn_pending"},
    {2, "Queue", NULL},
    {5, "Active Recipients", "active_rcpts"},
    {5, "Unattempted Recipients", "unattempted_rcpts"},
    {5, "Attempted Recipients", "attempted_rcpts"},
    {5, "Messages In Work Queue", "work_queue"},
    {5, "Destinations In Memory", "destinations"},
};

#define NROWS(a) (sizeof(a) / sizeof((a)[0]))

static void render_status_header(const json_t *r)
{
    char t[64], up[128], dur[64];
    const json_t *since = json_object_get(r, "up_since");
    long long age = (long long)(jint(r, "as_of") - json_integer_value(since));
    print_as_of(r);
    snprintf(up, sizeof(up), "%s (%s)", fmt_time(since, "?", t, sizeof(t)),
             fmt_duration(age, dur, sizeof(dur)));
    print_field("Up since:", up);
    print_field("Last counter reset:",
                fmt_time(json_object_get(r, "last_reset"), "Never", t, sizeof(t)));
    print_field("System status:", jstr(r, "system_status", "?"));
    const json_t *oldest = json_object_get(r, "oldest_message");
    print_field("Oldest Message:",
                json_is_integer(oldest)
                    ? fmt_duration((long long)(jint(r, "as_of") - json_integer_value(oldest)), dur,
                                   sizeof(dur))
                    : "No Messages");
}

static void render_status_detail(const json_t *r);

static void render_status(const json_t *r)
{
    static const char *const cols[] = {"reset", "uptime", "lifetime"};
    render_status_header(r);
    printf("\n%-*s%*s%*s%*s\n", LABEL_WIDTH, "Counters:", VALUE_WIDTH, "Reset", VALUE_WIDTH,
           "Uptime", VALUE_WIDTH, "Lifetime");
    print_rows(status_counter_rows, NROWS(status_counter_rows), json_object_get(r, "counters"),
               cols, 3);
    /* IDs sit in the Lifetime column, as on the appliance. */
    const json_t *ids = json_object_get(r, "current_ids");
    char num[40];
    for (size_t i = 0; i < NROWS(status_id_rows); i++) {
        const struct row *w = &status_id_rows[i];
        printf("%*s%-*s", w->indent, "", w->key ? LABEL_WIDTH - w->indent : 0, w->label);
        if (w->key)
            printf("%*s", 3 * VALUE_WIDTH, fmt_num(jint(ids, w->key), num, sizeof(num)));
        printf("\n");
    }
    printf("\n%-*s%*s\n", LABEL_WIDTH, "Gauges:", VALUE_WIDTH, "Current");
    print_rows(status_gauge_rows, NROWS(status_gauge_rows), json_object_get(r, "gauges"), NULL, 0);
    if (json_object_get(r, "rates") != NULL)
        render_status_detail(r);
    if (!json_is_true(json_object_get(r, "lifetime_persisted")))
        printf("\nLifetime counters are not kept across restarts yet: Lifetime = Uptime.\n");
}

/* status detail: Rates (events per hour) and the system Gauges. */
static void render_status_detail(const json_t *r)
{
    static const struct row rate_rows[] = {
        {5, "Messages Received", "messages_received"},
        {5, "Recipients Received", "recipients_received"},
        {5, "Soft Bounced Events", "soft_bounced"},
        {5, "Completed Recipients", "completed"},
        {5, "Hard Bounced Recipients", "hard_bounced"},
        {5, "Delivered Recipients", "delivered"},
    };
    static const char *const cols[] = {"1m", "5m", "15m"};
    const json_t *sys = json_object_get(r, "system"), *t;
    size_t i;
    char num[40];
    printf("\n%-*s%*s%*s%*s\n", LABEL_WIDTH, "Rates (Events Per Hour):", VALUE_WIDTH, "1-Minute",
           VALUE_WIDTH, "5-Minutes", VALUE_WIDTH, "15-Minutes");
    print_rows(rate_rows, NROWS(rate_rows), json_object_get(r, "rates"), cols, 3);
    printf("\n%-*s%*s\n", LABEL_WIDTH, "System Gauges:", VALUE_WIDTH, "Current");
    printf("  %-*s%*.0f%%\n", LABEL_WIDTH - 2, "RAM Utilization", VALUE_WIDTH - 1,
           json_number_value(json_object_get(sys, "ram_pct")));
    printf("     %-*s%*s\n", LABEL_WIDTH - 5, "Resident Set (KB)", VALUE_WIDTH,
           fmt_num(jint(sys, "rss_kb"), num, sizeof(num)));
    printf("  %-*s%*.0f%%\n", LABEL_WIDTH - 2, "CPU Utilization (Total)", VALUE_WIDTH - 1,
           json_number_value(json_object_get(sys, "cpu_pct")));
    json_array_foreach(json_object_get(sys, "cpu_threads"), i, t)
        printf("     %-*s%*.0f%%\n", LABEL_WIDTH - 5, jstr(t, "name", "?"), VALUE_WIDTH - 1,
               json_number_value(json_object_get(t, "cpu_pct")));
    printf("  %-*s%*s\n", LABEL_WIDTH - 2, "Disk I/O (bytes/s)", VALUE_WIDTH, "");
    printf("     %-*s%*s\n", LABEL_WIDTH - 5, "Read", VALUE_WIDTH,
           fmt_num((json_int_t)json_number_value(json_object_get(sys, "disk_read_bps")), num,
                   sizeof(num)));
    printf("     %-*s%*s\n", LABEL_WIDTH - 5, "Write", VALUE_WIDTH,
           fmt_num((json_int_t)json_number_value(json_object_get(sys, "disk_write_bps")), num,
                   sizeof(num)));
    printf("  %-*s%*s\n", LABEL_WIDTH - 2, "Resource Conservation", VALUE_WIDTH,
           fmt_num(jint(sys, "resource_conservation"), num, sizeof(num)));
    printf("  %-*s%*s\n", LABEL_WIDTH - 2, "Kilobytes Used", VALUE_WIDTH,
           fmt_num(jint(sys, "queue_kb_used"), num, sizeof(num)));
    printf("  %-*s%*s\n", LABEL_WIDTH - 2, "Kilobytes Free", VALUE_WIDTH,
           fmt_num(jint(sys, "queue_kb_free"), num, sizeof(num)));
}

static void render_trace(const json_t *r)
{
    const json_t *lk = json_object_get(r, "lookups"), *ptr = json_object_get(lk, "ptr");
    const json_t *rep = json_object_get(lk, "reputation"), *d = json_object_get(r, "decision");
    const json_t *p = json_object_get(r, "params"), *env = json_object_get(r, "envelope"), *x;
    size_t i;
    char num[40];
    printf("Trace of %s on listener %s\n\n", jstr(r, "ip", "?"), jstr(r, "listener", "?"));
    printf("Lookups (total %.1f ms):\n", json_number_value(json_object_get(lk, "total_ms")));
    printf("  PTR: %s%s%s (%.1f ms)\n", jstr(ptr, "status", "?"),
           json_is_string(json_object_get(ptr, "name")) ? " " : "", jstr(ptr, "name", ""),
           json_number_value(json_object_get(ptr, "ms")));
    printf("  Forward lookup: %s (%.1f ms)\n",
           json_is_true(json_object_get(ptr, "verified")) ? "verified" : "not verified",
           json_number_value(json_object_get(json_object_get(lk, "forward"), "ms")));
    printf("  Reputation (SBRS): %s (%.1f ms)\n", jstr(rep, "sbrs", "?"),
           json_number_value(json_object_get(rep, "ms")));
    json_array_foreach(json_object_get(rep, "lists"), i, x)
        printf("    %s: %s\n", jstr(x, "zone", "?"),
               !json_is_true(json_object_get(x, "answered")) ? "no answer"
               : json_is_true(json_object_get(x, "listed"))  ? "listed"
                                                             : "not listed");
    printf("\nSender group: %s (match %s)\n", jstr(d, "group", "None"), jstr(d, "member", "?"));
    printf("Policy: %s\nAccess rule: %s%s\n\n", jstr(d, "policy", "?"), jstr(d, "access", "?"),
           json_is_true(json_object_get(p, "reject_at_rcpt")) ? " (delayed rejection at RCPT)"
                                                              : "");
    printf("Parameters:\n");
    printf("  Max message size:             %s bytes\n",
           fmt_num(jint(p, "max_message_size"), num, sizeof(num)));
    printf("  Max concurrent conns per IP:  %lld\n",
           (long long)jint(p, "max_concurrent_connections"));
    printf("  Max messages per connection:  %lld\n",
           (long long)jint(p, "max_messages_per_connection"));
    printf("  Max recipients per message:   %lld\n",
           (long long)jint(p, "max_recipients_per_message"));
    if (jint(p, "max_recipients_per_hour") > 0)
        printf("  Max recipients per hour:      %lld\n",
               (long long)jint(p, "max_recipients_per_hour"));
    else
        printf("  Max recipients per hour:      unlimited\n");
    printf("  Banner:                       %s\n", jstr(p, "banner", "?"));
    printf("  TLS:                          %s\n", jstr(p, "tls", "?"));
    if ((x = json_object_get(env, "sender")) != NULL)
        printf("\nSender <%s>: %s (%s)\n", jstr(x, "address", ""),
               json_is_true(json_object_get(x, "accepted")) ? "accepted" : "refused",
               jstr(x, "reason", ""));
    if ((x = json_object_get(env, "recipient")) != NULL)
        printf("Recipient <%s>: %s (%s)\n", jstr(x, "address", ""),
               json_is_true(json_object_get(x, "accepted")) ? "accepted" : "refused",
               jstr(x, "reason", ""));
}

static void render_smtpping(const json_t *r)
{
    const json_t *a, *tls = json_object_get(r, "tls");
    size_t i;
    printf("smtpping %s port %lld\n", jstr(r, "host", "?"), (long long)jint(r, "port"));
    json_array_foreach(json_object_get(r, "dns"), i, a)
    {
        const json_t *rec;
        size_t k;
        printf("DNS %s %s: %s (%.1f ms%s)", jstr(a, "type", "?"), jstr(a, "name", "?"),
               jstr(a, "status", "?"), json_number_value(json_object_get(a, "elapsed_ms")),
               json_is_true(json_object_get(a, "from_cache")) ? ", cached" : "");
        json_array_foreach(json_object_get(a, "records"), k, rec)
            printf("%s %s", k ? "," : "", json_string_value(rec));
        printf("\n");
    }
    if (json_is_string(json_object_get(r, "mx")))
        printf("Using MX host: %s\n", jstr(r, "mx", "?"));
    if (json_is_string(json_object_get(r, "address")))
        printf("Connecting to %s port %lld\n", jstr(r, "address", "?"), (long long)jint(r, "port"));
    if (json_is_integer(json_object_get(r, "connect_ms")))
        printf("Connect time: %lld ms\n", (long long)jint(r, "connect_ms"));
    if (json_is_string(json_object_get(r, "banner"))) {
        printf("Banner delay: %lld ms\n", (long long)jint(r, "banner_ms"));
        printf("Banner: %s\n", jstr(r, "banner", ""));
    }
    if (json_is_string(json_object_get(r, "ehlo")) && *jstr(r, "ehlo", ""))
        printf("EHLO: %s\n", jstr(r, "ehlo", ""));
    if (json_is_object(tls))
        printf("STARTTLS: %s %s\n", jstr(tls, "version", "?"), jstr(tls, "cipher", "?"));
    else if (json_object_get(r, "starttls_offered") != NULL)
        printf("STARTTLS: %s\n", json_is_true(json_object_get(r, "starttls_offered"))
                                     ? "offered, not negotiated"
                                     : "not offered");
    if (json_is_string(json_object_get(r, "mail")))
        printf("MAIL FROM:<>: %s\n", jstr(r, "mail", ""));
    if (json_is_string(json_object_get(r, "rcpt")))
        printf("RCPT TO:<%s>: %s\n", jstr(r, "rcpt_to", ""), jstr(r, "rcpt", ""));
    if (json_is_string(json_object_get(r, "firewall")))
        printf("Warning: %s%s%s\n",
               json_is_true(json_object_get(r, "masked_banner")) ? "masked banner; " : "",
               json_is_true(json_object_get(r, "masked_ehlo")) ? "masked EHLO keywords; " : "",
               jstr(r, "firewall", ""));
    if (json_is_string(json_object_get(r, "error")))
        printf("Failed at %s\n", jstr(r, "error", ""));
    else
        printf("Test transaction ended with RSET and QUIT (no DATA sent).\n");
}

static void render_message(const json_t *r)
{
    printf("%s\n", jstr(r, "message", "Done."));
}

static void render_workqueue(const json_t *r)
{
    char num[40];
    printf("Status: %s\n", jstr(r, "status", "?"));
    printf("Messages: %s\n", fmt_num(jint(r, "messages"), num, sizeof(num)));
}

static void render_delivernow(const json_t *r)
{
    const char *host = jstr(r, "host", "all");
    char num[40];
    fmt_num(jint(r, "rescheduled"), num, sizeof(num));
    if (strcmp(host, "all") == 0)
        printf("Rescheduled %s waiting recipient(s) of all domains for immediate delivery.\n", num);
    else
        printf("Rescheduled %s waiting recipient(s) of %s for immediate delivery.\n", num, host);
}

static void render_tophosts(const json_t *r)
{
    static const char *const keys[] = {"active_rcpts", "conn_out", "deliv_rcpts", "soft_bounces",
                                       "hard_bounces"};
    const json_t *hosts = json_object_get(r, "hosts"), *h;
    size_t i;
    int w = 30;
    char num[40];
    json_array_foreach(hosts, i, h)
    {
        int len = (int)strlen(jstr(h, "host", "")) + 2;
        w = len > w ? len : w;
    }
    print_as_of(r);
    print_field("Sort order:", jstr(r, "sort", "active_rcpts"));
    printf("Hosts marked with '*' were down as of the last delivery attempt.\n");
    printf("%*s%*s%*s%*s%*s%*s\n", 4 + w, "", 9, "Active", 9, "Conn.", 9, "Deliv.", 9, "Soft", 9,
           "Hard");
    printf("%-4s%-*s%*s%*s%*s%*s%*s\n", " #", w, "Recipient Host", 9, "Recip.", 9, "Out", 9,
           "Recip.", 9, "Bounced", 9, "Bounced");
    json_array_foreach(hosts, i, h)
    {
        printf("%2lld  %c%-*s", (long long)jint(h, "rank"),
               json_is_true(json_object_get(h, "down")) ? '*' : ' ', w - 1, jstr(h, "host", ""));
        for (size_t k = 0; k < NROWS(keys); k++)
            printf("%9s", fmt_num(jint(h, keys[k]), num, sizeof(num)));
        printf("\n");
    }
}

static const struct row host_counter_rows[] = {
    {2, "Queue", NULL},
    {5, "Soft Bounced Events", "soft_bounced"},
    {2, "Completion", NULL},
    {5, "Completed Recipients", "completed"},
    {7, "Hard Bounced Recipients", "hard_bounced"},
    {9, "DNS Hard Bounces", "hard_dns"},
    {9, "5XX Hard Bounces", "hard_5xx"},
    {9, "Filter Hard Bounces", "hard_filter"},
    {9, "Expired Hard Bounces", "hard_expired"},
    {9, "Other Hard Bounces", "hard_other"},
    {7, "Delivered Recipients", "delivered"},
    {7, "Deleted Recipients", "deleted"},
};

static const struct row host_gauge_rows[] = {
    {2, "Queue", NULL},
    {5, "Active Recipients", "active_rcpts"},
    {5, "Unattempted Recipients", "unattempted_rcpts"},
    {5, "Attempted Recipients", "attempted_rcpts"},
    {2, "Connections", NULL},
    {5, "Current Outbound Connections", "conn_out"},
    {5, "Pending Outbound Connections", "conn_pending"},
};

static void render_host_error(const char *label, const json_t *e)
{
    char t[64];
    printf("%s\n     ----------\n", label);
    if (!json_is_object(e)) {
        printf("     None\n");
        return;
    }
    printf("     %s\n       (at %s)\n", jstr(e, "text", ""),
           fmt_time(json_object_get(e, "at"), "?", t, sizeof(t)));
}

static void render_host_route(const json_t *route)
{
    const json_t *h;
    size_t i;
    printf("SMTP Routes for this host:\n");
    if (!json_is_object(route)) {
        printf("     None (delivery by MX records)\n");
        return;
    }
    const char *kind = jstr(route, "kind", "");
    printf("     Route: %s\n", jstr(route, "domain", "?"));
    if (strcmp(kind, "usedns") == 0 || strcmp(kind, "devnull") == 0) {
        printf("     %s\n", strcmp(kind, "usedns") == 0 ? "USEDNS" : "/dev/null");
        return;
    }
    printf("     %-40s %-6s %s\n", "Host", "Port", "Priority");
    json_array_foreach(json_object_get(route, "hosts"), i, h)
        printf("     %-40s %-6lld %lld\n", jstr(h, "host", "?"), (long long)jint(h, "port"),
               (long long)jint(h, "priority"));
}

static void render_host_dns(const json_t *r)
{
    char t[64];
    const json_t *v;
    size_t i;
    printf("Ordered IP addresses:\n");
    if (json_array_size(json_object_get(r, "ips")) == 0)
        printf("     None\n");
    json_array_foreach(json_object_get(r, "ips"), i, v) printf("     %s\n", json_string_value(v));
    if (json_array_size(json_object_get(r, "mx")) == 0) {
        printf("MX Records:\n     None\n");
        return;
    }
    printf("MX Records: (expiring at %s)\n",
           fmt_time(json_object_get(r, "mx_expiry"), "?", t, sizeof(t)));
    printf("     %-13s%s\n", "Preference", "Host");
    json_array_foreach(json_object_get(r, "mx"), i, v)
        printf("     %-13lld%s\n", (long long)jint(v, "pref"), jstr(v, "host", "?"));
}

static void render_hoststatus(const json_t *r)
{
    char t[64];
    printf("Host mail status for: '%s'\n", jstr(r, "host", "?"));
    if (!json_is_true(json_object_get(r, "found"))) {
        printf("%s\n", jstr(r, "message", "No record of host"));
        return;
    }
    print_as_of(r);
    print_field("Host up/down:", jstr(r, "state", "unknown"));
    printf("\nCounters:\n");
    print_rows(host_counter_rows, NROWS(host_counter_rows), json_object_get(r, "counters"), NULL,
               0);
    printf("\nGauges:\n");
    print_rows(host_gauge_rows, NROWS(host_gauge_rows), json_object_get(r, "gauges"), NULL, 0);
    printf("\n");
    print_field("Oldest Message",
                fmt_time(json_object_get(r, "oldest_message"), "No Messages", t, sizeof(t)));
    print_field("Last Activity",
                fmt_time(json_object_get(r, "last_activity"), "Never", t, sizeof(t)));
    render_host_dns(r);
    render_host_error("Last 4XX Error:", json_object_get(r, "last_4xx"));
    render_host_error("Last 5XX Error:", json_object_get(r, "last_5xx"));
    render_host_route(json_object_get(r, "route"));
}

/* One answer of nslookup: "A=192.0.2.1 TTL=300s" lines or the status. */
static void render_ns_answer(const json_t *a)
{
    const json_t *rec;
    size_t i;
    const char *type = jstr(a, "type", "?");
    if (json_array_size(json_object_get(a, "records")) == 0)
        printf("%s: no record (%s)\n", type, jstr(a, "status", "?"));
    json_array_foreach(json_object_get(a, "records"), i, rec)
        printf("%s=%s TTL=%llds\n", type, jstr(rec, "data", ""), (long long)jint(rec, "ttl"));
}

static void render_nslookup(const json_t *r)
{
    const json_t *a;
    size_t i;
    printf("Name: %s\n", jstr(r, "name", "?"));
    json_array_foreach(json_object_get(r, "answers"), i, a) render_ns_answer(a);
    printf("Query time:");
    json_array_foreach(json_object_get(r, "answers"), i, a)
        printf("%s %s %.1f ms%s", i ? "," : "", jstr(a, "type", "?"),
               json_number_value(json_object_get(a, "elapsed_ms")),
               json_is_true(json_object_get(a, "from_cache")) ? " (cached)" : "");
    printf("\n");
}

static void render_dig(const json_t *r)
{
    const json_t *rec;
    size_t i;
    printf(";; QUESTION SECTION:\n;%s.\t\t\tIN\t%s\n\n", jstr(r, "name", "?"),
           jstr(r, "type", "?"));
    printf(";; ANSWER SECTION:\n");
    json_array_foreach(json_object_get(r, "records"), i, rec)
        printf("%s.\t\t%lld\tIN\t%s\t%s\n", jstr(rec, "name", "?"), (long long)jint(rec, "ttl"),
               jstr(rec, "type", "?"), jstr(rec, "data", ""));
    printf("\n;; Query time: %.1f ms%s\n", json_number_value(json_object_get(r, "elapsed_ms")),
           json_is_true(json_object_get(r, "from_cache")) ? " (from the daemon's cache)" : "");
    printf(";; Status: %s\n", jstr(r, "status", "?"));
}

static void render_tail(const json_t *r)
{
    const json_t *line;
    size_t i;
    json_array_foreach(json_object_get(r, "lines"), i, line)
        printf("%s\n", json_string_value(line));
}

/* MID  Size  Attempts  Sender  Recipient  Destination  State  Next attempt */
static void render_showrecipients(const json_t *r)
{
    const json_t *list = json_object_get(r, "recipients"), *x;
    size_t i;
    char t[64], num[40];
    print_as_of(r);
    print_field("Selection:", jstr(r, "selection", "all"));
    print_field("Recipients:", fmt_num(jint(r, "count"), num, sizeof(num)));
    if (json_array_size(list) == 0)
        return;
    printf("\n%-10s %10s %8s  %-28s %-28s %-24s %-8s %s\n", "MID", "Size", "Attempts", "Sender",
           "Recipient", "Destination", "State", "Next attempt");
    json_array_foreach(list, i, x)
    {
        const char *sender = jstr(x, "sender", "");
        printf("%-10lld %10s %8lld  %-28s %-28s %-24s %-8s %s\n", (long long)jint(x, "mid"),
               fmt_num(jint(x, "size"), num, sizeof(num)), (long long)jint(x, "attempts"),
               sender[0] ? sender : "<>", jstr(x, "recipient", ""), jstr(x, "destination", ""),
               jstr(x, "state", ""),
               fmt_time(json_object_get(x, "next_attempt"), "now", t, sizeof(t)));
    }
    if (json_is_true(json_object_get(r, "truncated")))
        printf("(only the first %zu are listed)\n", json_array_size(list));
}

static void render_showmessage(const json_t *r)
{
    const json_t *x;
    size_t i;
    char t[64], num[40];
    const char *sender = jstr(r, "sender", "");
    printf("MID %lld (ICID %lld)%s\n", (long long)jint(r, "mid"), (long long)jint(r, "icid"),
           json_is_true(json_object_get(r, "dsn")) ? ", a DSN generated here" : "");
    print_field("Sender:", sender[0] ? sender : "<>");
    print_field("Received:", fmt_time(json_object_get(r, "received"), "?", t, sizeof(t)));
    print_field("Client IP:", jstr(r, "client_ip", ""));
    print_field("HELO:", jstr(r, "helo", ""));
    print_field("Listener:", jstr(r, "listener", ""));
    print_field("Size:", fmt_num(jint(r, "size"), num, sizeof(num)));
    print_field("Message-ID:", jstr(r, "message_id", ""));
    print_field("Subject:", jstr(r, "subject", ""));
    printf("Recipients:\n");
    json_array_foreach(json_object_get(r, "recipients"), i, x)
    {
        printf("  [%lld] %s  state %s, %lld attempt(s), next %s\n", (long long)jint(x, "rid"),
               jstr(x, "recipient", ""), jstr(x, "state", "?"), (long long)jint(x, "attempts"),
               fmt_time(json_object_get(x, "next_attempt"), "now", t, sizeof(t)));
        if (json_is_string(json_object_get(x, "last_error")))
            printf("      last error: %s\n", jstr(x, "last_error", ""));
    }
}

static void render_delivery(const json_t *r)
{
    const char *host = jstr(r, "host", "all");
    bool on = json_is_true(json_object_get(r, "suspended"));
    if (strcmp(host, "all") == 0)
        printf("Delivery %s for all destinations.\n", on ? "suspended" : "resumed");
    else
        printf("Delivery %s for %s.\n", on ? "suspended" : "resumed", host);
    if (json_is_string(json_object_get(r, "message")))
        printf("%s\n", jstr(r, "message", ""));
}

static void render_listeners(const json_t *r)
{
    const json_t *x;
    size_t i;
    json_array_foreach(json_object_get(r, "listeners"), i, x)
        printf("%-24s %s:%lld  %s\n", jstr(x, "name", "?"), jstr(x, "address", "?"),
               (long long)jint(x, "port"),
               json_is_true(json_object_get(x, "suspended")) ? "suspended" : "accepting");
}

/* ---- argument parsers -------------------------------------------------- */

/* [host DOMAIN | sender ADDRESS | all]; required unless the command shows. */
static bool parse_select_words(int argc, char **argv, json_t *args, char *err, size_t errlen,
                               bool required)
{
    if (argc == 0 && !required)
        return true;
    if (argc == 1 && strcmp(argv[0], "all") == 0) {
        json_object_set_new(args, "all", json_true());
        return true;
    }
    if (argc == 2 && (strcmp(argv[0], "host") == 0 || strcmp(argv[0], "sender") == 0)) {
        json_object_set_new(args, argv[0], json_string(argv[1]));
        return true;
    }
    snprintf(err, errlen, "select with: host DOMAIN | sender ADDRESS | all");
    return false;
}

static bool parse_show_select(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    return parse_select_words(argc, argv, args, err, errlen, false);
}

static bool parse_select(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    return parse_select_words(argc, argv, args, err, errlen, true);
}

static bool is_dns_type(const char *s)
{
    static const char *const types[] = {"A", "AAAA", "MX", "PTR", "TXT"};
    for (size_t i = 0; i < NROWS(types); i++)
        if (strcasecmp(s, types[i]) == 0)
            return true;
    return false;
}

/* dig [-t TYPE] NAME | dig -x IP | dig TYPE NAME | dig NAME TYPE */
static bool parse_dig(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    const char *type = NULL, *words[2];
    int nwords = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0) {
            if (++i >= argc)
                return snprintf(err, errlen, "-t needs a record type"), false;
            type = argv[i];
        } else if (strcmp(argv[i], "-x") == 0) {
            type = "PTR";
        } else if (nwords < 2) {
            words[nwords++] = argv[i];
        } else {
            return snprintf(err, errlen, "too many arguments"), false;
        }
    }
    if (nwords == 2 && type == NULL && is_dns_type(words[0])) {
        type = words[0];
        words[0] = words[1];
    } else if (nwords == 2 && type == NULL && is_dns_type(words[1])) {
        type = words[1];
    } else if (nwords != 1) {
        return snprintf(err, errlen, "usage: dig [-t TYPE] NAME"), false;
    }
    json_object_set_new(args, "name", json_string(words[0]));
    if (type)
        json_object_set_new(args, "type", json_string(type));
    return true;
}

/* status [detail] */
static bool parse_status(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    if (argc == 0)
        return true;
    if (argc == 1 && strcmp(argv[0], "detail") == 0) {
        json_object_set_new(args, "detail", json_true());
        return true;
    }
    return snprintf(err, errlen, "usage: status [detail]"), false;
}

/* trace IP [SENDER [RECIPIENT]] [--listener NAME] */
static bool parse_trace(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    static const char *const keys[] = {"ip", "sender", "recipient"};
    size_t nwords = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--listener") == 0 || strcmp(argv[i], "-l") == 0) {
            if (++i >= argc)
                return snprintf(err, errlen, "--listener needs a name"), false;
            json_object_set_new(args, "listener", json_string(argv[i]));
        } else if (nwords < NROWS(keys)) {
            json_object_set_new(args, keys[nwords++], json_string(argv[i]));
        } else {
            return snprintf(err, errlen, "too many arguments"), false;
        }
    }
    if (nwords == 0)
        return snprintf(err, errlen, "missing IP address"), false;
    return true;
}

/* ---- smtproutes ------------------------------------------------------------ */

/* The Destination Hosts cells of one route, after the domain column. */
static void render_route_hosts(const json_t *route)
{
    const char *kind = jstr(route, "kind", "");
    const json_t *h;
    size_t i;
    if (strcmp(kind, "usedns") == 0 || strcmp(kind, "devnull") == 0) {
        printf("%s\n", strcmp(kind, "usedns") == 0 ? "USEDNS" : "/dev/null");
        return;
    }
    json_array_foreach(json_object_get(route, "hosts"), i, h)
        printf("%*s%-10lld%-42s%lld\n", i ? 32 : 0, "", (long long)jint(h, "priority"),
               jstr(h, "host", "?"), (long long)jint(h, "port"));
}

static void render_route_table(const json_t *routes)
{
    const json_t *r;
    size_t i;
    if (json_array_size(routes) == 0) {
        printf("No SMTP routes (delivery by MX records).\n");
        return;
    }
    printf("%-32s%s\n%-32s%-10s%-42s%s\n", "Receiving Domain", "Destination Hosts", "", "Priority",
           "Destination", "Port");
    printf("%-32s%-10s%-42s%s\n", "----------------", "--------", "-----------", "----");
    json_array_foreach(routes, i, r)
    {
        printf("%-31s ", jstr(r, "domain", "?"));
        render_route_hosts(r);
    }
}

static void render_smtproutes(const json_t *r)
{
    const char *action = jstr(r, "action", "print");
    static const char *const done[][2] = {
        {"new", "added"}, {"edit", "changed"}, {"delete", "deleted"}};
    if (strcmp(action, "print") == 0) {
        render_route_table(json_object_get(r, "routes"));
        return;
    }
    for (size_t i = 0; i < NROWS(done); i++)
        if (strcmp(action, done[i][0]) == 0)
            printf("SMTP route for %s %s.\n", jstr(r, "domain", "?"), done[i][1]);
    if (json_is_object(json_object_get(r, "route"))) {
        json_t *one = json_pack("[O]", json_object_get(r, "route"));
        render_route_table(one);
        json_decref(one);
    }
    printf("Saved to %s (the previous file is %s.bak) and applied.\n", jstr(r, "file", "?"),
           jstr(r, "file", "?"));
}

/* smtproutes [print] | new|edit DOMAIN HOST[:PORT][/PRIORITY]... | delete DOMAIN */
static bool parse_smtproutes(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    const char *action = argc > 0 ? argv[0] : "print";
    bool hosts = strcmp(action, "new") == 0 || strcmp(action, "edit") == 0;
    json_object_set_new(args, "action", json_string(action));
    if (strcmp(action, "print") == 0)
        return argc <= 1 || (snprintf(err, errlen, "print takes no arguments"), false);
    if (!hosts && strcmp(action, "delete") != 0)
        return snprintf(err, errlen, "unknown subcommand '%s'", action), false;
    if (argc < 2 || (hosts && argc < 3))
        return snprintf(err, errlen, "%s needs a domain%s", action, hosts ? " and hosts" : ""),
               false;
    if (!hosts && argc > 2)
        return snprintf(err, errlen, "too many arguments"), false;
    json_object_set_new(args, "domain", json_string(argv[1]));
    if (hosts) {
        json_t *list = json_array();
        for (int i = 2; i < argc; i++)
            json_array_append_new(list, json_string(argv[i]));
        json_object_set_new(args, "hosts", list);
    }
    return true;
}

/* Commands destructive only with one "action" argument (the rest of such a
 * command only reads). */
static bool action_destructive(const char *cmd, const json_t *args)
{
    static const char *const rows[][2] = {{"smtproutes", "delete"}};
    for (size_t i = 0; i < NROWS(rows); i++)
        if (strcmp(cmd, rows[i][0]) == 0 && strcmp(jstr(args, "action", ""), rows[i][1]) == 0)
            return true;
    return false;
}

/* ---- findevent ------------------------------------------------------------ */

/* findevent KEY VALUE... [--since T] [--until T] [--limit N]; the words
 * after KEY are joined with spaces (a subject). */
static bool parse_findevent(int argc, char **argv, json_t *args, char *err, size_t errlen)
{
    static const char *const keys[] = {"mid", "message_id", "sender", "rcpt", "subject", "ip"};
    static const char *const opts[] = {"--since", "--until", "--limit"};
    char value[1024] = "";
    size_t vlen = 0;
    for (int i = 0; i < argc; i++) {
        size_t o = 0;
        while (o < NROWS(opts) && strcmp(argv[i], opts[o]) != 0)
            o++;
        if (o < NROWS(opts)) {
            if (++i >= argc)
                return snprintf(err, errlen, "%s needs a value", opts[o]), false;
            json_object_set_new(args, opts[o] + 2,
                                o == 2 ? json_integer(atoll(argv[i])) : json_string(argv[i]));
        } else if (!json_object_get(args, "by")) {
            size_t k = 0;
            while (k < NROWS(keys) && strcmp(argv[i], keys[k]) != 0)
                k++;
            if (k == NROWS(keys))
                return snprintf(err, errlen,
                                "unknown key '%s': mid, message_id, sender, rcpt, "
                                "subject or ip",
                                argv[i]),
                       false;
            json_object_set_new(args, "by", json_string(keys[k]));
        } else {
            vlen += (size_t)snprintf(value + vlen, sizeof(value) - vlen, "%s%s", vlen ? " " : "",
                                     argv[i]);
            if (vlen >= sizeof(value))
                return snprintf(err, errlen, "value too long"), false;
        }
    }
    if (!json_object_get(args, "by") || vlen == 0)
        return snprintf(err, errlen, "usage: findevent KEY VALUE [--since T] [--until T]"), false;
    json_object_set_new(args, "value", json_string(value));
    return true;
}

static void render_findevent_msg(const json_t *m)
{
    printf("MID %lld  ICID %lld  client %s  from <%s>\n", (long long)jint(m, "mid"),
           (long long)jint(m, "icid"), jstr(m, "client_ip", "unknown"), jstr(m, "sender", ""));
    if (json_is_string(json_object_get(m, "message_id")))
        printf("  Message-ID: %s\n", jstr(m, "message_id", ""));
    if (json_is_string(json_object_get(m, "subject")))
        printf("  Subject: %s\n", jstr(m, "subject", ""));
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(m, "recipients"), i, v)
        printf("  To: <%s>\n", json_string_value(v));
    json_array_foreach(json_object_get(m, "events"), i, v)
        printf("  %s %s\n", jstr(v, "time", ""), jstr(v, "text", ""));
}

static void render_findevent(const json_t *r)
{
    const json_t *msgs = json_object_get(r, "messages");
    size_t i;
    const json_t *m;
    if (json_array_size(msgs) == 0) {
        printf("No matching messages.\n");
        return;
    }
    json_array_foreach(msgs, i, m)
    {
        if (i > 0)
            printf("\n");
        render_findevent_msg(m);
    }
    if (json_is_true(json_object_get(r, "truncated")))
        printf("\n(only the newest %zu messages; narrow the search with --since/--until)\n",
               json_array_size(msgs));
}

/* ---- the command table --------------------------------------------------- */

static const struct cli_cmd commands[] = {
    {"status", "status [detail]", "counters and gauges of the whole gateway",
     "Counters (Reset, Uptime and Lifetime columns): messages and recipients received,\n"
     "rejected recipients, soft bounce events, completed recipients split into hard\n"
     "bounces (DNS, 5XX, Filter, Expired, Other), delivered and deleted; the current\n"
     "MID, ICID and DCID. Gauges: inbound and outbound connections, active, unattempted\n"
     "and attempted recipients, work queue, destinations in memory. Lifetime equals\n"
     "Uptime until counters are kept across restarts. \"status detail\" adds Rates\n"
     "(events per hour over the last 1, 5 and 15 minutes) and system gauges: RAM and\n"
     "CPU (total and per thread: main loop, spool worker), disk I/O, Resource\n"
     "Conservation, kilobytes used and free on the spool filesystem.",
     false, ARG_NONE, NULL, false, parse_status, render_status},
    {"resetcounters", "resetcounters", "restart the Reset column from zero",
     "Remember every counter's value now; from then on the Reset column of status and\n"
     "the counters of hoststatus and tophosts count from zero. Uptime is untouched.\n"
     "Destructive: asks for confirmation (or --yes).",
     true, ARG_NONE, NULL, false, NULL, render_message},
    {"tophosts", "tophosts [active_rcpts|conn_out|deliv_rcpts|hard_bounces|soft_bounces]",
     "the top 20 destinations",
     "The 20 destination domains with the highest value of the sort key (default\n"
     "active_rcpts): active recipients, connections out, delivered recipients, soft\n"
     "bounce events, hard bounced recipients. A '*' before a host means it was down at\n"
     "the last delivery attempt.",
     false, ARG_OPTIONAL, "sort", false, NULL, render_tophosts},
    {"hoststatus", "hoststatus DOMAIN", "delivery status of one destination domain",
     "Host up/down, counters (soft bounces, completed, hard bounces by kind, delivered,\n"
     "deleted), gauges (active, unattempted, attempted recipients, current and pending\n"
     "outbound connections), oldest message, last activity, the IP addresses and MX\n"
     "records last used, the last 4XX and 5XX errors, and the SMTP route that applies.\n"
     "\"No record of host\" when nothing was ever queued for DOMAIN.",
     false, ARG_REQUIRED, "host", false, NULL, render_hoststatus},
    {"delivernow", "delivernow [all|DOMAIN]", "retry waiting recipients now",
     "Every recipient waiting for a retry (of DOMAIN, or of all domains) is tried now;\n"
     "the retry schedule starts over from the next failure.",
     false, ARG_OPTIONAL, "host", false, NULL, render_delivernow},
    {"workqueue", "workqueue [status|pause|resume]", "work queue status; pause/resume delivery",
     "Status of the work queue (messages received but not yet in the delivery queue).\n"
     "Postern hands messages to delivery as soon as they are stored, so it is empty.\n"
     "pause and resume do what suspenddel and resumedel without a domain do.",
     false, ARG_OPTIONAL, "action", false, NULL, render_workqueue},
    {"showrecipients", "showrecipients [host DOMAIN | sender ADDRESS | all]",
     "list queued recipients",
     "Every queued recipient (or those of one recipient domain, or of one envelope\n"
     "sender; <> for the null sender): MID, size, attempts, sender, recipient,\n"
     "destination, state (ready, waiting, active = being delivered) and next attempt.",
     false, ARG_NONE, NULL, false, parse_show_select, render_showrecipients},
    {"deleterecipients", "deleterecipients (host DOMAIN | sender ADDRESS | all)",
     "remove queued recipients, no bounce",
     "Remove the selected recipients from the queue and the spool without a DSN; they\n"
     "count as Deleted Recipients. Recipients being delivered right now are skipped\n"
     "(and counted). Destructive: asks for confirmation (or --yes).",
     true, ARG_NONE, NULL, false, parse_select, render_message},
    {"bouncerecipients", "bouncerecipients (host DOMAIN | sender ADDRESS | all)",
     "hard-bounce queued recipients now",
     "Bounce the selected recipients now (status 5.0.0, \"bounced by operator\"): a DSN\n"
     "goes to each sender, and they count as Other Hard Bounces. Recipients being\n"
     "delivered right now are skipped (and counted). Destructive.",
     true, ARG_NONE, NULL, false, parse_select, render_message},
    {"redirectrecipients", "redirectrecipients HOST[:PORT] | clear", "send all mail to one host",
     "From now on every delivery, of every destination, goes to HOST (port 25 unless\n"
     "given), and waiting mail is retried now. Lasts until 'redirectrecipients clear'\n"
     "or a restart. Destructive.",
     true, ARG_REQUIRED, "host", false, NULL, render_message},
    {"showmessage", "showmessage MID", "the envelope of one stored message",
     "Sender, recipients with their states, received time, client IP, HELO, listener,\n"
     "size, Message-ID and Subject of a message still in the spool.",
     false, ARG_REQUIRED, "mid", true, NULL, render_showmessage},
    {"suspenddel", "suspenddel [DOMAIN]", "stop starting deliveries",
     "No new delivery starts (to any destination, or to DOMAIN); connections finish\n"
     "their current message. Mail stays queued. Until resumedel or a restart.",
     false, ARG_OPTIONAL, "host", false, NULL, render_delivery},
    {"resumedel", "resumedel [DOMAIN]", "start deliveries again",
     "Without DOMAIN: lift every delivery suspension. With DOMAIN: that domain's own.", false,
     ARG_OPTIONAL, "host", false, NULL, render_delivery},
    {"suspendlistener", "suspendlistener [NAME]", "stop accepting on listeners",
     "Stop accepting connections on listener NAME (default all). Sessions in progress\n"
     "continue; new connections wait unanswered. Until resumelistener or a restart.",
     false, ARG_OPTIONAL, "name", false, NULL, render_listeners},
    {"resumelistener", "resumelistener [NAME]", "accept on listeners again",
     "Accept connections again on listener NAME (default all).", false, ARG_OPTIONAL, "name", false,
     NULL, render_listeners},
    {"nslookup", "nslookup NAME|IP", "look up a name (A, AAAA) or an IP (PTR)",
     "Ask the daemon's own resolver (its servers and cache): A and AAAA of a name, or\n"
     "the PTR of an IPv4/IPv6 address, with each record's TTL and the query time.",
     false, ARG_REQUIRED, "name", false, NULL, render_nslookup},
    {"dig", "dig [-t TYPE] NAME", "one DNS query through the daemon's resolver",
     "Ask the daemon's resolver for one record type (A, AAAA, MX, PTR, TXT; default A)\n"
     "of NAME. \"dig MX NAME\" and \"dig -x IP\" work too. Prints the answer section\n"
     "with TTLs, the status and the query time in milliseconds.",
     false, ARG_NONE, NULL, false, parse_dig, render_dig},
    {"tail", "tail [N]", "the last lines of mail_logs",
     "Print the last N lines (default 20, at most 1000) of the daemon's mail_logs.", false,
     ARG_OPTIONAL, "lines", true, NULL, render_tail},
    {"smtpping", "smtpping HOST[:PORT]", "test a destination host from the gateway",
     "Resolve HOST through the daemon's resolver (a name without a port: its MX host\n"
     "with the lowest preference, if it has MX records), connect (port 25 by default),\n"
     "and report the connect time, banner delay and text, the EHLO reply, STARTTLS\n"
     "(version and cipher) when offered, and the replies to MAIL FROM:<> and\n"
     "RCPT TO:<postmaster@HOST>; then RSET and QUIT, never DATA. A masked banner or\n"
     "masked EHLO keywords are flagged as a likely SMTP-inspecting firewall.",
     false, ARG_REQUIRED, "host", false, NULL, render_smtpping},
    {"trace", "trace IP [SENDER [RECIPIENT]] [--listener NAME]",
     "the connection decision for a client address",
     "Run the lookups (PTR, forward confirmation, reputation lists) and the host access\n"
     "table of a listener (the first one unless --listener) for IP, as a connection\n"
     "from IP would, without a connection: the sender group and the member that\n"
     "matched, the mail flow policy, its access rule and effective parameters, the\n"
     "banner. With SENDER and RECIPIENT, whether MAIL and RCPT would be accepted\n"
     "(relay domains, RELAY policy, delayed rejection).",
     false, ARG_NONE, NULL, false, parse_trace, render_trace},
    {"smtproutes", "smtproutes [print] | new|edit DOMAIN HOST[:PORT][/PRIORITY]... | delete DOMAIN",
     "print, add, change or delete SMTP routes",
     "print: every SMTP route: receiving domain and its destination hosts with\n"
     "priority and port (or USEDNS, /dev/null). new DOMAIN HOST...: add a route for\n"
     "DOMAIN (exact, .suffix for any subdomain, or ALL); each HOST is\n"
     "HOST[:PORT][/PRIORITY] (port 25, priority 0 by default; [IPv6]:PORT), or the\n"
     "single word USEDNS or /dev/null. edit DOMAIN HOST...: replace its hosts.\n"
     "delete DOMAIN: remove it (destructive: asks, or --yes). A change is validated\n"
     "like the configuration file, saved to it (previous file kept as FILE.bak;\n"
     "comments are not kept) and applied at once, like a reload.",
     false, ARG_NONE, NULL, false, parse_smtproutes, render_smtproutes},
    {"findevent", "findevent KEY VALUE [--since T] [--until T] [--limit N]",
     "message tracking: every event of the matching messages",
     "KEY is mid, message_id, sender, rcpt, subject or ip. Search the tracking\n"
     "database for messages by MID, Message-ID, envelope sender,\n"
     "recipient, subject (a case-insensitive substring) or client IP, and print every\n"
     "mail_logs event of each (connection, envelope, queueing, delivery), newest\n"
     "message first, at most --limit (default 100). T is relative (30m, 1h, 2d ago) or\n"
     "ISO 8601 (2026-11-25, 2026-11-25T18:00:00, Z for UTC); a message matches when\n"
     "any of its events is in the range.",
     false, ARG_NONE, NULL, false, parse_findevent, render_findevent},
};

static const struct cli_cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < NROWS(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: posternctl [-s SOCKET] [--json] [--yes] COMMAND [ARGS]\n"
                 "  -s, --socket SOCKET  control socket (default $POSTERN_SOCKET or " DEFAULT_SOCKET
                 ")\n"
                 "  -j, --json           print the result as JSON\n"
                 "  -y, --yes            do not ask before destructive commands\n"
                 "commands:\n");
    for (size_t i = 0; i < NROWS(commands); i++)
        fprintf(out, "  %-28s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-28s %s\n", "help [COMMAND]", "this list, or one command's help");
}

static int cmd_help(int argc, char **argv)
{
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    const struct cli_cmd *c = cmd_find(argv[0]);
    if (c == NULL) {
        fprintf(stderr, "posternctl: unknown command '%s'\n", argv[0]);
        return EXIT_USAGE;
    }
    printf("usage: posternctl %s\n\n%s\n", c->usage, c->help);
    return 0;
}

/* The command's words as its JSON arguments. */
static json_t *build_args(const struct cli_cmd *c, int argc, char **argv)
{
    char err[256] = "";
    json_t *args = json_object();
    if (c->parse != NULL) {
        if (c->parse(argc, argv, args, err, sizeof(err)))
            return args;
    } else if (argc > 1 || (argc == 1 && c->arg_kind == ARG_NONE)) {
        snprintf(err, sizeof(err), "too many arguments");
    } else if (argc == 0 && c->arg_kind == ARG_REQUIRED) {
        snprintf(err, sizeof(err), "missing argument");
    } else if (argc == 1 && c->arg_int) {
        char *end;
        long long v = strtoll(argv[0], &end, 10);
        if (*argv[0] == '\0' || *end != '\0')
            snprintf(err, sizeof(err), "'%s' is not a number", argv[0]);
        else
            json_object_set_new(args, c->arg_key, json_integer(v));
    } else if (argc == 1) {
        json_object_set_new(args, c->arg_key, json_string(argv[0]));
    }
    if (err[0] == '\0')
        return args;
    fprintf(stderr, "posternctl: %s: %s\nusage: posternctl %s\n", c->name, err, c->usage);
    json_decref(args);
    return NULL;
}

/* "Are you sure?" on the terminal; never without one. */
static bool confirm(const struct cli_cmd *c, bool destructive, bool yes)
{
    char line[64];
    if (!destructive || yes)
        return true;
    if (!isatty(STDIN_FILENO)) {
        fprintf(stderr,
                "posternctl: %s is destructive; refusing without --yes (stdin is not a "
                "terminal)\n",
                c->name);
        return false;
    }
    fprintf(stderr, "%s: Are you sure? [y/N] ", c->name);
    fflush(stderr);
    if (fgets(line, sizeof(line), stdin) == NULL)
        return false;
    return strcasecmp(line, "y\n") == 0 || strcasecmp(line, "yes\n") == 0;
}

/* ---- the socket ------------------------------------------------------- */

static int ctl_connect(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "posternctl: socket path too long: %s\n", path);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        fprintf(stderr, "posternctl: cannot connect to %s: %s (is posternd running? see -s)\n",
                path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read one line (the answer); NULL on error, timeout or an oversized one. */
static char *read_line(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (buf != NULL) {
        char *nl = memchr(buf, '\n', len);
        if (nl != NULL) {
            *nl = '\0';
            return buf;
        }
        if (len + 1 >= cap) {
            char *nbuf = cap >= MAX_RESPONSE ? NULL : realloc(buf, cap * 2);
            if (nbuf == NULL)
                break;
            buf = nbuf;
            cap *= 2;
        }
        if (poll(&pfd, 1, RESPONSE_TIMEOUT_MS) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    free(buf);
    return NULL;
}

/* Send {"cmd", "args"[, "confirm"]} and return the parsed answer. */
static json_t *ctl_call(const char *path, const char *name, json_t *args, bool destructive)
{
    json_t *req = json_pack("{s:s, s:O}", "cmd", name, "args", args);
    if (destructive)
        json_object_set_new(req, "confirm", json_true());
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int fd = ctl_connect(path);
    json_t *resp = NULL;
    if (fd >= 0 && text != NULL) {
        /* A failed write is not the end: a daemon that refuses us answers
         * and closes before reading, and that answer is what to show. */
        if (write_all(fd, text, strlen(text)))
            write_all(fd, "\n", 1);
        char *line = read_line(fd);
        if (line != NULL)
            resp = json_loads(line, 0, NULL);
        if (resp == NULL || !json_is_object(resp)) {
            fprintf(stderr, "posternctl: no valid answer from %s\n", path);
            json_decref(resp);
            resp = NULL;
        }
        free(line);
    }
    if (fd >= 0)
        close(fd);
    free(text);
    return resp;
}

/* showmessage for a MID no longer queued: findevent mid MID, if tracking
 * knows it (NULL otherwise, and the queue's "No such message" stands). */
static json_t *showmessage_tracked(const char *path, const json_t *args)
{
    const json_t *mid = json_object_get(args, "mid");
    char value[32];
    if (json_is_integer(mid))
        snprintf(value, sizeof(value), "%lld", (long long)json_integer_value(mid));
    else if (json_is_string(mid))
        snprintf(value, sizeof(value), "%s", json_string_value(mid));
    else
        return NULL;
    json_t *fargs = json_pack("{s:s, s:s}", "by", "mid", "value", value);
    json_t *resp = ctl_call(path, "findevent", fargs, false);
    json_decref(fargs);
    const json_t *msgs = json_object_get(json_object_get(resp, "result"), "messages");
    if (resp == NULL || !json_is_true(json_object_get(resp, "ok")) || json_array_size(msgs) == 0) {
        json_decref(resp);
        return NULL;
    }
    return resp;
}

/* Print the answer; returns the exit status. */
static int show(const struct cli_cmd *c, const json_t *resp, bool as_json)
{
    const json_t *result = json_object_get(resp, "result");
    if (!json_is_true(json_object_get(resp, "ok"))) {
        fprintf(stderr, "posternctl: %s: %s\n", c->name, jstr(resp, "error", "failed"));
        return EXIT_DAEMON_ERROR;
    }
    if (as_json) {
        json_dumpf(result, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("\n");
    } else {
        c->render(result);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"yes", no_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = getenv("POSTERN_SOCKET");
    bool as_json = false, yes = false;
    int opt;
    if (path == NULL || *path == '\0')
        path = DEFAULT_SOCKET;
    /* "+": options end at the command, so "dig -t MX x" keeps its -t. */
    while ((opt = getopt_long(argc, argv, "+s:jyh", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'y':
            yes = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    int nargs = argc - optind - 1;
    char **words = argv + optind + 1;
    if (strcmp(name, "help") == 0)
        return cmd_help(nargs, words);
    const struct cli_cmd *c = cmd_find(name);
    if (c == NULL) {
        fprintf(stderr, "posternctl: unknown command '%s' (posternctl help)\n", name);
        return EXIT_USAGE;
    }
    json_t *args = build_args(c, nargs, words);
    if (args == NULL)
        return EXIT_USAGE;
    bool destructive = c->destructive || action_destructive(c->name, args);
    if (!confirm(c, destructive, yes)) {
        json_decref(args);
        return EXIT_USAGE;
    }
    json_t *resp = ctl_call(path, c->name, args, destructive);
    if (resp != NULL && strcmp(c->name, "showmessage") == 0 &&
        !json_is_true(json_object_get(resp, "ok"))) {
        /* Not in the queue (delivered, bounced, deleted): message tracking
         * still has its story. */
        json_t *fresp = showmessage_tracked(path, args);
        if (fresp != NULL) {
            json_decref(resp);
            json_decref(args);
            if (!as_json)
                printf("Not in the queue any more; its events from message tracking:\n\n");
            int frc = show(cmd_find("findevent"), fresp, as_json);
            json_decref(fresp);
            return frc;
        }
    }
    json_decref(args);
    if (resp == NULL)
        return EXIT_UNREACHABLE;
    int rc = show(c, resp, as_json);
    json_decref(resp);
    return rc;
}
