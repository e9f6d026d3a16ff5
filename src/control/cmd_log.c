/*
 * cmd_log: `tail [N]`: the last N lines of mail_logs (default 20).
 *
 * The buffered log lines are flushed first, so the answer includes the
 * lines of this very loop turn. The file is read backwards from its end in
 * blocks until N line ends are seen or TAIL_MAX_BYTES were read, so a huge
 * log costs no more than the lines asked for. Lines are already escaped by
 * the logger; JSON encoding takes care of the rest.
 */
#include "control/control_int.h"

#include "core/alloc.h"
#include "core/config.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_DEFAULT 20
/* Why 1000 lines and 1 MiB: enough to read an incident; the answer is one
 * JSON line held in memory on both sides. */
#define TAIL_MAX_LINES 1000
#define TAIL_MAX_BYTES (1024 * 1024)
#define TAIL_BLOCK     8192

/* Read the last bytes of fd holding at most want lines (plus a partial
 * one); returns the buffer (NUL-terminated) and its length. */
static char *tail_read(int fd, off_t size, size_t want, size_t *lenp)
{
    size_t cap = 0, len = 0, lines = 0;
    char *buf = NULL;
    off_t pos = size;
    while (pos > 0 && len < TAIL_MAX_BYTES && lines <= want) {
        size_t n = pos > TAIL_BLOCK ? TAIL_BLOCK : (size_t)pos;
        xgrow((void **)&buf, &cap, len + n + 1, 1);
        memmove(buf + n, buf, len);
        pos -= (off_t)n;
        ssize_t got = pread(fd, buf, n, pos);
        if (got != (ssize_t)n)
            break;
        len += n;
        for (size_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    }
    if (buf == NULL)
        buf = xcalloc(1, 1);
    buf[len] = '\0';
    *lenp = len;
    return buf;
}

/* One line as a JSON string; bytes that are not UTF-8 (a line cut by the
 * byte bound, a foreign file) are escaped rather than dropped. */
static json_t *line_json(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s == NULL) {
        char *esc = xmalloc(n * 4 + 4);
        s = json_string(log_escape(esc, n * 4 + 4, p, n));
        free(esc);
    }
    return s;
}

/* The last want complete-or-final lines of text[0..len) as a JSON array. */
static json_t *tail_lines(const char *text, size_t len, size_t want)
{
    json_t *list = json_array();
    size_t end = len, have = 0;
    if (end > 0 && text[end - 1] == '\n')
        end--;
    size_t start = end;
    while (have < want && end > 0) {
        while (start > 0 && text[start - 1] != '\n')
            start--;
        json_array_insert_new(list, 0, line_json(text + start, end - start));
        have++;
        if (start == 0)
            break;
        end = start - 1;
        start = end;
    }
    return list;
}

enum ctl_status ctl_cmd_tail(struct ctl_ctx *ctx, struct ctl_call *call)
{
    json_int_t want;
    char path[4096];
    struct stat st;
    if (!ctl_arg_int(call, "lines", 1, TAIL_MAX_LINES, TAIL_DEFAULT, &want))
        return CTL_ERROR;
    maillog_flush();
    snprintf(path, sizeof(path), "%s/mail_logs", ctx->cfg->log_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ctl_error(call, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        close(fd);
        return ctl_error(call, "cannot stat %s: %s", path, strerror(errno));
    }
    size_t len;
    char *text = tail_read(fd, st.st_size, (size_t)want, &len);
    close(fd);
    json_t *lines = tail_lines(text, len, (size_t)want);
    free(text);
    call->result = json_pack("{s:s, s:o}", "file", path, "lines", lines);
    return CTL_DONE;
}
