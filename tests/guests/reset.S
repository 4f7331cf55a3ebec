// Prints a line, then asks for a system reset (PSCI SYSTEM_RESET): elvisor boots it again,
// or with --no-reboot ends.
    .include "common.inc"
    .equ PSCI_SYSTEM_RESET, 0x84000009
    .text
    .global _start
_start:
    adr     x9, message
    bl      puts
    ldr     x0, =PSCI_SYSTEM_RESET
    hvc     #0
    b       .

    define_puts

message:
    .asciz  "booted\n"
    .ltorg
