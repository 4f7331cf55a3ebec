// A hostile guest for a virtual GIC (the EL2 hypervisor's, or KVM's under `elvisor run`), v2 or
// v3 as GICD_PIDR2 says: random values written to every register of its distributor
// (ITARGETSR and GICD_SGIR among them) and, on GICv3, of every redistributor (128 KiB each, up
// to the one whose GICR_TYPER says Last), each read back; 8-bit, 16-bit and 64-bit accesses here and
// there; random SGIs (ICC_SGI1R_EL1, or GICD_SGIR); then it says so and powers off. The
// hypervisor must survive it, and stop no VM but this one if it must.
//
// First, on GICv3, an SGI with RS = 1 and TargetList bit 0: Aff0 16, a vCPU this VM does not
// have. The EL2 hypervisor routes it by RS, so it lands nowhere (GICR_ISPENDR0 stays clear);
// a GIC without range selector support (GICD_TYPER.RSS = 0, as KVM's) may treat RS as 0 and
// deliver it to vCPU 0. The guest says which.
    .include "common.inc"
    .equ GICD,          0x08000000
    .equ GICR,          0x080a0000
    .equ GICD_SGIR,     0xf00
    .equ GICD_PIDR2,    0xffe8
    .equ GICR_TYPER,    0x8
    .equ GICR_LAST,     1 << 4
    .equ GICR_ISPENDR0, 0x10200         // in the SGI frame
    .equ GICR_ICPENDR0, 0x10280
    .equ GICR_SIZE,     0x20000
    .equ MAX_GICRS,     16
    .equ SGIS,          4096
    .equ RS_SGI,        5
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    ldr     x20, =0x9E3779B97F4A7C15    // the xorshift64 state
    ldr     x19, =GICD
    mov     x1, #GICD_PIDR2
    ldr     w1, [x19, x1]
    ubfx    w25, w1, #4, #4             // x25: ArchRev, 2 or 3
    cmp     w25, #3
    b.ne    1f

    // 0. GICv3: the SGI for Aff0 16 (RS = 1): nowhere in this VM
    ldr     x24, =GICR
    ldr     x1, =GICR_ICPENDR0
    mov     w2, #1 << RS_SGI
    str     w2, [x24, x1]
    ldr     x0, =(1 << 44) | (RS_SGI << 24) | 1
    msr     icc_sgi1r_el1, x0
    isb
    ldr     x1, =GICR_ISPENDR0
    ldr     w2, [x24, x1]
    adr     x9, rs_honoured_message
    tst     w2, #1 << RS_SGI
    b.eq    2f
    adr     x9, rs_ignored_message
2:  bl      puts

    // 1. the distributor
1:  mov     x22, #0x10000
    bl      garbage
    cmp     w25, #3
    b.ne    sgis_v2

    // 2. GICv3: every redistributor, the last one's GICR_TYPER says so
    ldr     x19, =GICR
    mov     x26, #MAX_GICRS
3:  ldr     x27, [x19, #GICR_TYPER]     // (read first: what garbage leaves is not the point)
    mov     x22, #GICR_SIZE
    bl      garbage
    tst     x27, #GICR_LAST
    b.ne    4f
    add     x19, x19, #GICR_SIZE
    subs    x26, x26, #1
    b.ne    3b

    // 3. SGIs to random targets
4:  mov     x22, #SGIS
5:  bl      next
    msr     icc_sgi1r_el1, x0
    subs    x22, x22, #1
    b.ne    5b
    b       done
sgis_v2:
    ldr     x19, =GICD
    mov     x22, #SGIS
6:  bl      next
    str     w0, [x19, #GICD_SGIR]
    subs    x22, x22, #1
    b.ne    6b

done:
    adr     x9, done_message
    bl      puts
    b       power_off

// a random write, then a read, to the words of [x19, x19 + x22): every word where a GIC's
// registers are (the first 4 KiB of each 64 KiB frame, and the distributor's IROUTER at
// 0x6000-0x7fff), words a random stride apart elsewhere (reserved: they read as zero and
// ignore writes, and each access costs a trap); clobbers x0-x4, x21
garbage:
    mov     x28, x30
    mov     x21, #0
1:  bl      next
    and     x4, x21, #0xffff            // where in its 64 KiB frame
    cmp     x4, #0x1000
    b.lo    3f
    cmp     x4, #0x6000
    b.lo    4f
    cmp     x4, #0x8000
    b.lo    3f
4:  and     x4, x0, #0xffc              // a stride of 4 to 4092 bytes
    add     x21, x21, x4
    and     x21, x21, #~3
    cmp     x21, x22
    b.hs    5f
3:
    add     x1, x19, x21
    str     w0, [x1]
    ldr     w2, [x1]
    tst     x0, #0xf00                  // now and then, the other sizes
    b.ne    2f
    strb    w0, [x1, #1]
    ldrh    w2, [x1, #2]
    and     x3, x21, #~7
    add     x3, x19, x3
    str     x0, [x3]
    ldr     x2, [x3]
2:  add     x21, x21, #4
    cmp     x21, x22
    b.lo    1b
5:  ret     x28

    define_next

    define_puts
    define_power_off

start_message:       .asciz "gic garbage: writing\n"
rs_honoured_message: .asciz "gic garbage: an SGI for Aff0 16 reached no vCPU\n"
rs_ignored_message:  .asciz "gic garbage: an SGI for Aff0 16 reached vCPU 0\n"
done_message:        .asciz "gic garbage: survived\n"
    .ltorg
