/*
 * hmap: a string-keyed hash map (open addressing, linear probing) for the
 * loop thread's indexes: destinations by domain, messages by MID.
 *
 * Keys are copied; values are opaque pointers owned by the caller. The
 * table doubles at 70% load and never shrinks (an index sized by the peak
 * queue is what a gateway wants after a burst anyway). Deletion uses
 * backward-shift, so there are no tombstones and lookups stay short.
 */
#ifndef POSTERN_CORE_HMAP_H
#define POSTERN_CORE_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_slot {
    char *key;
    size_t keylen;
    uint64_t hash;
    void *value;
};

struct hmap {
    struct hmap_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
};

void hmap_init(struct hmap *m);
/* Free the keys and the table (not the values). */
void hmap_free(struct hmap *m);
void *hmap_get(const struct hmap *m, const char *key, size_t keylen);
/* Insert or replace; returns the previous value or NULL. */
void *hmap_put(struct hmap *m, const char *key, size_t keylen, void *value);
/* Remove; returns the value or NULL. */
void *hmap_del(struct hmap *m, const char *key, size_t keylen);
/* Iterate: for (size_t i = 0; hmap_next(m, &i, &key, &value);) */
int hmap_next(const struct hmap *m, size_t *iter, const char **key, void **value);

#endif
