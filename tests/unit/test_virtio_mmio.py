"""The virtio-mmio transport, driven the way Linux's virtio_mmio driver drives it."""

import os

import pytest
from virtio_driver import (
    ACKNOWLEDGE,
    CONFIG,
    CONFIG_GENERATION,
    DEVICE_ID,
    DRIVER,
    DRIVER_OK,
    F_EVENT_IDX,
    F_INDIRECT_DESC,
    F_VERSION_1,
    FAILED,
    FEATURES_OK,
    INTERRUPT_STATUS,
    MAGIC,
    NEEDS_RESET,
    QUEUE_DESC,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_SEL,
    STATUS,
    VERSION,
    Driver,
    FakeLine,
    guest_memory,
)

from elvisor.devices.virtio.device import VirtioDevice
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.rng import Rng
from elvisor.devices.virtio.spec import DeviceId


class Echo(VirtioDevice):
    """A test device: copies what it reads to what it writes, one queue; a config space."""

    device_id = DeviceId.CONSOLE
    queue_sizes = (8,)
    features = 1 << 3

    def __init__(self) -> None:
        super().__init__()
        self.config = bytearray(b"\x11\x22\x33\x44\x55\x66\x77\x88")
        self.resets = 0

    def config_space(self) -> bytes:
        return bytes(self.config)

    def config_write(self, offset: int, data: bytes) -> None:
        self.config[offset : offset + len(data)] = data

    def reset(self) -> None:
        super().reset()
        self.resets += 1

    def queue_notified(self, index: int) -> None:
        assert self.active is not None
        self.active.serve(index, lambda chain: chain.write(chain.read(1 << 20)))


@pytest.fixture
def setup():
    memory = guest_memory()
    line = FakeLine()
    transport = VirtioMmio(Echo(), memory, line)
    yield Driver(transport, memory), transport, line
    transport.close()
    memory.close()


def test_identification_registers(setup):
    driver, _, _ = setup
    assert driver.read(MAGIC) == 0x74726976
    assert driver.read(VERSION) == 2
    assert driver.read(DEVICE_ID) == 3


def test_features_offered_include_the_transport_ones(setup):
    driver, _, _ = setup
    features = driver.device_features()
    assert features & F_VERSION_1 and features & F_EVENT_IDX and features & F_INDIRECT_DESC
    assert features & (1 << 3)


def test_features_without_version_1_are_refused(setup):
    driver, _, _ = setup
    status = driver.negotiate(F_EVENT_IDX)
    assert status == ACKNOWLEDGE | DRIVER  # FEATURES_OK did not stick


def test_features_not_offered_are_refused(setup):
    driver, _, _ = setup
    assert not driver.negotiate(F_VERSION_1 | 1 << 40) & FEATURES_OK


def test_status_cannot_skip_steps(setup):
    driver, _, _ = setup
    driver.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    assert driver.read(STATUS) == 0
    driver.write(STATUS, ACKNOWLEDGE)
    driver.write(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert driver.read(STATUS) == ACKNOWLEDGE


def test_failed_can_be_set_any_time_and_reset_clears_it(setup):
    driver, _, _ = setup
    driver.write(STATUS, ACKNOWLEDGE)
    driver.write(STATUS, ACKNOWLEDGE | FAILED)
    assert driver.read(STATUS) == ACKNOWLEDGE | FAILED
    driver.write(STATUS, 0)
    assert driver.read(STATUS) == 0


def test_echo_round_trip_and_interrupt(setup):
    driver, _transport, line = setup
    (queue,) = driver.start()
    queue.add([b"hello, ", b"virtio"], [5, 20])
    driver.kick(0)
    ((_head, length, data),) = queue.take_used()
    assert length == 13 and data == [b"hello", b", virtio" + bytes(12)]
    assert line.level
    assert driver.ack_interrupt() == 1
    assert not line.level and driver.read(INTERRUPT_STATUS) == 0


def test_indirect_chain(setup):
    driver, _, _ = setup
    (queue,) = driver.start()
    queue.add([b"abc", b"def"], [6], indirect=True)
    driver.kick(0)
    assert queue.take_used()[0][2] == [b"abcdef"]


def test_queue_notify_signals_the_queue_eventfd(setup):
    driver, transport, _ = setup
    driver.start()
    driver.write(QUEUE_NOTIFY, 0)
    assert os.eventfd_read(transport.notifiers[0]) == 1
    driver.write(QUEUE_NOTIFY, 7)  # no such queue: ignored
    with pytest.raises(BlockingIOError):
        os.eventfd_read(transport.notifiers[0])


def test_queue_registers_before_features_ok_are_ignored(setup):
    driver, transport, _ = setup
    driver.write(QUEUE_SEL, 0)
    driver.write(QUEUE_NUM, 4)
    driver.write(QUEUE_READY, 1)
    assert driver.read(QUEUE_READY) == 0
    assert transport.queues[0].size == 8


def test_missing_queue_reads_zero(setup):
    driver, _, _ = setup
    driver.write(QUEUE_SEL, 5)
    assert driver.read(QUEUE_NUM_MAX) == 0
    driver.write(QUEUE_SEL, 0xFFFF_FFFF)
    assert driver.read(QUEUE_READY) == 0


def test_queue_outside_ram_is_refused_and_needs_reset(setup):
    driver, transport, _ = setup
    driver.negotiate()
    driver.write(QUEUE_SEL, 0)
    driver.write(QUEUE_DESC, 0x1000)  # not guest RAM
    driver.write(QUEUE_READY, 1)
    assert driver.read(QUEUE_READY) == 0
    assert transport.broken


def test_broken_chain_marks_device_needs_reset(setup):
    driver, _, _line = setup
    (queue,) = driver.start()
    queue.write_desc(queue.desc, 0, 0x4000_0000, 16, 1, 0)  # NEXT to itself: a loop
    queue.publish(0)
    driver.kick(0)
    assert driver.read(STATUS) & NEEDS_RESET
    assert driver.read(INTERRUPT_STATUS) & 2  # a configuration change interrupt
    assert queue.take_used() == []
    # a reset brings the device back
    (queue,) = driver.start()
    assert not driver.read(STATUS) & NEEDS_RESET
    queue.add([b"ok"], [2])
    driver.kick(0)
    assert queue.take_used()[0][2] == [b"ok"]


def test_reset_while_active_resets_the_device(setup):
    driver, transport, _ = setup
    driver.start()
    driver.write(STATUS, 0)
    assert transport.device.resets == 1 and transport.device.active is None
    assert driver.read(QUEUE_READY) == 0


def test_config_space_reads_and_writes(setup):
    driver, _, _ = setup
    assert driver.read(CONFIG, 1) == 0x11
    assert driver.read(CONFIG + 2, 2) == 0x4433
    assert driver.read(CONFIG + 4, 4) == 0x88776655
    assert driver.read(CONFIG + 8, 4) == 0  # beyond the space
    driver.write(CONFIG + 1, 0xAB, size=1)
    assert driver.read(CONFIG, 4) == 0x4433AB11
    assert driver.read(CONFIG_GENERATION) == 0


def test_narrow_register_access_is_ignored(setup):
    driver, _, _ = setup
    assert driver.read(MAGIC, 2) == 0
    driver.write(STATUS, ACKNOWLEDGE, size=1)
    assert driver.read(STATUS) == 0


def test_event_idx_suppresses_interrupts_until_the_driver_asks(setup):
    driver, _, line = setup
    (queue,) = driver.start()
    queue.set_used_event(1)  # interrupt me when the used index passes 1
    queue.add([b"a"], [1])
    driver.kick(0)
    assert not line.level  # used index 0 -> 1: event 1 not passed
    queue.add([b"b"], [1])
    driver.kick(0)
    assert line.level
    assert queue.avail_event() == 2  # the device asks to be kicked at the next one


def test_no_interrupt_flag_without_event_idx(setup):
    driver, _, line = setup
    (queue,) = driver.start(F_VERSION_1)
    driver.memory.write(queue.avail, b"\x01\x00")  # VIRTQ_AVAIL_F_NO_INTERRUPT
    queue.add([b"a"], [1])
    driver.kick(0)
    assert not line.level and len(queue.take_used()) == 1
    assert queue.used_flags() == 0  # notifications enabled again once idle


def test_rng_fills_buffers():
    memory = guest_memory()
    transport = VirtioMmio(Rng(), memory, FakeLine())
    driver = Driver(transport, memory)
    try:
        assert driver.read(DEVICE_ID) == 4
        (queue,) = driver.start()
        queue.add([], [64])
        queue.add([], [0])
        driver.kick(0)
        (_, n1, (data,)), (_, n2, _) = queue.take_used()
        assert n1 == 64 and n2 == 0 and data != bytes(64)
    finally:
        transport.close()
        memory.close()
