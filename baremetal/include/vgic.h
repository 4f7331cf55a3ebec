/* The GIC a VM sees (Arm IHI 0069, IHI 0048): a distributor, and for GICv3 a redistributor
 * per vCPU, emulated on their register accesses; its vCPUs' CPU interfaces are the hardware's
 * virtual ones, fed through the list registers. The VM gets the machine's GIC version, at
 * the addresses of the VMM's memory map (src/elvisor/arch/arm64/layout.py). */
#ifndef VGIC_H
#define VGIC_H

#include <stdint.h>

#include "gic.h"
#include "lock.h"

#define VGIC_SPIS 32
#define VGIC_INTIDS (32 + VGIC_SPIS)
#define VGIC_GICD 0x08000000ul /* 64 KiB */
#define VGIC_GICC 0x08010000ul /* GICv2: 8 KiB, stage 2 maps the GICV frame there */
#define VGIC_GICC_SIZE 0x2000ul
#define VGIC_GICR 0x080a0000ul /* GICv3: 128 KiB per vCPU */

struct vcpu;
struct vm;

/* one interrupt's state, as the distributor keeps it */
struct virq {
	uint8_t priority;
	uint8_t group1;
	uint8_t enabled;
	uint8_t edge; /* ICFGR: edge-triggered */
	uint8_t pending; /* latched: an edge, a write to ISPENDR, a physical interrupt (hw) */
	uint8_t line; /* a level-sensitive interrupt's input */
	uint8_t active;
	uint8_t hw; /* its physical twin (a PPI) is active until the guest deactivates it */
	uint8_t targets; /* SPIs: the vCPUs it may go to (a bit each); it goes to the first */
	uint8_t holder; /* SPIs: the vCPU whose list registers had it last (an active one stays) */
	uint8_t source; /* GICv2 SGIs: the vCPU that sent it */
};

struct vgic_cpu {
	struct virq private[32]; /* SGIs and PPIs */
	uint16_t lr_intid[GIC_MAX_LRS]; /* what the list registers hold, since the last flush */
	uint8_t lrs_used;
	uint8_t asleep; /* GICR_WAKER.ProcessorSleep */
	volatile uint8_t dirty; /* its interrupts changed since the last flush */
};

struct vgic {
	spinlock_t lock; /* everything here and in the VM's vgic_cpus */
	uint32_t ctlr;
	int v3;
	struct virq spis[VGIC_SPIS];
};

void vgic_init(struct vm *vm); /* the distributor as at reset */
/* On the vCPU's CPU, as it starts: its interrupts and CPU interface as at reset, the physical
 * interrupts it still held deactivated. */
void vgic_vcpu_reset(struct vcpu *v);
/* On the vCPU's CPU: at each trap, the list registers back into the distributor's state
 * (fold), and before the guest resumes, the most urgent of its interrupts into them (flush). */
void vgic_fold(struct vcpu *v);
void vgic_flush(struct vcpu *v);
int vgic_pending(struct vcpu *v); /* an interrupt waits for it (a WFI would end) */
void vgic_hw_irq(struct vcpu *v, unsigned intid); /* its physical PPI came, left active */
void vgic_set_line(struct vm *vm, unsigned intid, int level); /* an SPI's input */
void vgic_sgi1r(struct vcpu *v, uint64_t value); /* a write to ICC_SGI1R_EL1 (GICv3) */
/* a data abort in the VM's GIC window: 0 when it was the GIC's */
int vgic_mmio(struct vcpu *v, uint64_t ipa, unsigned size, int write, uint64_t *value);

#endif
