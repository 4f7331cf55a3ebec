/* The board's PL011 UART (ARM DDI 0183), as the firmware or QEMU left it set up: transmit only,
 * polled. */
#include <stdint.h>

#include "console.h"
#include "platform.h"

#define UARTDR 0x000
#define UARTFR 0x018
#define UARTFR_TXFF (1u << 5) /* transmit FIFO full */

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
