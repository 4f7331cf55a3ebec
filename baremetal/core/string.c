/* What the compiler may call even in a freestanding program. */
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

void *memcpy(void *dest, const void *src, size_t n)
{
	uint8_t *d = dest;
	const uint8_t *s = src;
	if (!(((uintptr_t)d | (uintptr_t)s | n) & 7)) {
		for (size_t i = 0; i < n / 8; i++)
			((uint64_t *)d)[i] = ((const uint64_t *)s)[i];
		return dest;
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
