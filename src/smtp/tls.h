/*
 * tls: OpenSSL contexts for the SMTP server (STARTTLS, RFC 3207).
 *
 * One SSL_CTX per listener that has a certificate, built at configuration
 * load so a bad certificate or key is a configuration error, not a failure
 * of the first client that says STARTTLS. Sessions create their SSL objects
 * from it; OpenSSL reference-counts the context, so a reload that replaces
 * it never pulls it from under a running handshake.
 */
#ifndef POSTERN_SMTP_TLS_H
#define POSTERN_SMTP_TLS_H

#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;

/* Build a server context from PEM files; NULL with a message in err. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
void tls_ctx_free(SSL_CTX *ctx);
/* The OpenSSL error queue as one line (and cleared), for logs. */
const char *tls_last_error(char *buf, size_t len);

#endif
