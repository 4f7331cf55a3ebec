"""A GDB remote serial protocol server for elvisor's guests (`elvisor run --gdb`)."""
