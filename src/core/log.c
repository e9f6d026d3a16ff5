/*
 * log: buffered appliance-format mail_logs (see log.h).
 *
 * Invariant: buf holds only whole lines; a line longer than the buffer is
 * truncated (log lines are bounded by the escaping of their values anyway).
 */
#include "core/log.h"

#include "core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One write per loop turn; 64 KiB holds a busy turn's lines. */
#define LOG_BUF_SIZE (64 * 1024)
#define LOG_LINE_MAX 8192

static struct {
    int fd;
    bool to_stderr;
    size_t len;
    bool hook_armed;
    void (*hook)(void);
    void (*tap)(void *ctx, const char *line, size_t len);
    void *tap_ctx;
    bool in_tap;      /* no recursion when the tap itself logs */
    time_t stamp_sec; /* cache of the formatted timestamp */
    char stamp[40];
    char buf[LOG_BUF_SIZE];
} L = {.fd = -1};

static const char *const level_names[] = {
    [LOG_DEBUG] = "Debug",
    [LOG_INFO] = "Info",
    [LOG_WARNING] = "Warning",
    [LOG_CRITICAL] = "Critical",
};

int maillog_open(const char *dir)
{
    char path[4096];
    int rc = fs_mkdirs(dir, 0755);
    if (rc < 0)
        return rc;
    if ((size_t)snprintf(path, sizeof(path), "%s/mail_logs", dir) >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    maillog_flush();
    if (L.fd >= 0)
        close(L.fd);
    L.fd = fd;
    return 0;
}

int maillog_reopen(const char *dir)
{
    return maillog_open(dir);
}

void maillog_set_stderr(bool on)
{
    L.to_stderr = on;
}

void maillog_set_flush_hook(void (*hook)(void))
{
    L.hook = hook;
}

void maillog_set_tap(void (*fn)(void *ctx, const char *line, size_t len), void *ctx)
{
    L.tap = fn;
    L.tap_ctx = ctx;
}

static void log_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log */
        }
        p += w;
        n -= (size_t)w;
    }
}

void maillog_flush(void)
{
    L.hook_armed = false;
    if (L.len == 0)
        return;
    if (L.fd >= 0)
        log_write_all(L.fd, L.buf, L.len);
    if (L.to_stderr)
        log_write_all(STDERR_FILENO, L.buf, L.len);
    L.len = 0;
}

void maillog_close(void)
{
    maillog_flush();
    if (L.fd >= 0)
        close(L.fd);
    L.fd = -1;
}

static const char *log_stamp(void)
{
    time_t now = time(NULL);
    if (now != L.stamp_sec) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(L.stamp, sizeof(L.stamp), "%a %b %e %H:%M:%S %Y", &tm);
        L.stamp_sec = now;
    }
    return L.stamp;
}

void maillogv(enum log_level level, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    int n = snprintf(line, sizeof(line), "%s %s: ", log_stamp(), level_names[level]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    if (L.len + len > sizeof(L.buf))
        maillog_flush();
    memcpy(L.buf + L.len, line, len);
    L.len += len;
    if (L.tap && !L.in_tap) {
        /* skip "<stamp> ": the tap sees "Level: text" */
        size_t skip = (size_t)n - strlen(level_names[level]) - 2;
        L.in_tap = true;
        L.tap(L.tap_ctx, line + skip, len - skip - 1);
        L.in_tap = false;
    }
    /* Without a loop (startup, -n, tests) every line goes out at once. */
    if (!L.hook) {
        maillog_flush();
    } else if (!L.hook_armed) {
        L.hook_armed = true;
        L.hook();
    }
}

void maillog(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    maillogv(level, fmt, ap);
    va_end(ap);
}

/* Length of a valid UTF-8 sequence starting at p (at most n bytes), or 0. */
static size_t log_utf8_len(const unsigned char *p, size_t n)
{
    size_t need;
    uint32_t cp;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* reject overlongs, surrogates and out-of-range code points */
    if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

char *log_escape(char *dst, size_t dstlen, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    /* keep room for "..." and the NUL */
    size_t limit = dstlen > 4 ? dstlen - 4 : 0;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        char tmp[4];
        size_t tl, adv = 1;
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            tmp[0] = (char)c;
            tl = 1;
        } else if (c == '\\' || c == '\'') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tl = 2;
        } else if (c >= 0x80 && (adv = log_utf8_len(s + i, len - i)) > 0) {
            tl = adv;
            if (o + tl > limit)
                break;
            memcpy(dst + o, s + i, tl);
            o += tl;
            i += adv;
            continue;
        } else {
            adv = 1;
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[c >> 4];
            tmp[3] = hex[c & 15];
            tl = 4;
        }
        if (o + tl > limit)
            break;
        memcpy(dst + o, tmp, tl);
        o += tl;
        i += adv;
    }
    if (i < len && dstlen >= 4) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    if (dstlen > 0)
        dst[o < dstlen ? o : dstlen - 1] = '\0';
    return dst;
}
