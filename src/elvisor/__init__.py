"""elvisor: a hackable hypervisor for ARMv8-A (AArch64)."""

__version__ = "0.1.0"
