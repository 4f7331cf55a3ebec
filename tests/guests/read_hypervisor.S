// For the EL2 hypervisor: reads where the hypervisor lives in the machine's memory (its load
// address on QEMU virt), outside the VM's RAM. The read must abort, reported by the
// hypervisor, which stops this VM and lives on; "read it" must never be printed.
    .include "common.inc"
    .equ HYPERVISOR, 0x40080000
    .text
    .global _start
_start:
    adr     x9, trying
    bl      puts
    ldr     x1, =HYPERVISOR
    ldr     x2, [x1]
    adr     x9, read
    bl      puts
    b       power_off

    define_puts
    define_power_off

trying:
    .asciz  "reading the hypervisor's memory\n"
read:
    .asciz  "read it\n"
    .ltorg
