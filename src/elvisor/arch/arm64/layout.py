"""The guest physical memory map (close to QEMU's `virt` machine, which Linux knows well).

0x0000_0000 ┌──────────────────────────────┐
            │ (unmapped)                   │
0x0800_0000 ├──────────────────────────────┤ GIC distributor (64 KiB)
0x0801_0000 │ GICv2 CPU interface (8 KiB)  │
0x080A_0000 │ GICv3 redistributors         │ 128 KiB per vCPU, up to 0x0900_0000
0x0900_0000 ├──────────────────────────────┤ PL011 UART (4 KiB), SPI 1
0x0901_0000 │ PL031 RTC (4 KiB), SPI 2     │
0x0A00_0000 ├──────────────────────────────┤ virtio-mmio slots, 512 bytes each, SPI 16+
0x0B00_0000 ├──────────────────────────────┤ the user's Python devices (--device), SPI 48+
0x4000_0000 ├──────────────────────────────┤ RAM: kernel, device tree, initrd, ...
            └──────────────────────────────┘
"""

GIC_DIST_BASE = 0x0800_0000
GIC_DIST_SIZE = 0x1_0000
GIC_CPU_BASE = 0x0801_0000  # GICv2 only
GIC_CPU_SIZE = 0x2000
GIC_REDIST_BASE = 0x080A_0000  # GICv3 only
GIC_REDIST_SIZE_PER_CPU = 0x2_0000  # RD_base + SGI_base frames
GIC_REDIST_LIMIT = 0x0900_0000

UART_BASE = 0x0900_0000
UART_SIZE = 0x1000
UART_SPI = 1
RTC_BASE = 0x0901_0000
RTC_SIZE = 0x1000
RTC_SPI = 2

VIRTIO_MMIO_BASE = 0x0A00_0000
VIRTIO_MMIO_SIZE = 0x200
VIRTIO_MMIO_SLOTS = 32
VIRTIO_SPI_BASE = 16

USER_MMIO_BASE = 0x0B00_0000  # the user's Python devices (devices/python.py), one after another
USER_MMIO_LIMIT = 0x0C00_0000
USER_SPI_BASE = VIRTIO_SPI_BASE + VIRTIO_MMIO_SLOTS  # 48
USER_DEVICES = 16  # at most

RAM_BASE = 0x4000_0000

# interrupt numbers (INTIDs): SGIs 0-15, PPIs 16-31, SPIs from 32
PPI_BASE = 16
SPI_BASE = 32
# the architected timer's PPIs (Linux reads them from the device tree in this order)
TIMER_PPI_SECURE_PHYS = 13
TIMER_PPI_NONSECURE_PHYS = 14
TIMER_PPI_VIRT = 11
TIMER_PPI_HYP = 10
PMU_PPI = 7
NR_IRQS = 128  # SPIs and private interrupts the vGIC implements

GICV2_MAX_CPUS = 8
GICV3_MAX_CPUS = (GIC_REDIST_LIMIT - GIC_REDIST_BASE) // GIC_REDIST_SIZE_PER_CPU  # 123
