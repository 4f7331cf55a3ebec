/* The machine's interrupt controller, as the hypervisor uses it: physical interrupts come to
 * EL2 (HCR_EL2.IMO), and the guests' interrupts go in through the list registers of the CPU
 * interface's virtualization support (GICv3: ICH_*_EL2; GICv2: the GICH frame). One table of
 * operations per GIC architecture, chosen at start-up (QEMU's virt machine has either). */
#ifndef GIC_H
#define GIC_H

#include <stdint.h>

#define INTID_KICK 0 /* an SGI between physical CPUs: "look at your vCPU's state" */
#define INTID_MAINTENANCE 25 /* from the virtual CPU interface */
#define INTID_VTIMER 27 /* the EL1 virtual timer's PPI */
#define INTID_SPURIOUS 1020
#define GIC_MAX_LRS 16
#define GIC_INTID(iar) ((iar) & 0x3ff)

enum { LR_PENDING = 1, LR_ACTIVE = 2 };

/* one list register, decoded */
struct lr {
	uint32_t intid; /* the virtual interrupt */
	uint8_t state; /* LR_PENDING | LR_ACTIVE; 0: the register is free */
	uint8_t priority;
	uint8_t group1;
	uint8_t hw; /* linked to the physical interrupt of the same INTID */
	uint8_t eoi; /* (not hw) a maintenance interrupt when the guest deactivates it */
	uint8_t source; /* GICv2 SGIs: the sending vCPU */
};

struct gic_ops {
	void (*init)(void); /* once, on the boot CPU: the distributor */
	void (*init_cpu)(unsigned cpu); /* on every CPU: its own interfaces */
	/* the highest pending interrupt, its priority dropped: its INTID (GIC_INTID), with the
	 * source CPU of a GICv2 SGI above it, which deactivate() wants back */
	unsigned (*ack)(void);
	void (*deactivate)(unsigned iar);
	void (*kick)(unsigned cpu); /* INTID_KICK to physical CPU `cpu` */
	unsigned (*lrs)(void);
	void (*lr_read)(unsigned n, struct lr *lr);
	void (*lr_write)(unsigned n, const struct lr *lr);
	void (*underflow)(int on); /* a maintenance interrupt when at most one LR is in use */
	void (*vcpu_reset)(void); /* the virtual CPU interface as at reset (LRs free) */
	void (*route_spi)(unsigned intid, unsigned cpu); /* a level SPI to `cpu`, enabled */
};

extern const struct gic_ops *gic;
extern const struct gic_ops gicv2_ops, gicv3_ops;

/* The machine's GIC: GICv3 when the CPU has its system-register interface */
int gic_v3(void);
void gic_select(void);

#endif
