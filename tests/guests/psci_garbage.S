// A hostile guest for PSCI and the SMCCC, with 3 vCPUs. First CALLS random calls from vCPU 0:
// random function IDs and arguments through HVC #0, HVC #1 and SMC #0; CPU_ON with random
// MPIDRs and entry points (a vCPU it names for real gets an entry that switches it off
// again); AFFINITY_INFO and PSCI_FEATURES of random values. Then the race: vCPU 1 switches
// vCPU 2 on again and again (vCPU 2 switches itself off at once) while vCPU 0 resets the VM.
// A vCPU 2 switched on by a CPU_ON from before a reset says "stale": a hypervisor must not
// let one through. (PSCI calls that would end, reset or suspend the caller are left out of
// the random ones.)
//
// Under the EL2 hypervisor, RAM outside the payloads outlives a reset: a boot count there ends
// the run after RESETS resets. Under `elvisor run --no-reboot` the first reset ends it.
    .include "common.inc"
    .equ CALLS,                 3000
    .equ RESETS,                3
    .equ MAGIC,                 0x5053434947415242
    .equ STATE,                 0x800000        // from _start: the magic, then the boot count
    .equ PSCI_VERSION,          0x84000000
    .equ PSCI_CPU_OFF,          0x84000002
    .equ PSCI_AFFINITY_INFO,    0xC4000004
    .equ PSCI_SYSTEM_RESET,     0x84000009
    .equ PSCI_FEATURES,         0x8400000A
    .equ MPIDR_AFFINITY,        0xff00ffffff    // Aff3, Aff2, Aff1, Aff0
    .text
    .global _start
_start:
    bl      state
    ldr     x2, =MAGIC
    ldr     x1, [x21]
    cmp     x1, x2
    b.eq    1f
    str     x2, [x21]                   // the first boot
    str     xzr, [x21, #8]
1:  ldr     x22, [x21, #8]              // x22: resets so far
    add     x1, x22, #1
    str     x1, [x21, #8]
    dsb     sy
    cmp     x22, #RESETS
    b.hs    survived
    adr     x9, start_message
    bl      puts
    ldr     x20, =0x9E3779B97F4A7C15    // the xorshift64 state, a new one each boot
    add     x20, x20, x22, lsl #32

    mov     x23, #CALLS
2:  bl      random_call
    subs    x23, x23, #1
    b.ne    2b
    adr     x9, calls_message
    bl      puts

    // the race: vCPU 1 on at `racer` (retried while it is still on from a random CPU_ON)
    ldr     x24, =1000000
3:  ldr     x0, =PSCI_CPU_ON
    mov     x1, #1
    adr     x2, racer
    mov     x3, #0
    hvc     #0
    cbz     x0, 4f
    subs    x24, x24, #1
    b.ne    3b
    adr     x9, busy_message
    bl      puts
    b       power_off
4:  adr     x9, race_message
    bl      puts
    bl      next
    and     x24, x0, #0xffff            // a while, then the reset
5:  subs    x24, x24, #1
    b.hs    5b
    ldr     x0, =PSCI_SYSTEM_RESET
    hvc     #0
    b       .

survived:
    adr     x9, survived_message
    bl      puts
    b       power_off

// x21 = where the boot count is (position-independent: for the EL2 hypervisor too)
state:
    adr     x21, _start
    add     x21, x21, #STATE
    ret

// one random call; keeps x19-x30 but x30's caller's (saved in x28)
random_call:
    mov     x28, x30
    bl      next
    mov     x27, x0                     // which kind of call
    bl      next
    mov     x1, x0
    bl      next
    mov     x2, x0
    bl      next
    mov     x3, x0
    bl      next
    mov     x4, x0
    eor     x5, x0, x1
    eor     x6, x0, x2
    eor     x7, x0, x3
    bl      next                        // x0: the function ID, for the kinds that take it
    and     x27, x27, #7
    cmp     x27, #3
    b.lo    any_function
    b.eq    cpu_on
    cmp     x27, #5
    b.lo    affinity_info
    b.eq    features
    // 6, 7: CPU_ON of vCPU 0-15 with junk in the MPIDR bits outside the affinity
    and     x5, x1, #0xf
    bic     x1, x1, #0xffffff
    and     x1, x1, #~0xff00000000
    orr     x1, x1, x5
cpu_on:
    ldr     x5, =MPIDR_AFFINITY
    and     x5, x1, x5
    cmp     x5, #16
    b.hs    1f
    adr     x2, quiet_off               // a vCPU of this VM (or just beyond): a sound entry
1:  ldr     x0, =PSCI_CPU_ON
    hvc     #0
    ret     x28
affinity_info:
    ldr     x0, =PSCI_AFFINITY_INFO
    and     x2, x2, #3                  // level 0-3, and now and then a random one
    tst     x3, #0x10
    csel    x2, x2, x3, ne
    hvc     #0
    ret     x28
features:
    mov     x1, x0
    ldr     x0, =PSCI_FEATURES
    smc     #0
    ret     x28
any_function:
    // PSCI function numbers below 0x20 (0x84000000 or 0xC4000000 upwards) are the PSCI calls
    // themselves, some of which end, reset or suspend the caller: those become PSCI_VERSION
    ubfx    w8, w0, #24, #8
    bic     w8, w8, #0x40
    cmp     w8, #0x84
    b.ne    1f
    tst     w0, #0xffffe0
    b.ne    1f
    ldr     x0, =PSCI_VERSION
1:  mov     w0, w0                      // (function IDs are 32 bits)
    cmp     x27, #1
    b.lo    2f
    b.eq    3f
    smc     #0
    ret     x28
2:  hvc     #0
    ret     x28
3:  hvc     #1
    ret     x28

// vCPU 1 in the race: switches vCPU 2 on again and again, with the boot count as its context
racer:
    bl      state
1:  ldr     x0, =PSCI_CPU_ON
    mov     x1, #2
    adr     x2, offline
    ldr     x3, [x21, #8]
    hvc     #0
    b       1b

// vCPU 2 in the race: on from before a reset (the boot count moved on) is a bug; then off
offline:
    bl      state
    ldr     x1, [x21, #8]
    cmp     x0, x1
    b.eq    quiet_off
    adr     x9, stale_message
    bl      puts
quiet_off:
    ldr     x0, =PSCI_CPU_OFF
    hvc     #0
    b       .

    define_next
    define_puts
    define_power_off

start_message:    .asciz "psci garbage: calling\n"
calls_message:    .asciz "psci garbage: calls done\n"
race_message:     .asciz "psci garbage: racing a reset\n"
busy_message:     .asciz "psci garbage: vCPU 1 never came free\n"
stale_message:    .asciz "psci garbage: stale CPU_ON after a reset\n"
survived_message: .asciz "psci garbage: survived the resets\n"
    .ltorg
