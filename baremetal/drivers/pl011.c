/* The board's PL011 UART (ARM DDI 0183), as the firmware or QEMU left it set up: output
 * polled, input taken at its receive interrupt. */
#include <stdint.h>

#include "console.h"
#include "platform.h"

#define UARTDR 0x000
#define UARTFR 0x018
#define UARTFR_RXFE (1u << 4) /* receive FIFO empty */
#define UARTFR_TXFF (1u << 5) /* transmit FIFO full */
#define UARTIMSC 0x038
#define UARTIMSC_RXIM (1u << 4)
#define UARTIMSC_RTIM (1u << 6) /* receive timeout: fewer characters than the FIFO's level */

static volatile uint32_t *uart_register(unsigned long offset)
{
	return (volatile uint32_t *)(UART_BASE + offset);
}

void uart_putc(char c)
{
	if (c == '\n')
		uart_putc('\r');
	while (*uart_register(UARTFR) & UARTFR_TXFF)
		;
	*uart_register(UARTDR) = (uint32_t)(unsigned char)c;
}

int uart_getc(void)
{
	if (*uart_register(UARTFR) & UARTFR_RXFE)
		return -1;
	return *uart_register(UARTDR) & 0xff;
}

void uart_receive_interrupt(int on)
{
	*uart_register(UARTIMSC) = on ? UARTIMSC_RXIM | UARTIMSC_RTIM : 0;
}
