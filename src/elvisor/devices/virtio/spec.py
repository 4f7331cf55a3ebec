"""Numbers from the virtio specification (v1.2) shared by the transport and the devices."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class DeviceId(IntEnum):
    """5 Device Types."""

    NET = 1
    BLOCK = 2
    CONSOLE = 3
    ENTROPY = 4
    VSOCK = 19


class Status(IntFlag):
    """2.1 Device Status Field."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


class Feature(IntEnum):
    """6 Reserved Feature Bits (bit numbers)."""

    VIRTIO_F_INDIRECT_DESC = 28
    VIRTIO_F_EVENT_IDX = 29
    VIRTIO_F_VERSION_1 = 32


def bit(n: int) -> int:
    return 1 << n


TRANSPORT_FEATURES = (
    bit(Feature.VIRTIO_F_VERSION_1)
    | bit(Feature.VIRTIO_F_EVENT_IDX)
    | bit(Feature.VIRTIO_F_INDIRECT_DESC)
)
