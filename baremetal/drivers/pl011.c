/* The board's PL011 UART (ARM DDI 0183), as the firmware or QEMU left it set up: output
 * written while its transmit FIFO has room (the console's ring holds the rest until its
 * transmit interrupt), input taken at its receive interrupt. */
#include <stdint.h>

#include "console.h"
#include "lock.h"
#include "platform.h"

#define UARTDR 0x000
#define UARTFR 0x018
#define UARTFR_RXFE (1u << 4) /* receive FIFO empty */
#define UARTFR_TXFF (1u << 5) /* transmit FIFO full */
#define UARTIMSC 0x038
#define UARTIMSC_RXIM (1u << 4)
#define UARTIMSC_TXIM (1u << 5)
#define UARTIMSC_RTIM (1u << 6) /* receive timeout: fewer characters than the FIFO's level */

static spinlock_t imsc_lock; /* the console's input and output each set their own bits */
static uint32_t imsc;

static volatile uint32_t *uart_register(unsigned long offset)
{
	return (volatile uint32_t *)(UART_BASE + offset);
}

void uart_putc(char c)
{
	if (c == '\n')
		uart_putc('\r');
	while (uart_transmit_full())
		;
	uart_write(c);
}

int uart_transmit_full(void)
{
	return *uart_register(UARTFR) & UARTFR_TXFF;
}

void uart_write(char c)
{
	*uart_register(UARTDR) = (uint32_t)(unsigned char)c;
}

int uart_getc(void)
{
	if (*uart_register(UARTFR) & UARTFR_RXFE)
		return -1;
	return *uart_register(UARTDR) & 0xff;
}

static void interrupts(uint32_t bits, int on)
{
	spin_lock(&imsc_lock);
	imsc = on ? imsc | bits : imsc & ~bits;
	*uart_register(UARTIMSC) = imsc;
	spin_unlock(&imsc_lock);
}

void uart_receive_interrupt(int on)
{
	interrupts(UARTIMSC_RXIM | UARTIMSC_RTIM, on);
}

void uart_transmit_interrupt(int on)
{
	interrupts(UARTIMSC_TXIM, on);
}
