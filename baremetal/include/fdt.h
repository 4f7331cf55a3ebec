/* Reading the flattened device tree the loader passes (Devicetree Specification v0.4, 5). */
#ifndef FDT_H
#define FDT_H

#include <stdint.h>

struct fdt_facts {
	const char *model; /* the root's "model", or "" */
	uint64_t memory_base, memory_size; /* the first range of the first /memory node */
	unsigned cpus; /* nodes under /cpus named cpu@... */
	uint64_t mpidr[8]; /* the first 8 of them: their "reg", the MPIDR affinity fields */
	int psci; /* a /psci node with method "smc": the firmware's PSCI (QEMU's, TF-A's) */
};

/* 0 and `facts` filled in, or -1 if `fdt` is not a sound device tree. */
int fdt_read(const void *fdt, struct fdt_facts *facts);

#endif
