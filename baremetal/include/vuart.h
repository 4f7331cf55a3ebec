/* A virtual PL011 for each VM, multiplexed onto the board's UART with the VM's name in front
 * of each of its lines. */
#ifndef VUART_H
#define VUART_H

#include <stdint.h>

#include "lock.h"

#define VUART_LINE 160

struct vuart {
	spinlock_t lock; /* its VM's vCPUs, on their CPUs */
	char prefix[24]; /* "[name] " */
	char line[VUART_LINE]; /* output not yet on the console: the end of a line, or a trap */
	unsigned length;
	uint32_t cr, lcr_h, ibrd, fbrd, imsc, ifls;
};

void vuart_init(struct vuart *u, const char *name);
/* put the unfinished line on the console (at the VM's next trap that is not a UART access) */
void vuart_flush(struct vuart *u);
uint64_t vuart_read(struct vuart *u, uint64_t offset, unsigned size);
void vuart_write(struct vuart *u, uint64_t offset, unsigned size, uint64_t value);

#endif
