/* Stage-2 tables: 4 KiB granule, 32-bit IPA starting at level 1 (VTCR_EL2.T0SZ = 32, SL0 = 1),
 * 2 MiB blocks where a range allows them, 4 KiB pages elsewhere; tables from a static pool. */
#include <stdint.h>

#include "stage2.h"
#include "sysreg.h"

#define PAGE 4096ul
#define BLOCK (2ul << 20)
#define ENTRIES 512
#define POOL_PAGES 64

#define DESC_VALID (1ul << 0)
#define DESC_TABLE (1ul << 1) /* at levels 1 and 2; a page at level 3 */
#define S2_MEMATTR_NORMAL_WB (0xful << 2)
#define S2_MEMATTR_DEVICE_nGnRE (0x1ul << 2)
#define S2AP_RW (3ul << 6)
#define SH_INNER (3ul << 8)
#define AF (1ul << 10)
#define XN (2ul << 53) /* stage 2: XN[1:0] = 0b10, execute-never at EL1 and EL0 */
#define ADDRESS_MASK 0x0000fffffffff000ul

#define VTCR_T0SZ(bits) ((uint64_t)(64 - (bits)))
#define VTCR_SL0_LEVEL1 (1ul << 6)
#define VTCR_IRGN0_WBWA (1ul << 8)
#define VTCR_ORGN0_WBWA (1ul << 10)
#define VTCR_SH0_INNER (3ul << 12)
#define VTCR_TG0_4K (0ul << 14)
#define VTCR_PS_SHIFT 16
#define VTCR_RES1 (1ul << 31)

static uint64_t pool[POOL_PAGES][ENTRIES] __attribute__((aligned(4096)));
static unsigned pool_used;

static uint64_t *new_table(void)
{
	if (pool_used == POOL_PAGES)
		return 0;
	uint64_t *table = pool[pool_used++];
	for (int i = 0; i < ENTRIES; i++)
		table[i] = 0;
	return table;
}

uint64_t stage2_vtcr(void)
{
	uint64_t parange = read_sysreg(id_aa64mmfr0_el1) & 0xf;
	if (parange > 5) /* 52-bit PAs need more than this table format: 48 is plenty */
		parange = 5;
	return VTCR_RES1 | parange << VTCR_PS_SHIFT | VTCR_TG0_4K | VTCR_SH0_INNER |
	       VTCR_ORGN0_WBWA | VTCR_IRGN0_WBWA | VTCR_SL0_LEVEL1 | VTCR_T0SZ(32);
}

int stage2_init(struct stage2 *s2)
{
	s2->root = new_table();
	return s2->root ? 0 : -1;
}

/* the next-level table under `entry`, made if missing (0 if the pool is exhausted) */
static uint64_t *next_table(uint64_t *entry)
{
	if (!(*entry & DESC_VALID)) {
		uint64_t *table = new_table();
		if (!table)
			return 0;
		*entry = (uint64_t)table | DESC_TABLE | DESC_VALID;
	}
	return (uint64_t *)(*entry & ADDRESS_MASK);
}

int stage2_map(struct stage2 *s2, uint64_t ipa, uint64_t pa, uint64_t size, enum stage2_kind kind)
{
	uint64_t attributes = AF | S2AP_RW |
			      (kind == STAGE2_RAM ? S2_MEMATTR_NORMAL_WB | SH_INNER
						  : S2_MEMATTR_DEVICE_nGnRE | XN);
	if ((ipa | pa | size) & (PAGE - 1) || ipa + size > (1ul << 32) || ipa + size < ipa)
		return -1;
	while (size) {
		uint64_t *level2 = next_table(&s2->root[ipa >> 30]);
		if (!level2)
			return -1;
		uint64_t *entry2 = &level2[(ipa >> 21) & (ENTRIES - 1)];
		if (!((ipa | pa) & (BLOCK - 1)) && size >= BLOCK && !(*entry2 & DESC_VALID)) {
			*entry2 = pa | attributes | DESC_VALID; /* a 2 MiB block */
			ipa += BLOCK, pa += BLOCK, size -= BLOCK;
			continue;
		}
		if ((*entry2 & (DESC_TABLE | DESC_VALID)) == DESC_VALID)
			return -1; /* already a block: ranges overlap */
		uint64_t *level3 = next_table(entry2);
		if (!level3)
			return -1;
		level3[(ipa >> 12) & (ENTRIES - 1)] = pa | attributes | DESC_TABLE | DESC_VALID;
		ipa += PAGE, pa += PAGE, size -= PAGE;
	}
	return 0;
}
