/* VMs and their vCPUs: statically partitioned, each vCPU on a physical CPU of its own. */
#ifndef VM_H
#define VM_H

#include <stdint.h>

#include "config.h"
#include "frame.h"
#include "lock.h"
#include "platform.h"
#include "stage2.h"
#include "vgic.h"
#include "vuart.h"

enum vcpu_state { VCPU_OFF, VCPU_ON_PENDING, VCPU_ON };

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned index; /* in its VM: its MPIDR's Aff0 */
	unsigned cpu; /* the physical CPU it runs on */
	volatile enum vcpu_state state;
	uint64_t entry, context; /* where the next start goes, and its x0 */
	struct vgic_cpu gic;
};

struct vm {
	unsigned id;
	const struct vm_config *config;
	const struct config *image; /* where its payloads are, for a reset */
	struct stage2 s2;
	struct vcpu vcpus[MAX_CPUS];
	struct vuart uart;
	struct vgic gic;
	volatile int running; /* cleared for good when it powers off or is stopped */
	/* Its vCPUs' states and `resetting` change under this lock, so that once a reset has
	 * begun no vCPU of the VM is switched on (by CPU_ON, or by its CPU taking an ON_PENDING
	 * vCPU) until the reset is done. */
	spinlock_t lock;
	volatile int resetting; /* its vCPUs are asked to switch off, for a reset */
};

/* Check the configuration against the machine, copy each VM's payloads into its RAM and build
 * its stage-2 tables; panics with what is wrong. */
void vms_create(const struct config *config, uint64_t image_start, uint64_t memory_base,
		uint64_t memory_size, unsigned cpus);
/* The vCPU that physical CPU `cpu` runs, or 0. */
struct vcpu *vcpu_of_cpu(unsigned cpu);
/* The calling physical CPU's vCPU (while it runs one), and its index. */
struct vcpu *current_vcpu(void);
unsigned this_cpu(void);
/* At a trap of `v`: when its VM stopped or resets, `v` stops here (does not return). */
void vm_check(struct vcpu *v);
/* `v` switches off (PSCI CPU_OFF, or its VM resets); a resetting vCPU waiting for it hears. */
void vcpu_off(struct vcpu *v);
/* Input from the board's UART, for the VM that has the console's input. */
void console_input(void);
/* The vCPU's VM stops for good (powered off, or a fault: `why`); when it was the last VM
 * running, the machine powers off. Does not return: this physical CPU idles. */
_Noreturn void vm_stop(struct vm *vm, const char *why);
/* PSCI SYSTEM_RESET from `v`: the VM's payloads again, vCPU 0 from its entry. */
_Noreturn void vm_reset(struct vcpu *v);
/* Physical CPU `cpu` waits for its vCPU to be switched on, then runs it (called on a fresh
 * stack: cpu_restart() in boot.S). */
_Noreturn void cpu_wait_for_vcpu(unsigned cpu);
_Noreturn void cpu_restart(unsigned cpu);
/* Until an interrupt, with none of this CPU's vCPUs running: it takes them itself. */
void cpu_wait(void);
/* The physical interrupts pending at this CPU, taken: while `v` ran (or 0, none ran). */
void take_interrupts(struct vcpu *v);
/* Start `v` at (entry, x0) on the calling physical CPU. */
_Noreturn void vcpu_enter(struct vcpu *v);

/* Trap handlers (traps.c dispatches to them) */
void psci_call(struct frame *frame, struct vcpu *v);
int vm_mmio(struct vcpu *v, uint64_t ipa, unsigned size, int write, uint64_t *value);

#endif
