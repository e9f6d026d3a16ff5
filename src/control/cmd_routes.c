/*
 * cmd_routes: `smtproutes print|new|edit|delete`: the SMTP routes
 * (smtp_routes in the configuration) viewed and changed at run time, the
 * way the appliance's smtproutes command does.
 *
 *   {"cmd": "smtproutes", "args": {"action": "print"}}
 *   {"cmd": "smtproutes", "args": {"action": "new"|"edit", "domain": D,
 *                                  "hosts": ["HOST[:PORT][/PRIORITY]", ...]}}
 *      hosts may instead be ["USEDNS"] or ["/dev/null"]; an IPv6 literal
 *      with a port is written [2001:db8::1]:2525
 *   {"cmd": "smtproutes", "args": {"action": "delete", "domain": D}, "confirm": true}
 *
 * Design: one validation path, the config loader's. A change never edits
 * a struct config (they are immutable): the handler builds the new routes
 * array (the current entries shared, the one new entry its own), dumps a
 * temporary shallow copy of the effective configuration with that array
 * through config_dump() into memory, and loads the text back with
 * config_load_buffer(). Whatever the loader refuses (a bad host name, a
 * duplicate domain, too many hosts) is refused here with its message, and
 * nothing changed. Only the numbers (port, priority) are range-checked
 * before, because struct cfg_route_host cannot hold an out-of-range value.
 *
 * The accepted text is written to FILE.tmp and fsync'd; the new config is
 * applied through the daemon's own reload path (ctx->apply_config, the
 * same daemon_apply_config() that SIGHUP uses); only then is the previous
 * file kept as FILE.bak (a hard link) and FILE.tmp renamed over FILE, and
 * the directory fsync'd. So a failure before the apply leaves file and
 * daemon untouched, and a crash at any point leaves FILE either old or new.
 * The rewritten file comes from the effective configuration: comments and
 * the layout of the previous file are not kept (libyaml cannot keep them);
 * FILE.bak has them.
 *
 * `delete` is destructive: it needs "confirm": true (posternctl --yes or its
 * question). Every change logs "SMTP route for D added|changed|deleted by
 * operator (uid N)".
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why 255: the longest DNS name; a longer domain or host is refused early. */
#define ROUTE_NAME_MAX 255

enum route_action { RA_PRINT, RA_NEW, RA_EDIT, RA_DELETE };

static const char *const action_names[] = {"print", "new", "edit", "delete"};
static const char *const action_done[] = {"", "added", "changed", "deleted"};

/* ---- print ---------------------------------------------------------------- */

json_t *ctl_route_json(const struct cfg_route *r)
{
    static const char *const kinds[] = {
        [ROUTE_HOSTS] = "hosts", [ROUTE_USEDNS] = "usedns", [ROUTE_DEVNULL] = "devnull"};
    json_t *hosts = json_array();
    for (size_t i = 0; i < r->nhosts; i++)
        json_array_append_new(hosts, json_pack("{s:s, s:i, s:i}", "host", r->hosts[i].host, "port",
                                               (int)r->hosts[i].port, "priority",
                                               (int)r->hosts[i].priority));
    return json_pack("{s:s, s:s, s:o}", "domain", r->domain, "kind", kinds[r->kind], "hosts",
                     hosts);
}

static enum ctl_status routes_print(const struct ctl_ctx *ctx, struct ctl_call *call)
{
    json_t *list = json_array();
    for (size_t i = 0; i < ctx->cfg->nroutes; i++)
        json_array_append_new(list, ctl_route_json(&ctx->cfg->routes[i]));
    call->result = json_pack("{s:s, s:o}", "file", ctx->cfg->file, "routes", list);
    return CTL_DONE;
}

/* ---- arguments ------------------------------------------------------------- */

/* A decimal number in [min, max], the whole of s[0..len). */
static bool parse_num(const char *s, size_t len, unsigned long min, unsigned long max,
                      unsigned long *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    *out = v;
    return v >= min && v <= max;
}

/* Where the host part of "HOST[:PORT]" ends and the port begins (or NULL):
 * "[v6]:port", "v6" (two colons or more: no port), "host:port". */
static bool split_host_port(const char *s, size_t len, const char **host, size_t *hlen,
                            const char **port, size_t *plen)
{
    const char *colon;
    *port = NULL;
    *plen = 0;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return false;
        *host = s + 1;
        *hlen = (size_t)(close - s - 1);
        if (close + 1 == s + len)
            return true;
        if (close[1] != ':')
            return false;
        *port = close + 2;
        *plen = (size_t)(s + len - *port);
        return true;
    }
    *host = s;
    *hlen = len;
    colon = memchr(s, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', (size_t)(s + len - colon - 1)) == NULL) {
        *hlen = (size_t)(colon - s);
        *port = colon + 1;
        *plen = (size_t)(s + len - *port);
    }
    return true;
}

/* "HOST[:PORT][/PRIORITY]" into h (h->host allocated); false with err set.
 * The host name itself is checked by the loader. */
static bool parse_host_spec(const char *spec, struct cfg_route_host *h, char *err, size_t errlen)
{
    const char *slash = strrchr(spec, '/'), *host, *port;
    size_t len = slash ? (size_t)(slash - spec) : strlen(spec), hlen, plen;
    unsigned long pnum = 25, prio = 0;
    if (slash != NULL && !parse_num(slash + 1, strlen(slash + 1), 0, 65535, &prio))
        return snprintf(err, errlen, "'%.300s': priority must be 0 to 65535", spec), false;
    if (!split_host_port(spec, len, &host, &hlen, &port, &plen) || hlen == 0 ||
        hlen > ROUTE_NAME_MAX)
        return snprintf(err, errlen, "'%.300s': expected HOST[:PORT][/PRIORITY]", spec), false;
    if (port != NULL && !parse_num(port, plen, 1, 65535, &pnum))
        return snprintf(err, errlen, "'%.300s': port must be 1 to 65535", spec), false;
    h->host = xmalloc(hlen + 1);
    memcpy(h->host, host, hlen);
    h->host[hlen] = '\0';
    h->port = (uint16_t)pnum;
    h->priority = (uint16_t)prio;
    return true;
}

static void route_release(struct cfg_route *r)
{
    for (size_t i = 0; i < r->nhosts; i++)
        free(r->hosts[i].host);
    free(r->hosts);
    r->hosts = NULL;
    r->nhosts = 0;
}

/* args.hosts: a list of host specs, or ["USEDNS"] / ["/dev/null"]. */
static bool parse_hosts(struct ctl_call *call, struct cfg_route *r)
{
    const json_t *list = json_object_get(call->args, "hosts"), *v;
    size_t n = json_array_size(list), i;
    if (!json_is_array(list) || n == 0)
        return ctl_error(call, "argument 'hosts' must be a non-empty list"), false;
    for (i = 0; i < n; i++)
        if (!json_is_string(json_array_get(list, i)))
            return ctl_error(call, "argument 'hosts' must be a list of strings"), false;
    const char *first = json_string_value(json_array_get(list, 0));
    if (strcasecmp(first, "USEDNS") == 0 || strcmp(first, "/dev/null") == 0) {
        if (n > 1)
            return ctl_error(call, "%s stands alone, without other hosts", first), false;
        r->kind = strcmp(first, "/dev/null") == 0 ? ROUTE_DEVNULL : ROUTE_USEDNS;
        return true;
    }
    r->kind = ROUTE_HOSTS;
    r->hosts = xcalloc(n, sizeof(*r->hosts));
    for (i = 0; i < n; i++) {
        v = json_array_get(list, i);
        if (!parse_host_spec(json_string_value(v), &r->hosts[i], call->err, sizeof(call->err)))
            return route_release(r), false;
        r->nhosts++;
    }
    return true;
}

/* args.domain as a route key: lower-cased, or "ALL" in any case. */
static bool arg_route_domain(struct ctl_call *call, char *buf, size_t len)
{
    const char *v;
    if (!ctl_arg_string(call, "domain", &v))
        return false;
    if (v == NULL || *v == '\0' || strlen(v) >= len)
        return ctl_error(call, "argument 'domain' must be a domain, .domain or ALL"), false;
    if (strcasecmp(v, "ALL") == 0) {
        snprintf(buf, len, "ALL");
        return true;
    }
    size_t n = strlen(v);
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)tolower((unsigned char)v[i]);
    return true;
}

static bool arg_action(struct ctl_call *call, enum route_action *out)
{
    const char *v;
    if (!ctl_arg_string(call, "action", &v))
        return false;
    for (size_t i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
        if (strcmp(v ? v : "print", action_names[i]) == 0) {
            *out = (enum route_action)i;
            return true;
        }
    return ctl_error(call, "unknown action '%.64s'; use print, new, edit or delete", v), false;
}

/* ---- the new configuration ---------------------------------------------- */

static size_t route_index(const struct config *cfg, const char *domain)
{
    size_t i = 0;
    while (i < cfg->nroutes && strcmp(cfg->routes[i].domain, domain) != 0)
        i++;
    return i;
}

/* The routes after the change: shallow copies of the current ones, with
 * entry idx replaced by nr (edit), removed (delete) or nr appended (new). */
static struct cfg_route *routes_after(const struct config *cfg, enum route_action a, size_t idx,
                                      const struct cfg_route *nr, size_t *n)
{
    struct cfg_route *arr = xcalloc(cfg->nroutes + 1, sizeof(*arr));
    *n = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (i == idx && a == RA_DELETE)
            continue;
        arr[(*n)++] = (i == idx && a == RA_EDIT) ? *nr : cfg->routes[i];
    }
    if (a == RA_NEW)
        arr[(*n)++] = *nr;
    return arr;
}

/* The whole file's text for cfg with its routes replaced; malloc'd. */
static char *config_text(const struct config *cfg, struct cfg_route *routes, size_t n, unsigned uid,
                         size_t *len)
{
    struct config tmp = *cfg; /* shallow: only read by config_dump */
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        return NULL;
    tmp.routes = routes;
    tmp.nroutes = n;
    fprintf(f,
            "# Written by posternd (smtproutes, operator uid %u) from the effective\n"
            "# configuration: comments of the previous file are not kept (see .bak).\n",
            uid);
    config_dump(&tmp, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* Build, dump and reload: the one validation path. */
static struct config *config_with_routes(struct ctl_ctx *ctx, struct ctl_call *call,
                                         enum route_action a, size_t idx,
                                         const struct cfg_route *nr, char **text, size_t *len)
{
    struct config_error cerr;
    size_t n;
    struct cfg_route *arr = routes_after(ctx->cfg, a, idx, nr, &n);
    *text = config_text(ctx->cfg, arr, n, call->uid, len);
    free(arr);
    if (*text == NULL)
        return ctl_error(call, "cannot format the configuration: %s", strerror(errno)), NULL;
    struct config *cfg = config_load_buffer(ctx->cfg->file, *text, *len, &cerr);
    if (cfg == NULL) {
        config_error_format(&cerr, "new configuration", call->err, sizeof(call->err));
        free(*text);
        *text = NULL;
    }
    return cfg;
}

/* ---- the file ---------------------------------------------------------------- */

static int write_fully(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* file + suffix into out; false when it does not fit. */
static bool path_suffix(char *out, size_t outlen, const char *file, const char *suffix)
{
    size_t n = strlen(file), m = strlen(suffix);
    if (n + m >= outlen)
        return false;
    memcpy(out, file, n);
    memcpy(out + n, suffix, m + 1);
    return true;
}

/* FILE.tmp with text, the mode of FILE, fsync'd. */
static bool write_tmp(const char *file, const char *text, size_t len, struct ctl_call *call)
{
    char tmp[PATH_MAX];
    struct stat st;
    mode_t mode = stat(file, &st) == 0 ? (st.st_mode & 07777) : 0640;
    if (!path_suffix(tmp, sizeof(tmp), file, ".tmp"))
        return ctl_error(call, "configuration file name too long"), false;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return ctl_error(call, "cannot write %s: %s", tmp, strerror(errno)), false;
    if (fchmod(fd, mode) < 0 || write_fully(fd, text, len) < 0 || fsync(fd) < 0) {
        ctl_error(call, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return false;
    }
    if (close(fd) < 0) {
        ctl_error(call, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return false;
    }
    return true;
}

static void fsync_dir_of(const char *file)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - file) : 1, slash ? file : ".");
    int fd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* FILE -> FILE.bak (hard link), FILE.tmp -> FILE. */
static int commit_file(const char *file, char *err, size_t errlen)
{
    char tmp[PATH_MAX], bak[PATH_MAX];
    if (!path_suffix(tmp, sizeof(tmp), file, ".tmp") ||
        !path_suffix(bak, sizeof(bak), file, ".bak"))
        return snprintf(err, errlen, "configuration file name too long"), -1;
    if ((unlink(bak) < 0 && errno != ENOENT) || (link(file, bak) < 0 && errno != ENOENT))
        maillog(LOG_WARNING, "Cannot keep %s as %s: %s", file, bak, strerror(errno));
    if (rename(tmp, file) < 0) {
        snprintf(err, errlen, "cannot rename %.200s to %.200s: %s", tmp, file, strerror(errno));
        unlink(tmp);
        return -1;
    }
    fsync_dir_of(file);
    return 0;
}

/* ---- change ------------------------------------------------------------------ */

/* Validate, write, apply, commit; the new config's reference passes on. */
static enum ctl_status routes_change(struct ctl_ctx *ctx, struct ctl_call *call,
                                     enum route_action a, size_t idx, const struct cfg_route *nr)
{
    char *text, file[PATH_MAX], tmp[PATH_MAX], err[600] = "no way to apply it";
    size_t len;
    if (!path_suffix(file, sizeof(file), ctx->cfg->file, "") ||
        !path_suffix(tmp, sizeof(tmp), file, ".tmp"))
        return ctl_error(call, "configuration file name too long");
    struct config *cfg = config_with_routes(ctx, call, a, idx, nr, &text, &len);
    if (cfg == NULL)
        return CTL_ERROR;
    bool written = write_tmp(file, text, len, call);
    free(text);
    if (!written) {
        config_unref(cfg);
        return CTL_ERROR;
    }
    if (ctx->apply_config == NULL || ctx->apply_config(cfg, err, sizeof(err)) < 0) {
        unlink(tmp);
        config_unref(cfg);
        return ctl_error(call, "not applied: %.400s", err);
    }
    ctx->cfg = cfg; /* the old one may be gone now */
    if (commit_file(file, err, sizeof(err)) < 0)
        return ctl_error(call, "applied, but not saved: %.400s", err);
    return CTL_DONE;
}

static enum ctl_status routes_modify(struct ctl_ctx *ctx, struct ctl_call *call,
                                     enum route_action a)
{
    char domain[ROUTE_NAME_MAX + 1];
    struct cfg_route nr = {.domain = domain};
    if (!arg_route_domain(call, domain, sizeof(domain)))
        return CTL_ERROR;
    size_t idx = route_index(ctx->cfg, domain);
    if (a == RA_NEW && idx < ctx->cfg->nroutes)
        return ctl_error(call, "%s already has an SMTP route (use edit)", domain);
    if (a != RA_NEW && idx == ctx->cfg->nroutes)
        return ctl_error(call, "no SMTP route for %s", domain);
    if (a == RA_DELETE && !call->confirm)
        return ctl_error(call, "smtproutes delete is destructive: send \"confirm\": true "
                               "(posternctl --yes)");
    if (a != RA_DELETE && !parse_hosts(call, &nr))
        return CTL_ERROR;
    enum ctl_status st = routes_change(ctx, call, a, idx, &nr);
    route_release(&nr);
    if (st != CTL_DONE)
        return st;
    maillog(LOG_INFO, "SMTP route for %s %s by operator (uid %u)", domain, action_done[a],
            call->uid);
    idx = route_index(ctx->cfg, domain);
    call->result = json_pack(
        "{s:s, s:s, s:s, s:o}", "action", action_names[a], "domain", domain, "file", ctx->cfg->file,
        "route", idx < ctx->cfg->nroutes ? ctl_route_json(&ctx->cfg->routes[idx]) : json_null());
    return CTL_DONE;
}

enum ctl_status ctl_cmd_smtproutes(struct ctl_ctx *ctx, struct ctl_call *call)
{
    enum route_action a;
    if (!arg_action(call, &a))
        return CTL_ERROR;
    return a == RA_PRINT ? routes_print(ctx, call) : routes_modify(ctx, call, a);
}
