/* Caller-supplied error strings; see errbuf.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errbuf.h"

void
errbuf_set(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void
errbuf_quote(const char *s, size_t len, char out[ERRBUF_QUOTE_MAX + 4])
{
	size_t i, n;

	n = len < ERRBUF_QUOTE_MAX ? len : ERRBUF_QUOTE_MAX;
	for (i = 0; i < n; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (len > n)
		memcpy(out + n, "...", 4);
	else
		out[n] = '\0';
}
