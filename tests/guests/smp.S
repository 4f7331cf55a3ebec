// CPU 0 starts CPU 1 with PSCI CPU_ON; CPU 1 prints, checks the context value it was given
// and raises a flag; CPU 0 waits for the flag and powers off.
    .include "common.inc"
    .equ CONTEXT, 0x1234abcd
    .text
    .global _start
_start:
    adr     x1, flag
    str     xzr, [x1]
    adr     x9, cpu0_message
    bl      puts
    ldr     x0, =PSCI_CPU_ON
    mov     x1, #1                  // target: MPIDR affinity 1
    adr     x2, secondary
    ldr     x3, =CONTEXT
    hvc     #0
    cbnz    x0, cpu_on_failed
    adr     x1, flag
wait:
    ldr     x2, [x1]
    cbz     x2, wait
    adr     x9, done_message
    bl      puts
    b       power_off

cpu_on_failed:
    adr     x9, failed_message
    bl      puts
    b       power_off

secondary:
    mov     x20, x0                 // the context CPU_ON passed
    adr     x9, cpu1_message
    bl      puts
    ldr     x1, =CONTEXT
    cmp     x20, x1
    b.ne    1f
    adr     x9, context_message
    bl      puts
1:  adr     x1, flag
    mov     x2, #1
    str     x2, [x1]
    b       .

    define_puts
    define_power_off

    .balign 8
flag:            .quad 0                // (position-independent: for the EL2 hypervisor too)
cpu0_message:    .asciz "cpu0: starting cpu1\n"
cpu1_message:    .asciz "cpu1: up\n"
context_message: .asciz "cpu1: context ok\n"
done_message:    .asciz "cpu0: cpu1 reported in\n"
failed_message:  .asciz "cpu0: CPU_ON failed\n"
    .ltorg
