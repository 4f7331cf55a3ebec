/* blkbench PATH MODE SECONDS [direct]: block I/O throughput, for benchmarks/virtio.py (static,
 * no C library: the default guest has none). MODE is read (sequential, 1 MiB requests),
 * write (sequential, 1 MiB, then fdatasync) or randread (4 KiB at random aligned offsets).
 * Runs for about SECONDS and prints one line: "blkbench MODE: B bytes, N requests, T ns".
 * With "direct" the file is opened with O_DIRECT (in a guest: past its page cache). */

enum {
	SYS_openat = 56, SYS_close = 57, SYS_lseek = 62, SYS_write = 64, SYS_pread64 = 67,
	SYS_pwrite64 = 68, SYS_fdatasync = 83, SYS_exit = 93, SYS_clock_gettime = 113,
	AT_FDCWD = -100, O_RDONLY = 0, O_WRONLY = 1, O_DIRECT = 0200000, SEEK_END = 2,
	CLOCK_MONOTONIC = 1,
};
#define SEQUENTIAL (1L << 20)
#define RANDOM 4096L

static long syscall4(long n, long a, long b, long c, long d)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
}

static void say(const char *text)
{
	long n = 0;
	while (text[n])
		n++;
	syscall4(SYS_write, 1, (long)text, n, 0);
}

static void say_number(long value)
{
	char digits[24];
	int i = sizeof digits - 1;
	digits[i] = 0;
	do {
		digits[--i] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	say(digits + i);
}

static void fail(const char *what)
{
	say("blkbench: ");
	say(what);
	say("\n");
	syscall4(SYS_exit, 1, 0, 0, 0);
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static long now_ns(void)
{
	long ts[2];
	syscall4(SYS_clock_gettime, CLOCK_MONOTONIC, (long)ts, 0, 0);
	return ts[0] * 1000000000L + ts[1];
}

static char buffer[SEQUENTIAL] __attribute__((aligned(4096)));

static void run(char **argv)
{
	const char *path = argv[1], *mode = argv[2];
	long seconds = argv[3][0] - '0';
	int writing = same(mode, "write"), random = same(mode, "randread");
	if (!writing && !random && !same(mode, "read"))
		fail("MODE is read, write or randread");
	if (seconds < 1 || seconds > 9 || argv[3][1])
		fail("SECONDS is 1 to 9");
	long flags = (writing ? O_WRONLY : O_RDONLY) | (argv[4] ? O_DIRECT : 0);
	long fd = syscall4(SYS_openat, AT_FDCWD, (long)path, flags, 0);
	if (fd < 0)
		fail("cannot open PATH");
	long size = syscall4(SYS_lseek, fd, 0, SEEK_END, 0);
	long chunk = random ? RANDOM : SEQUENTIAL;
	if (size < SEQUENTIAL)
		fail("PATH is smaller than 1 MiB");
	for (long i = 0; i < SEQUENTIAL; i++)
		buffer[i] = (char)(i * 7);

	unsigned long state = 0x9E3779B97F4A7C15ul;
	long bytes = 0, requests = 0, offset = 0, start = now_ns(), end = start + seconds * 1000000000L;
	while ((requests & 15) || now_ns() < end) {
		if (random) {
			state ^= state << 13, state ^= state >> 7, state ^= state << 17;
			offset = (long)(state % (unsigned long)(size / RANDOM)) * RANDOM;
		} else if (offset + chunk > size) {
			offset = 0;
		}
		long n = syscall4(writing ? SYS_pwrite64 : SYS_pread64, fd, (long)buffer, chunk, offset);
		if (n != chunk)
			fail(writing ? "a write failed" : "a read failed");
		bytes += n;
		requests++;
		offset += chunk;
	}
	if (writing && syscall4(SYS_fdatasync, fd, 0, 0, 0) < 0)
		fail("fdatasync failed");
	long elapsed = now_ns() - start;
	syscall4(SYS_close, fd, 0, 0, 0);
	say("blkbench ");
	say(mode);
	say(": ");
	say_number(bytes);
	say(" bytes, ");
	say_number(requests);
	say(" requests, ");
	say_number(elapsed);
	say(" ns\n");
}

/* The kernel starts us with argc at the stack pointer, then argv[] (NULL-terminated). */
__asm__(".global _start\n_start:\n mov x0, sp\n bl start\n");
void start(long *stack);

void start(long *stack)
{
	if (stack[0] != 4 && stack[0] != 5) {
		say("usage: blkbench PATH read|write|randread SECONDS [direct]\n");
		syscall4(SYS_exit, 2, 0, 0, 0);
	}
	run((char **)(stack + 1));
	syscall4(SYS_exit, 0, 0, 0, 0);
}
