/*
 * cmd_tracking: `findevent`: every event of the messages that match one
 * key (mid, message_id, sender, rcpt, subject, ip), optionally within a
 * time range, from the tracking database (src/tracking/tracking.h).
 *
 *   -> {"cmd": "findevent", "args": {"by": "sender", "value": "a@b",
 *       "since": "1h", "until": "2026-11-25T18:00:00", "limit": 100}}
 *
 * The query runs on the tracking worker (its own read-only connection), so
 * a slow disk never stalls the loop; the answer comes back through
 * control_complete(). Times: relative ("90s", "30m", "1h", "2d": that long
 * ago) or ISO 8601 local time ("2026-11-25", "2026-11-25T18:00[:00]", a
 * trailing "Z" for UTC), or Unix seconds ("@1764093600").
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "tracking/tracking.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const key_names[] = {
    [TRK_BY_MID] = "mid",   [TRK_BY_MESSAGE_ID] = "message_id", [TRK_BY_SENDER] = "sender",
    [TRK_BY_RCPT] = "rcpt", [TRK_BY_SUBJECT] = "subject",       [TRK_BY_IP] = "ip",
};

struct findevent {
    struct control *ctl;
    uint64_t id;
    struct trk_query *q;
};

/* "1h" -> now - 1 hour; false if s is not relative. */
static bool parse_relative(const char *s, int64_t now_ms, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    int64_t unit;
    if (end == s || v < 0 || end[0] == '\0' || end[1] != '\0')
        return false;
    switch (*end) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 3600 * 1000;
        break;
    case 'd':
        unit = 86400 * 1000;
        break;
    default:
        return false;
    }
    /* Why 10 years: beyond any retention; keeps the product in range. */
    if (v > 3660LL * 86400)
        return false;
    *out = now_ms - (int64_t)v * unit;
    return true;
}

/* ISO 8601 date or date and time, local unless it ends in Z. */
static bool parse_iso(const char *s, int64_t *out)
{
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%d", &tm);
    if (rest == NULL)
        return false;
    if (*rest == 'T' || *rest == ' ') {
        const char *r = strptime(rest + 1, "%H:%M:%S", &tm);
        rest = r ? r : strptime(rest + 1, "%H:%M", &tm);
        if (rest == NULL)
            return false;
    }
    bool utc = *rest == 'Z';
    if (rest[utc] != '\0')
        return false;
    tm.tm_isdst = -1;
    time_t t = utc ? timegm(&tm) : mktime(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (int64_t)t * 1000;
    return true;
}

static bool parse_when(struct ctl_call *call, const char *key, int64_t *out)
{
    const char *s;
    *out = 0;
    if (!ctl_arg_string(call, key, &s))
        return false;
    if (s == NULL)
        return true;
    if (s[0] == '@') {
        char *end;
        long long v = strtoll(s + 1, &end, 10);
        if (end != s + 1 && *end == '\0' && v >= 0) {
            *out = (int64_t)v * 1000;
            return true;
        }
    } else if (parse_relative(s, ctl_now_ms(), out) || parse_iso(s, out)) {
        return true;
    }
    ctl_error(call, "%s: '%.64s' is not a time (1h, 2d, 2026-11-25T18:00:00, @UNIX)", key, s);
    return false;
}

static bool parse_key(struct ctl_call *call, enum trk_key *key)
{
    const char *by;
    if (!ctl_arg_string(call, "by", &by))
        return false;
    for (size_t i = 0; by && i < sizeof(key_names) / sizeof(key_names[0]); i++) {
        if (strcmp(by, key_names[i]) == 0) {
            *key = (enum trk_key)i;
            return true;
        }
    }
    ctl_error(call, "by: one of mid, message_id, sender, rcpt, subject, ip");
    return false;
}

static void findevent_done(void *arg, json_t *result, const char *err)
{
    struct findevent *fe = arg;
    control_complete(fe->ctl, fe->id, result, err);
    free(fe);
}

static void findevent_cancel(void *async)
{
    struct findevent *fe = async;
    tracking_query_cancel(fe->q);
    free(fe);
}

enum ctl_status ctl_cmd_findevent(struct ctl_ctx *ctx, struct ctl_call *call)
{
    struct trk_query_params p = {0};
    json_int_t limit;
    if (ctx->tracking == NULL)
        return ctl_error(call, "message tracking is not running");
    if (!parse_key(call, &p.key) || !ctl_arg_string(call, "value", &p.value) ||
        !parse_when(call, "since", &p.since_ms) || !parse_when(call, "until", &p.until_ms) ||
        !ctl_arg_int(call, "limit", 1, 1000, 100, &limit))
        return CTL_ERROR;
    if (p.value == NULL || p.value[0] == '\0')
        return ctl_error(call, "value: missing");
    if (p.key == TRK_BY_MID && strspn(p.value, "0123456789") != strlen(p.value))
        return ctl_error(call, "mid: '%.64s' is not a number", p.value);
    p.limit = (size_t)limit;
    struct findevent *fe = xcalloc(1, sizeof(*fe));
    fe->ctl = ctx->ctl;
    fe->id = call->id;
    fe->q = tracking_query(ctx->tracking, &p, findevent_done, fe);
    call->async = fe;
    call->cancel = findevent_cancel;
    return CTL_PENDING;
}
