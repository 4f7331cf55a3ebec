/* A virtual PL011 (ARM DDI 0183) per VM: what Linux's amba-pl011 driver and a bare-metal guest
 * use, on the board's UART. A VM's output goes out a line at a time (or what it has, at its
 * next trap that is not a UART access: a prompt before it waits), each line begun with the
 * VM's name, so two VMs writing at once stay readable. Unknown offsets read as zero and ignore writes. */
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
#define UARTFR_TXFE (1u << 7)
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
	spin_lock(&u->lock);
	u->line[u->length++] = c;
	if (c == '\n' || u->length == VUART_LINE)
		flush(u);
	spin_unlock(&u->lock);
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
	u->length = 0;
	u->cr = 0x300; /* TXE | RXE, as after reset */
	u->lcr_h = u->ibrd = u->fbrd = u->imsc = 0;
	u->ifls = 0x12;
}

uint64_t vuart_read(struct vuart *u, uint64_t offset, unsigned size)
{
	(void)size;
	if (offset >= UARTPERIPHID0 && offset < UARTPERIPHID0 + 0x20 && !(offset & 3))
		return ids[(offset - UARTPERIPHID0) / 4];
	switch (offset) {
	case UARTFR:
		return UARTFR_TXFE | UARTFR_RXFE; /* sends at once; nothing to receive (yet) */
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
	default: /* UARTDR with nothing received, UARTRIS, UARTMIS, ...: zero */
		return 0;
	}
}

void vuart_write(struct vuart *u, uint64_t offset, unsigned size, uint64_t value)
{
	(void)size;
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
	default: /* UARTRSR, UARTICR, UARTDMACR, read-only registers: nothing to do */
		break;
	}
}
