/* The hypervisor's own translation (EL2 stage 1): the first 4 GiB mapped to themselves in
 * 1 GiB blocks, RAM as normal cacheable memory, the board's device window as device memory.
 * Guests never use these tables: theirs are stage 2 (stage2.c). */
#include <stdint.h>

#include "mmu.h"
#include "platform.h"
#include "sysreg.h"

#define DESC_BLOCK 1ul
#define ATTR_NORMAL (0ul << 2) /* MAIR_EL2 attribute 0 */
#define ATTR_DEVICE (1ul << 2) /* MAIR_EL2 attribute 1 */
#define SH_INNER (3ul << 8)
#define AF (1ul << 10)
#define XN (1ul << 54)
#define MAIR_VALUE (0xfful | 0x04ul << 8) /* 0: normal write-back; 1: device-nGnRE */

#define TCR_T0SZ_32 32ul
#define TCR_IRGN0_WBWA (1ul << 8)
#define TCR_ORGN0_WBWA (1ul << 10)
#define TCR_SH0_INNER (3ul << 12)
#define TCR_PS_SHIFT 16
#define TCR_RES1 (1ul << 23 | 1ul << 31)

#define SCTLR_M (1ul << 0)
#define SCTLR_C (1ul << 2)
#define SCTLR_SA (1ul << 3)
#define SCTLR_I (1ul << 12)
#define SCTLR_EL2_RES1 0x30c50830ul

static uint64_t table[512] __attribute__((aligned(4096)));

void mmu_build(void)
{
	for (uint64_t gib = 0; gib < 4; gib++) {
		uint64_t device = DEVICE_GIB_MASK >> gib & 1;
		table[gib] = gib << 30 | DESC_BLOCK | AF |
			     (device ? ATTR_DEVICE | XN : ATTR_NORMAL | SH_INNER);
	}
}

void mmu_enable(void)
{
	uint64_t parange = read_sysreg(id_aa64mmfr0_el1) & 0xf;
	if (parange > 5)
		parange = 5;
	write_sysreg(mair_el2, MAIR_VALUE);
	write_sysreg(tcr_el2, TCR_RES1 | parange << TCR_PS_SHIFT | TCR_SH0_INNER | TCR_ORGN0_WBWA |
				      TCR_IRGN0_WBWA | TCR_T0SZ_32);
	write_sysreg(ttbr0_el2, (uint64_t)table);
	__asm__ volatile("dsb ish\n tlbi alle2\n dsb ish\n isb" ::: "memory");
	write_sysreg(sctlr_el2, SCTLR_EL2_RES1 | SCTLR_I | SCTLR_SA | SCTLR_C | SCTLR_M);
	isb();
}

void clean_to_poc(uint64_t start, uint64_t size)
{
	uint64_t line = 4ul << (read_sysreg(ctr_el0) >> 16 & 0xf); /* DminLine, in bytes */
	for (uint64_t a = start & ~(line - 1); a < start + size; a += line)
		__asm__ volatile("dc civac, %0" : : "r"(a) : "memory");
	__asm__ volatile("dsb sy\n ic iallu\n dsb sy\n isb" ::: "memory");
}
