/*
 * sysstat: /proc sampling for `status detail` and the status line (see
 * sysstat.h). Each file is read whole into a small buffer; a missing or
 * unparsable file leaves its values unknown (-1) rather than failing.
 */
#include "core/sysstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read a small /proc file into buf (NUL-terminated); false if unreadable. */
static int read_small(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    size_t n;
    if (f == NULL)
        return 0;
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* utime + stime of a stat file (fields 14 and 15, counted after the
 * parenthesised comm, which may itself hold spaces and parentheses). */
static int stat_ticks(const char *path, uint64_t *ticks)
{
    char buf[1024];
    unsigned long long ut, st;
    if (!read_small(path, buf, sizeof(buf)))
        return 0;
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    *ticks = ut + st;
    return 1;
}

/* "Key:   12345 kB" in a /proc status-like text, or -1. */
static int64_t kv_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    if (p == NULL)
        return -1;
    return strtoll(p + strlen(key), NULL, 10);
}

static void sample_threads(struct sysstat *s, const struct sysstat *prev, double scale)
{
    char path[300], comm[64];
    struct dirent *e;
    DIR *d = opendir("/proc/self/task");
    pid_t pid = getpid();
    s->nthreads = 0;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        uint64_t ticks;
        const char *name;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        if (!stat_ticks(path, &ticks))
            continue;
        if (atol(e->d_name) == (long)pid) {
            name = "main loop";
        } else {
            snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
            if (!read_small(path, comm, sizeof(comm)))
                snprintf(comm, sizeof(comm), "other");
            comm[strcspn(comm, "\n")] = '\0';
            name = comm;
        }
        size_t i = 0;
        while (i < s->nthreads && strcmp(s->threads[i].name, name) != 0)
            i++;
        if (i == s->nthreads) {
            if (s->nthreads == SYSSTAT_MAX_THREADS) {
                i = SYSSTAT_MAX_THREADS - 1; /* sum the rest under the last */
            } else {
                s->nthreads++;
                snprintf(s->threads[i].name, sizeof(s->threads[i].name), "%.31s", name);
                s->threads[i].ticks = 0;
            }
        }
        s->threads[i].ticks += ticks;
    }
    closedir(d);
    for (size_t i = 0; i < s->nthreads; i++) {
        s->threads[i].cpu_pct = 0;
        for (size_t j = 0; scale > 0 && j < prev->nthreads; j++)
            if (strcmp(prev->threads[j].name, s->threads[i].name) == 0 &&
                s->threads[i].ticks >= prev->threads[j].ticks)
                s->threads[i].cpu_pct =
                    (double)(s->threads[i].ticks - prev->threads[j].ticks) * scale;
    }
}

void sysstat_init(struct sysstat *s)
{
    memset(s, 0, sizeof(*s));
    s->rss_kb = s->mem_total_kb = s->io_read = s->io_write = -1;
    s->ram_pct = s->io_read_bps = s->io_write_bps = -1;
}

void sysstat_sample(struct sysstat *s)
{
    struct sysstat prev = *s;
    char buf[4096];
    long hz = sysconf(_SC_CLK_TCK);
    double scale = 0; /* percent per tick over the interval */

    s->mono_ms = mono_ms();
    s->interval_ms = prev.mono_ms > 0 ? s->mono_ms - prev.mono_ms : 0;
    if (s->interval_ms > 0 && hz > 0)
        scale = 100.0 * 1000.0 / ((double)hz * (double)s->interval_ms);

    s->cpu_pct = 0;
    if (stat_ticks("/proc/self/stat", &s->proc_ticks) && scale > 0 &&
        s->proc_ticks >= prev.proc_ticks)
        s->cpu_pct = (double)(s->proc_ticks - prev.proc_ticks) * scale;
    sample_threads(s, &prev, scale);

    s->rss_kb = read_small("/proc/self/status", buf, sizeof(buf)) ? kv_kb(buf, "VmRSS:") : -1;
    s->mem_total_kb = read_small("/proc/meminfo", buf, sizeof(buf)) ? kv_kb(buf, "MemTotal:") : -1;
    s->ram_pct = s->rss_kb >= 0 && s->mem_total_kb > 0
                     ? 100.0 * (double)s->rss_kb / (double)s->mem_total_kb
                     : -1;

    s->io_read = s->io_write = -1;
    s->io_read_bps = s->io_write_bps = -1;
    if (read_small("/proc/self/io", buf, sizeof(buf))) {
        s->io_read = kv_kb(buf, "\nread_bytes:");
        s->io_write = kv_kb(buf, "\nwrite_bytes:");
        if (s->interval_ms > 0 && prev.io_read >= 0 && s->io_read >= prev.io_read)
            s->io_read_bps = (double)(s->io_read - prev.io_read) * 1000.0 / (double)s->interval_ms;
        if (s->interval_ms > 0 && prev.io_write >= 0 && s->io_write >= prev.io_write)
            s->io_write_bps =
                (double)(s->io_write - prev.io_write) * 1000.0 / (double)s->interval_ms;
        if (s->interval_ms == 0 && s->io_read >= 0)
            s->io_read_bps = s->io_write_bps = 0;
    }
}

int sysstat_fs_kb(const char *dir, uint64_t *used_kb, uint64_t *free_kb)
{
    struct statvfs v;
    if (dir == NULL || statvfs(dir, &v) < 0)
        return 0;
    *used_kb = (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize / 1024;
    *free_kb = (uint64_t)v.f_bavail * v.f_frsize / 1024;
    return 1;
}
