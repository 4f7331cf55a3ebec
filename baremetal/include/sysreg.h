/* System register access, by the architecture's names (Arm ARM, D23). */
#ifndef SYSREG_H
#define SYSREG_H

#include <stdint.h>

#define read_sysreg(name)                                                                 \
	({                                                                                \
		uint64_t value_;                                                          \
		__asm__ volatile("mrs %0, " #name : "=r"(value_));                       \
		value_;                                                                   \
	})
#define write_sysreg(name, value) __asm__ volatile("msr " #name ", %0" : : "r"((uint64_t)(value)))
#define isb() __asm__ volatile("isb" ::: "memory")

#define MPIDR_AFFINITY(mpidr) ((mpidr) & 0xff00fffffful) /* Aff3, Aff2, Aff1, Aff0 */

#endif
