"""Debian's arm64 packages as building material: apt with a private state, kernel modules,
initramfs archives. Used to build the lab and the default guest."""
