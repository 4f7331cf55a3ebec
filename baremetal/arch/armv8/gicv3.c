/* GICv3 (Arm IHI 0069): the hypervisor's side of the machine's GIC, and the list registers
 * through which its vCPUs see their interrupts. The virtual timer's PPI is handed to the guest
 * in a list register linked to the physical interrupt (HW = 1): the guest's EOI deactivates
 * the physical one, so the timer cannot fire again until the guest has taken it. */
#include <stdint.h>

#include "console.h"
#include "gic.h"
#include "platform.h"
#include "sysreg.h"

#define GICD_CTLR 0x0000
#define GICD_CTLR_RWP (1u << 31)
#define GICD_CTLR_ARE (1u << 4)
#define GICD_CTLR_ENABLE_G1 (1u << 1)
#define GICR_FRAME 0x20000ul
#define GICR_TYPER 0x0008
#define GICR_TYPER_LAST (1ul << 4)
#define GICR_WAKER 0x0014
#define GICR_WAKER_PROCESSOR_SLEEP (1u << 1)
#define GICR_WAKER_CHILDREN_ASLEEP (1u << 2)
#define GICR_SGI 0x10000ul /* the SGI_base frame */
#define GICR_IGROUPR0 0x0080
#define GICR_ISENABLER0 0x0100
#define GICR_IPRIORITYR 0x0400
#define ICC_SRE_SRE (1ul << 0)
#define ICC_SRE_ENABLE (1ul << 3) /* EL1 may use the system registers too */
#define ICC_CTLR_EOIMODE (1ul << 1) /* EOI drops priority; deactivation is apart */
#define ICH_HCR_EN (1ul << 0)
#define ICH_LR_PENDING (1ul << 62)
#define ICH_LR_HW (1ul << 61)
#define ICH_LR_GROUP1 (1ul << 60)
#define ICH_LR_PRIORITY(p) ((uint64_t)(p) << 48)
#define ICH_LR_PINTID(i) ((uint64_t)(i) << 32)
#define PRIORITY 0xa0
#define SPURIOUS 1020

static volatile uint32_t *reg32(uint64_t address)
{
	return (volatile uint32_t *)address;
}

int gic_v3(void)
{
	return (read_sysreg(id_aa64pfr0_el1) >> 24 & 0xf) != 0;
}

void gic_init(void)
{
	if (!gic_v3())
		return;
	*reg32(GICD_BASE + GICD_CTLR) = GICD_CTLR_ARE;
	while (*reg32(GICD_BASE + GICD_CTLR) & GICD_CTLR_RWP)
		;
	*reg32(GICD_BASE + GICD_CTLR) = GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1;
}

/* this CPU's redistributor: the frame whose affinity is its MPIDR's */
static uint64_t redistributor(void)
{
	uint64_t mpidr = read_sysreg(mpidr_el1);
	uint64_t affinity = (mpidr >> 32 & 0xff) << 24 | (mpidr & 0xffffff);
	for (uint64_t frame = GICR_BASE;; frame += GICR_FRAME) {
		uint64_t typer = *(volatile uint64_t *)(frame + GICR_TYPER);
		if (typer >> 32 == affinity)
			return frame;
		if (typer & GICR_TYPER_LAST)
			panic("no GIC redistributor for CPU %lx", affinity);
	}
}

static void write_lr(unsigned n, uint64_t value)
{
	switch (n) {
	case 0: write_sysreg(ich_lr0_el2, value); break;
	case 1: write_sysreg(ich_lr1_el2, value); break;
	case 2: write_sysreg(ich_lr2_el2, value); break;
	case 3: write_sysreg(ich_lr3_el2, value); break;
	}
}

void gic_init_cpu(void)
{
	if (!gic_v3())
		return;
	uint64_t rd = redistributor();
	*reg32(rd + GICR_WAKER) &= ~GICR_WAKER_PROCESSOR_SLEEP;
	while (*reg32(rd + GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP)
		;
	*reg32(rd + GICR_SGI + GICR_IGROUPR0) = ~0u; /* all group 1 */
	for (unsigned i = 0; i < 32; i += 4) /* every SGI and PPI at one priority */
		*reg32(rd + GICR_SGI + GICR_IPRIORITYR + i) = PRIORITY * 0x01010101u;
	*reg32(rd + GICR_SGI + GICR_ISENABLER0) = 1u << INTID_VTIMER;

	write_sysreg(icc_sre_el2, ICC_SRE_SRE | ICC_SRE_ENABLE);
	isb();
	write_sysreg(icc_pmr_el1, 0xff);
	write_sysreg(icc_ctlr_el1, ICC_CTLR_EOIMODE);
	write_sysreg(icc_igrpen1_el1, 1);
	for (unsigned n = 0; n < 4; n++)
		write_lr(n, 0);
	write_sysreg(ich_vmcr_el2, 0);
	write_sysreg(ich_hcr_el2, ICH_HCR_EN);
	isb();
}

void gic_irq(struct vcpu *v)
{
	(void)v;
	uint64_t intid = read_sysreg(icc_iar1_el1) & 0xffffff;
	if (intid >= SPURIOUS)
		return;
	write_sysreg(icc_eoir1_el1, intid); /* priority drop */
	if (intid == INTID_VTIMER) {
		uint64_t empty = read_sysreg(ich_elrsr_el2);
		unsigned lrs = (read_sysreg(ich_vtr_el2) & 0x1f) + 1;
		for (unsigned n = 0; n < lrs && n < 4; n++)
			if (empty >> n & 1) {
				write_lr(n, ICH_LR_PENDING | ICH_LR_HW | ICH_LR_GROUP1 |
						    ICH_LR_PRIORITY(PRIORITY) | ICH_LR_PINTID(intid) | intid);
				return;
			}
	}
	write_sysreg(icc_dir_el1, intid); /* nowhere to go: deactivated */
}
