/* libFuzzer target for TLS SNI and HTTP Host extraction: no read outside
 * the input (libFuzzer hands over an exact-size buffer, ASan watches),
 * answers that fit inside it, and snprintf-like copying. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sniff.h"

#define must(cond) do {							\
	if (!(cond)) {							\
		fprintf(stderr, "fuzz_sniff: %s:%d: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
		abort();						\
	}								\
} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char full[1 << 17], small[9];
	long sni, host, name, n;

	sni = sniff_tls_sni(data, size, full, sizeof(full));
	/* The name sits after at least 58 bytes of ClientHello. */
	must(sni == -1 || (size_t)sni + 58 <= size);
	if (sni >= 0) {
		must(full[sni] == '\0');
		n = sniff_tls_sni(data, size, small, sizeof(small));
		must(n == sni);
		must(strlen(small) <= 8 && strncmp(small, full, 8) == 0);
	}

	host = sniff_http_host(data, size, full, sizeof(full));
	must(host == -1 || (size_t)host + 6 <= size);
	if (host >= 0) {
		must(full[host] == '\0');
		must(memchr(full, ':', (size_t)host) == NULL);
		must(memchr(full, '\r', (size_t)host) == NULL);
		must(memchr(full, '\n', (size_t)host) == NULL);
		for (n = 0; n < host; n++)
			must(full[n] < 'A' || full[n] > 'Z');
		n = sniff_http_host(data, size, small, sizeof(small));
		must(n == host);
	}

	/* `sni(data) || hostname || ''` */
	name = sniff_name(data, size, full, sizeof(full));
	must(name == (sni > 0 ? sni : host > 0 ? host : 0));
	must(full[name] == '\0');
	return 0;
}
