// Stores a value and the device tree address it was given (x0) in RAM, then powers off:
// the test reads both back from guest memory.
    .include "common.inc"
    .equ RESULT, 0x40100000
    .text
    .global _start
_start:
    ldr     x1, =RESULT
    ldr     x2, =0x5eedcafef00dbeef
    str     x2, [x1]
    str     x0, [x1, #8]
    b       power_off

    define_power_off
    .ltorg
