/* The hypervisor's start on the boot CPU: what it runs on, then the guests. */
#include <stdint.h>

#include "config.h"
#include "console.h"
#include "fdt.h"
#include "gic.h"
#include "firmware.h"
#include "mmu.h"
#include "platform.h"
#include "sysreg.h"
#include "vm.h"

extern char __image_start[], __image_end[];
extern void secondary_entry(void);
static int firmware_psci; /* the machine's firmware answers PSCI calls (SMC) */

static const char *part_name(uint64_t midr)
{
	if ((midr >> 24 & 0xff) != 0x41) /* Arm Limited */
		return "";
	switch (midr >> 4 & 0xfff) {
	case 0xd03:
		return " (Cortex-A53)";
	case 0xd08:
		return " (Cortex-A72)";
	case 0xd0b:
		return " (Cortex-A76)";
	case 0xd07:
		return " (Cortex-A57)";
	default:
		return "";
	}
}

_Noreturn void hypervisor_main(const void *fdt)
{
	uint64_t mpidr = read_sysreg(mpidr_el1), midr = read_sysreg(midr_el1);
	print("\nelvisor EL2 on %s: CPU %lx, MIDR %08lx%s\n", PLATFORM_NAME, MPIDR_AFFINITY(mpidr),
	      midr, part_name(midr));
	struct fdt_facts facts;
	if (fdt_read(fdt, &facts) != 0)
		panic("no sound device tree at %p (x0 at entry)", fdt);
	print("elvisor EL2: %s, %u CPU%s, memory %lx-%lx (%lu MiB)\n", facts.model, facts.cpus,
	      facts.cpus == 1 ? "" : "s",
	      facts.memory_base, facts.memory_base + facts.memory_size - 1, facts.memory_size >> 20);
	mmu_build();
	mmu_enable();
	console_locking();
	gic_select();
	gic->init();
	gic->init_cpu(0);

	unsigned cpus = facts.cpus < MAX_CPUS ? facts.cpus : MAX_CPUS;
	firmware_psci = facts.psci;
	if (!firmware_psci && cpus > 1) {
		print("elvisor EL2: no PSCI firmware (the Raspberry Pi's own firmware parks the other "
		      "CPUs on a spin table): CPU 0 only; boot through Trusted Firmware-A for all\n");
		cpus = 1;
	}
	vms_create((const struct config *)__image_end, (uint64_t)__image_start, facts.memory_base,
		   facts.memory_size, cpus);
	for (unsigned cpu = 1; cpu < cpus; cpu++) {
		if (!vcpu_of_cpu(cpu))
			continue;
		int64_t status = firmware_call(PSCI_CPU_ON, facts.mpidr[cpu], (uint64_t)secondary_entry, cpu);
		if (status != PSCI_SUCCESS)
			panic("the firmware did not start CPU %u (PSCI CPU_ON: %ld)", cpu, status);
	}
	gic->route_spi(UART_INTID, 0); /* the console's input: taken by CPU 0 */
	uart_receive_interrupt(1);
	cpu_restart(0);
}

_Noreturn void secondary_main(unsigned cpu)
{
	mmu_enable();
	gic->init_cpu(cpu);
	cpu_restart(cpu);
}

_Noreturn void firmware_system_off(void)
{
	console_flush();
	if (firmware_psci)
		firmware_call(PSCI_SYSTEM_OFF, 0, 0, 0);
	panic("the firmware did not power the machine off");
}

_Noreturn void boot_not_at_el2(uint64_t el)
{
	print("\nelvisor: started at EL%lu, not EL2: the hypervisor needs the virtualization "
	      "extensions' level (QEMU: -M virt,virtualization=on)\n",
	      el);
	extern void halt(void) __attribute__((noreturn));
	halt();
}
