/* The hypervisor's own output: the board's PL011, and a small printf. */
#ifndef CONSOLE_H
#define CONSOLE_H

#include <stdarg.h>

void uart_putc(char c);
void print(const char *format, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char *format, va_list args);
_Noreturn void panic(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif
