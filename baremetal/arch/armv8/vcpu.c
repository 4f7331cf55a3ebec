/* Running a vCPU on the calling physical CPU: the EL2 controls for guests, then the guest's
 * first entry at EL1 (the arm64 boot protocol: MMU off, x0 = its device tree). */
#include <stdint.h>

#include "console.h"
#include "firmware.h"
#include "platform.h"
#include "sysreg.h"
#include "vm.h"

#define HCR_VM (1ul << 0) /* stage 2 on */
#define HCR_SWIO (1ul << 1)
#define HCR_FMO (1ul << 3) /* FIQs, IRQs and SErrors to EL2 (and virtual ones to the guest) */
#define HCR_IMO (1ul << 4)
#define HCR_AMO (1ul << 5)
#define HCR_FB (1ul << 9) /* TLB and cache maintenance broadcast in the inner shareable domain */
#define HCR_BSU_INNER (1ul << 10)
#define HCR_TWI (1ul << 13) /* WFI and WFE trap */
#define HCR_TWE (1ul << 14)
#define HCR_TSC (1ul << 19) /* SMC traps */
#define HCR_RW (1ul << 31) /* EL1 is AArch64 */
#define HCR_GUEST                                                                                  \
	(HCR_RW | HCR_TSC | HCR_TWE | HCR_TWI | HCR_BSU_INNER | HCR_FB | HCR_AMO | HCR_IMO |        \
	 HCR_FMO | HCR_SWIO | HCR_VM)
#define CNTHCTL_EL1PCTEN (1ul << 0) /* EL1 reads the physical counter; its physical timer traps */
#define CPTR_EL2_RES1 0x33fful /* and TFP clear: FP and SIMD do not trap */
#define SCTLR_EL1_RESET 0x30d00800ul /* RES1 bits; MMU and caches off */
#define SPSR_EL1H_MASKED 0x3c5ul /* EL1 with SP_EL1, D, A, I and F masked */

struct pcpu {
	unsigned index;
	struct vcpu *vcpu; /* while it runs one */
};

static struct pcpu pcpus[MAX_CPUS];
extern char stacks[];

struct vcpu *current_vcpu(void)
{
	return ((struct pcpu *)read_sysreg(tpidr_el2))->vcpu;
}

_Noreturn void vcpu_enter(struct vcpu *v)
{
	struct vm *vm = v->vm;
	struct pcpu *self = (struct pcpu *)read_sysreg(tpidr_el2);
	self->vcpu = v;
	write_sysreg(vtcr_el2, stage2_vtcr());
	write_sysreg(vttbr_el2, (uint64_t)vm->s2.root | (uint64_t)(vm->id + 1) << 48);
	isb();
	__asm__ volatile("tlbi vmalls12e1\n dsb nsh\n isb" ::: "memory");
	write_sysreg(hcr_el2, HCR_GUEST);
	write_sysreg(cnthctl_el2, CNTHCTL_EL1PCTEN);
	write_sysreg(cntvoff_el2, 0);
	write_sysreg(cptr_el2, CPTR_EL2_RES1);
	write_sysreg(vpidr_el2, read_sysreg(midr_el1));
	write_sysreg(vmpidr_el2, 1ul << 31 | v->index);
	write_sysreg(sctlr_el1, SCTLR_EL1_RESET);
	isb();

	/* the guest's registers at its start: a frame at the top of this CPU's stack, where its
	 * traps will put theirs */
	struct frame *frame = (struct frame *)(stacks + (self->index + 1) * STACK_SIZE) - 1;
	for (int i = 0; i < 31; i++)
		frame->x[i] = 0;
	frame->x[0] = v->context;
	frame->elr = v->entry;
	frame->spsr = SPSR_EL1H_MASKED;
	extern _Noreturn void enter_guest(struct frame *frame);
	enter_guest(frame);
}

_Noreturn void cpu_wait_for_vcpu(unsigned cpu)
{
	struct pcpu *self = &pcpus[cpu];
	self->index = cpu;
	self->vcpu = 0;
	write_sysreg(tpidr_el2, (uint64_t)self);
	struct vcpu *v = vcpu_of_cpu(cpu);
	if (!v)
		cpu_idle();
	while (v->state != VCPU_ON_PENDING) {
		if (!v->vm->running)
			cpu_idle();
		__asm__ volatile("wfe" ::: "memory");
	}
	v->state = VCPU_ON;
	vcpu_enter(v);
}
