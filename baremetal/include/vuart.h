/* A virtual PL011 for each VM, multiplexed onto the board's UART with the VM's name in front
 * of each of its lines, and the console's input when the VM has it. */
#ifndef VUART_H
#define VUART_H

#include <stdint.h>

#include "lock.h"

#define VUART_LINE 160
#define VUART_FIFO 32 /* the receive FIFO, as a PL011 r1p5's */

struct vuart {
	spinlock_t lock; /* its VM's vCPUs, and the CPU that takes the console's input */
	char prefix[24]; /* "[name] " */
	char line[VUART_LINE]; /* output not yet on the console: the end of a line, or a trap */
	unsigned length;
	char fifo[VUART_FIFO]; /* input the guest has not read */
	unsigned head, count;
	uint32_t cr, lcr_h, ibrd, fbrd, imsc, ifls;
};

void vuart_init(struct vuart *u, const char *name);
/* put the unfinished line on the console (when the VM waits, calls PSCI or stops) */
void vuart_flush(struct vuart *u);
uint64_t vuart_read(struct vuart *u, uint64_t offset, unsigned size);
void vuart_write(struct vuart *u, uint64_t offset, unsigned size, uint64_t value);
int vuart_room(struct vuart *u); /* its receive FIFO takes another character */
void vuart_receive(struct vuart *u, char c);
int vuart_interrupt(struct vuart *u); /* its interrupt's level: UARTMIS not zero */

#endif
