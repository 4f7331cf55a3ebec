/* A virtual PL011 for each VM, multiplexed onto the board's UART with the VM's name in front
 * of each of its lines. */
#ifndef VUART_H
#define VUART_H

#include <stdint.h>

#define VUART_LINE 160

struct vuart {
	const char *name;
	char line[VUART_LINE];
	unsigned length;
	uint32_t cr, lcr_h, ibrd, fbrd, imsc, ifls;
};

void vuart_init(struct vuart *u, const char *name);
uint64_t vuart_read(struct vuart *u, uint64_t offset, unsigned size);
void vuart_write(struct vuart *u, uint64_t offset, unsigned size, uint64_t value);

#endif
