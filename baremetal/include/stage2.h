/* Stage-2 translation (Arm ARM D8): the machine addresses a VM may reach. */
#ifndef STAGE2_H
#define STAGE2_H

#include <stdint.h>

struct stage2 {
	uint64_t *root; /* the level-1 table: 4 entries of 1 GiB (a 32-bit IPA space) */
};

enum stage2_kind { STAGE2_RAM, STAGE2_DEVICE };

/* 0, or -1 when the table pool is exhausted or the range is not page-aligned. */
int stage2_init(struct stage2 *s2);
int stage2_map(struct stage2 *s2, uint64_t ipa, uint64_t pa, uint64_t size, enum stage2_kind kind);
uint64_t stage2_vtcr(void);

#endif
