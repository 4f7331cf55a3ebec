#ifndef MMU_H
#define MMU_H

#include <stdint.h>

void mmu_build(void); /* once, on the boot CPU */
void mmu_enable(void); /* on every CPU */
/* write [start, start + size) back to memory (guests start with their MMU and caches off) */
void clean_to_poc(uint64_t start, uint64_t size);

#endif
