/*
 * tls: server SSL_CTX construction (see tls.h).
 *
 * Policy: TLS 1.2 or newer (RFC 8996 retired 1.0/1.1; RFC 8314 and the
 * mail community's practice), OpenSSL's default cipher lists, no session
 * tickets renegotiation games: SSL_OP_NO_RENEGOTIATION, because a client-
 * initiated renegotiation is a cheap CPU-exhaustion attack on a server.
 */
#include "smtp/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>

const char *tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    char ebuf[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new: %s", tls_last_error(ebuf, sizeof(ebuf)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Release per-connection buffers when idle: many idle TLS sessions
     * should not pin 2 x 16 KiB each. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "certificate %s: %s", cert_file, tls_last_error(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "key %s: %s", key_file, tls_last_error(ebuf, sizeof(ebuf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "key %s does not match certificate %s", key_file, cert_file);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}
