/* A spinlock for the hypervisor's shared state (the UART, a VM's emulated devices). The EL2
 * MMU is on, so the exclusives work on real hardware too. */
#ifndef LOCK_H
#define LOCK_H

#include <stdint.h>

typedef struct {
	volatile uint32_t held;
} spinlock_t;

static inline void spin_lock(spinlock_t *lock)
{
	uint32_t held, failed;
	__asm__ volatile("sevl\n"
			 "1: wfe\n"
			 "2: ldaxr %w0, [%2]\n"
			 "cbnz %w0, 1b\n" /* held: wait for the holder's release (an event) */
			 "stxr %w1, %w3, [%2]\n"
			 "cbnz %w1, 2b\n" /* lost a race for it: look again at once */
			 : "=&r"(held), "=&r"(failed)
			 : "r"(&lock->held), "r"(1)
			 : "memory");
}

static inline void spin_unlock(spinlock_t *lock)
{
	__asm__ volatile("stlr wzr, [%0]" : : "r"(&lock->held) : "memory");
}

#endif
