/* Connection IDs -> tunnels: a chained hash table.  IDs are 16 random
 * bytes made by the relay, so their first 8 bytes are already a uniform
 * hash; lookups with attacker-chosen IDs can only miss. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "relay.h"

struct id_entry {
	uint8_t          ie_id[RELAY_ID_BYTES];
	void            *ie_val;
	struct id_entry *ie_next;
};

struct idtable {
	struct id_entry **it_buckets;
	size_t            it_nbuckets;   /* a power of two */
	size_t            it_count;
};

#define IDTABLE_MIN_BUCKETS 64

static size_t
idtable_slot(const struct idtable *t, const uint8_t id[RELAY_ID_BYTES])
{
	uint64_t h;

	memcpy(&h, id, sizeof(h));
	return (size_t)(h & (t->it_nbuckets - 1));
}

struct idtable *
idtable_new(void)
{
	struct idtable *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->it_nbuckets = IDTABLE_MIN_BUCKETS;
	if ((t->it_buckets = calloc(t->it_nbuckets, sizeof(*t->it_buckets))) == NULL) {
		free(t);
		return NULL;
	}
	return t;
}

void
idtable_free(struct idtable *t)
{
	struct id_entry *e, *next;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->it_nbuckets; i++)
		for (e = t->it_buckets[i]; e != NULL; e = next) {
			next = e->ie_next;
			free(e);
		}
	free(t->it_buckets);
	free(t);
}

/* Doubles the bucket array; on failure the table just stays denser. */
static void
idtable_grow(struct idtable *t)
{
	struct id_entry **nb, **ob = t->it_buckets, *e, *next;
	size_t i, on = t->it_nbuckets, slot;

	if ((nb = calloc(on * 2, sizeof(*nb))) == NULL)
		return;
	t->it_buckets = nb;
	t->it_nbuckets = on * 2;
	for (i = 0; i < on; i++)
		for (e = ob[i]; e != NULL; e = next) {
			next = e->ie_next;
			slot = idtable_slot(t, e->ie_id);
			e->ie_next = nb[slot];
			nb[slot] = e;
		}
	free(ob);
}

int
idtable_add(struct idtable *t, const uint8_t id[RELAY_ID_BYTES], void *val)
{
	struct id_entry *e;
	size_t slot;

	if (idtable_find(t, id) != NULL)
		return -1;
	if ((e = malloc(sizeof(*e))) == NULL)
		return -1;
	memcpy(e->ie_id, id, RELAY_ID_BYTES);
	e->ie_val = val;
	slot = idtable_slot(t, id);
	e->ie_next = t->it_buckets[slot];
	t->it_buckets[slot] = e;
	t->it_count++;
	if (t->it_count > t->it_nbuckets)
		idtable_grow(t);
	return 0;
}

void *
idtable_find(const struct idtable *t, const uint8_t id[RELAY_ID_BYTES])
{
	const struct id_entry *e;

	for (e = t->it_buckets[idtable_slot(t, id)]; e != NULL; e = e->ie_next)
		if (memcmp(e->ie_id, id, RELAY_ID_BYTES) == 0)
			return e->ie_val;
	return NULL;
}

void *
idtable_remove(struct idtable *t, const uint8_t id[RELAY_ID_BYTES])
{
	struct id_entry **pp, *e;
	void *val;

	for (pp = &t->it_buckets[idtable_slot(t, id)]; (e = *pp) != NULL;
	    pp = &e->ie_next)
		if (memcmp(e->ie_id, id, RELAY_ID_BYTES) == 0) {
			*pp = e->ie_next;
			val = e->ie_val;
			free(e);
			t->it_count--;
			return val;
		}
	return NULL;
}

size_t
idtable_count(const struct idtable *t)
{
	return t->it_count;
}

void
idtable_id_text(const uint8_t id[RELAY_ID_BYTES], char out[RELAY_ID_TEXT + 1])
{
	sodium_bin2base64(out, RELAY_ID_TEXT + 1, id, RELAY_ID_BYTES,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int
idtable_id_parse(const char *text, uint8_t id[RELAY_ID_BYTES])
{
	size_t len = 0;

	if (strlen(text) != RELAY_ID_TEXT)
		return -1;
	if (sodium_base642bin(id, RELAY_ID_BYTES, text, RELAY_ID_TEXT, NULL, &len,
	    NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || len != RELAY_ID_BYTES)
		return -1;
	return 0;
}
