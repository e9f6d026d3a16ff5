/*
 * posternd: the Postern mail gateway daemon.
 *
 * Startup order, and why:
 *   1. load and validate the configuration (-n stops here, printing it);
 *   2. bind the listeners, as root if we are root (ports below 1024);
 *   3. create the spool and log directories and hand them to the
 *      unprivileged user, then drop privileges for good;
 *   4. open mail_logs and the spool as that user, so every file the daemon
 *      writes afterwards is owned by it;
 *   5. run the loop.
 * The daemon stays in the foreground (a service manager supervises it).
 *
 * Signals: SIGHUP reloads the configuration (a file that fails validation,
 * or whose listeners cannot be bound, is refused and the running
 * configuration stays); SIGTERM/SIGINT stop gracefully: listeners close,
 * idle sessions get 421, messages being committed still get their 250, and
 * after a grace period whatever remains is dropped.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "control/control.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "dns/resolver.h"
#include "policy/rescon.h"
#include "queue/scheduler.h"
#include "queue/spool.h"
#include "smtp/listener.h"
#include "smtp/smtp_server.h"
#include "tracking/tracking.h"

/* Sessions get this long to finish after SIGTERM before they are dropped. */
#define SHUTDOWN_GRACE_S 10

struct daemon {
    struct event_base *base;
    struct config *cfg;
    struct listener_set *listeners;
    struct spool *spool;
    struct resolver *resolver;
    struct scheduler *sched;
    struct smtp_server *smtp;
    struct rescon *rescon;     /* resource conservation (self-protection) */
    struct tracking *tracking; /* message tracking (findevent); NULL if it failed */
    struct control *control;   /* operator socket (posternctl) */
    struct event *flush_ev;
    struct event *sig_hup, *sig_term, *sig_int;
    struct event *grace_ev;
};

static struct daemon D;

static void usage(FILE *out)
{
    fprintf(out, "usage: posternd [-c FILE] [-n] [-v]\n"
                 "  -c FILE  configuration file (default etc/postern.yaml)\n"
                 "  -n       check the configuration, print the effective one, and exit\n"
                 "  -v       copy mail_logs to standard error\n");
}

static struct config *load_config(const char *file)
{
    struct config_error err;
    char msg[600];
    struct config *cfg = config_load(file, &err);
    if (cfg == NULL) {
        config_error_format(&err, file, msg, sizeof(msg));
        fprintf(stderr, "posternd: %s\n", msg);
    }
    return cfg;
}

/* chown -R, one level of subdirectories deep (the spool's layout). */
static void chown_tree(const char *dir, uid_t uid, gid_t gid, int depth)
{
    char path[PATH_MAX];
    DIR *d;
    struct dirent *e;
    if (chown(dir, uid, gid) < 0)
        fprintf(stderr, "posternd: chown %s: %s\n", dir, strerror(errno));
    if (depth <= 0 || (d = opendir(dir)) == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
            continue;
        if (e->d_type == DT_DIR)
            chown_tree(path, uid, gid, depth - 1);
        else if (chown(path, uid, gid) < 0)
            fprintf(stderr, "posternd: chown %s: %s\n", path, strerror(errno));
    }
    closedir(d);
}

/* Become cfg->user if we are root (after binding). */
static int drop_privileges(const struct config *cfg)
{
    if (fs_mkdirs(cfg->spool_dir, 0750) < 0 || fs_mkdirs(cfg->log_dir, 0755) < 0) {
        fprintf(stderr, "posternd: cannot create %s or %s: %s\n", cfg->spool_dir, cfg->log_dir,
                strerror(errno));
        return -1;
    }
    if (geteuid() != 0)
        return 0;
    if (strcmp(cfg->user, "root") == 0) {
        fprintf(stderr, "posternd: warning: running as root (user: root in %s)\n", cfg->file);
        return 0;
    }
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        fprintf(stderr, "posternd: user '%s' does not exist (create it, or set user:)\n",
                cfg->user);
        return -1;
    }
    chown_tree(cfg->spool_dir, pw->pw_uid, pw->pw_gid, 2);
    chown_tree(cfg->log_dir, pw->pw_uid, pw->pw_gid, 0);
    char logfile[PATH_MAX];
    snprintf(logfile, sizeof(logfile), "%s/mail_logs", cfg->log_dir);
    if (chown(logfile, pw->pw_uid, pw->pw_gid) < 0 && errno != ENOENT)
        fprintf(stderr, "posternd: chown %s: %s\n", logfile, strerror(errno));
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        fprintf(stderr, "posternd: cannot become %s: %s\n", cfg->user, strerror(errno));
        return -1;
    }
    /* Belt and braces: make sure root cannot be regained. */
    if (setuid(0) == 0) {
        fprintf(stderr, "posternd: privilege drop failed\n");
        return -1;
    }
    return 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    maillog_flush();
}

static void flush_hook(void)
{
    event_active(D.flush_ev, EV_TIMEOUT, 0);
}

/* Refuse a reload that changes what only a restart can change. */
static const char *reload_blocker(const struct config *old, const struct config *new)
{
    if (strcmp(old->spool_dir, new->spool_dir) != 0)
        return "paths.spool changed (needs a restart)";
    if (strcmp(old->user, new->user) != 0)
        return "user changed (needs a restart)";
    return NULL;
}

/* Apply a loaded configuration to every module: the one path of SIGHUP and
 * of the control socket's smtproutes. On success the daemon takes over the
 * caller's reference to cfg and returns 0; on failure nothing changed, err
 * says why, and the caller still owns cfg. */
static int daemon_apply_config(struct config *cfg, char *err, size_t errlen)
{
    char msg[600];
    const char *blocker = reload_blocker(D.cfg, cfg);
    if (blocker != NULL) {
        snprintf(err, errlen, "%s", blocker);
        return -1;
    }
    if (listener_set_apply(D.listeners, cfg, err, errlen) < 0)
        return -1;
    if (strcmp(cfg->log_dir, D.cfg->log_dir) != 0 && maillog_reopen(cfg->log_dir) < 0)
        maillog(LOG_WARNING, "Cannot open mail_logs in %s; keeping the old one", cfg->log_dir);
    if (resolver_reconfigure(D.resolver, &cfg->resolver, msg, sizeof(msg)) < 0)
        maillog(LOG_WARNING, "Resolver keeps its old servers: %s", msg);
    smtp_server_set_config(D.smtp, cfg);
    scheduler_set_config(D.sched, cfg);
    rescon_start(D.rescon, D.spool, cfg);
    config_unref(D.cfg);
    D.cfg = cfg;
    return 0;
}

static void on_sighup(evutil_socket_t fd, short what, void *arg)
{
    struct config_error cerr;
    char msg[600];
    struct config *cfg = config_load(D.cfg->file, &cerr);
    if (cfg == NULL) {
        config_error_format(&cerr, D.cfg->file, msg, sizeof(msg));
        maillog(LOG_WARNING, "Configuration reload refused: %s", msg);
        return;
    }
    if (daemon_apply_config(cfg, msg, sizeof(msg)) < 0) {
        maillog(LOG_WARNING, "Configuration reload refused: %s", msg);
        config_unref(cfg);
        return;
    }
    maillog(LOG_INFO, "Configuration reloaded from %s", cfg->file);
}

static void on_grace_expired(evutil_socket_t fd, short what, void *arg)
{
    maillog(LOG_INFO, "Shutdown grace period over; dropping remaining sessions");
    smtp_server_abort_all(D.smtp);
    event_base_loopbreak(D.base);
}

static void on_sessions_done(void *arg)
{
    event_base_loopbreak(D.base);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    struct timeval tv = {SHUTDOWN_GRACE_S, 0};
    if (D.grace_ev != NULL)
        return; /* already stopping */
    maillog(LOG_INFO, "Shutting down (signal %d)", (int)fd);
    listener_set_close_all(D.listeners);
    D.grace_ev = evtimer_new(D.base, on_grace_expired, NULL);
    evtimer_add(D.grace_ev, &tv);
    smtp_server_shutdown(D.smtp, on_sessions_done, NULL);
}

/* Message tracking fed from mail_logs. Not fatal: mail flows without it
 * (findevent then says so). Its settings need a restart. */
static void start_tracking(void)
{
    char err[600], path[PATH_MAX];
    if (D.cfg->tracking_path)
        snprintf(path, sizeof(path), "%s", D.cfg->tracking_path);
    else
        snprintf(path, sizeof(path), "%s/tracking.db", D.cfg->spool_dir);
    struct tracking_params tp = {
        .path = path, .max_age_ms = D.cfg->tracking.max_age, .max_size = D.cfg->tracking.max_size};
    D.tracking = tracking_open(D.base, &tp, err, sizeof(err));
    if (D.tracking == NULL) {
        maillog(LOG_WARNING, "Message tracking disabled: %s", err);
        return;
    }
    maillog_set_tap(tracking_tap, D.tracking);
}

static int daemon_start(void)
{
    char err[600];
    struct spool_params sp = {
        .dir = D.cfg->spool_dir,
        .memory_threshold = D.cfg->spool.memory_threshold,
        .min_free_space = D.cfg->spool.min_free_space,
    };
    int rc = maillog_open(D.cfg->log_dir);
    if (rc < 0) {
        fprintf(stderr, "posternd: cannot open %s/mail_logs: %s\n", D.cfg->log_dir, strerror(-rc));
        return -1;
    }
    D.spool = spool_open(D.base, &sp, err, sizeof(err));
    if (D.spool == NULL) {
        maillog(LOG_CRITICAL, "Cannot open spool %s: %s", D.cfg->spool_dir, err);
        return -1;
    }
    D.resolver = resolver_new(D.base, &D.cfg->resolver, err, sizeof(err));
    if (D.resolver == NULL) {
        maillog(LOG_CRITICAL, "Cannot start the resolver: %s", err);
        return -1;
    }
    start_tracking(); /* before the load: its log lines are events too */
    D.sched = scheduler_new(D.base, D.spool, D.resolver, D.cfg);
    if (scheduler_load(D.sched) < 0)
        maillog(LOG_WARNING, "Some queued messages could not be loaded; see above");
    return 0;
}

/* The SMTP server's hook: a message became durable, queue it. */
static void on_queued(void *ctx, const struct spool_envelope *env, uint64_t size,
                      char *const *rcpts, size_t nrcpts)
{
    scheduler_add(ctx, env, size, rcpts, nrcpts);
}

/* Resource conservation: sampled once a second from now on; the SMTP
 * server tarpits, refuses and suspends its listeners by it. */
static void start_rescon(void)
{
    struct rescon_params rp;
    rescon_params_from_config(D.cfg, &rp);
    D.rescon = rescon_new(D.base, &rp);
    smtp_server_set_rescon(D.smtp, D.rescon);
    rescon_start(D.rescon, D.spool, D.cfg);
}

static void daemon_stop(void)
{
    control_free(D.control); /* first: its requests use every module below */
    if (D.smtp)
        smtp_server_abort_all(D.smtp);
    if (D.sched)
        scheduler_shutdown(D.sched); /* connections dropped, results flushed */
    if (D.spool)
        spool_close(D.spool); /* runs the last commit callbacks */
    scheduler_free(D.sched);
    if (D.resolver)
        resolver_free(D.resolver);
    smtp_server_free(D.smtp);
    rescon_free(D.rescon); /* after the server: it is the server's handler */
    listener_set_free(D.listeners);
    maillog_set_tap(NULL, NULL);
    tracking_close(D.tracking); /* writes what is queued, joins its worker */
    maillog(LOG_INFO, "posternd stopped");
    maillog_set_flush_hook(NULL);
    maillog_close();
    event_free(D.flush_ev);
    /* NULL when startup failed before they were made; event_free(NULL) crashes. */
    if (D.sig_hup)
        event_free(D.sig_hup);
    if (D.sig_term)
        event_free(D.sig_term);
    if (D.sig_int)
        event_free(D.sig_int);
    if (D.grace_ev)
        event_free(D.grace_ev);
    config_unref(D.cfg);
    event_base_free(D.base);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    const char *file = "etc/postern.yaml";
    bool check = false, verbose = false;
    char err[600];
    int opt;

    while ((opt = getopt(argc, argv, "c:nvh")) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 'n':
            check = true;
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    D.cfg = load_config(file);
    if (D.cfg == NULL)
        return 1;
    if (check) {
        int bad = listener_check_tls(D.cfg, err, sizeof(err));
        if (bad < 0)
            fprintf(stderr, "posternd: %s: %s\n", file, err);
        else
            config_dump(D.cfg, stdout);
        config_unref(D.cfg);
        return bad < 0 ? 1 : 0;
    }

    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    /* The epoll changelist coalesces the add/del of a bufferevent's
     * write event within one loop turn: a reply written and flushed in
     * the same turn costs no epoll_ctl at all. */
    struct event_config *ecfg = event_config_new();
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    D.base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    D.flush_ev = event_new(D.base, -1, 0, on_flush, NULL);
    maillog_set_stderr(verbose);
    D.smtp = NULL;
    D.listeners = listener_set_new(D.base, smtp_server_accept, NULL);
    if (listener_set_apply(D.listeners, D.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "posternd: %s\n", err);
        daemon_stop();
        return 1;
    }
    /* Before the privilege drop, like the listeners: creating its directory
     * may need root; it is handed to the daemon's user. */
    D.control = control_new(D.base, D.cfg, err, sizeof(err));
    if (D.control == NULL) {
        fprintf(stderr, "posternd: control socket: %s\n", err);
        daemon_stop();
        return 1;
    }
    if (drop_privileges(D.cfg) < 0 || daemon_start() < 0) {
        daemon_stop();
        return 1;
    }
    maillog_set_flush_hook(flush_hook);
    D.smtp = smtp_server_new(D.base, D.spool, D.resolver, D.cfg);
    smtp_server_set_queue(D.smtp, on_queued, D.sched);
    start_rescon();
    /* The sockets were bound before the server existed (and before the
     * privilege drop); no connection is dispatched until the loop runs. */
    listener_set_handler(D.listeners, smtp_server_accept, D.smtp);
    struct control_modules mods = {.sched = D.sched,
                                   .smtp = D.smtp,
                                   .resolver = D.resolver,
                                   .spool = D.spool,
                                   .listeners = D.listeners,
                                   .rescon = D.rescon,
                                   .tracking = D.tracking,
                                   .apply_config = daemon_apply_config};
    control_set_modules(D.control, &mods);
    D.sig_hup = evsignal_new(D.base, SIGHUP, on_sighup, NULL);
    D.sig_term = evsignal_new(D.base, SIGTERM, on_sigterm, NULL);
    D.sig_int = evsignal_new(D.base, SIGINT, on_sigterm, NULL);
    event_add(D.sig_hup, NULL);
    event_add(D.sig_term, NULL);
    event_add(D.sig_int, NULL);
    maillog(LOG_INFO, "posternd %s started; configuration %s", "0.1.0", D.cfg->file);
    event_base_dispatch(D.base);
    daemon_stop();
    return 0;
}
