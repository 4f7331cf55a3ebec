/* What an exception entry saves on the EL2 stack (vectors.S), and the C handler's view of it.
 * For a trap from the guest this is the vCPU's register state: a handler changes it (x0 for a
 * PSCI result, ELR to step past an instruction) and the exception return restores it. */
#ifndef FRAME_H
#define FRAME_H

#define FRAME_ELR   248
#define FRAME_SPSR  256
#define FRAME_ESR   264
#define FRAME_FAR   272
#define FRAME_HPFAR 280
#define FRAME_SIZE  288

/* the vector table's four groups, four kinds each (the entry's index, 0 to 15) */
#define VECTOR_CURRENT_SP0 0
#define VECTOR_CURRENT_SPX 4
#define VECTOR_LOWER_A64   8
#define VECTOR_LOWER_A32   12
#define VECTOR_SYNC   0
#define VECTOR_IRQ    1
#define VECTOR_FIQ    2
#define VECTOR_SERROR 3

#ifndef __ASSEMBLER__
#include <stdint.h>

struct frame {
	uint64_t x[31];
	uint64_t elr;
	uint64_t spsr;
	uint64_t esr;
	uint64_t far;
	uint64_t hpfar;
};

_Static_assert(__builtin_offsetof(struct frame, elr) == FRAME_ELR, "frame.h: ELR");
_Static_assert(__builtin_offsetof(struct frame, spsr) == FRAME_SPSR, "frame.h: SPSR");
_Static_assert(__builtin_offsetof(struct frame, esr) == FRAME_ESR, "frame.h: ESR");
_Static_assert(__builtin_offsetof(struct frame, far) == FRAME_FAR, "frame.h: FAR");
_Static_assert(__builtin_offsetof(struct frame, hpfar) == FRAME_HPFAR, "frame.h: HPFAR");
_Static_assert(sizeof(struct frame) == FRAME_SIZE, "frame.h: size");

void handle_exception(struct frame *frame, unsigned long vector);
#endif

#endif
