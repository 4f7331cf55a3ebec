"""virtio devices on the virtio-mmio transport: `queue.py` (split virtqueues), `mmio.py` (the
transport), `device.py` (what a device model is), `worker.py` (its I/O thread), and one file
per device."""
