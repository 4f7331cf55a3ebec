/* The board elvisor runs on: where its devices are (a compile-time description, as in Bao:
 * PLATFORM=qemu-virt or PLATFORM=rpi4). */
#ifndef PLATFORM_H
#define PLATFORM_H

#define MAX_CPUS 8
#define STACK_SIZE 16384

#if defined(PLATFORM_QEMU_VIRT)
#define PLATFORM_NAME "QEMU virt"
#define UART_BASE 0x09000000ul
#define DEVICE_GIB_MASK 0x1ul /* which of the first 4 GiB hold devices: the first */
#define GICD_BASE 0x08000000ul
#define GICR_BASE 0x080a0000ul /* GICv3: one 128 KiB frame pair per CPU */
#define GICC_BASE 0x08010000ul /* GICv2: the CPU interface, */
#define GICH_BASE 0x08030000ul /* its virtual interface control */
#define GICV_BASE 0x08040000ul /* and the virtual CPU interface */
#define UART_INTID 33 /* SPI 1 */
#elif defined(PLATFORM_RPI4)
#define PLATFORM_NAME "Raspberry Pi 4 (BCM2711)"
#define UART_BASE 0xfe201000ul /* PL011 UART0, in the low-peripheral mode the firmware sets */
#define DEVICE_GIB_MASK 0x8ul /* the peripherals and the GIC-400 are in the fourth GiB */
#define GICD_BASE 0xff841000ul /* GIC-400 (GICv2) */
#define GICR_BASE 0ul /* (none: GICv2) */
#define GICC_BASE 0xff842000ul
#define GICH_BASE 0xff844000ul
#define GICV_BASE 0xff846000ul
#define UART_INTID 153 /* SPI 121 */
#else
#error "build with PLATFORM=qemu-virt or PLATFORM=rpi4"
#endif

#endif
