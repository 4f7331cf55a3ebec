/* GICv2 (Arm IHI 0048): the hypervisor's side of the machine's GIC (GICD, GICC), and the list
 * registers of its virtual interface control frame (GICH). A guest's own CPU interface is
 * the GICV frame, which stage 2 maps where the guest looks for its GICC. */
#include <stdint.h>

#include "gic.h"
#include "platform.h"

#define GICD_CTLR 0x000
#define GICD_IGROUPR 0x080
#define GICD_ISENABLER 0x100
#define GICD_IPRIORITYR 0x400
#define GICD_ITARGETSR 0x800
#define GICD_ICFGR 0xc00
#define GICD_SGIR 0xf00
#define GICC_CTLR 0x0000
#define GICC_CTLR_ENABLE (3u << 0) /* both groups */
#define GICC_CTLR_EOIMODE (3u << 9) /* EOI drops priority; deactivation is apart */
#define GICC_PMR 0x0004
#define GICC_IAR 0x000c
#define GICC_EOIR 0x0010
#define GICC_DIR 0x1000
#define GICH_HCR 0x000
#define GICH_HCR_EN (1u << 0)
#define GICH_HCR_UIE (1u << 1)
#define GICH_VTR 0x004
#define GICH_VMCR 0x008
#define GICH_APR 0x0f0
#define GICH_LR 0x100
#define GICH_LR_HW (1u << 31)
#define GICH_LR_GROUP1 (1u << 30)
#define GICH_LR_STATE_SHIFT 28
#define GICH_LR_PRIORITY_SHIFT 23 /* the top 5 bits of the priority */
#define GICH_LR_EOI (1u << 19)
#define GICH_LR_PHYSICAL_SHIFT 10 /* HW: the physical INTID */
#define GICH_LR_CPUID_SHIFT 10 /* not HW, an SGI: its source */
#define PRIORITY 0xa0

static uint8_t cpu_interface[MAX_CPUS]; /* each CPU's bit in the distributor's target masks */

static volatile uint32_t *reg32(uint64_t address)
{
	return (volatile uint32_t *)address;
}

static volatile uint8_t *reg8(uint64_t address)
{
	return (volatile uint8_t *)address;
}

static void init(void)
{
	*reg32(GICD_BASE + GICD_CTLR) = 3; /* both groups forwarded */
}

static unsigned lrs(void)
{
	unsigned n = (*reg32(GICH_BASE + GICH_VTR) & 0x3f) + 1;
	return n < GIC_MAX_LRS ? n : GIC_MAX_LRS;
}

static void lr_read(unsigned n, struct lr *lr)
{
	uint32_t value = *reg32(GICH_BASE + GICH_LR + 4 * n);
	lr->intid = value & 0x3ff;
	lr->state = value >> GICH_LR_STATE_SHIFT & 3;
	lr->priority = (value >> GICH_LR_PRIORITY_SHIFT & 0x1f) << 3;
	lr->group1 = !!(value & GICH_LR_GROUP1);
	lr->hw = !!(value & GICH_LR_HW);
	lr->eoi = !lr->hw && value & GICH_LR_EOI;
	lr->source = lr->hw ? 0 : value >> GICH_LR_CPUID_SHIFT & 7;
}

static void lr_write(unsigned n, const struct lr *lr)
{
	uint32_t value = 0;
	if (lr->state) {
		value = (uint32_t)lr->state << GICH_LR_STATE_SHIFT |
			(uint32_t)(lr->priority >> 3) << GICH_LR_PRIORITY_SHIFT | lr->intid;
		if (lr->group1)
			value |= GICH_LR_GROUP1;
		if (lr->hw)
			value |= GICH_LR_HW | lr->intid << GICH_LR_PHYSICAL_SHIFT;
		else
			value |= (lr->eoi ? GICH_LR_EOI : 0) |
				 (lr->intid < 16 ? (uint32_t)(lr->source & 7) << GICH_LR_CPUID_SHIFT : 0);
	}
	*reg32(GICH_BASE + GICH_LR + 4 * n) = value;
}

static void underflow(int on)
{
	*reg32(GICH_BASE + GICH_HCR) = GICH_HCR_EN | (on ? GICH_HCR_UIE : 0);
}

static void vcpu_reset(void)
{
	for (unsigned n = 0; n < lrs(); n++)
		*reg32(GICH_BASE + GICH_LR + 4 * n) = 0;
	*reg32(GICH_BASE + GICH_APR) = 0;
	*reg32(GICH_BASE + GICH_VMCR) = 0;
	underflow(0);
}

static void init_cpu(unsigned cpu)
{
	cpu_interface[cpu] = *reg8(GICD_BASE + GICD_ITARGETSR); /* reads as this CPU's own bit */
	*reg32(GICD_BASE + GICD_IGROUPR) = 0; /* SGIs and PPIs in group 0 */
	for (unsigned i = 0; i < 32; i += 4)
		*reg32(GICD_BASE + GICD_IPRIORITYR + i) = PRIORITY * 0x01010101u;
	*reg32(GICD_BASE + GICD_ISENABLER) =
		1u << INTID_KICK | 1u << INTID_MAINTENANCE | 1u << INTID_VTIMER;
	*reg32(GICC_BASE + GICC_PMR) = 0xff;
	*reg32(GICC_BASE + GICC_CTLR) = GICC_CTLR_ENABLE | GICC_CTLR_EOIMODE;
	vcpu_reset();
}

/* the IAR as read: for an SGI the source CPU is in it, and EOIR and DIR want it back */
static unsigned ack(void)
{
	uint32_t iar = *reg32(GICC_BASE + GICC_IAR);
	if ((iar & 0x3ff) < INTID_SPURIOUS)
		*reg32(GICC_BASE + GICC_EOIR) = iar;
	return iar & 0x1fff;
}

static void deactivate(unsigned iar)
{
	*reg32(GICC_BASE + GICC_DIR) = iar;
}

static void kick(unsigned cpu)
{
	__asm__ volatile("dsb ishst" ::: "memory");
	*reg32(GICD_BASE + GICD_SGIR) = (uint32_t)cpu_interface[cpu] << 16 | INTID_KICK;
}

static void route_spi(unsigned intid, unsigned cpu)
{
	*reg8(GICD_BASE + GICD_ITARGETSR + intid) = cpu_interface[cpu];
	*reg8(GICD_BASE + GICD_IPRIORITYR + intid) = PRIORITY;
	*reg32(GICD_BASE + GICD_ICFGR + intid / 16 * 4) &= ~(2u << intid % 16 * 2); /* level */
	*reg32(GICD_BASE + GICD_ISENABLER + intid / 32 * 4) = 1u << intid % 32;
}

const struct gic_ops gicv2_ops = {
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
