/* What the Python side (`elvisor baremetal build`) tells the hypervisor: the VMs, as plain
 * data appended to the hypervisor's image at its image_size. Every field is little-endian;
 * src/elvisor/baremetal/config.py packs the same layout (a unit test compiles this header
 * and compares). An unused VM or payload slot has size 0: there is no separate count. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdint.h>

#define CONFIG_MAGIC 0x314746435356454cull /* "LEVSCFG1" */
#define MAX_VMS 4
#define MAX_PAYLOADS 4
#define VM_NAME_SIZE 16

struct payload {
	uint64_t offset; /* in the image, from the start of the configuration */
	uint64_t size;
	uint64_t address; /* where it goes in the VM's RAM */
};

struct vm_config {
	char name[VM_NAME_SIZE]; /* NUL-terminated: the prefix of the VM's console lines */
	uint64_t ram_base, ram_size; /* the VM's RAM: the same addresses to the VM and the machine */
	uint64_t entry; /* where its first vCPU starts */
	uint64_t dtb; /* x0 at that start: its device tree, one of the payloads */
	uint32_t first_cpu, cpus; /* the physical CPUs (by index) its vCPUs run on, one each */
	struct payload payloads[MAX_PAYLOADS];
};

struct config {
	uint64_t magic;
	uint64_t size; /* of the configuration and its payloads */
	struct vm_config vms[MAX_VMS];
};

#endif
