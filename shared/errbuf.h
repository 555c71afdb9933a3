/* Caller-supplied error strings: library code reports what went wrong
 * by filling (err, errlen) instead of printing. */
#ifndef POSTERN_ERRBUF_H
#define POSTERN_ERRBUF_H

#include <stddef.h>

#define ERRBUF_QUOTE_MAX 48   /* how much of a bad input a message echoes */

/* snprintf into err; a NULL or empty buffer is ignored. */
void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Untrusted text (a header, a config value) goes into messages that end
 * up in logs and JSON bodies: copies at most ERRBUF_QUOTE_MAX bytes of
 * s[0..len) with non-printable bytes as '?', and "..." when cut.
 * out holds ERRBUF_QUOTE_MAX + 4 bytes. */
void errbuf_quote(const char *s, size_t len, char out[ERRBUF_QUOTE_MAX + 4]);

#endif
