// Prints a line, then spins forever without a single exit: only elvisor can end it.
    .include "common.inc"
    .text
    .global _start
_start:
    adr     x9, message
    bl      puts
    b       .

    define_puts

message:
    .asciz  "spinning\n"
