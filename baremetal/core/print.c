/* The hypervisor's console: print() (printf's %s %c %d %u %x %p and %%, with l, 0 and a
 * width) and the VMs' lines, one writer at a time on the board's UART. A line is whole or
 * labelled: when another writer's text comes while a line is unfinished, it starts a new one.
 *
 * Writers never wait for the UART while they hold the console: their text goes into a ring,
 * and from there into the UART's transmit FIFO as far as it has room; what is left goes out
 * at the UART's transmit interrupt (taken by CPU 0). A writer waits only when the ring is
 * full, and then between short turns at the lock, which is fair: a VM printing from every
 * vCPU delays the others' printing by its share of the UART, and nothing else of theirs. */
#include <stdint.h>

#include "console.h"
#include "lock.h"

extern void halt(void) __attribute__((noreturn));

#define RING_SIZE 16384u /* a power of 2: the indices below run free and wrap */

static spinlock_t console; /* the ring and the line state */
static int locking; /* once the MMU is on: exclusives need normal memory */
static int at_line_start = 1;
static const void *line_owner; /* who wrote the unfinished line (0: the hypervisor) */
static char ring[RING_SIZE];
static uint32_t ring_head, ring_tail; /* written up to, sent up to */

struct sink {
	char *buffer;
	unsigned size, length;
};

static void put(struct sink *s, char c)
{
	if (s->length < s->size)
		s->buffer[s->length++] = c;
}

static void put_string(struct sink *s, const char *text)
{
	while (*text)
		put(s, *text++);
}

static void put_number(struct sink *s, uint64_t value, unsigned base, int width, char pad,
		       int negative)
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
		put(s, pad);
	while (n)
		put(s, digits[--n]);
}

static void format(struct sink *s, const char *format, va_list args)
{
	for (const char *p = format; *p; p++) {
		if (*p != '%') {
			put(s, *p);
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
			put_string(s, va_arg(args, const char *));
			break;
		case 'c':
			put(s, (char)va_arg(args, int));
			break;
		case 'd': {
			int64_t v = is_long ? va_arg(args, int64_t) : va_arg(args, int);
			put_number(s, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			put_number(s, is_long ? va_arg(args, uint64_t) : va_arg(args, unsigned), 10, width,
				   pad, 0);
			break;
		case 'x':
			put_number(s, is_long ? va_arg(args, uint64_t) : va_arg(args, unsigned), 16, width,
				   pad, 0);
			break;
		case 'p':
			put_string(s, "0x");
			put_number(s, (uint64_t)va_arg(args, void *), 16, width, pad, 0);
			break;
		case '%':
			put(s, '%');
			break;
		default: /* an unknown conversion: shown as it is */
			put(s, '%');
			if (!*p)
				return;
			put(s, *p);
		}
	}
}

void console_locking(void)
{
	locking = 1;
}

static unsigned length_of(const char *text)
{
	unsigned n = 0;
	while (text && text[n])
		n++;
	return n;
}

static void push(char c)
{
	if (c == '\n')
		ring[ring_head++ % RING_SIZE] = '\r';
	ring[ring_head++ % RING_SIZE] = c;
}

/* what the ring holds, into the UART as far as its FIFO takes it (under the lock) */
static void send(void)
{
	while (ring_tail != ring_head && !uart_transmit_full())
		uart_write(ring[ring_tail++ % RING_SIZE]);
	uart_transmit_interrupt(ring_tail != ring_head);
}

/* text[from..length) into the ring, as far as it has room; where it stopped (under the lock) */
static unsigned append(const void *owner, const char *prefix, const char *text, unsigned length,
		       unsigned from)
{
	unsigned need = 4 + length_of(prefix); /* another's line ended, a prefix, a CR LF */
	unsigned i = from;
	for (; i < length && RING_SIZE - (ring_head - ring_tail) >= need; i++) {
		if (!at_line_start && owner != line_owner)
			push('\n'), at_line_start = 1;
		if (at_line_start && prefix)
			for (const char *p = prefix; *p; p++)
				push(*p);
		push(text[i]);
		at_line_start = text[i] == '\n';
		line_owner = owner;
	}
	return i;
}

void console_write(const void *owner, const char *prefix, const char *text, unsigned length)
{
	if (!locking) { /* one CPU, the MMU off: straight out */
		if (!at_line_start && owner != line_owner)
			uart_putc('\n'), at_line_start = 1;
		for (unsigned i = 0; i < length; i++) {
			if (at_line_start && prefix)
				for (const char *p = prefix; *p; p++)
					uart_putc(*p);
			uart_putc(text[i]);
			at_line_start = text[i] == '\n';
		}
		line_owner = owner;
		return;
	}
	for (unsigned done = 0;;) {
		spin_lock(&console);
		send();
		done = append(owner, prefix, text, length, done);
		send();
		spin_unlock(&console);
		if (done == length)
			return;
		for (int pause = 0; pause < 64; pause++) /* the ring is full: the UART is behind */
			__asm__ volatile("yield");
	}
}

void console_transmit(void)
{
	spin_lock(&console);
	send();
	spin_unlock(&console);
}

void console_flush(void)
{
	spin_lock(&console);
	while (ring_tail != ring_head)
		send();
	spin_unlock(&console);
}

void print(const char *text, ...)
{
	char buffer[256];
	struct sink s = {buffer, sizeof buffer, 0};
	va_list args;
	va_start(args, text);
	format(&s, text, args);
	va_end(args);
	console_write(0, 0, buffer, s.length);
}

_Noreturn void panic(const char *text, ...)
{
	char buffer[256];
	struct sink s = {buffer, sizeof buffer, 0};
	put_string(&s, "\nelvisor EL2: panic: ");
	va_list args;
	va_start(args, text);
	format(&s, text, args);
	va_end(args);
	put(&s, '\n');
	/* without the lock (it may be what failed): what the ring holds, then the message */
	while (ring_tail != ring_head) {
		while (uart_transmit_full())
			;
		uart_write(ring[ring_tail++ % RING_SIZE]);
	}
	for (unsigned i = 0; i < s.length; i++)
		uart_putc(buffer[i]);
	halt();
}
