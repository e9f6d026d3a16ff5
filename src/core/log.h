/*
 * log: mail_logs in the appliance format, one line per event:
 *
 *   Wed Nov 25 16:38:30 2026 Info: New SMTP ICID 5 interface ...
 *
 * Lines are formatted into a process-wide buffer and written with one
 * write(2) per loop turn (maillog_flush(), called from the loop's flush
 * event) or when the buffer fills, never one syscall per line. The log is
 * written before the reply it explains is flushed to the client.
 *
 * Every value that comes from the network goes through log_escape() first,
 * so a client cannot forge log lines (CR, LF) or confuse a reader (quotes,
 * control bytes, invalid UTF-8).
 */
#ifndef POSTERN_CORE_LOG_H
#define POSTERN_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_CRITICAL };

/* Open DIR/mail_logs for appending (creating DIR if needed). Returns 0 or -errno. */
int maillog_open(const char *dir);
/* Also copy every line to stderr (foreground runs). */
void maillog_set_stderr(bool on);
/* Reopen the file (after rotation, or a new log dir on reload). */
int maillog_reopen(const char *dir);
void maillog_close(void);

void maillog(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void maillogv(enum log_level level, const char *fmt, va_list ap);
/* Write buffered lines out. */
void maillog_flush(void);
/* Register a callback run whenever a line is buffered and no flush is
 * pending (the daemon uses it to schedule a flush event). */
void maillog_set_flush_hook(void (*hook)(void));
/* Register fn to see every line as it is buffered: "Level: text", without
 * the timestamp and the newline (message tracking feeds on it). A line
 * logged from inside fn is not passed to fn again. NULL removes it. */
void maillog_set_tap(void (*fn)(void *ctx, const char *line, size_t len), void *ctx);

/* Escape src[0..len) for a log line into dst (NUL-terminated, truncated to
 * fit dstlen with "..." appended when truncated): printable ASCII and valid
 * UTF-8 pass, backslash and single quote are escaped, everything else
 * becomes \xHH. Returns dst. */
char *log_escape(char *dst, size_t dstlen, const char *src, size_t len);

#endif
