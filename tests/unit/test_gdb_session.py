"""The stub's answers to gdb's packets, over a made-up two-vCPU target."""

import xml.etree.ElementTree as ET

from elvisor.gdb.registers import NUMBERS, REGISTERS
from elvisor.gdb.session import Session


class FakeTarget:
    def __init__(self) -> None:
        self.registers = [
            {n: (n + 16 * vcpu).to_bytes(r.bits // 8, "little") for n, r in enumerate(REGISTERS)}
            for vcpu in range(2)
        ]
        self.memory = {0xFFFF_8000_0000_1000 + i: i & 0xFF for i in range(64)}
        self.breakpoints: set[tuple[str, int, int]] = set()
        self.resumed: list[int | None] = []

    def vcpus(self) -> int:
        return 2

    def read_register(self, vcpu: int, number: int) -> bytes | None:
        return None if REGISTERS[number].name == "far_el1" else self.registers[vcpu][number]

    def write_register(self, vcpu: int, number: int, value: bytes) -> bool:
        self.registers[vcpu][number] = value
        return True

    def read_memory(self, vcpu: int, address: int, length: int) -> bytes | None:
        if any(address + i not in self.memory for i in range(length)):
            return None
        return bytes(self.memory[address + i] for i in range(length))

    def write_memory(self, vcpu: int, address: int, data: bytes) -> bool:
        if any(address + i not in self.memory for i in range(len(data))):
            return False
        for i, byte in enumerate(data):
            self.memory[address + i] = byte
        return True

    def set_breakpoint(self, kind: str, address: int, length: int, on: bool) -> bool:
        (self.breakpoints.add if on else self.breakpoints.discard)((kind, address, length))
        return kind != "access"

    def resume(self, step: int | None) -> None:
        self.resumed.append(step)

    def interrupt(self) -> None:
        pass


def test_handshake_threads_and_the_target_description() -> None:
    session = Session(FakeTarget())
    assert b"qXfer:features:read+" in session.handle(b"qSupported:multiprocess+;xmlRegisters=i386")
    assert session.handle(b"QStartNoAckMode") == b"OK" and not session.acks
    assert session.handle(b"qfThreadInfo") == b"m1,2" and session.handle(b"qsThreadInfo") == b"l"
    assert session.handle(b"?") == b"T05thread:1;"
    document, offset = b"", 0
    while True:  # read it in small pieces, as gdb may
        piece = session.handle(b"qXfer:features:read:target.xml:%x,40" % offset)
        document += piece[1:]
        offset += len(piece) - 1
        if piece[:1] == b"l":
            break
    assert ET.fromstring(document.decode().split("\n", 2)[2]).findtext("architecture") == "aarch64"
    assert session.handle(b"qThreadExtraInfo,2") == b"vCPU 1".hex().encode()
    assert session.handle(b"vMustReplyEmpty") == b""
    assert session.handle(b"qSomethingNew") == b""


def test_registers_of_the_selected_vcpu_read_and_written() -> None:
    target = FakeTarget()
    session = Session(target)
    pc = NUMBERS["pc"]
    assert session.handle(b"p%x" % pc) == pc.to_bytes(8, "little").hex().encode()
    assert session.handle(b"Hg2") == b"OK"
    assert session.handle(b"p%x" % pc) == (pc + 16).to_bytes(8, "little").hex().encode()
    assert session.handle(b"P%x=%s" % (pc, (0x4008_0000).to_bytes(8, "little").hex().encode()))
    assert target.registers[1][pc] == (0x4008_0000).to_bytes(8, "little")
    everything = session.handle(b"g")
    far = NUMBERS["far_el1"]
    assert len(everything) == 2 * sum(r.bits // 8 for r in REGISTERS)
    offset = 2 * sum(r.bits // 8 for r in REGISTERS[:far])
    assert everything[offset : offset + 16] == b"x" * 16  # (one KVM would not give)
    assert session.handle(b"p%x" % far) == b"E05"
    assert session.handle(b"p999") == b"E04" and session.handle(b"Hg9") == b"E02"


def test_memory_read_written_and_unmapped_is_an_error() -> None:
    target = FakeTarget()
    session = Session(target)
    base = 0xFFFF_8000_0000_1000
    assert session.handle(b"m%x,4" % base) == b"00010203"
    assert session.handle(b"M%x,2:abcd" % (base + 2)) == b"OK"
    assert session.handle(b"X%x,2:#}" % (base + 4)) == b"OK"  # (binary, unescaped already)
    assert session.handle(b"m%x,6" % base) == b"0001abcd237d"
    assert session.handle(b"m%x,4" % (base - 2)) == b"E14"
    assert session.handle(b"M0,1:00") == b"E14"
    assert session.handle(b"mzz") == b"E01"  # (malformed: an error, not an exception)


def test_breakpoints_steps_and_stops() -> None:
    target = FakeTarget()
    session = Session(target)
    assert session.handle(b"Z0,ffff800000001000,4") == b"OK"
    assert session.handle(b"Z2,ffff800000001010,8") == b"OK"
    assert session.handle(b"Z4,ffff800000001010,8") == b"E0e"
    assert ("sw", 0xFFFF_8000_0000_1000, 4) in target.breakpoints
    assert session.handle(b"z0,ffff800000001000,4") == b"OK"
    assert ("sw", 0xFFFF_8000_0000_1000, 4) not in target.breakpoints
    assert session.handle(b"vCont?") == b"vCont;c;C;s;S"
    assert session.handle(b"vCont;s:2;c") is None and target.resumed == [1]
    assert session.stopped(1) == b"T05thread:2;" and session.handle(b"?") == b"T05thread:2;"
    assert session.handle(b"c") is None and target.resumed == [1, None]
    assert session.stopped(0, 2) == b"T02thread:1;"
    assert session.handle(b"s") is None and target.resumed == [1, None, 0]


def test_hostile_packets_get_error_replies_and_change_nothing() -> None:
    target = FakeTarget()
    session = Session(target)
    before = [dict(r) for r in target.registers]
    for packet in (b"G0", b"Gzz", b"P20=00", b"P20=zz", b"Pzz", b"p", b"m1,", b"M1,2:a",
                   b"Xffff800000001000,5:ab", b"Z9,1,1", b"Z0,zz,4", b"Hgzz", b"vCont;s:9",
                   b"qXfer:features:read:target.xml:zz", b"T0", b"\xff\xfe"):  # fmt: skip
        reply = session.handle(packet)
        assert reply is not None and (reply == b"" or reply.startswith(b"E")), (packet, reply)
    assert target.registers == before and target.resumed == []
    huge = session.handle(b"mffff800000001000,ffffffff")  # (clipped: never a huge reply)
    assert huge == b"E14"  # (the 64 bytes there are all that is mapped)
    assert len(session.handle(b"mffff800000001000,40")) == 128
