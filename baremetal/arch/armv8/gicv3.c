/* GICv3 (Arm IHI 0069): the hypervisor's side of the machine's GIC, and the ICH_*_EL2 list
 * registers through which its vCPUs see their interrupts. */
#include <stdint.h>

#include "console.h"
#include "gic.h"
#include "platform.h"
#include "sysreg.h"

#define GICD_CTLR 0x0000
#define GICD_CTLR_RWP (1u << 31)
#define GICD_CTLR_ARE (1u << 4)
#define GICD_CTLR_ENABLE_G1 (1u << 1)
#define GICD_ISENABLER 0x0100
#define GICD_IPRIORITYR 0x0400
#define GICD_IGROUPR 0x0080
#define GICD_ICFGR 0x0c00
#define GICD_IROUTER 0x6000
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
#define ICH_HCR_UIE (1ul << 1)
#define ICH_LR_STATE(lr) ((lr) >> 62)
#define ICH_LR_HW (1ul << 61)
#define ICH_LR_GROUP1 (1ul << 60)
#define ICH_LR_EOI (1ul << 41)
#define ICH_LR_PRIORITY(lr) ((lr) >> 48 & 0xff)
#define ICH_LR_PINTID_SHIFT 32
#define PRIORITY 0xa0 /* every physical interrupt the hypervisor takes */

static uint64_t cpu_affinity[MAX_CPUS]; /* each CPU's MPIDR (for SGIs and routing) */

static volatile uint32_t *reg32(uint64_t address)
{
	return (volatile uint32_t *)address;
}

static void init(void)
{
	*reg32(GICD_BASE + GICD_CTLR) = GICD_CTLR_ARE;
	while (*reg32(GICD_BASE + GICD_CTLR) & GICD_CTLR_RWP)
		;
	*reg32(GICD_BASE + GICD_CTLR) = GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1;
}

/* this CPU's redistributor: the frame whose affinity is its MPIDR's */
static uint64_t redistributor(uint64_t mpidr)
{
	uint64_t affinity = (mpidr >> 32 & 0xff) << 24 | (mpidr & 0xffffff);
	for (uint64_t frame = GICR_BASE;; frame += GICR_FRAME) {
		uint64_t typer = *(volatile uint64_t *)(frame + GICR_TYPER);
		if (typer >> 32 == affinity)
			return frame;
		if (typer & GICR_TYPER_LAST)
			panic("no GIC redistributor for CPU %lx", affinity);
	}
}

static unsigned lrs(void)
{
	unsigned n = (read_sysreg(ich_vtr_el2) & 0x1f) + 1;
	return n < GIC_MAX_LRS ? n : GIC_MAX_LRS;
}

#define EACH_LR(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

static uint64_t lr_get(unsigned n)
{
	switch (n) {
#define GET(i) case i: return read_sysreg(ich_lr##i##_el2);
	EACH_LR(GET)
	}
	return 0;
}

static void lr_set(unsigned n, uint64_t value)
{
	switch (n) {
#define SET(i) case i: write_sysreg(ich_lr##i##_el2, value); break;
	EACH_LR(SET)
	}
}

static void lr_read(unsigned n, struct lr *lr)
{
	uint64_t value = lr_get(n);
	lr->intid = (uint32_t)value;
	lr->state = ICH_LR_STATE(value);
	lr->priority = ICH_LR_PRIORITY(value);
	lr->group1 = !!(value & ICH_LR_GROUP1);
	lr->hw = !!(value & ICH_LR_HW);
	lr->eoi = !lr->hw && value & ICH_LR_EOI;
	lr->source = 0;
}

static void lr_write(unsigned n, const struct lr *lr)
{
	uint64_t value = 0;
	if (lr->state) {
		value = (uint64_t)lr->state << 62 | (uint64_t)lr->priority << 48 | lr->intid;
		if (lr->group1)
			value |= ICH_LR_GROUP1;
		if (lr->hw)
			value |= ICH_LR_HW | (uint64_t)lr->intid << ICH_LR_PINTID_SHIFT;
		else if (lr->eoi)
			value |= ICH_LR_EOI;
	}
	lr_set(n, value);
}

static void underflow(int on)
{
	write_sysreg(ich_hcr_el2, ICH_HCR_EN | (on ? ICH_HCR_UIE : 0));
}

static void vcpu_reset(void)
{
	for (unsigned n = 0; n < lrs(); n++)
		lr_set(n, 0);
	write_sysreg(ich_ap0r0_el2, 0);
	write_sysreg(ich_ap1r0_el2, 0);
	write_sysreg(ich_vmcr_el2, 0);
	underflow(0);
	isb();
}

static void init_cpu(unsigned cpu)
{
	uint64_t mpidr = read_sysreg(mpidr_el1);
	uint64_t rd = redistributor(mpidr);
	cpu_affinity[cpu] = mpidr;
	*reg32(rd + GICR_WAKER) &= ~GICR_WAKER_PROCESSOR_SLEEP;
	while (*reg32(rd + GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP)
		;
	*reg32(rd + GICR_SGI + GICR_IGROUPR0) = ~0u; /* all group 1 */
	for (unsigned i = 0; i < 32; i += 4) /* every SGI and PPI at one priority */
		*reg32(rd + GICR_SGI + GICR_IPRIORITYR + i) = PRIORITY * 0x01010101u;
	*reg32(rd + GICR_SGI + GICR_ISENABLER0) =
		1u << INTID_KICK | 1u << INTID_MAINTENANCE | 1u << INTID_VTIMER;

	write_sysreg(icc_sre_el2, ICC_SRE_SRE | ICC_SRE_ENABLE);
	isb();
	write_sysreg(icc_pmr_el1, 0xff);
	write_sysreg(icc_ctlr_el1, ICC_CTLR_EOIMODE);
	write_sysreg(icc_igrpen1_el1, 1);
	vcpu_reset();
}

static unsigned ack(void)
{
	unsigned intid = read_sysreg(icc_iar1_el1) & 0xffffff;
	if (intid < INTID_SPURIOUS)
		write_sysreg(icc_eoir1_el1, intid); /* priority drop */
	return intid;
}

static void deactivate(unsigned intid)
{
	write_sysreg(icc_dir_el1, intid);
}

static void kick(unsigned cpu)
{
	uint64_t mpidr = cpu_affinity[cpu];
	uint64_t aff0 = mpidr & 0xff;
	__asm__ volatile("dsb ishst" ::: "memory"); /* what the kick is about, seen first */
	write_sysreg(icc_sgi1r_el1, (mpidr >> 32 & 0xff) << 48 | (mpidr >> 16 & 0xff) << 32 |
					    (aff0 >> 4) << 44 | (mpidr >> 8 & 0xff) << 16 |
					    (uint64_t)INTID_KICK << 24 | 1ul << (aff0 & 15));
	isb();
}

static void route_spi(unsigned intid, unsigned cpu)
{
	uint64_t mpidr = cpu_affinity[cpu];
	*(volatile uint64_t *)(GICD_BASE + GICD_IROUTER + 8 * intid) =
		(mpidr >> 32 & 0xff) << 32 | (mpidr & 0xffffff);
	*reg32(GICD_BASE + GICD_IGROUPR + intid / 32 * 4) |= 1u << intid % 32;
	((volatile uint8_t *)(GICD_BASE + GICD_IPRIORITYR))[intid] = PRIORITY;
	*reg32(GICD_BASE + GICD_ICFGR + intid / 16 * 4) &= ~(2u << intid % 16 * 2); /* level */
	*reg32(GICD_BASE + GICD_ISENABLER + intid / 32 * 4) = 1u << intid % 32;
}

const struct gic_ops gicv3_ops = {
	.init = init,
	.init_cpu = init_cpu,
	.ack = ack,
	.deactivate = deactivate,
	.kick = kick,
	.lrs = lrs,
	.lr_read = lr_read,
	.lr_write = lr_write,
	.underflow = underflow,
	.vcpu_reset = vcpu_reset,
	.route_spi = route_spi,
};
