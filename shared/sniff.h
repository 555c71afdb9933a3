/* Names a connection's first bytes announce, as proxy-packer 2.0.4's
 * test/pack.js finds them: the TLS SNI server name (npm `sni` 1.0.0), else
 * the HTTP Host header without its port.  Every read is bounds-checked;
 * on well-formed input the answers are the reference's.
 *
 * The functions copy like snprintf: at most outcap - 1 bytes and a NUL
 * (when outcap > 0), and return the name's full length, so a result >=
 * outcap means out was too small.  -1 means no name was found. */
#ifndef POSTERN_SNIFF_H
#define POSTERN_SNIFF_H

#include <stddef.h>
#include <stdint.h>

/* A TLS HostName is at most 2^16 - 1 bytes; an HTTP Host value is bounded
 * only by its input. */
#define SNIFF_SNI_MAX 65535

/* The host_name of a ClientHello's server_name extension, decoded the way
 * Node decodes 'ascii' (each byte's high bit cleared).  Like the reference
 * it does not check the record or handshake type: it walks the bytes as a
 * ClientHello.  0 for an empty name. */
long sniff_tls_sni(const uint8_t *data, size_t len, char *out, size_t outcap);

/* The first `Host: ` line's value (case-insensitive name, exactly one
 * space), lowercased, cut at its first ':'; `/(?:^|[\r\n])Host:
 * ([^\r\n]+)[\r\n]*\/im` over the bytes as UTF-8.  Bytes above 0x7f are
 * returned as they are (except U+212A KELVIN SIGN, which JavaScript
 * lowercases to 'k'). */
long sniff_http_host(const uint8_t *data, size_t len, char *out,
    size_t outcap);

/* The reference's `sni(data) || hostname`: a non-empty SNI name, else the
 * Host value, else "" (returns 0). */
long sniff_name(const uint8_t *data, size_t len, char *out, size_t outcap);

#endif
