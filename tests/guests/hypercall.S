// Makes a vendor-specific hypervisor call with HVC, then one with SMC, and prints the bytes
// of x0-x3 each returned (Python handlers answer with text), then powers off.
    .include "common.inc"
    .equ HVC_FUNCTION, 0xC6001000
    .equ SMC_FUNCTION, 0xC6001001
    .equ BUFFER, 0x40100000
    .text
    .global _start
_start:
    ldr     x0, =HVC_FUNCTION
    mov     x1, #20
    mov     x2, #22
    hvc     #0
    bl      print_result
    ldr     x0, =SMC_FUNCTION
    mov     x1, #7
    mov     x2, #6
    smc     #0
    bl      print_result
    b       power_off

// print x0-x3 as up to 32 bytes of text
print_result:
    mov     x19, x30
    ldr     x9, =BUFFER
    stp     x0, x1, [x9]
    stp     x2, x3, [x9, #16]
    str     xzr, [x9, #32]
    bl      puts
    mov     x30, x19
    ret

    define_puts
    define_power_off
    .ltorg
