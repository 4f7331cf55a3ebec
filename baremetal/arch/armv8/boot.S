/* The hypervisor's entry: at EL2, MMU and caches off, x0 = the device tree the loader (QEMU,
 * or the Pi's firmware) passes, as to a Linux kernel (Documentation/arch/arm64/booting.rst). */
#include "platform.h"

    .section .text.boot, "ax"
    .global _start
_start:
    /* The arm64 Image header: what makes QEMU and the Pi's firmware load us as a kernel. */
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   TEXT_OFFSET             // text_offset: past the 2 MiB-aligned start of RAM
    .quad   __image_size            // image_size, BSS and stacks included
    .quad   0x2                     // flags: little-endian, 4 KiB pages, near the start of RAM
    .quad   0, 0, 0                 // res2, res3, res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    mov     x19, x0                 // the device tree, kept across the set-up
    adrp    x1, stacks              // CPU 0's stack (stacks grow down from each one's top)
    add     x1, x1, #:lo12:stacks
    add     sp, x1, #STACK_SIZE
    mrs     x0, CurrentEL
    lsr     x0, x0, #2
    cmp     x0, #2
    b.ne    not_at_el2

    adrp    x1, __bss_start         // BSS: zero (the stacks are not in it)
    add     x1, x1, #:lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, #:lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    adrp    x1, el2_vectors
    add     x1, x1, #:lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      hypervisor_main         // does not return
    b       halt

not_at_el2:
    bl      boot_not_at_el2         // says so (x0: the exception level), does not return

/* A secondary CPU, started by the firmware's PSCI CPU_ON: x0 = its index (the context ID). */
    .global secondary_entry
secondary_entry:
    bl      set_stack
    adrp    x1, el2_vectors
    add     x1, x1, #:lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    bl      secondary_main          // (x0 still the index) does not return
    b       halt

/* cpu_restart(cpu): start over on CPU `cpu`'s empty stack, waiting for its vCPU. */
    .global cpu_restart
cpu_restart:
    bl      set_stack
    b       cpu_wait_for_vcpu

/* sp = the top of CPU x0's stack (x0 kept) */
set_stack:
    adrp    x1, stacks
    add     x1, x1, #:lo12:stacks
    mov     x2, #STACK_SIZE
    madd    x1, x0, x2, x1
    add     sp, x1, #STACK_SIZE
    ret

/* enter_guest(frame): the guest's registers at its first entry, as if returning from a trap */
    .global enter_guest
enter_guest:
    mov     sp, x0
    b       exception_return

    .global halt
halt:
    wfe
    b       halt

    .section .stacks, "aw", %nobits
    .balign 4096
    .global stacks
stacks:
    .skip   STACK_SIZE * MAX_CPUS
