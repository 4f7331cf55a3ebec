/* The machine's interrupt controller, as the hypervisor uses it: physical interrupts come to
 * EL2 (HCR_EL2.IMO) and reach the guests through the list registers. */
#ifndef GIC_H
#define GIC_H

#include "vm.h"

#define INTID_MAINTENANCE 25
#define INTID_VTIMER 27 /* the EL1 virtual timer's PPI */

int gic_v3(void); /* the machine's GIC has the system-register interface (GICv3) */
void gic_init(void); /* once, on the boot CPU: the distributor */
void gic_init_cpu(void); /* on every CPU: its redistributor, CPU interface, list registers */
void gic_irq(struct vcpu *v); /* a physical interrupt came while `v` ran */

#endif
