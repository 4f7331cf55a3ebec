/* A spinlock for the hypervisor's shared state (the console, a VM's emulated devices), fair:
 * a ticket lock, so CPUs get it in the order they asked and none waits behind others taking it
 * again and again (a VM printing from all its vCPUs cannot starve the VM beside it). The EL2
 * MMU is on, so the exclusives work on real hardware too. */
#ifndef LOCK_H
#define LOCK_H

#include <stdint.h>

typedef struct {
	volatile uint32_t next; /* the ticket the next CPU to ask takes */
	volatile uint32_t serving; /* the ticket that holds the lock */
} spinlock_t;

static inline void spin_lock(spinlock_t *lock)
{
	uint32_t ticket, next, failed, serving;
	__asm__ volatile("1: ldaxr %w0, [%3]\n" /* take a ticket */
			 "add %w1, %w0, #1\n"
			 "stxr %w2, %w1, [%3]\n"
			 "cbnz %w2, 1b\n"
			 : "=&r"(ticket), "=&r"(next), "=&r"(failed)
			 : "r"(&lock->next)
			 : "memory");
	__asm__ volatile("sevl\n"
			 "1: wfe\n" /* until the holder's release (its store clears our monitor) */
			 "ldaxr %w0, [%1]\n"
			 "cmp %w0, %w2\n"
			 "b.ne 1b\n"
			 : "=&r"(serving)
			 : "r"(&lock->serving), "r"(ticket)
			 : "memory", "cc");
}

static inline void spin_unlock(spinlock_t *lock)
{
	__asm__ volatile("stlr %w0, [%1]" : : "r"(lock->serving + 1), "r"(&lock->serving) : "memory");
}

#endif
