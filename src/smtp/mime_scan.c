/*
 * mime_scan: see mime_scan.h.
 *
 * Line machine: LINE_START -> (name chars) -> either a Content-Type /
 * Content-Disposition header being collected, or SKIP to the end of the
 * line. A collected header continues over folded lines (a line starting
 * with SP or HTAB) and is measured when a line that is not a continuation
 * starts, or at finish.
 */
#include "smtp/mime_scan.h"

#include <string.h>

enum { MS_LINE_START, MS_NAME, MS_SKIP, MS_COLLECT, MS_CR };

static const char *const watched[] = {"content-type:", "content-disposition:"};

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

void mime_scan_init(struct mime_scan *m)
{
    memset(m, 0, sizeof(*m));
    m->state = MS_LINE_START;
}

/* Length of a parameter value starting at v (quoted string or token). */
static size_t value_len(const char *v, size_t n, size_t *consumed)
{
    size_t i = 0, len = 0;
    if (n > 0 && v[0] == '"') {
        for (i = 1; i < n && v[i] != '"'; i++) {
            if (v[i] == '\\' && i + 1 < n)
                i++;
            len++;
        }
        *consumed = i < n ? i + 1 : i;
        return len;
    }
    while (i < n && v[i] != ';' && v[i] != ' ' && v[i] != '\t')
        i++;
    *consumed = i;
    return i;
}

/* Does the parameter name p[0..n) count as a filename (name, filename,
 * filename*, filename*0, filename*0*, name*...)? Sets *cont when it is an
 * RFC 2231 continuation or extended form that must be summed. */
static bool is_filename_param(const char *p, size_t n, bool *cont)
{
    static const char *const bases[] = {"filename", "name"};
    for (size_t b = 0; b < 2; b++) {
        size_t bl = strlen(bases[b]);
        if (n < bl)
            continue;
        bool eq = true;
        for (size_t i = 0; i < bl && eq; i++)
            eq = lower((unsigned char)p[i]) == bases[b][i];
        if (!eq)
            continue;
        if (n == bl) {
            *cont = false;
            return true;
        }
        if (p[bl] == '*') {
            *cont = true;
            return true;
        }
    }
    return false;
}

size_t mime_scan_header_filename_len(const char *line, size_t len)
{
    size_t best = 0, cont_sum = 0;
    const char *colon = memchr(line, ':', len);
    size_t i = colon ? (size_t)(colon - line) + 1 : len;
    while (i < len) {
        /* find the next ';' separated parameter */
        while (i < len && line[i] != ';')
            i++;
        if (i >= len)
            break;
        i++;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && line[i] != '=' && line[i] != ';')
            i++;
        if (i >= len || line[i] != '=')
            continue;
        size_t plen = i - start;
        while (plen > 0 && (line[start + plen - 1] == ' ' || line[start + plen - 1] == '\t'))
            plen--;
        i++;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        size_t used;
        size_t vlen = value_len(line + i, len - i, &used);
        i += used;
        bool cont;
        if (!is_filename_param(line + start, plen, &cont))
            continue;
        if (cont)
            cont_sum += vlen;
        else if (vlen > best)
            best = vlen;
    }
    return best > cont_sum ? best : cont_sum;
}

static void measure(struct mime_scan *m)
{
    if (m->in_content_hdr) {
        size_t n = mime_scan_header_filename_len(m->hdr, m->hdr_len);
        if (n > m->longest)
            m->longest = n;
    }
    m->in_content_hdr = false;
    m->hdr_len = 0;
}

static void collect(struct mime_scan *m, char c)
{
    /* beyond the buffer the header is cut: a filename longer than the
     * buffer is already far over any limit */
    if (m->hdr_len < sizeof(m->hdr))
        m->hdr[m->hdr_len++] = c;
    else if (m->longest < sizeof(m->hdr))
        m->longest = sizeof(m->hdr);
}

/* At the first character of a line: a continuation keeps collecting. */
static void line_start(struct mime_scan *m, char c)
{
    if ((c == ' ' || c == '\t') && m->in_content_hdr) {
        m->state = MS_COLLECT;
        collect(m, ' ');
        return;
    }
    measure(m);
    m->name_len = 0;
    m->state = MS_NAME;
}

static void name_char(struct mime_scan *m, char c)
{
    int lc = lower((unsigned char)c);
    for (size_t w = 0; w < 2; w++) {
        const char *name = watched[w];
        if (m->name_len < strlen(name) && strncmp(m->hdr, name, m->name_len) == 0 &&
            name[m->name_len] == lc) {
            m->hdr[m->name_len++] = (char)lc;
            if (m->name_len == strlen(name)) {
                m->in_content_hdr = true;
                m->hdr_len = m->name_len;
                m->state = MS_COLLECT;
            }
            return;
        }
    }
    m->state = MS_SKIP;
}

void mime_scan_feed(struct mime_scan *m, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '\n') {
            m->state = MS_LINE_START;
            continue;
        }
        if (c == '\r')
            continue;
        if (m->state == MS_LINE_START)
            line_start(m, c);
        if (m->state == MS_NAME) {
            /* line_start just moved here for this very character */
            name_char(m, c);
            continue;
        }
        if (m->state == MS_COLLECT)
            collect(m, c);
    }
}

void mime_scan_finish(struct mime_scan *m)
{
    measure(m);
}
