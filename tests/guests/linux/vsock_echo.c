/* vsock_echo PORT: a Linux program for the test guest (static, no C library: the default
 * guest has none). Listens on vsock port PORT, says so on stdout, then sends back everything
 * each client sends until it closes, for as many clients as come. */

enum {
	SYS_close = 57, SYS_read = 63, SYS_write = 64, SYS_exit = 93,
	SYS_socket = 198, SYS_bind = 200, SYS_listen = 201, SYS_accept = 202,
	AF_VSOCK = 40, SOCK_STREAM = 1,
};
#define VMADDR_CID_ANY 0xffffffffu

struct sockaddr_vm {
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_zero[4];
};

static long syscall3(long n, long a, long b, long c)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}

static void say(const char *text)
{
	long n = 0;
	while (text[n])
		n++;
	syscall3(SYS_write, 1, (long)text, n);
}

static void fail(const char *what)
{
	say("vsock_echo: ");
	say(what);
	say(" failed\n");
	syscall3(SYS_exit, 1, 0, 0);
}

static int write_all(int fd, const char *data, long n)
{
	while (n > 0) {
		long done = syscall3(SYS_write, fd, (long)data, n);
		if (done <= 0)
			return -1;
		data += done;
		n -= done;
	}
	return 0;
}

static char buffer[65536];

static void serve(char *port_text)
{
	unsigned int port = 0;
	for (char *c = port_text; *c; c++) {
		if (*c < '0' || *c > '9')
			fail("parsing PORT");
		port = port * 10 + (unsigned int)(*c - '0');
	}
	struct sockaddr_vm address = {AF_VSOCK, 0, port, VMADDR_CID_ANY, {0}};
	long listener = syscall3(SYS_socket, AF_VSOCK, SOCK_STREAM, 0);
	if (listener < 0)
		fail("socket");
	if (syscall3(SYS_bind, listener, (long)&address, sizeof address) < 0)
		fail("bind");
	if (syscall3(SYS_listen, listener, 1, 0) < 0)
		fail("listen");
	say("vsock_echo: listening on port ");
	say(port_text);
	say("\n");
	for (;;) {
		long client = syscall3(SYS_accept, listener, 0, 0);
		if (client < 0)
			fail("accept");
		long n;
		while ((n = syscall3(SYS_read, client, (long)buffer, sizeof buffer)) > 0)
			if (write_all(client, buffer, n) < 0)
				break;
		syscall3(SYS_close, client, 0, 0);
	}
}

/* The kernel starts us with argc at the stack pointer, then argv[]. */
__asm__(".global _start\n_start:\n mov x0, sp\n bl start\n");
void start(long *stack);

void start(long *stack)
{
	if (stack[0] != 2) {
		say("usage: vsock_echo PORT\n");
		syscall3(SYS_exit, 2, 0, 0);
	}
	serve((char *)stack[2]);
}
