// A hostile guest for the EL2 hypervisor's virtual GIC: random values written to every word
// of its distributor and redistributors (GICv3: 64 KiB, and 128 KiB per vCPU), each read back,
// random ICC_SGI1R_EL1 writes, 8-bit, 16-bit and 64-bit accesses here and there; then it says
// so and powers off. The hypervisor must survive it, and stop no VM but this one if it must.
    .include "common.inc"
    .equ GICD,    0x08000000
    .equ GICR,    0x080a0000
    .equ SGIS,    4096
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    ldr     x20, =0x9E3779B97F4A7C15    // the xorshift64 state

    // 1. every word of the distributor and the first redistributor: a random write, a read
    ldr     x19, =GICD
    ldr     x21, =GICR - GICD + 0x20000
    mov     x22, #0
1:  bl      next
    add     x1, x19, x22
    str     w0, [x1]
    ldr     w2, [x1]
    tst     x0, #0xf00                  // now and then, the other sizes
    b.ne    2f
    strb    w0, [x1, #1]
    ldrh    w2, [x1, #2]
    and     x3, x22, #~7
    add     x3, x19, x3
    str     x0, [x3]
    ldr     x2, [x3]
2:  add     x22, x22, #4
    cmp     x22, #0x10000               // the distributor's 64 KiB, then skip to GICR
    b.ne    3f
    ldr     x22, =GICR - GICD
3:  cmp     x22, x21
    b.lo    1b

    // 2. SGIs to random targets
    mov     x22, #SGIS
4:  bl      next
    msr     icc_sgi1r_el1, x0
    subs    x22, x22, #1
    b.ne    4b

    adr     x9, done_message
    bl      puts
    b       power_off

    define_next

    define_puts
    define_power_off

start_message: .asciz "gic garbage: writing\n"
done_message:  .asciz "gic garbage: survived\n"
    .ltorg
