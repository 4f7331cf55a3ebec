// Prints a line through the PL011, then powers off with PSCI.
    .include "common.inc"
    .text
    .global _start
_start:
    adr     x9, message
    bl      puts
    b       power_off

    define_puts
    define_power_off

message:
    .asciz  "hello from the guest\n"
    .ltorg
