/*
 * sysstat: the daemon's own resource use, sampled from /proc for the
 * `status detail` gauges and the once-a-minute status line
 * (gateway-behaviour.md sections 4 and 5).
 *
 * sysstat_sample() reads /proc/self/stat (process CPU time),
 * /proc/self/task/STAR/stat and comm (CPU time per thread: the main loop is
 * the thread whose id is the process id, the others are grouped by name,
 * e.g. "spool-worker"), /proc/self/status (VmRSS), /proc/meminfo (MemTotal)
 * and /proc/self/io (read_bytes, write_bytes: storage I/O, not sockets).
 * Rates (CPU %, bytes per second) are over the interval since the previous
 * sample; the first sample has no interval and reports 0. A file that cannot
 * be read (a container without /proc/self/io) leaves its values at -1.
 *
 * Threading: call from one thread (the loop); reading is a few small files.
 */
#ifndef POSTERN_CORE_SYSSTAT_H
#define POSTERN_CORE_SYSSTAT_H

#include <stddef.h>
#include <stdint.h>

/* Why 8: the daemon has a main loop and a spool worker; a few more names
 * (libraries' threads) fit, anything beyond is summed under "other". */
#define SYSSTAT_MAX_THREADS 8

struct sysstat_thread {
    char name[32];  /* "main loop", or the thread's comm */
    uint64_t ticks; /* cumulative utime + stime (clock ticks) */
    double cpu_pct; /* over the last interval, percent of one CPU */
};

struct sysstat {
    int64_t mono_ms;                  /* time of the last sample (CLOCK_MONOTONIC) */
    int64_t interval_ms;              /* since the previous sample; 0 for the first */
    uint64_t proc_ticks;              /* cumulative process CPU time (clock ticks) */
    double cpu_pct;                   /* process CPU over the interval, percent of one CPU */
    int64_t rss_kb;                   /* resident set; -1 unknown */
    int64_t mem_total_kb;             /* MemTotal; -1 unknown */
    double ram_pct;                   /* rss / MemTotal, percent; -1 unknown */
    int64_t io_read, io_write;        /* cumulative bytes; -1 unknown */
    double io_read_bps, io_write_bps; /* over the interval; -1 unknown */
    size_t nthreads;
    struct sysstat_thread threads[SYSSTAT_MAX_THREADS];
};

/* Zero the state (no sample yet). */
void sysstat_init(struct sysstat *s);
/* Take a sample now, computing the rates against the previous one. */
void sysstat_sample(struct sysstat *s);

/* Spool filesystem space in KiB (statvfs of dir): used and available to the
 * daemon. 0 if dir cannot be examined, else 1. */
int sysstat_fs_kb(const char *dir, uint64_t *used_kb, uint64_t *free_kb);

#endif
