"""The lab: an emulated arm64 host with a working /dev/kvm, for machines that are not one."""
