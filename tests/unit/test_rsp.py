"""The GDB remote protocol's framing, as gdb sends and reads it."""

from elvisor.gdb.rsp import BadPacket, Interrupt, Packet, Reader, frame


def test_frames_carry_a_checksum_and_escape_what_they_must() -> None:
    assert frame(b"OK") == b"$OK#9a"
    assert frame(b"") == b"$#00"
    assert frame(b"a#b$c}d*") == b"$a}\x03b}\x04c}]d}\n#" + b"%02x" % (
        sum(b"a}\x03b}\x04c}]d}\n") & 0xFF
    )


def test_the_reader_takes_packets_split_anywhere_and_drops_acks() -> None:
    reader = Reader()
    wire = b"+" + frame(b"qSupported:multiprocess+") + b"+" + frame(b"X1000,2:#}")
    events = []
    for byte in wire:  # one byte at a time: a TCP stream may cut anywhere
        events += reader.feed(bytes([byte]))
    assert events == [Packet(b"qSupported:multiprocess+"), Packet(b"X1000,2:#}")]


def test_ctrl_c_between_packets_is_an_interrupt_and_a_bad_checksum_is_reported() -> None:
    reader = Reader()
    events = reader.feed(b"\x03$g#00$g#67")
    assert events[0] == Interrupt()
    assert isinstance(events[1], BadPacket) and "checksum" in events[1].why
    assert events[2] == Packet(b"g")


def test_an_endless_packet_is_cut_off() -> None:
    reader = Reader()
    events = reader.feed(b"$" + b"a" * 100_000)
    assert any(isinstance(e, BadPacket) for e in events)
    assert reader.feed(frame(b"?")) == [Packet(b"?")]  # and the next one is read
