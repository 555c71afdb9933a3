/* Ed25519 identities (libsodium crypto_sign).
 *
 * Key file (mode 0600, refused otherwise):
 *     # postern ed25519 secret key; public ed25519:BASE64
 *     ed25519-secret:BASE64(64-byte libsodium secret key)
 * Public key text: "ed25519:" + standard base64 (with padding) of 32 bytes. */
#ifndef POSTERN_KEY_H
#define POSTERN_KEY_H

#include <stddef.h>
#include <stdint.h>

#define KEY_PUBLIC_BYTES 32
#define KEY_SECRET_BYTES 64
#define KEY_PUBLIC_TEXT_MAX 64   /* "ed25519:" + 44 chars + NUL fits */
#define KEY_FILE_MAX 4096        /* a key file is ~200 bytes */

struct key {
	uint8_t k_pub[KEY_PUBLIC_BYTES];
	uint8_t k_sec[KEY_SECRET_BYTES];
};

/* All return 0 on success, -1 with err filled ("what, and what to do"). */
int  key_generate(struct key *k, char *err, size_t errlen);
/* Creates path with O_EXCL and mode 0600; refuses to overwrite. */
int  key_save(const struct key *k, const char *path, char *err, size_t errlen);
/* Refuses a file readable or writable by group or others. */
int  key_load(struct key *k, const char *path, char *err, size_t errlen);
/* Parses key file contents (what key_load does after its mode check);
 * name is the file named in messages.  At most KEY_FILE_MAX bytes. */
int  key_parse(struct key *k, const char *text, size_t len, const char *name,
               char *err, size_t errlen);
void key_wipe(struct key *k);  /* sodium_memzero */
void key_public_text(const uint8_t pub[KEY_PUBLIC_BYTES], char out[KEY_PUBLIC_TEXT_MAX]);
int  key_public_parse(const char *text, uint8_t pub[KEY_PUBLIC_BYTES], char *err, size_t errlen);

#endif
