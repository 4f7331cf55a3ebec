"""Devices emulated in Python. A device sees offsets into its own MMIO window, never absolute
addresses, and raises its interrupt through the line the builder hands it."""
