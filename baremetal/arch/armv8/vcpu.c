/* Running a vCPU on the calling physical CPU: the EL2 controls for guests, then the guest's
 * first entry at EL1 (the arm64 boot protocol: MMU off, x0 = its device tree). Each vCPU has
 * a physical CPU of its own, so its EL1 system registers, timer and virtual CPU interface stay
 * in that CPU's registers across its traps: only the general-purpose registers are saved, in
 * the frame at the top of the CPU's stack. */
#include <stdint.h>

#include "console.h"
#include "firmware.h"
#include "gic.h"
#include "platform.h"
#include "sysreg.h"
#include "vgic.h"
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
#define HCR_APK (1ul << 40) /* pointer authentication: its keys and instructions do not trap */
#define HCR_API (1ul << 41)
#define HCR_GUEST                                                                                  \
	(HCR_RW | HCR_TSC | HCR_TWE | HCR_TWI | HCR_BSU_INNER | HCR_FB | HCR_AMO | HCR_IMO |        \
	 HCR_FMO | HCR_SWIO | HCR_VM)
#define CNTHCTL_EL1PCTEN (1ul << 0) /* EL1 reads the physical counter; its physical timer traps */
#define CPTR_EL2_RES1 0x22fful /* and TFP clear: FP and SIMD do not trap */
#define CPTR_EL2_TZ (1ul << 8) /* SVE traps (RES1 without SVE) */
#define CPTR_EL2_TSM (1ul << 12) /* SME traps (RES1 without SME) */
#define HCRX_MSCEN (1ul << 11) /* the memory copy and set instructions (FEAT_MOPS) */
#define HCRX_TCR2EN (1ul << 14) /* TCR2_EL1 (FEAT_TCR2) */
#define HCRX_SCTLR2EN (1ul << 15) /* SCTLR2_EL1 (FEAT_SCTLR2) */
#define SCTLR_EL1_RESET 0x30d00800ul /* RES1 bits; MMU and caches off */
#define SPSR_EL1H_MASKED 0x3c5ul /* EL1 with SP_EL1, D, A, I and F masked */
#define field(value, shift) ((value) >> (shift) & 0xf) /* an ID register's 4-bit field */

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

unsigned this_cpu(void)
{
	return ((struct pcpu *)read_sysreg(tpidr_el2))->index;
}

/* What EL1 may use without trapping: FP and SIMD, and where the CPU has them SVE and SME (their
 * vector lengths the largest it has), pointer authentication, and what HCRX_EL2 gates. */
static void guest_features(void)
{
	uint64_t cptr = CPTR_EL2_RES1 | CPTR_EL2_TZ | CPTR_EL2_TSM;
	if (field(read_sysreg(id_aa64pfr0_el1), 32)) { /* SVE */
		cptr &= ~CPTR_EL2_TZ;
		write_sysreg(s3_4_c1_c2_0, 0xf); /* ZCR_EL2.LEN */
	}
	if (field(read_sysreg(id_aa64pfr1_el1), 24)) { /* SME */
		uint64_t smfr0 = read_sysreg(s3_0_c0_c4_5); /* ID_AA64SMFR0_EL1 */
		cptr &= ~CPTR_EL2_TSM;
		/* SMCR_EL2: LEN, EZT0 with SME2 (ZT0 usable), FA64 where implemented */
		write_sysreg(s3_4_c1_c2_6,
			     0xful | (field(smfr0, 56) ? 1ul << 30 : 0) | (smfr0 & 1ul << 63));
	}
	write_sysreg(cptr_el2, cptr);
	uint64_t hcr = HCR_GUEST;
	if (read_sysreg(id_aa64isar1_el1) & 0xff0ff0ul || field(read_sysreg(s3_0_c0_c6_2), 12))
		hcr |= HCR_APK | HCR_API; /* (ID_AA64ISAR1 APA, API, GPA, GPI; ID_AA64ISAR2 APA3) */
	write_sysreg(hcr_el2, hcr);
	if (field(read_sysreg(id_aa64mmfr1_el1), 40)) { /* HCRX_EL2 */
		uint64_t mmfr3 = read_sysreg(s3_0_c0_c7_3); /* ID_AA64MMFR3_EL1 */
		uint64_t isar2 = read_sysreg(s3_0_c0_c6_2); /* ID_AA64ISAR2_EL1 */
		uint64_t hcrx = (field(isar2, 16) ? HCRX_MSCEN : 0) | (field(mmfr3, 0) ? HCRX_TCR2EN : 0) |
				(field(mmfr3, 4) ? HCRX_SCTLR2EN : 0);
		write_sysreg(s3_4_c1_c2_2, hcrx);
	}
	/* MDCR_EL2: no debug or PMU traps; EL1 has all the event counters (HPMN = PMCR.N) */
	uint64_t pmu = field(read_sysreg(id_aa64dfr0_el1), 8);
	write_sysreg(mdcr_el2, pmu && pmu != 0xf ? read_sysreg(pmcr_el0) >> 11 & 0x1f : 0);
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
	write_sysreg(cnthctl_el2, CNTHCTL_EL1PCTEN);
	write_sysreg(cntvoff_el2, 0);
	write_sysreg(cntv_ctl_el0, 0);
	guest_features();
	write_sysreg(vpidr_el2, read_sysreg(midr_el1));
	write_sysreg(vmpidr_el2, 1ul << 31 | v->index);
	write_sysreg(sctlr_el1, SCTLR_EL1_RESET);
	isb();
	vgic_vcpu_reset(v);
	vgic_flush(v);

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

/* until an interrupt: those that come while no vCPU runs here are the hypervisor's */
void cpu_wait(void)
{
	__asm__ volatile("dsb sy\n wfi" ::: "memory");
	take_interrupts(0);
}

_Noreturn void cpu_wait_for_vcpu(unsigned cpu)
{
	struct pcpu *self = &pcpus[cpu];
	self->index = cpu;
	self->vcpu = 0;
	write_sysreg(tpidr_el2, (uint64_t)self);
	write_sysreg(cntv_ctl_el0, 0); /* the timer of a vCPU that ran here: quiet */
	isb();
	struct vcpu *v = vcpu_of_cpu(cpu);
	for (;; cpu_wait()) {
		if (!v)
			continue;
		spin_lock(&v->vm->lock); /* (not while its VM resets: see struct vm) */
		int start = v->state == VCPU_ON_PENDING && v->vm->running && !v->vm->resetting;
		if (start)
			v->state = VCPU_ON;
		spin_unlock(&v->vm->lock);
		if (start)
			vcpu_enter(v);
	}
}
