/*
 * alloc: allocation helpers that abort on out-of-memory.
 *
 * Small structures (sessions, config nodes, recipient records) are never worth
 * a recovery path: if malloc fails for 200 bytes the process is already lost,
 * so these helpers log to stderr and abort loudly. Anything whose size comes
 * from the network is bounded by a per-session limit *before* it reaches here.
 */
#ifndef POSTERN_CORE_ALLOC_H
#define POSTERN_CORE_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* xrealloc for arrays: grows *arr to hold at least want elements of size elem,
 * doubling, and updates *cap. */
void xgrow(void **arr, size_t *cap, size_t want, size_t elem);

#endif
