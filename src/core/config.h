/*
 * config: the one YAML configuration file, parsed into an immutable,
 * reference-counted struct config.
 *
 * Every parameter is declared once (in config.c's schema tables) with its
 * type, default and bounds, Postfix-style; the parser walks the libyaml
 * document tree against those tables, so an unknown key, a wrong type or an
 * out-of-range value is reported as "FILE:LINE:COLUMN: message" (1-based,
 * the position of the offending node). Sizes accept a K/M/G suffix (powers of
 * 1024); durations accept ms/s/m/h suffixes (a bare number means seconds).
 *
 * A loaded config is never modified. SIGHUP loads a new one; sessions keep a
 * reference to the one they started with (config_ref/config_unref), so a
 * reload never changes the rules under a running SMTP transaction.
 *
 * The YAML shape (every key optional unless noted; defaults in brackets):
 *
 *   hostname: mx.example.com        [gethostname()]
 *   user: postern                   [postern] user to become after binding when
 *                                   started as root; "root" means do not drop
 *   paths:
 *     spool: ./var/spool            [./var/spool] queue.db and large bodies
 *     logs: ./var/log               [./var/log]   mail_logs
 *     control: ./var/run/postern.sock  [./var/run/postern.sock] operator control
 *                                   socket (posternctl); a change needs a restart
 *     tracking: ./var/spool/t.db    [SPOOL/tracking.db] message tracking database
 *   tracking:                       (docs/tracking.md)
 *     max_age: 720h                 [720h = 30 days] events older than this are purged; 0 = none
 *     max_size: 1G                  [1G] oldest events purged above this; 0 = none
 *   relay_domains: [example.com, .example.org]   [empty] ".x" = any subdomain of x
 *   listeners:                      [one: InboundMail, public, 127.0.0.1:2525]
 *     - name: InboundMail           (required, unique)
 *       type: public                [public] public | private
 *       address: 127.0.0.1          [127.0.0.1] IPv4 or IPv6 literal
 *       port: 2525                  [2525] 1..65535
 *       hostname: mx.example.com    [top-level hostname] shown in banner/EHLO
 *       tls:                        [none] STARTTLS offered when present
 *         certificate: cert.pem     (required in tls)
 *         key: key.pem              (required in tls)
 *   limits:
 *     max_message_size: 10M         [10M] SIZE, enforced while streaming
 *     max_recipients: 100           [100] per message (RFC 5321 4.5.3.1.8 minimum)
 *     max_command_line: 512         [512] octets incl. CRLF (RFC 5321 4.5.3.1.4)
 *     max_text_line: 1000           [1000] octets incl. CRLF (RFC 5321 4.5.3.1.6)
 *     max_connections: 1000         [1000] concurrent, per listener
 *     max_errors: 10                [10] protocol errors before disconnect
 *     max_mime_filename: 255        [255] longest MIME attachment filename; 0 = unchecked
 *     max_sender_length: 256        [256] MAIL FROM path incl. <> (RFC 5321 4.5.3.1.3)
 *     min_data_rate: 1000           [1000] bytes/s during DATA/BDAT; 0 = none
 *     min_data_rate_window: 10s     [10s] the rate is measured over this window
 *     min_data_rate_grace: 30s      [30s] no check in a transfer's first seconds
 *     max_connection_rate: 0        [0] connections per minute per IP; 0 = unlimited
 *   timeouts:
 *     command: 5m                   [5m] waiting for a command (RFC 5321 4.5.3.2.7)
 *     data: 5m                      [5m] between data blocks in DATA/BDAT
 *     tls_handshake: 1m             [1m]
 *     session: 30m                  [30m] deadline for a whole session
 *   spool:
 *     memory_threshold: 256K        [256K] bodies above this stream to files
 *     min_free_space: 100M          [100M] below this MAIL gets 452 4.3.1
 *   resource_conservation:          (docs/protection.md)
 *     memory_limit: 2G              [0] RSS that counts as 100%; 0 = physical memory
 *     backlog_limit: 100000         [100000] spooled messages that count as 100%
 *     memory_start: 75              [75] percent: tarpit from here
 *     memory_halt: 90               [90] percent: refuse mail from here
 *     disk_start: 75                [0] spool filesystem used, percent; 0/0 = off
 *     disk_halt: 90                 [0]
 *     backlog_start: 50             [50]
 *     backlog_halt: 90              [90]
 *     backlog_suspend: 95           [95] listeners stop accepting from here
 *     backlog_resume: 80            [80] and accept again below here
 *     hysteresis: 5                 [5] points below a threshold before leaving
 *     alert_command: /path          [none] run (no shell) on every change
 *     test_pressure_file: /path     [none] testing aid: pressures read from it
 *   resolver:
 *     servers: [127.0.0.1:53]       [from /etc/resolv.conf] "ip" or "ip:port"
 *     timeout: 2s                   [2s] per query
 *     attempts: 2                   [2]
 *   smtp_routes:                    [none] receiving domain -> destination hosts
 *     - domain: example.com         (required) exact, ".example.com" (any
 *                                   subdomain), or ALL (the default route)
 *       hosts:                      (required) a list, or USEDNS (deliver by MX),
 *                                   or /dev/null (drop, logged)
 *         - host: 192.168.0.10      (required) IPv4/IPv6 literal or host name
 *           port: 25                [25]
 *           priority: 0             [0] 0..65535, lowest first; equal = round robin
 *   destination_controls:           per receiving domain; "default" always exists
 *     - domain: default             (required) "default", exact or ".suffix"
 *       max_connections: 20         [20] concurrent outbound connections
 *       max_messages_per_connection: 50   [50]
 *       max_recipients_per_message: 100   [100] RCPTs in one transaction
 *       tls: preferred              [preferred] none | preferred | required
 *       bounce_profile: default     [default]
 *   bounce_profiles:                "default" always exists
 *     - name: default               (required)
 *       max_retries: 100            [100]
 *       max_queue_time: 72h         [72h]
 *       initial_retry: 60s          [60s]
 *       max_retry: 1h               [1h] waits double from initial to max
 *   sender_groups:                  predefined, always present (members empty
 *                                   unless configured): WHITELIST, BLACKLIST,
 *                                   SUSPECTLIST, UNKNOWNLIST, RELAYLIST;
 *                                   ALLOWED_LIST = WHITELIST, BLOCKED_LIST = BLACKLIST
 *     - name: WHITELIST             (required)
 *       policy: TRUSTED             (required for new groups) a mail flow policy
 *       members: [10.0.0.0/8, "10.1.1.10-20", "10.1.1.", 2001:db8::/32,
 *                 mx.example.com, .example.com, "SBRS[-10:-3]", "SBRS[none]",
 *                 "dnslist[zen.example]", ALL]
 *       ptr_missing: false          [false] match hosts without a PTR record
 *       ptr_tempfail: false         [false] match when the PTR lookup failed temporarily
 *       ptr_mismatch: false         [false] match when the PTR name is not forward-confirmed
 *   mail_flow_policies:             predefined: TRUSTED, BLOCKED, THROTTLED,
 *                                   ACCEPTED, RELAYED (appliance defaults)
 *     - name: THROTTLED             (required)
 *       access: accept              accept | reject | tcprefuse | relay | continue
 *       reject_at_rcpt: false       REJECT at RCPT (5.7.1) instead of the banner
 *       max_message_size: 1M
 *       max_concurrent_connections: 10   from one IP
 *       max_messages_per_connection: 10
 *       max_recipients_per_message: 20
 *       max_recipients_per_hour: 20      0 = unlimited
 *       rate_limit_code: 452
 *       rate_limit_text: "Too many recipients received this hour"
 *       banner_code: 220
 *       banner_text: "ESMTP"        $Hostname $Group $RemoteIP expanded
 *       banner_hostname: ""         "" = the listener's hostname
 *       reject_code: 554
 *       reject_text: "Access denied"
 *       tls: preferred              off | preferred | required
 *     (keys not given in a predefined policy keep its predefined values)
 *   reputation:
 *     lists:                        [none] DNS block/allow lists
 *       - zone: zen.example         (required)
 *         type: block               block | allow
 *         weight: -5.0              [-5.0 for block, +5.0 for allow] added to the score
 *         codes: [127.0.0.2]        [any 127.0.0.0/8 answer] return codes that count
 *     lookup_private: false         [false] look up loopback/private ranges too
 *   connection_dns:
 *     deadline: 10s                 [10s] all pre-banner lookups of one connection
 *   listeners[].hat: [WHITELIST, BLACKLIST, SUSPECTLIST, UNKNOWNLIST]
 *                                   ordered sender groups; ALL is always last;
 *                                   default by type: public as listed here,
 *                                   private [RELAYLIST] (ALL -> BLOCKED)
 *   delivery:
 *     helo_name: mx.example.com     [hostname]
 *     connect_timeout: 30s          [30s]
 *     command_timeout: 5m           [5m] RFC 5321 4.5.3.2
 *     data_block_timeout: 3m        [3m]
 *     data_done_timeout: 10m        [10m]
 *     bounce_max_original: 100K     [100K] DSNs include the original up to this size
 */
#ifndef POSTERN_CORE_CONFIG_H
#define POSTERN_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum listener_type { LISTENER_PUBLIC, LISTENER_PRIVATE };

struct cfg_listener {
    char *name;
    enum listener_type type;
    char *address; /* numeric IPv4/IPv6 literal */
    uint16_t port;
    char *hostname; /* never NULL after load: defaults to config hostname */
    char *tls_cert; /* NULL when no TLS */
    char *tls_key;
    char **hat; /* ordered sender group names (canonical); never empty after load */
    size_t nhat;
};

struct cfg_limits {
    uint64_t max_message_size;
    uint32_t max_recipients;
    uint32_t max_command_line;
    uint32_t max_text_line;
    uint32_t max_connections;
    uint32_t max_errors;
    uint32_t max_mime_filename;    /* octets; 0 = unchecked */
    uint32_t max_sender_length;    /* octets of the reverse-path incl. <> */
    uint32_t min_data_rate;        /* bytes/s during DATA/BDAT; 0 = no minimum */
    uint64_t min_data_rate_window; /* ms: the rate is measured over this */
    uint64_t min_data_rate_grace;  /* ms: not checked before this much of a transfer */
    uint32_t max_connection_rate;  /* per minute per client IP; 0 = unlimited */
};

struct cfg_timeouts { /* milliseconds */
    uint64_t command;
    uint64_t data;
    uint64_t tls_handshake;
    uint64_t session; /* whole-session deadline */
};

struct cfg_spool {
    uint64_t memory_threshold;
    uint64_t min_free_space;
};

/* resource_conservation (policy/rescon.h): thresholds are percentages. */
struct cfg_rescon {
    uint64_t memory_limit;  /* bytes of RSS that are 100%; 0 = physical memory */
    uint32_t backlog_limit; /* spooled messages that are 100% */
    /* a start/halt pair of 0/0 turns that pressure off */
    uint32_t memory_start, memory_halt;
    uint32_t disk_start, disk_halt;
    uint32_t backlog_start, backlog_halt;
    uint32_t backlog_suspend, backlog_resume;
    uint32_t hysteresis;      /* points below a threshold before leaving its state */
    char *alert_command;      /* NULL = none; run with execve, never a shell */
    char *test_pressure_file; /* NULL = measure; testing aid */
};

struct cfg_resolver {
    char **servers; /* "ip" or "ip:port"; empty = system resolv.conf */
    size_t nservers;
    uint64_t timeout; /* ms */
    uint32_t attempts;
};

enum cfg_route_kind { ROUTE_HOSTS, ROUTE_USEDNS, ROUTE_DEVNULL };

struct cfg_route_host {
    char *host; /* IP literal or host name (lower-cased) */
    uint16_t port;
    uint16_t priority;
};

struct cfg_route {
    char *domain; /* lower-cased; ".suffix", exact, or "ALL" */
    enum cfg_route_kind kind;
    struct cfg_route_host *hosts; /* sorted by priority (stable) */
    size_t nhosts;
};

enum cfg_tls_policy { CFG_TLS_NONE, CFG_TLS_PREFERRED, CFG_TLS_REQUIRED };

struct cfg_dest_control {
    char *domain; /* "default", exact, or ".suffix" (lower-cased) */
    uint32_t max_connections;
    uint32_t max_messages_per_connection;
    uint32_t max_recipients_per_message;
    enum cfg_tls_policy tls;
    char *bounce_profile; /* name of an entry in bounce_profiles */
};

struct cfg_bounce_profile {
    char *name;
    uint32_t max_retries;
    uint64_t max_queue_time; /* ms */
    uint64_t initial_retry;  /* ms */
    uint64_t max_retry;      /* ms */
};

struct cfg_delivery {
    char *helo_name;          /* defaults to hostname */
    uint64_t connect_timeout; /* ms */
    uint64_t command_timeout;
    uint64_t data_block_timeout;
    uint64_t data_done_timeout;
    uint64_t bounce_max_original; /* bytes */
};

struct cfg_sender_group {
    char *name;     /* stored upper-case (names are case-insensitive); aliases resolved */
    char *policy;   /* mail flow policy name */
    char **members; /* validated member strings (policy/member.h syntax) */
    size_t nmembers;
    bool ptr_missing, ptr_tempfail, ptr_mismatch;
};

enum cfg_access {
    CFG_ACCESS_ACCEPT,
    CFG_ACCESS_REJECT,
    CFG_ACCESS_TCPREFUSE,
    CFG_ACCESS_RELAY,
    CFG_ACCESS_CONTINUE
};
enum cfg_policy_tls { CFG_PTLS_OFF, CFG_PTLS_PREFERRED, CFG_PTLS_REQUIRED };

struct cfg_mail_flow_policy {
    char *name;
    enum cfg_access access;
    bool reject_at_rcpt;
    uint64_t max_message_size;
    uint32_t max_concurrent_connections;
    uint32_t max_messages_per_connection;
    uint32_t max_recipients_per_message;
    uint32_t max_recipients_per_hour; /* 0 = unlimited */
    uint32_t rate_limit_code;
    char *rate_limit_text;
    uint32_t banner_code;
    char *banner_text;
    char *banner_hostname; /* "" = listener's */
    uint32_t reject_code;
    char *reject_text;
    enum cfg_policy_tls tls;
};

enum cfg_dnslist_kind { DNSLIST_BLOCK, DNSLIST_ALLOW };

struct cfg_dnslist {
    char *zone;
    enum cfg_dnslist_kind kind;
    double weight;
    char **codes; /* IPv4 literals; empty = any 127.0.0.0/8 */
    size_t ncodes;
};

struct cfg_reputation {
    struct cfg_dnslist *lists;
    size_t nlists;
    bool lookup_private;
};

struct config {
    int refs;
    char *file; /* path it was loaded from */
    char *hostname;
    char *user;
    char *spool_dir;
    char *log_dir;
    char *control_path;  /* paths.control: the control socket */
    char *tracking_path; /* paths.tracking: NULL = spool_dir/tracking.db */
    struct {
        uint64_t max_age;  /* tracking.max_age: ms; 0 = no limit */
        uint64_t max_size; /* tracking.max_size: bytes; 0 = no limit */
    } tracking;
    uint64_t status_interval; /* logging.status_interval: ms between status lines */
    char **relay_domains;     /* lower-cased; a leading '.' means "any subdomain" */
    size_t nrelay_domains;
    struct cfg_listener *listeners;
    size_t nlisteners;
    struct cfg_limits limits;
    struct cfg_timeouts timeouts;
    struct cfg_spool spool;
    struct cfg_rescon rescon; /* resource_conservation */
    struct cfg_resolver resolver;
    struct cfg_route *routes; /* in file order */
    size_t nroutes;
    struct cfg_dest_control *dest_controls; /* [0] is "default" */
    size_t ndest_controls;
    struct cfg_bounce_profile *bounce_profiles; /* [0] is "default" */
    size_t nbounce_profiles;
    struct cfg_delivery delivery;
    struct cfg_sender_group *sender_groups; /* predefined ones first */
    size_t nsender_groups;
    struct cfg_mail_flow_policy *policies; /* predefined ones first */
    size_t npolicies;
    struct cfg_reputation reputation;
    uint64_t connection_dns_deadline; /* ms */
};

struct config_error {
    unsigned line;   /* 1-based; 0 when not tied to a position (e.g. open failed) */
    unsigned column; /* 1-based */
    char msg[256];
};

/* Load and validate FILE. Returns a config with one reference, or NULL with
 * *err filled in. */
struct config *config_load(const char *file, struct config_error *err);
/* Same, from an in-memory buffer (unit tests, fuzzing); name is used in messages. */
struct config *config_load_buffer(const char *name, const char *buf, size_t len,
                                  struct config_error *err);
/* Format an error as "FILE:LINE:COLUMN: msg" into out. */
void config_error_format(const struct config_error *err, const char *file, char *out,
                         size_t outlen);

struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Print the effective configuration (defaults filled in) as YAML that
 * config_load accepts and that loads to an equal configuration. */
void config_dump(const struct config *cfg, FILE *out);

/* True if domain (len bytes, any case, no trailing dot) is a relay domain:
 * equal to an entry, or below an entry that starts with '.'. */
bool config_is_relay_domain(const struct config *cfg, const char *domain, size_t len);

const struct cfg_sender_group *config_sender_group(const struct config *cfg, const char *name);
const struct cfg_mail_flow_policy *config_policy(const struct config *cfg, const char *name);

/* The route for a recipient domain (lower-case): an exact entry wins, then
 * the longest ".suffix" entry, then ALL; NULL when none applies (deliver
 * by MX). */
const struct cfg_route *config_route_for(const struct config *cfg, const char *domain);
/* The destination controls for a domain: exact, longest suffix, default. */
const struct cfg_dest_control *config_dest_control_for(const struct config *cfg,
                                                       const char *domain);
/* A bounce profile by name (never NULL for a name a dest control uses). */
const struct cfg_bounce_profile *config_bounce_profile(const struct config *cfg, const char *name);

#endif
