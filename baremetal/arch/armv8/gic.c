/* Which GIC the machine has. */
#include "gic.h"
#include "sysreg.h"

const struct gic_ops *gic;

int gic_v3(void)
{
	return (read_sysreg(id_aa64pfr0_el1) >> 24 & 0xf) != 0;
}

void gic_select(void)
{
	gic = gic_v3() ? &gicv3_ops : &gicv2_ops;
}
