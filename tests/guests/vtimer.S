// Takes three interrupts of the EL1 virtual timer through the GICv3 CPU interface, then
// powers off: the virtual timer's interrupt delivered to the guest (by KVM, or by elvisor's
// EL2 hypervisor through a list register). The distributor forwards group 1 and the timer's
// PPI is enabled at the redistributor, in the VMM's memory map.
    .include "common.inc"
    .equ GICD_CTLR, 0x08000000
    .equ GICD_CTLR_ARE_ENABLE_G1, (1 << 4) | (1 << 1)
    .equ GICR_SGI_ISENABLER0, 0x080a0000 + 0x10000 + 0x100
    .equ INTID_VTIMER, 27
    .equ TICKS, 10000
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    adr     x0, vectors
    msr     vbar_el1, x0
    ldr     x1, =GICD_CTLR
    mov     w0, #GICD_CTLR_ARE_ENABLE_G1
    str     w0, [x1]
    ldr     x1, =GICR_SGI_ISENABLER0
    mov     w0, #(1 << INTID_VTIMER)
    str     w0, [x1]
    mov     x0, #0xff
    msr     icc_pmr_el1, x0
    mov     x0, #1
    msr     icc_igrpen1_el1, x0
    isb
    mov     x19, #0                 // interrupts taken
    mov     x0, #TICKS
    msr     cntv_tval_el0, x0
    mov     x0, #1
    msr     cntv_ctl_el0, x0        // enabled, unmasked
    isb
    msr     daifclr, #2             // IRQs on
1:  wfi
    cmp     x19, #3
    b.lo    1b
    msr     daifset, #2
    adr     x9, done_message
    bl      puts
    b       power_off

    define_puts
    define_power_off

start_message: .asciz "vtimer: waiting for 3 interrupts\n"
done_message:  .asciz "vtimer: 3 interrupts taken\n"
    .ltorg

    .balign 0x800
vectors:
    .skip   0x280                   // to: IRQ, current EL with SP_ELx
    mrs     x0, icc_iar1_el1
    cmp     x0, #INTID_VTIMER
    b.ne    2f
    add     x19, x19, #1
    mov     x1, #TICKS              // again, a little later
    msr     cntv_tval_el0, x1
2:  msr     icc_eoir1_el1, x0
    eret
