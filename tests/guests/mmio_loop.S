// Reads a Python-emulated register (the PL011's UARTFR) 100 000 times, then powers off:
// the round trip of one MMIO exit, for benchmarks/.
    .include "common.inc"
    .equ UART_FR, 0x09000018
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    ldr     x1, =UART_FR
    ldr     x2, =100000
1:  ldr     w3, [x1]
    subs    x2, x2, #1
    b.ne    1b
    adr     x9, done_message
    bl      puts
    b       power_off

    define_puts
    define_power_off

start_message: .asciz "mmio loop: start\n"
done_message:  .asciz "mmio loop: done\n"
    .ltorg
