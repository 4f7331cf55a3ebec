/* The hypervisor's own output and the VMs' console lines, on the board's PL011. */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stdarg.h>

void uart_putc(char c); /* waits for room; '\n' as CR LF (before locking, and for panics) */
int uart_transmit_full(void);
void uart_write(char c); /* into the transmit FIFO, which has room */
int uart_getc(void); /* a received character, or -1 */
void uart_receive_interrupt(int on); /* the board's UART interrupts while it holds input */
void uart_transmit_interrupt(int on); /* ... and while the console has output waiting */
void print(const char *format, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void panic(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* `length` bytes of `owner`'s output (0: the hypervisor), each line begun with `prefix` */
void console_write(const void *owner, const char *prefix, const char *text, unsigned length);
/* from now on writers take turns (called once the MMU is on, before other CPUs start) */
void console_locking(void);
/* the UART's transmit interrupt: what waits in the console's ring goes out */
void console_transmit(void);
/* all the console's output on the UART (before the machine powers off) */
void console_flush(void);

#endif
