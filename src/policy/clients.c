/*
 * clients: per-IP session counts and hourly recipient counts (clients.h).
 */
#include "policy/clients.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hmap.h"

#define MINUTES 60

struct client {
    uint32_t sessions;
    int64_t minute[MINUTES]; /* which minute (now_s / 60) bucket i holds */
    uint32_t count[MINUTES];
    int64_t last_minute; /* newest minute with a recipient */
    int64_t conn_minute; /* the minute conn_count counts */
    uint32_t conn_count;
};

struct clients {
    struct hmap map;
};

struct clients *clients_new(void)
{
    struct clients *c = xcalloc(1, sizeof(*c));
    hmap_init(&c->map);
    return c;
}

void clients_free(struct clients *c)
{
    size_t it = 0;
    void *v;
    if (c == NULL)
        return;
    while (hmap_next(&c->map, &it, NULL, &v))
        free(v);
    hmap_free(&c->map);
    free(c);
}

static struct client *client_get(struct clients *c, const char *ip, int create)
{
    struct client *e = hmap_get(&c->map, ip, strlen(ip));
    if (e == NULL && create) {
        e = xcalloc(1, sizeof(*e));
        hmap_put(&c->map, ip, strlen(ip), e);
    }
    return e;
}

uint32_t clients_session_add(struct clients *c, const char *ip)
{
    return ++client_get(c, ip, 1)->sessions;
}

void clients_session_del(struct clients *c, const char *ip)
{
    struct client *e = client_get(c, ip, 0);
    if (e && e->sessions > 0)
        e->sessions--;
}

uint32_t clients_rcpts_hour(struct clients *c, const char *ip, int64_t now_s)
{
    struct client *e = client_get(c, ip, 0);
    int64_t now_m = now_s / 60;
    uint32_t sum = 0;
    if (e == NULL)
        return 0;
    for (int i = 0; i < MINUTES; i++)
        if (e->count[i] && now_m - e->minute[i] < MINUTES)
            sum += e->count[i];
    return sum;
}

void clients_rcpt_add(struct clients *c, const char *ip, int64_t now_s)
{
    struct client *e = client_get(c, ip, 1);
    int64_t now_m = now_s / 60;
    int i = (int)(now_m % MINUTES);
    if (e->minute[i] != now_m) {
        e->minute[i] = now_m;
        e->count[i] = 0;
    }
    e->count[i]++;
    e->last_minute = now_m;
}

uint32_t clients_conn_add(struct clients *c, const char *ip, int64_t now_s)
{
    struct client *e = client_get(c, ip, 1);
    int64_t now_m = now_s / 60;
    /* A fixed one-minute window: one counter per IP, and a client over the
     * limit is let in again at the next minute. */
    if (e->conn_minute != now_m) {
        e->conn_minute = now_m;
        e->conn_count = 0;
    }
    if (e->conn_count < UINT32_MAX)
        e->conn_count++;
    return e->conn_count;
}

size_t clients_expire(struct clients *c, int64_t now_s)
{
    size_t it = 0;
    const char *key;
    void *v;
    int64_t now_m = now_s / 60;
    /* collect first: deleting while iterating would shift slots */
    char **drop = NULL;
    size_t n = 0, cap = 0;
    while (hmap_next(&c->map, &it, &key, &v)) {
        struct client *e = v;
        if (e->sessions == 0 && now_m - e->last_minute >= MINUTES && e->conn_minute != now_m) {
            xgrow((void **)&drop, &cap, n + 1, sizeof(*drop));
            drop[n++] = xstrdup(key);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(hmap_del(&c->map, drop[i], strlen(drop[i])));
        free(drop[i]);
    }
    free(drop);
    return c->map.n;
}
