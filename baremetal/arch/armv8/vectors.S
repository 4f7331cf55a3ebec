/* The EL2 exception vector table (VBAR_EL2): 16 entries of 0x80 bytes, each saving the
 * interrupted context as a `struct frame` (frame.h) and calling handle_exception(frame,
 * vector); when that returns, the (possibly changed) frame is restored and `eret` resumes. */
#include "frame.h"

    .macro vector index
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x1, #\index
    b       save_and_handle
    .endm

    .text
    .balign 0x800
    .global el2_vectors
el2_vectors:
    vector  VECTOR_CURRENT_SP0 + VECTOR_SYNC
    vector  VECTOR_CURRENT_SP0 + VECTOR_IRQ
    vector  VECTOR_CURRENT_SP0 + VECTOR_FIQ
    vector  VECTOR_CURRENT_SP0 + VECTOR_SERROR
    vector  VECTOR_CURRENT_SPX + VECTOR_SYNC
    vector  VECTOR_CURRENT_SPX + VECTOR_IRQ
    vector  VECTOR_CURRENT_SPX + VECTOR_FIQ
    vector  VECTOR_CURRENT_SPX + VECTOR_SERROR
    vector  VECTOR_LOWER_A64 + VECTOR_SYNC
    vector  VECTOR_LOWER_A64 + VECTOR_IRQ
    vector  VECTOR_LOWER_A64 + VECTOR_FIQ
    vector  VECTOR_LOWER_A64 + VECTOR_SERROR
    vector  VECTOR_LOWER_A32 + VECTOR_SYNC
    vector  VECTOR_LOWER_A32 + VECTOR_IRQ
    vector  VECTOR_LOWER_A32 + VECTOR_FIQ
    vector  VECTOR_LOWER_A32 + VECTOR_SERROR

save_and_handle:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el2
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el2
    mrs     x3, esr_el2
    stp     x2, x3, [sp, #FRAME_SPSR]
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    stp     x2, x3, [sp, #FRAME_FAR]
    mov     x0, sp
    bl      handle_exception

    .global exception_return
exception_return:                   // sp: the frame to resume
    ldp     x2, x3, [sp, #FRAME_ELR]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #FRAME_SIZE
    eret
