/* PSCI 1.0 for the guests (Arm DEN 0022), over HVC or SMC: their vCPUs are switched on and
 * off, the VM powers off or restarts. The machine's own PSCI (firmware.h) is for the
 * hypervisor alone. */
#include <stdint.h>

#include "console.h"
#include "firmware.h"
#include "frame.h"
#include "gic.h"
#include "vm.h"

#define PSCI_VERSION_1_0 0x10000u
#define SMCCC_VERSION 0x80000000u
#define AFFINITY_ON 0
#define AFFINITY_OFF 1
#define AFFINITY_ON_PENDING 2

/* the vCPU a guest names by its MPIDR (Aff0 = the vCPU's index), or 0 */
static struct vcpu *target(struct vcpu *v, uint64_t mpidr)
{
	uint64_t index = mpidr & 0xff00ffffffful;
	return index < v->vm->config->cpus ? &v->vm->vcpus[index] : 0;
}

static int64_t cpu_on(struct vcpu *v, uint64_t mpidr, uint64_t entry, uint64_t context)
{
	struct vcpu *t = target(v, mpidr);
	if (!t)
		return PSCI_INVALID_PARAMETERS;
	int64_t result = PSCI_SUCCESS;
	spin_lock(&v->vm->lock);
	if (t->state == VCPU_ON)
		result = PSCI_ALREADY_ON;
	else if (t->state == VCPU_ON_PENDING)
		result = PSCI_ON_PENDING;
	else if (v->vm->resetting) /* (the caller switches off at the end of this trap) */
		result = PSCI_DENIED;
	else {
		t->entry = entry; /* (checked by stage 2: an entry outside its RAM faults there) */
		t->context = context;
		t->state = VCPU_ON_PENDING;
	}
	spin_unlock(&v->vm->lock);
	if (result == PSCI_SUCCESS)
		gic->kick(t->cpu); /* its CPU waits for an interrupt */
	return result;
}

static int64_t features(uint32_t function)
{
	switch (function) {
	case PSCI_VERSION:
	case PSCI_CPU_OFF:
	case PSCI_CPU_ON:
	case PSCI_AFFINITY_INFO:
	case PSCI_SYSTEM_OFF:
	case PSCI_SYSTEM_RESET:
	case PSCI_FEATURES:
		return PSCI_SUCCESS;
	default:
		return PSCI_NOT_SUPPORTED;
	}
}

void psci_call(struct frame *frame, struct vcpu *v)
{
	uint64_t *x = frame->x;
	int64_t result;
	switch ((uint32_t)x[0]) {
	case PSCI_VERSION:
		result = PSCI_VERSION_1_0;
		break;
	case PSCI_FEATURES:
		result = features((uint32_t)x[1]);
		break;
	case PSCI_CPU_ON:
		result = cpu_on(v, x[1], x[2], x[3]);
		break;
	case PSCI_CPU_OFF:
		vcpu_off(v);
		cpu_restart(v->cpu); /* waits for the next CPU_ON */
	case PSCI_AFFINITY_INFO: {
		struct vcpu *t = target(v, x[1]);
		result = !t || x[2] ? PSCI_INVALID_PARAMETERS
				    : t->state == VCPU_ON ? AFFINITY_ON
				    : t->state == VCPU_OFF ? AFFINITY_OFF : AFFINITY_ON_PENDING;
		break;
	}
	case PSCI_MIGRATE_INFO_TYPE:
		result = 2; /* no Trusted OS to migrate */
		break;
	case PSCI_SYSTEM_OFF:
		vm_stop(v->vm, "powered off");
	case PSCI_SYSTEM_RESET:
		vm_reset(v);
	default:
		result = PSCI_NOT_SUPPORTED;
	}
	x[0] = (uint64_t)result;
}
