"""The bare-metal EL2 hypervisor's Python side: its images (from the same VM descriptions
`elvisor run` takes) and running them under QEMU."""
