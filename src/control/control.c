/*
 * control: the control socket, its connections, the framing and the command
 * table (see control.h for the protocol and control_int.h for handlers).
 *
 * Design. One evconnlistener on the UNIX socket; each accepted connection is
 * a bufferevent. Requests are lines: a line is taken from the input buffer
 * only once it is complete and within CTL_MAX_REQUEST, parsed with jansson,
 * dispatched through `commands[]`, and its one-line answer queued. While a
 * request waits for an asynchronous answer (DNS), reading stops, so answers
 * leave in request order and a client cannot pile up work.
 *
 * States of a connection: reading (no request in flight), pending (one
 * request in flight, reading disabled), closing (the last answer is being
 * written, then the connection is freed). Invariant: at most one request in
 * flight per connection; its id is unique for the daemon's life, so a late
 * completion for a connection that is gone finds nothing.
 *
 * Trust: nothing from the socket is trusted beyond the peer's credentials;
 * request size, connection count and idle time are bounded.
 */
#include "control/control.h"

#include "control/control_int.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "queue/scheduler.h"

#include <errno.h>
#include <pwd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Why 64 KiB: the largest real request is a command with a domain name; a
 * longer line is a confused client, and it is refused before it is parsed. */
#define CTL_MAX_REQUEST (64 * 1024)
/* Why 32: operators and their scripts are few; this bounds the memory a
 * local user in the daemon's group can pin by opening connections. */
#define CTL_MAX_CONNS 32
/* Why 60 s: an interactive posternctl sends its request at once; an idle
 * connection is a stuck script. Pending DNS answers are bounded by the
 * resolver's own timeouts, and reading is off meanwhile. */
#define CTL_IDLE_TIMEOUT_S 60
#define CTL_BACKLOG        16

enum ctl_flags {
    CTL_DESTRUCTIVE = 1, /* needs "confirm": true (posternctl asks first) */
    CTL_LOGGED = 2       /* changes state: one log line per use */
};

struct ctl_cmd {
    const char *name;
    ctl_handler_fn fn;
    unsigned flags;
    const char *help;
};

static enum ctl_status ctl_cmd_help(struct ctl_ctx *ctx, struct ctl_call *call);

static const struct ctl_cmd commands[] = {
    {"status", ctl_cmd_status, 0, "counters (Reset/Uptime/Lifetime) and gauges"},
    {"resetcounters", ctl_cmd_resetcounters, CTL_DESTRUCTIVE | CTL_LOGGED,
     "start the Reset column (and host counters) from zero"},
    {"tophosts", ctl_cmd_tophosts, 0,
     "top 20 destinations by active_rcpts|conn_out|deliv_rcpts|hard_bounces|soft_bounces"},
    {"hoststatus", ctl_cmd_hoststatus, 0, "one destination: state, counters, gauges, errors"},
    {"delivernow", ctl_cmd_delivernow, CTL_LOGGED,
     "retry now the waiting recipients of one domain, or all"},
    {"workqueue", ctl_cmd_workqueue, 0,
     "work queue status; pause|resume suspend or resume all delivery"},
    {"showrecipients", ctl_cmd_showrecipients, 0,
     "queued recipients: all, by recipient host, or by envelope sender"},
    {"deleterecipients", ctl_cmd_deleterecipients, CTL_DESTRUCTIVE | CTL_LOGGED,
     "remove queued recipients (by host, sender, or all) without a bounce"},
    {"bouncerecipients", ctl_cmd_bouncerecipients, CTL_DESTRUCTIVE | CTL_LOGGED,
     "hard-bounce queued recipients (by host, sender, or all) with a DSN"},
    {"redirectrecipients", ctl_cmd_redirectrecipients, CTL_DESTRUCTIVE | CTL_LOGGED,
     "send all queued mail to HOST[:PORT] from now on, or 'clear'"},
    {"showmessage", ctl_cmd_showmessage, 0, "the stored envelope of one message by MID"},
    {"suspenddel", ctl_cmd_suspenddel, CTL_LOGGED,
     "stop starting deliveries (all, or one domain); mail stays queued"},
    {"resumedel", ctl_cmd_resumedel, CTL_LOGGED, "start deliveries again (all, or one domain)"},
    {"suspendlistener", ctl_cmd_suspendlistener, CTL_LOGGED,
     "stop accepting connections on one listener, or all"},
    {"resumelistener", ctl_cmd_resumelistener, CTL_LOGGED,
     "accept connections again on one listener, or all"},
    {"nslookup", ctl_cmd_nslookup, 0, "A and AAAA of a name, or PTR of an IP, via the daemon"},
    {"dig", ctl_cmd_dig, 0, "one record type of a name via the daemon's resolver"},
    {"tail", ctl_cmd_tail, 0, "the last lines of mail_logs"},
    {"trace", ctl_cmd_trace, 0, "the connection decision for a client IP, without a connection"},
    {"smtpping", ctl_cmd_smtpping, 0,
     "test a destination: DNS, connect, banner, EHLO, STARTTLS, MAIL and RCPT (no DATA)"},
    {"smtproutes", ctl_cmd_smtproutes, 0,
     "print the SMTP routes; new|edit|delete one (saved to the file, applied at once)"},
    {"findevent", ctl_cmd_findevent, 0, "every event of the messages matching a tracking key"},
    {"help", ctl_cmd_help, 0, "the commands this daemon knows"},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

struct ctl_conn {
    struct control *ctl;
    struct bufferevent *bev;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    uint64_t req_id; /* in flight, or 0 */
    void *async;
    void (*cancel)(void *async);
    bool closing;
    struct ctl_conn *prev, *next;
};

struct control {
    struct event_base *base;
    struct evconnlistener *evl;
    char *path;
    dev_t dev; /* of the socket we bound, so we never unlink another's */
    ino_t ino;
    struct ctl_ctx ctx;
    struct ctl_conn *conns;
    size_t nconns;
    uint64_t next_id;
};

/* ---- helpers for the command modules ----------------------------------- */

int64_t ctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_t *ctl_json_time(int64_t ms)
{
    return ms > 0 ? json_integer(ms / 1000) : json_null();
}

enum ctl_status ctl_error(struct ctl_call *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->err, sizeof(call->err), fmt, ap);
    va_end(ap);
    return CTL_ERROR;
}

bool ctl_arg_string(struct ctl_call *call, const char *key, const char **out)
{
    const json_t *v = json_object_get(call->args, key);
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        ctl_error(call, "argument '%s' must be a string", key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

bool ctl_arg_int(struct ctl_call *call, const char *key, json_int_t min, json_int_t max,
                 json_int_t def, json_int_t *out)
{
    const json_t *v = json_object_get(call->args, key);
    *out = def;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        ctl_error(call, "argument '%s' must be an integer from %lld to %lld", key, (long long)min,
                  (long long)max);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

/* ---- connections --------------------------------------------------------- */

static void conn_free(struct ctl_conn *c)
{
    struct control *ctl = c->ctl;
    if (c->cancel != NULL)
        c->cancel(c->async);
    bufferevent_free(c->bev);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctl->nconns--;
    free(c);
}

/* Queue one response line; the JSON is compact, so it has no newline. */
static void conn_send(struct ctl_conn *c, json_t *resp)
{
    char *text = json_dumps(resp, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(resp);
    if (text == NULL) {
        static const char oom[] = "{\"ok\":false,\"error\":\"cannot encode the answer\"}\n";
        bufferevent_write(c->bev, oom, sizeof(oom) - 1);
        return;
    }
    bufferevent_write(c->bev, text, strlen(text));
    bufferevent_write(c->bev, "\n", 1);
    free(text);
}

static void conn_send_error(struct ctl_conn *c, const char *msg)
{
    conn_send(c, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

static void conn_send_result(struct ctl_conn *c, json_t *result)
{
    conn_send(c, json_pack("{s:b, s:o}", "ok", 1, "result", result));
}

/* Answer, then free the connection once the answer is written. */
static void conn_close_after(struct ctl_conn *c, const char *msg)
{
    conn_send_error(c, msg);
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
}

static const struct ctl_cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void cmd_unknown(struct ctl_conn *c, const char *name)
{
    char msg[512];
    size_t n = (size_t)snprintf(msg, sizeof(msg), "unknown command '%.64s'; commands:", name);
    for (size_t i = 0; i < NCOMMANDS && n < sizeof(msg); i++)
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s %s", i ? "," : "", commands[i].name);
    conn_send_error(c, msg);
}

static void cmd_log(const struct ctl_conn *c, const struct ctl_cmd *cmd, const json_t *args)
{
    char *text = json_dumps(args, JSON_COMPACT | JSON_ENSURE_ASCII);
    char esc[300];
    log_escape(esc, sizeof(esc), text ? text : "", text ? strlen(text) : 0);
    maillog(LOG_INFO, "Control: %s %s by uid %u pid %d", cmd->name, esc, (unsigned)c->uid,
            (int)c->pid);
    free(text);
}

/* Run one parsed request; answers at once unless the handler is pending. */
static void conn_dispatch(struct ctl_conn *c, const char *name, const json_t *args, bool confirm)
{
    struct control *ctl = c->ctl;
    const struct ctl_cmd *cmd = cmd_find(name);
    struct ctl_call call = {
        .id = ++ctl->next_id, .args = args, .confirm = confirm, .uid = (unsigned)c->uid};
    if (cmd == NULL) {
        cmd_unknown(c, name);
        return;
    }
    if ((cmd->flags & CTL_DESTRUCTIVE) && !confirm) {
        snprintf(call.err, sizeof(call.err),
                 "%s is destructive: send \"confirm\": true (posternctl --yes)", cmd->name);
        conn_send_error(c, call.err);
        return;
    }
    if (cmd->flags & CTL_LOGGED)
        cmd_log(c, cmd, args);
    ctl->ctx.cfg = scheduler_config(ctl->ctx.sched);
    switch (cmd->fn(&ctl->ctx, &call)) {
    case CTL_DONE:
        conn_send_result(c, call.result);
        break;
    case CTL_ERROR:
        conn_send_error(c, call.err);
        break;
    case CTL_PENDING:
        c->req_id = call.id;
        c->async = call.async;
        c->cancel = call.cancel;
        bufferevent_disable(c->bev, EV_READ);
        break;
    }
}

/* Parse one request line and dispatch it. */
static void conn_request(struct ctl_conn *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *cmd, *args;
    json_t *empty = NULL;
    if (req == NULL || !json_is_object(req)) {
        conn_send_error(c, req ? "a request is a JSON object" : "malformed JSON request");
        json_decref(req);
        return;
    }
    cmd = json_object_get(req, "cmd");
    args = json_object_get(req, "args");
    if (!json_is_string(cmd)) {
        conn_send_error(c, "request without a \"cmd\" string");
    } else if (args != NULL && !json_is_object(args) && !json_is_null(args)) {
        conn_send_error(c, "\"args\" must be an object");
    } else {
        if (args == NULL || json_is_null(args))
            args = empty = json_object();
        conn_dispatch(c, json_string_value(cmd), args,
                      json_is_true(json_object_get(req, "confirm")));
    }
    json_decref(empty);
    json_decref(req);
}

/* Take every complete line while no request is in flight. */
static void conn_read_lines(struct ctl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->req_id == 0 && !c->closing) {
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            if (evbuffer_get_length(in) > CTL_MAX_REQUEST)
                conn_close_after(c, "request too long");
            return;
        }
        if ((size_t)eol.pos > CTL_MAX_REQUEST) {
            conn_close_after(c, "request too long");
            return;
        }
        char *line = xmalloc((size_t)eol.pos + 1);
        evbuffer_remove(in, line, (size_t)eol.pos);
        evbuffer_drain(in, 1);
        line[eol.pos] = '\0';
        size_t len = (size_t)eol.pos;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len > 0)
            conn_request(c, line, len);
        free(line);
    }
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    conn_read_lines(arg);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    struct ctl_conn *c = arg;
    if (c->closing)
        conn_free(c);
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    /* EOF, error or idle timeout: nothing more to say to this client. */
    conn_free(arg);
}

void control_complete(struct control *ctl, uint64_t id, json_t *result, const char *err)
{
    struct ctl_conn *c = ctl->conns;
    while (c != NULL && c->req_id != id)
        c = c->next;
    if (c == NULL) {
        json_decref(result);
        return;
    }
    c->req_id = 0;
    c->async = NULL;
    c->cancel = NULL;
    if (result != NULL)
        conn_send_result(c, result);
    else
        conn_send_error(c, err ? err : "failed");
    bufferevent_enable(c->bev, EV_READ);
    conn_read_lines(c); /* requests that arrived meanwhile */
}

/* uid 0, the daemon's uid, or the daemon's primary gid. The daemon's ids
 * are read now, not at control_new(): that ran before the privilege drop. */
/* The socket's 0660 mode lets members of the daemon's group connect
 * through a supplementary membership too, while SO_PEERCRED only reports
 * the primary gid: SO_PEERGROUPS (Linux 4.13) gives the peer's
 * supplementary groups as they were at connect(). */
#define PEER_MAX_GROUPS 256

static bool peer_in_group(int fd, gid_t want)
{
    gid_t groups[PEER_MAX_GROUPS];
    socklen_t len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
        return false; /* unknown, or more groups than we look at: not allowed */
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        if (groups[i] == want)
            return true;
    return false;
}

static bool peer_allowed(int fd, uid_t uid, gid_t gid)
{
    return uid == 0 || uid == geteuid() || gid == getegid() || peer_in_group(fd, getegid());
}

static void ctl_on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct control *ctl = arg;
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t clen = sizeof(cred);
    struct timeval idle = {CTL_IDLE_TIMEOUT_S, 0};
    struct bufferevent *bev;
    evutil_make_socket_nonblocking(fd);
    /* On failure cred stays uid -1: refused below. */
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen);
    if ((bev = bufferevent_socket_new(ctl->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        evutil_closesocket(fd);
        return;
    }
    struct ctl_conn *c = xcalloc(1, sizeof(*c));
    c->ctl = ctl;
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->pid = cred.pid;
    c->bev = bev;
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    ctl->nconns++;
    bufferevent_setcb(c->bev, conn_on_read, conn_on_write, conn_on_event, c);
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (!peer_allowed(fd, c->uid, c->gid)) {
        maillog(LOG_WARNING,
                "Control connection refused: uid %u gid %u pid %d is not root, the daemon's "
                "user or its group",
                (unsigned)c->uid, (unsigned)c->gid, (int)c->pid);
        conn_close_after(c, "permission denied: not root, the daemon's user or its group");
    } else if (ctl->nconns > CTL_MAX_CONNS) {
        maillog(LOG_WARNING, "Control connection refused: %d connections already open",
                CTL_MAX_CONNS);
        conn_close_after(c, "too many control connections");
    }
}

/* ---- the help command (it reads the table) ------------------------------ */

static enum ctl_status ctl_cmd_help(struct ctl_ctx *ctx, struct ctl_call *call)
{
    json_t *list = json_array();
    for (size_t i = 0; i < NCOMMANDS; i++)
        json_array_append_new(list, json_pack("{s:s, s:s, s:b}", "name", commands[i].name, "help",
                                              commands[i].help, "destructive",
                                              (commands[i].flags & CTL_DESTRUCTIVE) != 0));
    call->result = json_pack("{s:o}", "commands", list);
    return CTL_DONE;
}

/* ---- the socket ---------------------------------------------------------- */

/* A socket file at path: remove it if nobody answers there (a stale one
 * from a crash); refuse if a daemon answers or it is not a socket. */
static int socket_clear_stale(const char *path, const struct sockaddr_un *sun, char *err,
                              size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "another daemon answers on %s", path);
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove stale %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The directory of path, created if missing; *created tells whether it was. */
static int socket_dir(const char *path, bool *created, char *dir, size_t dirlen, char *err,
                      size_t errlen)
{
    const char *slash = strrchr(path, '/');
    struct stat st;
    *created = false;
    if (slash == NULL || slash == path) {
        snprintf(dir, dirlen, "%s", slash == path ? "/" : ".");
        return 0;
    }
    snprintf(dir, dirlen, "%.*s", (int)(slash - path), path);
    if (stat(dir, &st) == 0)
        return 0;
    /* 0755: the socket's own mode is the gate; the directory only needs to
     * be traversable by the daemon's group. */
    int rc = fs_mkdirs(dir, 0755);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-rc));
        return -1;
    }
    *created = true;
    return 0;
}

/* Started as root for another user: hand it the socket (and the directory
 * we made), so it can remove the socket at exit and peers in its group can
 * connect. */
static void socket_chown(const struct config *cfg, const char *path, const char *dir,
                         bool dir_created)
{
    struct passwd *pw;
    if (geteuid() != 0 || strcmp(cfg->user, "root") == 0 || (pw = getpwnam(cfg->user)) == NULL)
        return; /* an unknown user is reported by the privilege drop */
    if (chown(path, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "posternd: chown %s: %s\n", path, strerror(errno));
    if (dir_created && chown(dir, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "posternd: chown %s: %s\n", dir, strerror(errno));
}

static int socket_bind(struct control *ctl, const struct sockaddr_un *sun, char *err, size_t errlen)
{
    struct stat st;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* The umask makes bind() create the socket as 0660 directly: no window
     * in which it has looser permissions. Single-threaded here. */
    mode_t old = umask(0117);
    int rc = bind(fd, (const struct sockaddr *)sun, sizeof(*sun));
    umask(old);
    if (rc < 0 || listen(fd, CTL_BACKLOG) < 0 || stat(ctl->path, &st) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", ctl->path, strerror(errno));
        close(fd);
        return -1;
    }
    ctl->dev = st.st_dev;
    ctl->ino = st.st_ino;
    return fd;
}

struct control *control_new(struct event_base *base, const struct config *cfg, char *err,
                            size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char dir[4096];
    bool dir_created;
    const char *path = cfg->control_path;
    /* sun_path is 108 bytes on Linux; a relative path keeps it short. */
    if (strlen(path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "paths.control %s is longer than a UNIX socket path may be (%zu)",
                 path, sizeof(sun.sun_path) - 1);
        return NULL;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (socket_dir(path, &dir_created, dir, sizeof(dir), err, errlen) < 0 ||
        socket_clear_stale(path, &sun, err, errlen) < 0)
        return NULL;
    struct control *ctl = xcalloc(1, sizeof(*ctl));
    ctl->base = base;
    ctl->path = xstrdup(path);
    int fd = socket_bind(ctl, &sun, err, errlen);
    if (fd < 0) {
        free(ctl->path);
        free(ctl);
        return NULL;
    }
    socket_chown(cfg, path, dir, dir_created);
    ctl->evl = evconnlistener_new(base, ctl_on_accept, ctl,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED,
                                  -1, fd);
    ctl->ctx.ctl = ctl;
    ctl->ctx.base = base;
    ctl->ctx.start_ms = ctl_now_ms();
    hmap_init(&ctl->ctx.snap.dests);
    return ctl;
}

void control_set_modules(struct control *ctl, const struct control_modules *m)
{
    ctl->ctx.sched = m->sched;
    ctl->ctx.smtp = m->smtp;
    ctl->ctx.resolver = m->resolver;
    ctl->ctx.spool = m->spool;
    ctl->ctx.listeners = m->listeners;
    ctl->ctx.rescon = m->rescon;
    ctl->ctx.tracking = m->tracking;
    ctl->ctx.apply_config = m->apply_config;
    ctl->ctx.cfg = scheduler_config(m->sched);
    ctl_lifetime_load(&ctl->ctx);
    ctl_stat_start(&ctl->ctx);
    evconnlistener_enable(ctl->evl);
}

void control_free(struct control *ctl)
{
    struct stat st;
    if (ctl == NULL)
        return;
    while (ctl->conns != NULL)
        conn_free(ctl->conns);
    evconnlistener_free(ctl->evl);
    if (ctl->ctx.sched != NULL)
        ctl_lifetime_save(&ctl->ctx);
    ctl_stat_stop(&ctl->ctx);
    if (lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev && st.st_ino == ctl->ino)
        unlink(ctl->path);
    ctl_snapshot_free(&ctl->ctx.snap);
    free(ctl->path);
    free(ctl);
}
