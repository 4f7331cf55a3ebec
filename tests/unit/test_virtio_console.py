"""virtio-console: output, the multiport handshake, and input held until the port is open."""

import struct

import pytest
from virtio_driver import CONFIG, Driver, FakeLine, guest_memory

from elvisor.devices.virtio.console import VirtioConsole
from elvisor.devices.virtio.mmio import VirtioMmio

# 5.3.6.2 control events (literal values from the spec)
DEVICE_READY, DEVICE_ADD, PORT_READY, CONSOLE_PORT, PORT_OPEN = 0, 1, 3, 4, 6
F_MULTIPORT = 1 << 1


@pytest.fixture
def console():
    memory = guest_memory()
    output: list[bytes] = []
    device = VirtioConsole(output.append)
    transport = VirtioMmio(device, memory, FakeLine())
    driver = Driver(transport, memory)
    yield driver, device, output
    transport.close()
    memory.close()


def control(driver, queue_in, queue_out, event, value=1, port=0):
    """Send a control message; the messages the device sent back."""
    queue_out.add([struct.pack("<IHH", port, event, value)], [])
    driver.kick(3)
    queue_out.take_used()
    return [struct.unpack("<IHH", data[0][:8]) for _, _, data in queue_in.take_used()]


def test_output_goes_to_the_host(console):
    driver, _, output = console
    _, tx, _, _ = driver.start()
    tx.add([b"hello ", b"hvc0\n"], [])
    driver.kick(1)
    assert b"".join(output) == b"hello hvc0\n"


def test_emergency_write(console):
    driver, _, output = console
    driver.write(CONFIG + 8, ord("!"))
    assert output == [b"!"]


def test_one_port_offered(console):
    driver, _, _ = console
    assert driver.device_features() & F_MULTIPORT
    assert driver.read(CONFIG + 4) == 1  # max_nr_ports


def test_input_waits_for_port_open(console):
    driver, device, _ = console
    rx, _, c_in, c_out = driver.start()
    for _ in range(4):
        c_in.add([], [8])
    rx.add([], [16])
    device.receive(b"ls\n")
    device._deliver()  # (the I/O thread's turn)
    assert rx.take_used() == []  # not yet: the port is not open
    assert control(driver, c_in, c_out, DEVICE_READY) == [(0, DEVICE_ADD, 0)]
    assert control(driver, c_in, c_out, PORT_READY) == [(0, CONSOLE_PORT, 1), (0, PORT_OPEN, 1)]
    control(driver, c_in, c_out, PORT_OPEN)
    ((_, length, (data,)),) = rx.take_used()
    assert data[:length] == b"ls\n"


def test_input_over_several_buffers_and_later_buffers(console):
    driver, device, _ = console
    rx, _, c_in, c_out = driver.start()
    c_in.add([], [8])
    control(driver, c_in, c_out, PORT_OPEN)
    rx.add([], [4])
    device.receive(b"0123456789")
    device._deliver()
    assert [d[0] for _, _, d in rx.take_used()] == [b"0123"]
    rx.add([], [16])
    driver.kick(0)
    ((_, length, (data,)),) = rx.take_used()
    assert data[:length] == b"456789"


def test_backlog_is_bounded(console):
    _, device, _ = console
    device.receive(bytes(70 * 1024))
    assert not device.backlog_drained.is_set()


def test_input_is_watched_again_after_the_guest_resets_a_broken_device(console):
    """A broken device stops watching host input; the driver's reset and new set-up must
    bring it back, or keystrokes would wait for the guest's next kick."""
    driver, device, _ = console
    watching: dict[int, bool] = {}
    device.watch = watching.__setitem__
    ((input_fd, deliver),) = device.watched()
    rx, _, c_in, c_out = driver.start()
    c_in.add([], [8])
    control(driver, c_in, c_out, PORT_OPEN)
    driver.memory.write(rx.avail + 2, (rx.size + 1).to_bytes(2, "little"))  # idx too far ahead
    device.receive(b"kept ")
    driver.kick(0)
    assert driver.transport.broken
    driver.transport.readable(input_fd, deliver)  # what the I/O thread does
    assert watching == {input_fd: False}
    rx, _, c_in, c_out = driver.start()  # reset, set up again, DRIVER_OK
    assert watching == {input_fd: True}
    c_in.add([], [8])
    control(driver, c_in, c_out, PORT_OPEN)
    rx.add([], [16])
    device.receive(b"ls\n")
    driver.transport.readable(input_fd, deliver)
    ((_, length, (data,)),) = rx.take_used()
    assert data[:length] == b"kept ls\n"
