/* memcpy and memset (core/string.c): the compiler may call them too. */
#ifndef MEM_H
#define MEM_H

#include <stddef.h>

void *memcpy(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);

#endif
