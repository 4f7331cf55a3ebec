/* The VMs from the configuration: checked against the machine, their payloads copied into
 * their RAM, their stage-2 tables built (RAM at the same addresses to the VM as to the
 * machine, and nothing else: the hypervisor, other VMs and the devices the hypervisor
 * emulates are out of reach). */
#include <stdint.h>

#include "console.h"
#include "firmware.h"
#include "gic.h"
#include "lock.h"
#include "mem.h"
#include "mmu.h"
#include "vgic.h"
#include "vm.h"

#define PAGE 4096ul
#define VM_UART 0x09000000ul /* where each VM finds its virtual PL011, */
#define VM_UART_INTID 33 /* and its interrupt (SPI 1) */
#define SWITCH_KEY 0x1c /* Ctrl-\\: the console's input goes to the next VM */

static struct vm vms[MAX_VMS];
static struct vcpu *cpu_vcpus[MAX_CPUS];
static spinlock_t vms_lock;
static unsigned vms_running;
static spinlock_t input_lock;
static struct vm *input_vm; /* the VM the console's input goes to */
static int input_held; /* the board's UART keeps its input until that VM makes room */

static int overlaps(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size)
{
	return a < b + b_size && b < a + a_size;
}

static int inside(uint64_t a, uint64_t a_size, uint64_t b, uint64_t b_size)
{
	return a >= b && a_size <= b_size && a - b <= b_size - a_size;
}

static void check_vm(const struct config *config, const struct vm_config *c, uint64_t image_start,
		     uint64_t memory_base, uint64_t memory_size, unsigned cpus)
{
	const char *name = c->name;
	if (c->name[VM_NAME_SIZE - 1] || !c->name[0])
		panic("configuration: a VM's name must be 1 to %d characters", VM_NAME_SIZE - 1);
	if ((c->ram_base | c->ram_size) & (PAGE - 1))
		panic("VM %s: its RAM must be page-aligned", name);
	if (!inside(c->ram_base, c->ram_size, memory_base, memory_size) ||
	    c->ram_base + c->ram_size > (1ul << 32))
		panic("VM %s: RAM %lx+%lx is not in the machine's memory below 4 GiB (%lx+%lx)",
		      name, c->ram_base, c->ram_size, memory_base, memory_size);
	if (overlaps(c->ram_base, c->ram_size, image_start, (uint64_t)config + config->size - image_start))
		panic("VM %s: its RAM overlaps the hypervisor's image", name);
	if (!c->cpus || c->first_cpu >= cpus || c->cpus > cpus - c->first_cpu)
		panic("VM %s: CPUs %u-%u, but the machine has %u", name, c->first_cpu,
		      c->first_cpu + c->cpus - 1, cpus);
	if (!inside(c->entry, 4, c->ram_base, c->ram_size) || !inside(c->dtb, 8, c->ram_base, c->ram_size))
		panic("VM %s: its entry point and device tree must be in its RAM", name);
	for (int p = 0; p < MAX_PAYLOADS; p++) {
		const struct payload *l = &c->payloads[p];
		if (l->size && (!inside(l->offset, l->size, sizeof *config, config->size - sizeof *config) ||
				!inside(l->address, l->size, c->ram_base, c->ram_size)))
			panic("VM %s: payload %d does not fit its RAM or the image", name, p);
	}
}

static void load(struct vm *vm)
{
	const struct config *config = vm->image;
	const struct vm_config *c = vm->config;
	for (int p = 0; p < MAX_PAYLOADS; p++) {
		const struct payload *l = &c->payloads[p];
		if (!l->size)
			continue;
		memcpy((void *)l->address, (const char *)config + l->offset, l->size);
		clean_to_poc(l->address, l->size);
	}
}

void vms_create(const struct config *config, uint64_t image_start, uint64_t memory_base,
		uint64_t memory_size, unsigned cpus)
{
	if (config->magic != CONFIG_MAGIC)
		panic("no VM configuration after the hypervisor (make the image with `elvisor "
		      "baremetal build`)");
	for (unsigned i = 0; i < MAX_VMS; i++) {
		const struct vm_config *c = &config->vms[i];
		if (!c->ram_size)
			continue;
		check_vm(config, c, image_start, memory_base, memory_size, cpus);
		for (unsigned j = 0; j < i; j++) {
			const struct vm_config *other = &config->vms[j];
			if (other->ram_size && overlaps(c->ram_base, c->ram_size, other->ram_base, other->ram_size))
				panic("VMs %s and %s: their RAM overlaps", other->name, c->name);
			if (other->ram_size && overlaps(c->first_cpu, c->cpus, other->first_cpu, other->cpus))
				panic("VMs %s and %s: they share CPUs", other->name, c->name);
		}
		struct vm *vm = &vms[i];
		vm->id = i;
		vm->config = c;
		vm->image = config;
		if (stage2_init(&vm->s2) || stage2_map(&vm->s2, c->ram_base, c->ram_base, c->ram_size, STAGE2_RAM) ||
		    (!gic_v3() && stage2_map(&vm->s2, VGIC_GICC, GICV_BASE, VGIC_GICC_SIZE, STAGE2_DEVICE)))
			panic("VM %s: out of stage-2 tables", c->name);
		load(vm);
		vuart_init(&vm->uart, c->name);
		vgic_init(vm);
		for (unsigned k = 0; k < c->cpus; k++) {
			struct vcpu *v = &vm->vcpus[k];
			v->vm = vm;
			v->index = k;
			v->cpu = c->first_cpu + k;
			v->state = k ? VCPU_OFF : VCPU_ON_PENDING;
			v->entry = c->entry;
			v->context = c->dtb;
			cpu_vcpus[v->cpu] = v;
		}
		vm->running = 1;
		vms_running++;
		if (!input_vm)
			input_vm = vm;
		print("elvisor EL2: VM %s: RAM %lx-%lx, CPUs %u-%u, entry %lx\n", c->name, c->ram_base,
		      c->ram_base + c->ram_size - 1, c->first_cpu, c->first_cpu + c->cpus - 1, c->entry);
	}
	if (!vms_running)
		panic("the configuration has no VM");
	if (vms_running > 1)
		print("elvisor EL2: input goes to VM %s (Ctrl-\\ passes it to the next)\n",
		      input_vm->config->name);
}

struct vcpu *vcpu_of_cpu(unsigned cpu)
{
	return cpu < MAX_CPUS ? cpu_vcpus[cpu] : 0;
}

int vm_mmio(struct vcpu *v, uint64_t ipa, unsigned size, int write, uint64_t *value)
{
	struct vm *vm = v->vm;
	if (ipa - VM_UART >= PAGE)
		return vgic_mmio(v, ipa, size, write, value);
	if (write)
		vuart_write(&vm->uart, ipa - VM_UART, size, *value);
	else
		*value = vuart_read(&vm->uart, ipa - VM_UART, size);
	vgic_set_line(vm, VM_UART_INTID, vuart_interrupt(&vm->uart));
	if (input_held && vm == input_vm && vuart_room(&vm->uart)) {
		spin_lock(&input_lock);
		if (input_held && vm == input_vm)
			uart_receive_interrupt(1); /* what waited on the board's UART comes in now */
		input_held = 0;
		spin_unlock(&input_lock);
	}
	return 0;
}

/* the next running VM after `vm` (itself when no other runs) */
static struct vm *next_vm(struct vm *vm)
{
	for (unsigned i = 1; i <= MAX_VMS; i++) {
		struct vm *next = &vms[(vm->id + i) % MAX_VMS];
		if (next->running)
			return next;
	}
	return vm;
}

void console_input(void)
{
	spin_lock(&input_lock);
	struct vm *vm = input_vm;
	int c;
	while (!(input_held = !vuart_room(&vm->uart)) && (c = uart_getc()) >= 0) {
		if (c == SWITCH_KEY) {
			vgic_set_line(vm, VM_UART_INTID, vuart_interrupt(&vm->uart));
			vm = input_vm = next_vm(vm);
			print("elvisor EL2: input goes to VM %s\n", vm->config->name);
		} else {
			vuart_receive(&vm->uart, (char)c);
		}
	}
	vgic_set_line(vm, VM_UART_INTID, vuart_interrupt(&vm->uart));
	uart_receive_interrupt(!input_held);
	spin_unlock(&input_lock);
}

void vcpu_off(struct vcpu *v)
{
	spin_lock(&v->vm->lock);
	v->state = VCPU_OFF;
	spin_unlock(&v->vm->lock);
	__asm__ volatile("dsb ish\n sev" ::: "memory");
}

void vm_check(struct vcpu *v)
{
	struct vm *vm = v->vm;
	if (vm->running && !vm->resetting)
		return;
	if (vm->resetting)
		vcpu_off(v);
	cpu_restart(v->cpu);
}

/* every vCPU of `vm` but `v` that runs takes a trap (and looks at vm_check) */
static void kick_others(struct vm *vm, struct vcpu *v)
{
	for (unsigned k = 0; k < vm->config->cpus; k++)
		if (k != v->index && vm->vcpus[k].state == VCPU_ON)
			gic->kick(vm->vcpus[k].cpu);
}

_Noreturn void vm_reset(struct vcpu *v)
{
	struct vm *vm = v->vm;
	spin_lock(&vm->lock);
	int first = !vm->resetting;
	vm->resetting = 1; /* from here on, none of its vCPUs is switched on */
	for (unsigned k = 0; first && k < vm->config->cpus; k++)
		if (vm->vcpus[k].state == VCPU_ON_PENDING && k != v->index)
			vm->vcpus[k].state = VCPU_OFF; /* (its CPU has not taken it: it never will) */
	spin_unlock(&vm->lock);
	if (!first) /* another of its vCPUs asked too: that one resets it */
		vm_check(v);
	vuart_flush(&vm->uart);
	print("elvisor EL2: VM %s resets\n", vm->config->name);
	kick_others(vm, v);
	for (unsigned k = 0; k < vm->config->cpus; k++) /* each switches off at its next trap */
		while (k != v->index && vm->vcpus[k].state != VCPU_OFF)
			__asm__ volatile("wfe" ::: "memory");
	load(vm);
	spin_lock(&vm->uart.lock); /* (the console's input may be arriving for it) */
	vuart_init(&vm->uart, vm->config->name);
	spin_unlock(&vm->uart.lock);
	spin_lock(&vm->gic.lock);
	vgic_init(vm);
	spin_unlock(&vm->gic.lock);
	struct vcpu *boot = &vm->vcpus[0];
	spin_lock(&vm->lock);
	boot->entry = vm->config->entry;
	boot->context = vm->config->dtb;
	v->state = VCPU_OFF;
	boot->state = VCPU_ON_PENDING;
	vm->resetting = 0;
	spin_unlock(&vm->lock);
	if (boot != v)
		gic->kick(boot->cpu);
	cpu_restart(v->cpu);
}

_Noreturn void vm_stop(struct vm *vm, const char *why)
{
	vuart_flush(&vm->uart); /* (from any of its vCPUs: they are stopped or stopping) */
	spin_lock(&vms_lock);
	int last = 0;
	if (vm->running) {
		vm->running = 0;
		last = --vms_running == 0;
		print("elvisor EL2: VM %s %s\n", vm->config->name, why);
	}
	spin_unlock(&vms_lock);
	kick_others(vm, current_vcpu());
	if (last) {
		print("elvisor EL2: no VM is left: powering off\n");
		firmware_system_off();
	}
	spin_lock(&input_lock);
	if (input_vm == vm && next_vm(vm) != vm) {
		input_vm = next_vm(vm);
		print("elvisor EL2: input goes to VM %s\n", input_vm->config->name);
		uart_receive_interrupt(1);
		input_held = 0;
	}
	spin_unlock(&input_lock);
	cpu_restart(this_cpu());
}
