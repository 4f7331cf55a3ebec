// Counts for ever on two CPUs: CPU 0 starts CPU 1 with PSCI CPU_ON, then each adds one to
// its own counter in RAM (CPU 0's at COUNTERS, CPU 1's 8 bytes on) in a loop, and every
// 2^20 counts reads the PL011's flag register (an MMIO exit). The tests watch the counters
// through guest memory: a paused VM's stand still.
    .include "common.inc"
    .equ COUNTERS, 0x40100000
    .text
    .global _start
_start:
    ldr     x20, =COUNTERS
    stp     xzr, xzr, [x20]
    adr     x9, start_message
    bl      puts
    ldr     x0, =PSCI_CPU_ON
    mov     x1, #1                  // target: MPIDR affinity 1
    adr     x2, secondary
    mov     x3, #8                  // context: its counter's offset
    hvc     #0
    mov     x21, #0
    b       count

secondary:
    ldr     x20, =COUNTERS
    mov     x21, x0
count:
    ldr     x22, =UART_DR + 0x18   // UARTFR
1:  ldr     x1, [x20, x21]
    add     x1, x1, #1
    str     x1, [x20, x21]
    tst     x1, #0xfffff
    b.ne    1b
    ldr     w2, [x22]
    b       1b

    define_puts

start_message: .asciz "counting\n"
    .ltorg
