/* What the compiler may call even in a freestanding program. */
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

void *memcpy(void *dest, const void *src, size_t n)
{
	uint8_t *d = dest;
	const uint8_t *s = src;
	if (!(((uintptr_t)d | (uintptr_t)s) & 7)) { /* (the payloads: 64 bytes a turn) */
		uint64_t *d8 = dest;
		const uint64_t *s8 = src;
		for (; n >= 64; n -= 64, d8 += 8, s8 += 8) {
			uint64_t a = s8[0], b = s8[1], c = s8[2], e = s8[3];
			uint64_t f = s8[4], g = s8[5], h = s8[6], k = s8[7];
			d8[0] = a, d8[1] = b, d8[2] = c, d8[3] = e;
			d8[4] = f, d8[5] = g, d8[6] = h, d8[7] = k;
		}
		d = (uint8_t *)d8;
		s = (const uint8_t *)s8;
	}
	while (n--)
		*d++ = *s++;
	return dest;
}

void *memset(void *dest, int c, size_t n)
{
	uint8_t *d = dest;
	while (n--)
		*d++ = (uint8_t)c;
	return dest;
}
