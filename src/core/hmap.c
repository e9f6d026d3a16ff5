/*
 * hmap: open-addressing string map (see hmap.h). FNV-1a hashing: keys are
 * short domain names and decimal ids, and the table is never exposed to
 * attacker-chosen keys without a per-process seed, which hmap_seed adds.
 */
#include "core/hmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

/* Per-process seed so recipient domains chosen by a sender cannot be
 * crafted to collide (hash flooding). */
static uint64_t hmap_seed;

static uint64_t hmap_hash(const char *key, size_t len)
{
    if (hmap_seed == 0)
        hmap_seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9e3779b97f4a7c15ULL;
    uint64_t h = 0xcbf29ce484222325ULL ^ hmap_seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

void hmap_init(struct hmap *m)
{
    memset(m, 0, sizeof(*m));
}

void hmap_free(struct hmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    hmap_init(m);
}

static size_t hmap_find(const struct hmap *m, const char *key, size_t len, uint64_t h, bool *found)
{
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].key != NULL) {
        const struct hmap_slot *s = &m->slots[i];
        if (s->hash == h && s->keylen == len && memcmp(s->key, key, len) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = false;
    return i;
}

void *hmap_get(const struct hmap *m, const char *key, size_t keylen)
{
    bool found;
    if (m->cap == 0)
        return NULL;
    size_t i = hmap_find(m, key, keylen, hmap_hash(key, keylen), &found);
    return found ? m->slots[i].value : NULL;
}

static void hmap_grow(struct hmap *m)
{
    struct hmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        struct hmap_slot *s = &old.slots[i];
        bool found;
        if (s->key == NULL)
            continue;
        size_t j = hmap_find(m, s->key, s->keylen, s->hash, &found);
        m->slots[j] = *s;
        m->n++;
    }
    free(old.slots);
}

void *hmap_put(struct hmap *m, const char *key, size_t keylen, void *value)
{
    bool found;
    /* 70% load keeps linear probe sequences short */
    if ((m->n + 1) * 10 > m->cap * 7)
        hmap_grow(m);
    uint64_t h = hmap_hash(key, keylen);
    size_t i = hmap_find(m, key, keylen, h, &found);
    if (found) {
        void *prev = m->slots[i].value;
        m->slots[i].value = value;
        return prev;
    }
    m->slots[i] = (struct hmap_slot){xstrndup(key, keylen), keylen, h, value};
    m->n++;
    return NULL;
}

void *hmap_del(struct hmap *m, const char *key, size_t keylen)
{
    bool found;
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = hmap_find(m, key, keylen, hmap_hash(key, keylen), &found);
    if (!found)
        return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->n--;
    /* backward-shift: move later members of the probe run into the hole */
    for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        m->slots[i] = m->slots[j];
        m->slots[j].key = NULL;
        i = j;
    }
    return value;
}

int hmap_next(const struct hmap *m, size_t *iter, const char **key, void **value)
{
    while (*iter < m->cap) {
        const struct hmap_slot *s = &m->slots[(*iter)++];
        if (s->key != NULL) {
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            return 1;
        }
    }
    return 0;
}
