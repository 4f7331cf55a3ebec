"""AArch64: the guest memory map, registers, boot and the device tree."""
