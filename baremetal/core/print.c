/* print(): printf's %s %c %d %u %x %p and %%, with l, 0 and a width; nothing more. */
#include <stdint.h>

#include "console.h"

extern void halt(void) __attribute__((noreturn));

static void put_string(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

static void put_number(uint64_t value, unsigned base, int width, char pad, int negative)
{
	char digits[24];
	int n = 0;
	do {
		digits[n++] = "0123456789abcdef"[value % base];
		value /= base;
	} while (value);
	if (negative)
		digits[n++] = '-';
	while (width-- > n)
		uart_putc(pad);
	while (n)
		uart_putc(digits[--n]);
}

void vprint(const char *format, va_list args)
{
	for (const char *p = format; *p; p++) {
		if (*p != '%') {
			uart_putc(*p);
			continue;
		}
		char pad = ' ';
		int width = 0, is_long = 0;
		if (*++p == '0')
			pad = '0', p++;
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		while (*p == 'l')
			is_long = 1, p++;
		switch (*p) {
		case 's':
			put_string(va_arg(args, const char *));
			break;
		case 'c':
			uart_putc((char)va_arg(args, int));
			break;
		case 'd': {
			int64_t v = is_long ? va_arg(args, int64_t) : va_arg(args, int);
			put_number(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			put_number(is_long ? va_arg(args, uint64_t) : va_arg(args, unsigned), 10, width, pad,
				   0);
			break;
		case 'x':
			put_number(is_long ? va_arg(args, uint64_t) : va_arg(args, unsigned), 16, width, pad,
				   0);
			break;
		case 'p':
			put_string("0x");
			put_number((uint64_t)va_arg(args, void *), 16, width, pad, 0);
			break;
		case '%':
			uart_putc('%');
			break;
		default: /* an unknown conversion: shown as it is */
			uart_putc('%');
			if (!*p)
				return;
			uart_putc(*p);
		}
	}
}

void print(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vprint(format, args);
	va_end(args);
}

_Noreturn void panic(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	put_string("elvisor EL2: panic: ");
	vprint(format, args);
	va_end(args);
	uart_putc('\n');
	halt();
}
