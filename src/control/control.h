/*
 * control: the operator control socket of posternd (what posternctl talks to).
 *
 * A UNIX stream socket at paths.control, mode 0660, owned by the daemon's
 * user and group. The protocol is line-delimited JSON, one request and one
 * response per line, any number of requests per connection, answered in
 * order:
 *
 *   -> {"cmd": "hoststatus", "args": {"host": "example.com"}}
 *   <- {"ok": true, "result": {...}}
 *   <- {"ok": false, "error": "..."}
 *
 * Destructive commands also need "confirm": true in the request, so a script
 * writing raw JSON says it means it just as posternctl's "Are you sure?" does.
 *
 * Who may talk to it: the socket's mode already keeps out everyone outside
 * the daemon's user and group; on top of that every accepted connection's
 * peer credentials (SO_PEERCRED) must be uid 0, the daemon's uid, or the
 * daemon's primary gid (supplementary groups of the peer are not looked at).
 * A refused peer gets one error line and a log line.
 *
 * Lifecycle (posternd.c): control_new() before the privilege drop (it may
 * need root to create the directory and hand the socket to the daemon's
 * user), control_set_modules() once the spool, resolver, scheduler and SMTP
 * server exist (only then are connections accepted), control_free() before
 * any of those modules is freed. A change of paths.control needs a restart.
 *
 * See docs/operator.md for every command and its output.
 */
#ifndef POSTERN_CONTROL_CONTROL_H
#define POSTERN_CONTROL_CONTROL_H

#include <stddef.h>

struct event_base;
struct config;
struct scheduler;
struct smtp_server;
struct resolver;
struct spool;
struct listener_set;
struct rescon;
struct tracking;
struct control;

/* What the commands read and act on; the current configuration is always
 * the scheduler's (it follows SIGHUP reloads). */
struct control_modules {
    struct scheduler *sched;
    struct smtp_server *smtp;
    struct resolver *resolver;
    struct spool *spool;
    struct listener_set *listeners; /* trace */
    struct rescon *rescon;          /* status detail, status line */
    struct tracking *tracking;      /* findevent; NULL = not running */
    /* smtproutes: apply a new configuration as SIGHUP does; on success it
     * takes the caller's reference, on failure err says why */
    int (*apply_config)(struct config *cfg, char *err, size_t errlen);
};

/* Create the socket at cfg->control_path (creating its directory, removing a
 * stale socket). Returns NULL with a message in err on failure, e.g. when
 * another daemon answers on that path. */
struct control *control_new(struct event_base *base, const struct config *cfg, char *err,
                            size_t errlen);
/* Start accepting, with the modules the commands use. */
void control_set_modules(struct control *ctl, const struct control_modules *m);
/* Close every connection (pending DNS lookups are cancelled), remove the
 * socket, free everything. NULL is fine. */
void control_free(struct control *ctl);

#endif
