/* The virtual GIC: each VM's distributor (and GICv3 redistributors) as registers over the
 * state of its interrupts, and the list registers filled from that state.
 *
 * The list registers are the hardware's copy of a vCPU's most urgent interrupts. At each trap
 * they are folded back into the state here (what the guest took, finished, or still has
 * pending), and before the guest resumes the state is flushed into them again: active
 * interrupts first (the guest must be able to end them), then the pending ones by priority.
 * When more are pending than there are list registers, the underflow maintenance interrupt
 * brings the vCPU back to refill them; a level-sensitive interrupt asks for one at its end, so
 * that it is taken again while its input is still high. */
#include <stdint.h>

#include "gic.h"
#include "lock.h"
#include "vgic.h"
#include "vm.h"

enum {
	GICD_CTLR = 0x0000, GICD_TYPER = 0x0004, GICD_IIDR = 0x0008, GICD_IGROUPR = 0x0080,
	GICD_ISENABLER = 0x0100, GICD_ICENABLER = 0x0180, GICD_ISPENDR = 0x0200,
	GICD_ICPENDR = 0x0280, GICD_ISACTIVER = 0x0300, GICD_ICACTIVER = 0x0380,
	GICD_IPRIORITYR = 0x0400, GICD_ITARGETSR = 0x0800, GICD_ICFGR = 0x0c00,
	GICD_SGIR = 0x0f00, GICD_IROUTER = 0x6000, GICD_PIDR2 = 0xffe8,
	GICR_CTLR = 0x0000, GICR_IIDR = 0x0004, GICR_TYPER = 0x0008, GICR_WAKER = 0x0014,
	GICR_SGI_BASE = 0x10000, GICR_FRAMES = 0x20000,
};
#define CTLR_ENABLE_G0 (1u << 0) /* (GICv2: the one enable) */
#define CTLR_ENABLE_G1 (1u << 1)
#define CTLR_ARE (1u << 4) /* GICv3: affinity routing, always on */
#define CTLR_DS (1u << 6) /* GICv3: one security state */
#define IIDR 0x0000043bu /* Arm's JEP106 code, product 0 */
#define PIDR2_ARCH(version) ((version) << 4 | 0xb)
#define TYPER_IDBITS_10 (9u << 19) /* INTIDs below 1024 */
#define GICR_TYPER_LAST (1u << 4)
#define GICR_WAKER_PROCESSOR_SLEEP (1u << 1)
#define GICR_WAKER_CHILDREN_ASLEEP (1u << 2)
#define IROUTER_IRM (1ul << 31) /* any one vCPU */
#define NONE 0xff

static struct virq *virq(struct vm *vm, struct vcpu *bank, unsigned intid)
{
	if (intid < 32)
		return bank ? &bank->gic.private[intid] : 0;
	return intid < VGIC_INTIDS ? &vm->gic.spis[intid - 32] : 0;
}

static int is_pending(const struct virq *q)
{
	return q->pending || (!q->edge && q->line);
}

static int forwarded(const struct vgic *g, const struct virq *q)
{
	return is_pending(q) && q->enabled &&
	       g->ctlr & (!g->v3 || !q->group1 ? CTLR_ENABLE_G0 : CTLR_ENABLE_G1);
}

static unsigned first_target(const struct virq *q)
{
	return q->targets ? (unsigned)__builtin_ctz(q->targets) : NONE;
}

/* interrupt `intid` (its state `q`) belongs in `v`'s list registers */
static int for_vcpu(struct vcpu *v, unsigned intid, const struct virq *q)
{
	const struct vgic *g = &v->vm->gic;
	if (intid >= 32 && (q->active ? q->holder : first_target(q)) != v->index)
		return 0;
	return q->active || forwarded(g, q);
}

/* `v`'s interrupts changed: it looks again before its guest resumes (kicked if it runs
 * elsewhere) */
static void notify(struct vcpu *v)
{
	v->gic.dirty = 1;
	if (v->cpu != this_cpu() && v->state == VCPU_ON)
		gic->kick(v->cpu);
}

static void notify_target(struct vm *vm, unsigned intid, const struct virq *q)
{
	unsigned t = intid < 32 ? NONE : first_target(q);
	if (t < vm->config->cpus)
		notify(&vm->vcpus[t]);
}

static void notify_all(struct vm *vm)
{
	for (unsigned k = 0; k < vm->config->cpus; k++)
		notify(&vm->vcpus[k]);
}

static void reset_irq(struct virq *q, int v3, unsigned intid)
{
	*q = (struct virq){.group1 = v3, .enabled = intid < 16, .edge = intid < 16};
}

void vgic_init(struct vm *vm)
{
	struct vgic *g = &vm->gic;
	g->ctlr = 0;
	g->v3 = gic_v3();
	for (unsigned i = 0; i < VGIC_SPIS; i++)
		reset_irq(&g->spis[i], g->v3, 32 + i);
}

void vgic_vcpu_reset(struct vcpu *v)
{
	struct vgic *g = &v->vm->gic;
	spin_lock(&g->lock);
	for (unsigned intid = 0; intid < 32; intid++) {
		struct virq *q = &v->gic.private[intid];
		if (q->hw)
			gic->deactivate(intid);
		reset_irq(q, g->v3, intid);
	}
	v->gic.lrs_used = 0;
	v->gic.asleep = 1;
	v->gic.dirty = 1;
	gic->vcpu_reset();
	spin_unlock(&g->lock);
}

void vgic_fold(struct vcpu *v)
{
	if (!v->gic.lrs_used)
		return;
	struct vgic *g = &v->vm->gic;
	static const struct lr free;
	spin_lock(&g->lock);
	for (unsigned n = 0; n < v->gic.lrs_used; n++) {
		struct lr lr;
		gic->lr_read(n, &lr);
		gic->lr_write(n, &free);
		struct virq *q = virq(v->vm, v, v->gic.lr_intid[n]);
		q->active = !!(lr.state & LR_ACTIVE);
		if (q->edge || q->hw)
			q->pending |= lr.state & LR_PENDING; /* (flush moved it into the LR) */
		else if (!(lr.state & LR_PENDING))
			q->pending = 0; /* the guest took it: a latched level interrupt is done */
		if (q->hw && !lr.state)
			q->hw = 0; /* the guest's deactivation deactivated the physical one too */
	}
	v->gic.lrs_used = 0;
	v->gic.dirty = 1;
	/* No underflow interrupt while the LRs are empty: it would stay asserted (a level) and
	 * this trap's interrupts would never be done; the flush at its end asks again if need be */
	gic->underflow(0);
	spin_unlock(&g->lock);
}

void vgic_flush(struct vcpu *v)
{
	if (!v->gic.dirty)
		return;
	struct vm *vm = v->vm;
	struct vgic *g = &vm->gic;
	unsigned lrs = gic->lrs(), n = 0;
	uint64_t placed = 0;
	_Static_assert(VGIC_INTIDS <= 64, "one bit each in `placed`");
	int more = 0;
	spin_lock(&g->lock);
	v->gic.dirty = 0;
	for (unsigned intid = 16; intid < 32; intid++) { /* a physical PPI the guest gave up */
		struct virq *q = &v->gic.private[intid];
		if (q->hw && !q->pending && !q->active) {
			gic->deactivate(intid);
			q->hw = 0;
		}
	}
	for (;;) {
		struct virq *best = 0;
		unsigned best_intid = 0;
		for (unsigned intid = 0; intid < VGIC_INTIDS; intid++) {
			struct virq *q = virq(vm, v, intid);
			if (placed >> intid & 1 || !for_vcpu(v, intid, q))
				continue;
			if (!best || (q->active != best->active ? q->active
							      : q->priority < best->priority)) {
				best = q;
				best_intid = intid;
			}
		}
		if (!best)
			break;
		if (n == lrs) {
			more = 1;
			break;
		}
		struct lr lr = {
			.intid = best_intid,
			.state = (forwarded(g, best) && !(best->hw && best->active) ? LR_PENDING : 0) |
				 (best->active ? LR_ACTIVE : 0),
			.priority = best->priority,
			.group1 = best->group1,
			.hw = best->hw,
			.eoi = !best->edge && !best->hw,
			.source = best->source,
		};
		if (lr.state & LR_PENDING && (best->edge || best->hw))
			best->pending = 0; /* now the LR's */
		if (best_intid >= 32)
			best->holder = v->index;
		gic->lr_write(n, &lr);
		v->gic.lr_intid[n++] = best_intid;
		placed |= 1ul << best_intid;
	}
	v->gic.lrs_used = n;
	gic->underflow(more);
	spin_unlock(&g->lock);
}

int vgic_pending(struct vcpu *v)
{
	struct vgic *g = &v->vm->gic;
	int found = 0;
	spin_lock(&g->lock);
	for (unsigned intid = 0; intid < VGIC_INTIDS && !found; intid++) {
		const struct virq *q = virq(v->vm, v, intid);
		found = for_vcpu(v, intid, q) && forwarded(g, q);
	}
	spin_unlock(&g->lock);
	return found;
}

void vgic_hw_irq(struct vcpu *v, unsigned intid)
{
	struct vgic *g = &v->vm->gic;
	spin_lock(&g->lock);
	struct virq *q = &v->gic.private[intid];
	q->pending = 1;
	q->hw = 1;
	v->gic.dirty = 1;
	spin_unlock(&g->lock);
}

void vgic_set_line(struct vm *vm, unsigned intid, int level)
{
	struct vgic *g = &vm->gic;
	spin_lock(&g->lock);
	struct virq *q = virq(vm, 0, intid);
	if (q && q->line != level) {
		if (q->edge && level)
			q->pending = 1;
		q->line = level;
		notify_target(vm, intid, q);
	}
	spin_unlock(&g->lock);
}

/* SGI `intid` from `v` to the vCPUs in `targets` (a bit each) */
static void send_sgi(struct vcpu *v, unsigned intid, uint64_t targets)
{
	struct vm *vm = v->vm;
	for (unsigned k = 0; k < vm->config->cpus; k++) {
		if (!(targets >> k & 1))
			continue;
		struct virq *q = &vm->vcpus[k].gic.private[intid];
		q->pending = 1;
		q->source = v->index;
		notify(&vm->vcpus[k]);
	}
}

void vgic_sgi1r(struct vcpu *v, uint64_t value)
{
	/* TargetList [15:0], Aff1 [23:16], INTID [27:24], Aff2 [39:32], IRM [40], RS [47:44],
	 * Aff3 [55:48]: this VM's vCPUs are Aff0 = 0 to cpus - 1 of affinity 0.0.0; TargetList
	 * bit n is Aff0 = RS * 16 + n */
	uint64_t all = (1ul << v->vm->config->cpus) - 1, targets;
	unsigned range = value >> 44 & 0xf;
	if (value >> 40 & 1)
		targets = all & ~(1ul << v->index);
	else if (value & 0xff00ff00ff0000ul || range * 16 >= MAX_CPUS)
		targets = 0;
	else
		targets = (value & 0xffff) << range * 16 & all;
	spin_lock(&v->vm->gic.lock);
	send_sgi(v, value >> 24 & 0xf, targets);
	spin_unlock(&v->vm->gic.lock);
}

/* --- registers --- */

static uint64_t mask_of(unsigned size)
{
	return size >= 8 ? ~0ul : (1ul << 8 * size) - 1;
}

/* the registers with a bit per interrupt (IGROUPR to ICACTIVER), for INTIDs from `first` */
static uint32_t bits_read(struct vm *vm, struct vcpu *bank, unsigned reg, unsigned first)
{
	uint32_t value = 0;
	for (unsigned i = 0; i < 32; i++) {
		const struct virq *q = virq(vm, bank, first + i);
		if (!q)
			break;
		int bit;
		switch (reg) {
		case GICD_IGROUPR: bit = q->group1; break;
		case GICD_ISENABLER: case GICD_ICENABLER: bit = q->enabled; break;
		case GICD_ISPENDR: case GICD_ICPENDR: bit = is_pending(q); break;
		default: bit = q->active; break;
		}
		value |= (uint32_t)bit << i;
	}
	return value;
}

static void bits_write(struct vm *vm, struct vcpu *bank, unsigned reg, unsigned first,
		       uint32_t value)
{
	for (unsigned i = 0; i < 32; i++) {
		unsigned intid = first + i;
		struct virq *q = virq(vm, bank, intid);
		if (!q)
			break;
		int bit = value >> i & 1;
		if (!bit && reg != GICD_IGROUPR)
			continue;
		switch (reg) {
		case GICD_IGROUPR: q->group1 = bit; break;
		case GICD_ISENABLER: q->enabled = 1; break;
		case GICD_ICENABLER: q->enabled = intid < 16; break; /* SGIs: always on */
		case GICD_ISPENDR: q->pending = 1; break;
		case GICD_ICPENDR: q->pending = 0; break;
		case GICD_ISACTIVER: q->active = 1; break;
		default: q->active = 0; break;
		}
	}
}

/* the registers with a byte per interrupt (IPRIORITYR, GICv2's ITARGETSR) */
static uint64_t bytes_access(struct vcpu *v, struct vcpu *bank, unsigned reg, unsigned first,
			     unsigned size, int write, uint64_t value)
{
	struct vm *vm = v->vm;
	uint64_t result = 0, all = (1ul << vm->config->cpus) - 1;
	for (unsigned i = 0; i < size; i++) {
		struct virq *q = virq(vm, bank, first + i);
		if (!q)
			break;
		uint8_t byte = value >> 8 * i;
		if (reg == GICD_IPRIORITYR) {
			if (write)
				q->priority = byte;
			result |= (uint64_t)q->priority << 8 * i;
		} else if (first + i < 32) { /* a private interrupt goes to its own vCPU */
			result |= (uint64_t)(1u << v->index) << 8 * i;
		} else {
			if (write)
				q->targets = byte & all;
			result |= (uint64_t)q->targets << 8 * i;
		}
	}
	return result;
}

/* ICFGR: two bits per interrupt; SGIs are edge-triggered, PPIs level-sensitive */
static uint32_t config_access(struct vm *vm, struct vcpu *bank, unsigned first, int write,
			      uint32_t value)
{
	uint32_t result = 0;
	for (unsigned i = 0; i < 16; i++) {
		struct virq *q = virq(vm, bank, first + i);
		if (!q)
			break;
		if (write && first + i >= 32)
			q->edge = value >> (2 * i + 1) & 1;
		result |= (uint32_t)q->edge << (2 * i + 1);
	}
	return result;
}

/* the registers the distributor and a GICv3 redistributor's SGI frame share (0x080-0xcff):
 * `bank` is whose SGIs and PPIs they reach (0: none); SPIs only from a distributor */
static int interrupt_regs(struct vcpu *v, struct vcpu *bank, int spis, uint64_t offset,
			  unsigned size, int write, uint64_t *value)
{
	struct vm *vm = v->vm;
	if (offset >= GICD_IGROUPR && offset < GICD_IPRIORITYR) {
		unsigned reg = offset & ~0x7ful, first = (offset & 0x7f) / 4 * 32;
		if (size != 4 || (first >= 32 && !spis) || (first < 32 && !bank))
			return 0; /* read as zero, writes ignored */
		if (write)
			bits_write(vm, bank, reg, first, (uint32_t)*value);
		else
			*value = bits_read(vm, bank, reg, first);
		return write;
	}
	if (offset >= GICD_IPRIORITYR && offset < GICD_ICFGR) {
		unsigned reg = offset < GICD_ITARGETSR ? GICD_IPRIORITYR : GICD_ITARGETSR;
		unsigned first = offset - reg;
		if ((reg == GICD_ITARGETSR && vm->gic.v3) || (first >= 32 && !spis) ||
		    (first < 32 && !bank) || size > 4)
			return 0;
		*value = bytes_access(v, bank, reg, first, size, write, *value);
		return write;
	}
	if (offset >= GICD_ICFGR && offset < GICD_ICFGR + 0x100 && size == 4) {
		unsigned first = (offset - GICD_ICFGR) / 4 * 16;
		if ((first >= 32 && !spis) || (first < 32 && !bank))
			return 0;
		*value = config_access(vm, bank, first, write, (uint32_t)*value);
		return write;
	}
	return 0;
}

static int distributor(struct vcpu *v, uint64_t offset, unsigned size, int write, uint64_t *value)
{
	struct vm *vm = v->vm;
	struct vgic *g = &vm->gic;
	unsigned cpus = vm->config->cpus;
	if (offset == GICD_CTLR && size == 4) {
		if (write) {
			g->ctlr = *value & (g->v3 ? CTLR_ENABLE_G0 | CTLR_ENABLE_G1 : CTLR_ENABLE_G0);
			return 1;
		}
		*value = g->ctlr | (g->v3 ? CTLR_ARE | CTLR_DS : 0);
	} else if (offset == GICD_TYPER && size == 4 && !write) {
		*value = (VGIC_INTIDS / 32 - 1) | (g->v3 ? TYPER_IDBITS_10 : (cpus - 1) << 5);
	} else if (offset == GICD_IIDR && size == 4 && !write) {
		*value = IIDR;
	} else if (offset == GICD_PIDR2 && size == 4 && !write) {
		*value = PIDR2_ARCH(g->v3 ? 3 : 2);
	} else if (offset == GICD_SGIR && size == 4 && write && !g->v3) {
		/* TargetListFilter [25:24]: the list [23:16], all but the sender, or itself */
		uint64_t all = (1ul << cpus) - 1, filter = *value >> 24 & 3;
		send_sgi(v, *value & 0xf, filter == 0 ? (*value >> 16 & 0xff & all)
					  : filter == 1 ? all & ~(1ul << v->index)
					  : filter == 2 ? 1ul << v->index : 0);
	} else if (g->v3 && offset >= GICD_IROUTER + 8 * 32 && offset < GICD_IROUTER + 8 * VGIC_INTIDS &&
		   !(offset & 7) && size >= 4) {
		/* IROUTER<n>: Aff0 one of the vCPUs and Aff1-3 zero (as theirs), or IRM: any one */
		struct virq *q = &g->spis[(offset - GICD_IROUTER) / 8 - 32];
		uint64_t all = (1ul << cpus) - 1, aff0 = *value & 0xff;
		if (write) {
			q->targets = *value & IROUTER_IRM ? all
				     : *value & 0xff00ffff00ul || aff0 >= cpus ? 0 : 1u << aff0;
			return 1;
		}
		*value = q->targets == all && cpus > 1 ? IROUTER_IRM : q->targets ? first_target(q) : 0;
	} else {
		return interrupt_regs(v, g->v3 ? 0 : v, 1, offset, size, write, value);
	}
	return 0;
}

static int redistributor(struct vcpu *v, struct vcpu *bank, uint64_t offset, unsigned size,
			 int write, uint64_t *value)
{
	unsigned last = bank->index == bank->vm->config->cpus - 1;
	if (offset >= GICR_SGI_BASE)
		return interrupt_regs(v, bank, 0, offset - GICR_SGI_BASE, size, write, value);
	switch (offset) {
	case GICR_IIDR:
		*value = write ? *value : IIDR;
		break;
	case GICR_TYPER:
	case GICR_TYPER + 4: { /* Affinity [63:32]: Aff0 the vCPU's; Processor_Number [23:8] */
		uint64_t typer = (uint64_t)bank->index << 32 | bank->index << 8 |
				 (last ? GICR_TYPER_LAST : 0);
		*value = write ? *value : typer >> 8 * (offset & 7) & mask_of(size);
		break;
	}
	case GICR_WAKER:
		if (write)
			bank->gic.asleep = !!(*value & GICR_WAKER_PROCESSOR_SLEEP);
		else
			*value = bank->gic.asleep ? GICR_WAKER_PROCESSOR_SLEEP | GICR_WAKER_CHILDREN_ASLEEP
						  : 0;
		break;
	case GICD_PIDR2:
		*value = write ? *value : PIDR2_ARCH(3);
		break;
	default: /* GICR_CTLR (no LPIs) and the rest: zero */
		if (!write)
			*value = 0;
	}
	return 0;
}

int vgic_mmio(struct vcpu *v, uint64_t ipa, unsigned size, int write, uint64_t *value)
{
	struct vm *vm = v->vm;
	struct vgic *g = &vm->gic;
	uint64_t redists = vm->config->cpus * (uint64_t)GICR_FRAMES;
	int changed;
	if (ipa - VGIC_GICD < 0x10000) {
		if (!write)
			*value = 0;
		spin_lock(&g->lock);
		changed = distributor(v, ipa - VGIC_GICD, size, write, value);
	} else if (g->v3 && ipa - VGIC_GICR < redists) {
		if (!write)
			*value = 0;
		spin_lock(&g->lock);
		uint64_t offset = ipa - VGIC_GICR;
		changed = redistributor(v, &vm->vcpus[offset / GICR_FRAMES], offset % GICR_FRAMES, size,
					write, value);
	} else {
		return -1;
	}
	if (changed)
		notify_all(vm);
	spin_unlock(&g->lock);
	return 0;
}
