/* A one-pass reader of the flattened device tree: the structure block's tokens (FDT_BEGIN_NODE,
 * FDT_PROP, ...) walked once, every offset checked against the blob's declared size. */
#include <stdint.h>

#include "fdt.h"

#define FDT_MAGIC 0xd00dfeed
#define FDT_BEGIN_NODE 1
#define FDT_END_NODE 2
#define FDT_PROP 3
#define FDT_NOP 4
#define FDT_END 9
#define MAX_SIZE (2u << 20)

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* a big-endian number of `cells` 32-bit cells (1 or 2) */
static uint64_t cells_value(const uint8_t *p, uint32_t cells)
{
	return cells == 2 ? (uint64_t)be32(p) << 32 | be32(p + 4) : be32(p);
}

int fdt_read(const void *blob, struct fdt_facts *facts)
{
	const uint8_t *fdt = blob;
	if (!fdt || ((uintptr_t)fdt & 7) || be32(fdt) != FDT_MAGIC)
		return -1;
	uint32_t total = be32(fdt + 4), structs = be32(fdt + 8), strings = be32(fdt + 12);
	uint32_t structs_size = be32(fdt + 36), strings_size = be32(fdt + 32);
	if (total > MAX_SIZE || structs > total || structs_size > total - structs ||
	    strings > total || strings_size > total - strings)
		return -1;

	facts->model = "";
	facts->memory_base = facts->memory_size = 0;
	facts->cpus = 0;
	facts->psci = 0;
	uint32_t address_cells = 2, size_cells = 1, cpu_cells = 1;
	int depth = 0, in_memory = 0, in_cpus = 0, in_cpu = 0, in_psci = 0;
	uint32_t offset = structs, end = structs + structs_size;
	while (offset + 4 <= end) {
		uint32_t token = be32(fdt + offset);
		offset += 4;
		if (token == FDT_BEGIN_NODE) {
			const char *name = (const char *)fdt + offset;
			uint32_t length = 0;
			while (offset + length < end && name[length])
				length++;
			if (offset + length >= end)
				return -1;
			offset += (length + 4) & ~3u;
			depth++;
			in_memory = depth == 2 && starts_with(name, "memory") && !facts->memory_size;
			if (depth == 2) {
				in_cpus = same(name, "cpus");
				in_psci = same(name, "psci");
			}
			in_cpu = depth == 3 && in_cpus && starts_with(name, "cpu@");
			if (in_cpu)
				facts->cpus++;
		} else if (token == FDT_END_NODE) {
			if (--depth < 0)
				return -1;
			in_memory = in_cpu = 0;
			if (depth < 2)
				in_psci = 0;
		} else if (token == FDT_PROP) {
			if (offset + 8 > end)
				return -1;
			uint32_t length = be32(fdt + offset), name = be32(fdt + offset + 4);
			offset += 8;
			if (length > end - offset || name >= strings_size)
				return -1;
			const uint8_t *value = fdt + offset;
			const char *prop = (const char *)fdt + strings + name;
			offset += (length + 3) & ~3u;
			if (depth == 1 && same(prop, "#address-cells") && length == 4)
				address_cells = be32(value);
			else if (depth == 1 && same(prop, "#size-cells") && length == 4)
				size_cells = be32(value);
			else if (depth == 1 && same(prop, "model") && length && !value[length - 1])
				facts->model = (const char *)value;
			else if (depth == 2 && in_psci && same(prop, "method") && length == 4 &&
				 same((const char *)value, "smc"))
				facts->psci = 1;
			else if (depth == 2 && in_cpus && same(prop, "#address-cells") && length == 4)
				cpu_cells = be32(value);
			else if (depth == 3 && in_cpu && facts->cpus <= 8 && same(prop, "reg") && cpu_cells <= 2 && length >= 4 * cpu_cells)
				facts->mpidr[facts->cpus - 1] = cells_value(value, cpu_cells);
			else if (in_memory && same(prop, "reg") && address_cells <= 2 && size_cells <= 2 &&
				 length >= 4 * (address_cells + size_cells)) {
				facts->memory_base = cells_value(value, address_cells);
				facts->memory_size = cells_value(value + 4 * address_cells, size_cells);
			}
		} else if (token == FDT_END) {
			return depth == 0 ? 0 : -1;
		} else if (token != FDT_NOP) {
			return -1;
		}
	}
	return -1;
}
