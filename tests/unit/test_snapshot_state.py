"""What snapshots are made of, on the host: device states that survive the trip through JSON,
and state files that are refused (the lab's tests take and restore real ones)."""

import hashlib
import json

import pytest
from virtio_driver import DRIVER_OK, STATUS, Driver, FakeLine, guest_memory

from elvisor.arch.arm64 import vgic_state
from elvisor.devices.pl011 import Pl011
from elvisor.devices.pl031 import Pl031
from elvisor.devices.virtio.mmio import VirtioMmio
from elvisor.devices.virtio.rng import Rng
from elvisor.snapshot import Files, SnapshotError, load


def through_json(state: object) -> object:
    return json.loads(json.dumps(state))


def test_pl011_state_keeps_registers_unread_input_and_the_interrupt() -> None:
    line, output = FakeLine(), bytearray()
    uart = Pl011(line, output.extend)
    uart.mmio_write(0x02C, 4, 0x70)  # UARTLCR_H: FIFOs on, 8 bits
    uart.mmio_write(0x038, 4, 0x50)  # UARTIMSC: RX and RX timeout
    uart.mmio_write(0x030, 4, 0x301)  # UARTCR
    uart.receive(b"typed ahead" * 3)  # 16 in the FIFO, the rest waits
    assert line.level
    state = through_json(uart.state())

    line2 = FakeLine()
    again = Pl011(line2, output.extend)
    again.set_state(state)  # type: ignore[arg-type]
    assert line2.level, "the restored UART raises its interrupt as the first one had"
    assert again.mmio_read(0x030, 4) == 0x301 and again.mmio_read(0x02C, 4) == 0x70
    read = bytes(again.mmio_read(0x000, 4) for _ in range(33))
    assert read == b"typed ahead" * 3


def test_pl031_state_keeps_the_guest_clock_offset() -> None:
    now = [1000.0]
    rtc = Pl031(FakeLine(), lambda: now[0])
    rtc.mmio_write(0x008, 4, 5000)  # RTCLR: the guest sets its clock 4000 s ahead
    state = through_json(rtc.state())
    now[0] = 1100.0
    again = Pl031(FakeLine(), lambda: now[0])
    again.set_state(state)  # type: ignore[arg-type]
    assert again.mmio_read(0x000, 4) == 5100
    rtc.close()
    again.close()


def test_a_virtio_transport_goes_on_from_its_state_in_a_new_device() -> None:
    memory = guest_memory()
    transport = VirtioMmio(Rng(), memory, FakeLine())
    driver = Driver(transport, memory)
    (queue,) = driver.start()
    for _ in range(3):
        queue.add([], [16])
    driver.kick(0)
    assert [n for _, n, _ in queue.take_used()] == [16, 16, 16]
    state = through_json(transport.state())

    line = FakeLine()
    again = VirtioMmio(Rng(), memory, line)
    again.set_state(state)  # type: ignore[arg-type]
    assert Driver(again, memory).read(STATUS) & DRIVER_OK
    queue.add([], [8])  # the driver goes on with the same rings
    Driver(again, memory).kick(0)
    assert [n for _, n, _ in queue.take_used()] == [8]
    assert line.level  # (and says so)
    with pytest.raises(ValueError, match="the state of a virtio entropy device, for a console"):
        from elvisor.devices.virtio.console import VirtioConsole

        VirtioMmio(VirtioConsole(lambda b: None), memory, FakeLine()).set_state(state)  # type: ignore[arg-type]
    transport.close()
    again.close()
    memory.close()


def test_vgic_attributes_encode_affinity_as_the_kvm_documentation_says() -> None:
    # arm-vgic-v3.rst: Aff3 in bits 63-56, Aff2 55-48, Aff1 47-40, Aff0 39-32
    assert vgic_state._affinity(0x0000_0000) == 0
    assert vgic_state._affinity(0x0001_0203) == 0x0001_0203 << 32
    assert vgic_state._affinity(0x07_0000_0000) == 0x0700_0000 << 32
    # GICD_IROUTER<n> of the SPIs are 64-bit, read as two words from 0x6100
    assert vgic_state.V3_DIST.count(0x6100) == 1 and 0x6104 in vgic_state.V3_DIST


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not an elvisor snapshot, or it is truncated"),
        (b'{"sha256": "00", "body": {"format": "elvisor-snapshot"}}', "is corrupt"),
        (b"\x00" * 100, "is not an elvisor snapshot, or it is truncated"),
    ],
)
def test_state_files_that_are_not_whole_are_refused(tmp_path, content: bytes, message) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(content)
    with pytest.raises(SnapshotError, match=message):
        load(Files(state, tmp_path / "memory"))


def test_a_state_file_of_another_format_version_is_refused(tmp_path) -> None:
    body = {"format": "elvisor-snapshot", "version": 2}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"sha256": digest, "body": body}))
    with pytest.raises(SnapshotError, match="format version 2; this elvisor reads version 1"):
        load(Files(state, tmp_path / "memory"))
    with pytest.raises(SnapshotError, match="cannot read the snapshot"):
        load(Files(tmp_path / "missing.json", tmp_path / "memory"))
