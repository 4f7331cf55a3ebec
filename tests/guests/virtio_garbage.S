// A hostile guest: brings every virtio-mmio slot up with its queues in random memory, kicks
// them, then writes random values to random registers of random slots (and scribbles over
// the queues) 6 000 times, and powers off. The VMM must survive it and end cleanly.
    .include "common.inc"
    .equ VIRTIO_BASE, 0x0a000000
    .equ SLOTS,       32
    .equ GARBAGE,     0x40200000        // 1 MiB of random bytes the queues live in
    .equ ROUNDS,      6000
    .text
    .global _start
_start:
    adr     x9, start_message
    bl      puts
    ldr     x20, =0x9E3779B97F4A7C15    // the xorshift64 state

    // 1. random bytes everywhere the queues will be
    ldr     x19, =GARBAGE
    mov     x21, #(1 << 20) / 8
1:  bl      next
    str     x0, [x19], #8
    subs    x21, x21, #1
    b.ne    1b

    // 2. each slot: reset, ACKNOWLEDGE, DRIVER, every offered feature, FEATURES_OK, up to 4
    //    queues at random places in the garbage, DRIVER_OK, and a kick for each queue
    mov     x21, #0
2:  ldr     x22, =VIRTIO_BASE
    add     x22, x22, x21, lsl #9
    str     wzr, [x22, #0x70]
    mov     w0, #1
    str     w0, [x22, #0x70]
    mov     w0, #3
    str     w0, [x22, #0x70]
    str     wzr, [x22, #0x14]
    ldr     w1, [x22, #0x10]
    str     wzr, [x22, #0x24]
    str     w1, [x22, #0x20]
    mov     w0, #1
    str     w0, [x22, #0x14]
    ldr     w1, [x22, #0x10]
    str     w0, [x22, #0x24]
    str     w1, [x22, #0x20]
    mov     w0, #11
    str     w0, [x22, #0x70]
    mov     x23, #0
3:  str     w23, [x22, #0x30]
    ldr     w0, [x22, #0x34]            // QueueNumMax: 0 when there is no such queue
    cbz     w0, 4f
    str     w0, [x22, #0x38]
    mov     x24, #0x80                  // QueueDesc, then QueueDriver, then QueueDevice
5:  bl      next
    and     x0, x0, #0xFFFF0
    ldr     x1, =GARBAGE
    add     x0, x0, x1
    str     w0, [x22, x24]
    add     x24, x24, #4
    lsr     x0, x0, #32
    str     w0, [x22, x24]
    add     x24, x24, #12
    cmp     x24, #0xB0
    b.ne    5b
    mov     w0, #1
    str     w0, [x22, #0x44]
    add     x23, x23, #1
    cmp     x23, #4
    b.ne    3b
4:  mov     w0, #15
    str     w0, [x22, #0x70]
    mov     x23, #0
6:  str     w23, [x22, #0x50]
    add     x23, x23, #1
    cmp     x23, #4
    b.ne    6b
    add     x21, x21, #1
    cmp     x21, #SLOTS
    b.ne    2b

    // 3. random register writes (any width), reads, and new garbage in the queues
    ldr     x21, =ROUNDS
7:  bl      next
    and     x1, x0, #0x1FF              // offset in the slot
    ubfx    x2, x0, #9, #5              // slot
    ubfx    x3, x0, #14, #2             // width: 1, 2, 4 or 8 bytes
    ldr     x4, =VIRTIO_BASE
    add     x4, x4, x2, lsl #9
    add     x4, x4, x1
    bl      next
    cmp     x3, #0
    b.ne    8f
    strb    w0, [x4]
    b       10f
8:  cmp     x3, #1
    b.ne    9f
    and     x4, x4, #~1
    strh    w0, [x4]
    ldrh    w5, [x4]
    b       10f
9:  and     x4, x4, #~3
    str     w0, [x4]
    ldr     w5, [x4]
10: bl      next                        // scribble over the queues
    and     x1, x0, #0xFFFF8
    ldr     x2, =GARBAGE
    bl      next
    str     x0, [x2, x1]
    subs    x21, x21, #1
    b.ne    7b

    adr     x9, done_message
    bl      puts
    b       power_off

    define_next

    define_puts
    define_power_off

start_message: .asciz "virtio garbage: start\n"
done_message:  .asciz "virtio garbage: done\n"
    .ltorg
