// Loads a pair of registers from the UART's MMIO window: an access KVM cannot hand to a
// VMM (no valid syndrome), so the VM must end with a register dump, and the VMM live on.
    .include "common.inc"
    .text
    .global _start
_start:
    ldr     x1, =UART_DR
    movz    x5, #0xfa17
    ldp     x2, x3, [x1]
    b       power_off

    define_power_off
    .ltorg
