/* Exceptions taken to EL2, dispatched on where they came from and, for a guest's synchronous
 * traps, on ESR_EL2.EC (Arm ARM D23.2.48). A guest's data abort is decoded once into an
 * access record for the emulated devices; a trap no handler takes stops that VM, with its
 * syndrome reported, and never the hypervisor. */
#include <stdint.h>

#include "console.h"
#include "frame.h"
#include "gic.h"
#include "platform.h"
#include "vgic.h"
#include "vm.h"

#define ESR_EC(esr) ((esr) >> 26 & 0x3f)
#define EC_WFX 0x01
#define EC_HVC64 0x16
#define EC_SMC64 0x17
#define EC_SYSREG 0x18
#define EC_IABT_LOW 0x20
#define EC_DABT_LOW 0x24
#define ESR_IL (1ul << 25) /* a 32-bit instruction */
#define ISS_WFX_WFE 1ul
#define ISS_DABT_ISV (1ul << 24) /* the fields below are valid */
#define ISS_DABT_SAS(esr) ((esr) >> 22 & 3) /* access size: 1 << SAS bytes */
#define ISS_DABT_SSE (1ul << 21) /* sign-extend a load */
#define ISS_DABT_SRT(esr) ((esr) >> 16 & 31) /* the register */
#define ISS_DABT_SF (1ul << 15) /* the register is 64-bit */
#define ISS_DABT_S1PTW (1ul << 7) /* a fault on the guest's own page-table walk */
#define ISS_DABT_WNR (1ul << 6) /* a write */
/* EC_SYSREG: which register (Op0, Op2, Op1, CRn, CRm), Rt, and a read (1) or a write */
#define ISS_SYSREG(op0, op1, crn, crm, op2)                                                        \
	((uint64_t)(op0) << 20 | (op2) << 17 | (op1) << 14 | (crn) << 10 | (crm) << 1)
#define ISS_SYSREG_WHICH(esr) ((esr) & ISS_SYSREG(3, 7, 15, 15, 7))
#define ISS_SYSREG_RT(esr) ((esr) >> 5 & 31)
#define ISS_SYSREG_READ 1ul
#define ICC_SGI1R_EL1 ISS_SYSREG(3, 0, 12, 11, 5) /* GICv3 SGIs: they always trap (IMO, FMO) */
#define ICC_ASGI1R_EL1 ISS_SYSREG(3, 0, 12, 11, 6)
#define ICC_SGI0R_EL1 ISS_SYSREG(3, 0, 12, 11, 7)

struct access {
	uint64_t ipa;
	unsigned size; /* bytes */
	unsigned reg; /* 31: xzr */
	int write, sign_extend, wide;
};

static const char *const vector_names[] = {
	"synchronous, EL2 on SP_EL0", "IRQ, EL2 on SP_EL0", "FIQ, EL2 on SP_EL0", "SError, EL2 on SP_EL0",
	"synchronous, EL2", "IRQ, EL2", "FIQ, EL2", "SError, EL2",
	"synchronous", "IRQ", "FIQ", "SError",
	"synchronous from AArch32", "IRQ from AArch32", "FIQ from AArch32", "SError from AArch32",
};

static uint64_t fault_ipa(const struct frame *frame)
{
	return (frame->hpfar >> 4) << 12 | (frame->far & 0xfff);
}

_Noreturn static void guest_fault(struct frame *frame, struct vcpu *v, const char *what)
{
	print("elvisor EL2: VM %s vCPU %u: %s: ESR %016lx (EC %02lx) ELR %016lx FAR %016lx IPA %lx\n",
	      v->vm->config->name, v->index, what, frame->esr, ESR_EC(frame->esr), frame->elr,
	      frame->far, fault_ipa(frame));
	vm_stop(v->vm, "stopped: a trap it cannot continue from");
}

static void data_abort(struct frame *frame, struct vcpu *v)
{
	uint64_t esr = frame->esr;
	if (!(esr & ISS_DABT_ISV) || esr & ISS_DABT_S1PTW)
		guest_fault(frame, v, "data abort the hypervisor cannot decode");
	struct access a = {
		.ipa = fault_ipa(frame),
		.size = 1u << ISS_DABT_SAS(esr),
		.reg = ISS_DABT_SRT(esr),
		.write = !!(esr & ISS_DABT_WNR),
		.sign_extend = !!(esr & ISS_DABT_SSE),
		.wide = !!(esr & ISS_DABT_SF),
	};
	uint64_t mask = a.size == 8 ? ~0ul : (1ul << 8 * a.size) - 1;
	uint64_t value = a.write && a.reg != 31 ? frame->x[a.reg] & mask : 0;
	if (vm_mmio(v, a.ipa, a.size, a.write, &value))
		guest_fault(frame, v, a.write ? "write outside its memory and devices"
					      : "read outside its memory and devices");
	if (!a.write && a.reg != 31) {
		value &= mask;
		if (a.sign_extend && a.size < 8 && value >> (8 * a.size - 1))
			value |= ~mask;
		frame->x[a.reg] = a.wide ? value : value & 0xffffffffu;
	}
	frame->elr += esr & ESR_IL ? 4 : 2;
}

static void system_register(struct frame *frame, struct vcpu *v)
{
	uint64_t esr = frame->esr, which = ISS_SYSREG_WHICH(esr);
	unsigned rt = ISS_SYSREG_RT(esr);
	if (esr & ISS_SYSREG_READ ||
	    (which != ICC_SGI1R_EL1 && which != ICC_ASGI1R_EL1 && which != ICC_SGI0R_EL1))
		guest_fault(frame, v, "system register access the hypervisor does not emulate");
	vgic_sgi1r(v, rt == 31 ? 0 : frame->x[rt]);
	frame->elr += 4;
}

static void synchronous(struct frame *frame, struct vcpu *v)
{
	uint64_t ec = ESR_EC(frame->esr);
	if (ec == EC_WFX || ec == EC_HVC64 || ec == EC_SMC64)
		vuart_flush(&v->vm->uart); /* it waits, or calls: a prompt shows */
	switch (ec) {
	case EC_HVC64: /* ELR is past the HVC already */
		if (frame->esr & 0xffff)
			frame->x[0] = (uint64_t)-1; /* SMCCC: only HVC #0 is a call */
		else
			psci_call(frame, v);
		break;
	case EC_SMC64: /* ELR is the SMC itself */
		psci_call(frame, v);
		frame->elr += 4;
		break;
	case EC_WFX: /* a WFI waits for an interrupt (a physical one: they all come here first) */
		if (!(frame->esr & ISS_WFX_WFE) && !vgic_pending(v))
			__asm__ volatile("dsb sy\n wfi");
		frame->elr += 4;
		break;
	case EC_SYSREG:
		system_register(frame, v);
		break;
	case EC_DABT_LOW:
		data_abort(frame, v);
		break;
	default:
		guest_fault(frame, v, "unexpected trap");
	}
}

void handle_exception(struct frame *frame, unsigned long vector)
{
	vector &= 15;
	if (vector < VECTOR_LOWER_A64)
		panic("exception at EL2 (%s): ESR %016lx ELR %016lx FAR %016lx", vector_names[vector],
		      frame->esr, frame->elr, frame->far);
	struct vcpu *v = current_vcpu();
	vgic_fold(v);
	vm_check(v);
	if (vector == VECTOR_LOWER_A64 + VECTOR_SYNC) {
		synchronous(frame, v);
	} else if (vector == VECTOR_LOWER_A64 + VECTOR_IRQ) {
		take_interrupts(v);
	} else {
		guest_fault(frame, v, vector_names[vector]);
	}
	vm_check(v); /* (a kick may have ended its wait) */
	vgic_flush(v);
}

void take_interrupts(struct vcpu *v)
{
	for (;;) {
		unsigned iar = gic->ack(), intid = GIC_INTID(iar);
		if (intid >= INTID_SPURIOUS)
			return;
		if (intid == INTID_VTIMER && v) {
			vgic_hw_irq(v, intid); /* active until its guest deactivates it */
			continue;
		}
		if (intid == UART_INTID) {
			console_input();
			console_transmit();
		}
		gic->deactivate(iar); /* a kick, a maintenance interrupt: the trap was the point */
	}
}
