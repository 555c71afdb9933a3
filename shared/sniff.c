/* TLS SNI and HTTP Host extraction, mirroring npm sni 1.0.0 and the Host
 * regex of proxy-packer 2.0.4's test/pack.js.  The reference does its
 * length arithmetic with signed JavaScript numbers; here every test is
 * written as `start + length > end` on size_t, which cannot wrap since no
 * position ever exceeds len + 2^17. */
#include <string.h>

#include "sniff.h"

static long
copy_out(const uint8_t *src, size_t n, char *out, size_t outcap,
    int ascii)
{
	size_t i, m;

	if (outcap == 0)
		return (long)n;
	m = n < outcap - 1 ? n : outcap - 1;
	for (i = 0; i < m; i++)
		out[i] = (char)(ascii ? (src[i] & 0x7f) : src[i]);
	out[m] = '\0';
	return (long)n;
}

static size_t
be16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

long
sniff_tls_sni(const uint8_t *d, size_t len, char *out, size_t outcap)
{
	size_t end = len, pos, n, list_end, type, nlen;

	if (outcap > 0)
		out[0] = '\0';
	if (d == NULL)
		return -1;
	/* Record header (5), handshake type and length (4), version (2),
	 * random (32): none of them checked, as in the reference. */
	pos = 43;
	if (pos + 1 > end)
		return -1;
	pos += 1 + d[pos];                      /* session id */
	if (pos + 2 > end)
		return -1;
	pos += 2 + be16(d + pos);               /* cipher suites */
	if (pos + 1 > end)
		return -1;
	pos += 1 + d[pos];                      /* compression methods */
	if (pos + 2 > end)
		return -1;
	n = be16(d + pos);                      /* extensions */
	pos += 2;
	if (pos + n > end)
		return -1;
	end = pos + n;

	while (pos + 4 <= end) {
		type = be16(d + pos);
		n = be16(d + pos + 2);
		pos += 4;
		if (type != 0) {
			pos += n;
			continue;
		}
		/* server_name: the reference steps over the name list by its
		 * own length, not the extension's. */
		if (pos + 2 > end)
			return -1;
		list_end = pos + 2 + be16(d + pos);
		n = pos + 2;
		pos = list_end;
		if (pos > end)
			return -1;
		while (n + 3 < pos) {
			type = d[n];
			nlen = be16(d + n + 1);
			n += 3;
			if (type == 0) {
				if (n + nlen > end)
					return -1;
				return copy_out(d + n, nlen, out, outcap, 1);
			}
			n += nlen;
		}
	}
	return -1;
}

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* JavaScript's multiline `^` matches after \n, \r, U+2028 and U+2029. */
static int
line_start(const uint8_t *d, size_t i)
{
	if (i == 0 || d[i - 1] == '\n' || d[i - 1] == '\r')
		return 1;
	return i >= 3 && d[i - 3] == 0xe2 && d[i - 2] == 0x80 &&
	    (d[i - 1] == 0xa8 || d[i - 1] == 0xa9);
}

long
sniff_http_host(const uint8_t *d, size_t len, char *out, size_t outcap)
{
	static const char key[] = "host: ";
	size_t i, k, v, e, o, m;

	if (outcap > 0)
		out[0] = '\0';
	if (d == NULL)
		return -1;
	for (i = 0; i + 6 < len; i++) {
		if (lower(d[i]) != 'h' || !line_start(d, i))
			continue;
		for (k = 1; k < 6 && lower(d[i + k]) == key[k]; k++)
			;
		if (k < 6)
			continue;
		v = i + 6;
		for (e = v; e < len && d[e] != '\r' && d[e] != '\n'; e++)
			;
		if (e == v)
			continue;       /* `[^\r\n]+` needs a byte */
		/* The value, lowercased, up to its first ':'. */
		for (o = 0, k = v; k < e && d[k] != ':'; o++) {
			if (d[k] == 0xe2 && k + 2 < e && d[k + 1] == 0x84 &&
			    d[k + 2] == 0xaa) {
				if (o + 1 < outcap)
					out[o] = 'k';
				k += 3;
			} else {
				if (o + 1 < outcap)
					out[o] = (char)lower(d[k]);
				k++;
			}
		}
		if (outcap > 0) {
			m = o < outcap - 1 ? o : outcap - 1;
			out[m] = '\0';
		}
		return (long)o;
	}
	return -1;
}

long
sniff_name(const uint8_t *d, size_t len, char *out, size_t outcap)
{
	long n;

	if ((n = sniff_tls_sni(d, len, out, outcap)) > 0)
		return n;
	if ((n = sniff_http_host(d, len, out, outcap)) > 0)
		return n;
	if (outcap > 0)
		out[0] = '\0';
	return 0;
}
