/* A virtual PL011 (ARM DDI 0183) per VM: what Linux's amba-pl011 driver and a bare-metal guest
 * use, on the board's UART. A VM's output goes out a line at a time (or what it has when it
 * next waits or calls the hypervisor: a prompt before it waits for input), each line begun with the
 * VM's name, so two VMs writing at once stay readable. Its transmit FIFO is always empty (the
 * transmit interrupt always raised, for the driver to mask when it has nothing to send); its
 * receive FIFO holds the console's input until the guest reads it, and raises the receive
 * and receive-timeout interrupts while it does. Unknown offsets read as zero and ignore writes. */
#include <stdint.h>

#include "console.h"
#include "lock.h"
#include "vuart.h"

enum {
	UARTDR = 0x000, UARTRSR = 0x004, UARTFR = 0x018, UARTIBRD = 0x024, UARTFBRD = 0x028,
	UARTLCR_H = 0x02c, UARTCR = 0x030, UARTIFLS = 0x034, UARTIMSC = 0x038, UARTRIS = 0x03c,
	UARTMIS = 0x040, UARTICR = 0x044, UARTDMACR = 0x048, UARTPERIPHID0 = 0xfe0,
};
#define UARTFR_RXFE (1u << 4)
#define UARTFR_RXFF (1u << 6)
#define UARTFR_TXFE (1u << 7)
#define UART_RXI (1u << 4) /* the interrupt bits of UARTRIS, UARTMIS, UARTIMSC */
#define UART_TXI (1u << 5)
#define UART_RTI (1u << 6)
/* UARTPeriphID0-3 and UARTPCellID0-3: a PL011 r1p5, as the AMBA bus driver reads it */
static const uint8_t ids[8] = {0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1};

static void flush(struct vuart *u)
{
	if (u->length)
		console_write(u, u->prefix, u->line, u->length);
	u->length = 0;
}

static void output(struct vuart *u, char c)
{
	if (c == '\r')
		return;
	u->line[u->length++] = c;
	if (c == '\n' || u->length == VUART_LINE)
		flush(u);
}

static uint32_t raw_interrupts(const struct vuart *u)
{
	return UART_TXI | (u->count ? UART_RXI | UART_RTI : 0);
}

void vuart_flush(struct vuart *u)
{
	spin_lock(&u->lock);
	flush(u);
	spin_unlock(&u->lock);
}

void vuart_init(struct vuart *u, const char *name)
{
	unsigned n = 0;
	u->prefix[n++] = '[';
	while (*name && n < sizeof u->prefix - 3)
		u->prefix[n++] = *name++;
	u->prefix[n++] = ']';
	u->prefix[n++] = ' ';
	u->prefix[n] = 0;
	u->length = u->head = u->count = 0;
	u->cr = 0x300; /* TXE | RXE, as after reset */
	u->lcr_h = u->ibrd = u->fbrd = u->imsc = 0;
	u->ifls = 0x12;
}

static uint32_t receive(struct vuart *u)
{
	if (!u->count)
		return 0;
	uint32_t c = (unsigned char)u->fifo[u->head];
	u->head = (u->head + 1) % VUART_FIFO;
	u->count--;
	return c;
}

static uint64_t read_register(struct vuart *u, uint64_t offset)
{
	if (offset >= UARTPERIPHID0 && offset < UARTPERIPHID0 + 0x20 && !(offset & 3))
		return ids[(offset - UARTPERIPHID0) / 4];
	switch (offset) {
	case UARTDR:
		return receive(u);
	case UARTFR:
		return UARTFR_TXFE | (u->count ? 0 : UARTFR_RXFE) |
		       (u->count == VUART_FIFO ? UARTFR_RXFF : 0);
	case UARTIBRD:
		return u->ibrd;
	case UARTFBRD:
		return u->fbrd;
	case UARTLCR_H:
		return u->lcr_h;
	case UARTCR:
		return u->cr;
	case UARTIFLS:
		return u->ifls;
	case UARTIMSC:
		return u->imsc;
	case UARTRIS:
		return raw_interrupts(u);
	case UARTMIS:
		return raw_interrupts(u) & u->imsc;
	default: /* UARTRSR (no errors), UARTDMACR, ...: zero */
		return 0;
	}
}

uint64_t vuart_read(struct vuart *u, uint64_t offset, unsigned size)
{
	(void)size;
	spin_lock(&u->lock);
	uint64_t value = read_register(u, offset);
	spin_unlock(&u->lock);
	return value;
}

void vuart_write(struct vuart *u, uint64_t offset, unsigned size, uint64_t value)
{
	(void)size;
	spin_lock(&u->lock);
	switch (offset) {
	case UARTDR:
		output(u, (char)value);
		break;
	case UARTIBRD:
		u->ibrd = value & 0xffff;
		break;
	case UARTFBRD:
		u->fbrd = value & 0x3f;
		break;
	case UARTLCR_H:
		u->lcr_h = value & 0xff;
		break;
	case UARTCR:
		u->cr = value & 0xffff;
		break;
	case UARTIFLS:
		u->ifls = value & 0x3f;
		break;
	case UARTIMSC:
		u->imsc = value & 0x7ff;
		break;
	default: /* UARTRSR, UARTICR (the interrupts follow the FIFOs), UARTDMACR, read-only ones */
		break;
	}
	spin_unlock(&u->lock);
}

int vuart_room(struct vuart *u)
{
	return u->count < VUART_FIFO;
}

void vuart_receive(struct vuart *u, char c)
{
	spin_lock(&u->lock);
	if (u->count < VUART_FIFO) {
		u->fifo[(u->head + u->count) % VUART_FIFO] = c;
		u->count++;
	}
	spin_unlock(&u->lock);
}

int vuart_interrupt(struct vuart *u)
{
	return (raw_interrupts(u) & u->imsc) != 0;
}
