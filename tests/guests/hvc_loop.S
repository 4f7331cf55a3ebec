// Calls PSCI_VERSION with HVC 100 000 times, then powers off: the round trip of one trap to
// the hypervisor and back, for benchmarks/ (elvisor's EL2 hypervisor, or the VMM).
    .include "common.inc"
    .equ PSCI_VERSION, 0x84000000
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    ldr     x20, =100000
1:  ldr     x0, =PSCI_VERSION
    hvc     #0
    subs    x20, x20, #1
    b.ne    1b
    adr     x9, done_message
    bl      puts
    b       power_off

    define_puts
    define_power_off

start_message: .asciz "hvc loop: start\n"
done_message:  .asciz "hvc loop: done\n"
    .ltorg
