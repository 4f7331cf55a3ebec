"""What the stub answers gdb: the remote protocol's commands, over a `Target` (the VM).

All-stop mode: when the target stops (a breakpoint, a step, Ctrl-C), every vCPU is stopped
and gdb gets one stop reply naming the vCPU (`T05thread:N;`). vCPUs are gdb's threads,
numbered from 1 (vCPU 0 is thread 1). Registers are gdb's AArch64 numbering (registers.py),
memory is addressed as the selected vCPU sees it (its virtual addresses). Anything the
target refuses is an error reply (`E..`), never an exception into the connection; a
command the stub does not know gets the empty reply, which gdb reads as "unsupported".
"""

from __future__ import annotations

from typing import Protocol

from elvisor.gdb.registers import REGISTERS, target_xml
from elvisor.gdb.rsp import MAX_PACKET

SIGTRAP, SIGINT = 5, 2
BREAKPOINT_KINDS = {0: "sw", 1: "hw", 2: "write", 3: "read", 4: "access"}  # Z0..Z4
MAX_MEMORY = MAX_PACKET // 2  # bytes in one m reply (two hex digits each)


class Target(Protocol):
    """The VM, as the stub drives it; every call is made while the VM is stopped, except
    `resume` (which lets it run) and `interrupt` (which asks it to stop)."""

    def vcpus(self) -> int: ...

    def read_register(self, vcpu: int, number: int) -> bytes | None: ...

    def write_register(self, vcpu: int, number: int, value: bytes) -> bool: ...

    def read_memory(self, vcpu: int, address: int, length: int) -> bytes | None: ...

    def write_memory(self, vcpu: int, address: int, data: bytes) -> bool: ...

    def set_breakpoint(self, kind: str, address: int, length: int, on: bool) -> bool: ...

    def resume(self, step: int | None) -> None: ...  # step: that vCPU one instruction

    def interrupt(self) -> None: ...


class Session:
    """One gdb connection's state: the selected threads, whether acks are still sent."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.acks = True
        self.general = 0  # Hg: the vCPU registers and memory are read from
        self.running = False
        self.last_stop = f"T{SIGTRAP:02x}thread:1;".encode()

    def stopped(self, vcpu: int, signal: int = SIGTRAP, extra: str = "") -> bytes:
        """The stop reply for gdb when the target stops, `vcpu` being the one that did."""
        self.running = False
        self.general = vcpu
        self.last_stop = f"T{signal:02x}thread:{vcpu + 1:x};{extra}".encode()
        return self.last_stop

    def handle(self, packet: bytes) -> bytes | None:
        """The reply to one packet; None when the reply is a stop reply yet to come."""
        command, rest = packet[:1], packet[1:]
        try:
            handler = getattr(self, f"_cmd_{_NAMES.get(command, '')}", None)
            return b"" if handler is None else handler(rest)
        except (ValueError, IndexError):
            return b"E01"  # (a malformed packet: the target is left as it was)

    # --- queries --------------------------------------------------------------------------

    def _cmd_query(self, rest: bytes) -> bytes:
        if rest.startswith(b"Supported"):
            return (f"PacketSize={MAX_PACKET:x};qXfer:features:read+;QStartNoAckMode+;"
                    "swbreak+;hwbreak+;vContSupported+").encode()  # fmt: skip
        if rest.startswith(b"Xfer:features:read:target.xml:"):
            offset, length = (int(x, 16) for x in rest.split(b":")[-1].split(b","))
            return _chunk(target_xml().encode(), offset, length)
        if rest == b"fThreadInfo":
            return b"m" + b",".join(b"%x" % (n + 1) for n in range(self.target.vcpus()))
        if rest == b"sThreadInfo":
            return b"l"
        if rest == b"C":
            return b"QC%x" % (self.general + 1)
        if rest == b"Attached":
            return b"1"  # (gdb attached to a running VM: detaching leaves it running)
        if rest.startswith(b"ThreadExtraInfo,"):
            vcpu = int(rest.split(b",")[1], 16) - 1
            return f"vCPU {vcpu}".encode().hex().encode()
        return b""

    def _cmd_set(self, rest: bytes) -> bytes:
        if rest == b"StartNoAckMode":
            self.acks = False
            return b"OK"
        return b""

    def _cmd_why(self, rest: bytes) -> bytes:
        return self.last_stop

    def _cmd_thread(self, rest: bytes) -> bytes:
        """Hg/Hc: select a thread (0: any, -1: all)."""
        op, thread = rest[:1], int(rest[1:], 16) if rest[1:] not in (b"-1",) else -1
        if op == b"g" and thread > 0:
            if thread > self.target.vcpus():
                return b"E02"
            self.general = thread - 1
        return b"OK"

    def _cmd_alive(self, rest: bytes) -> bytes:
        return b"OK" if 0 < int(rest, 16) <= self.target.vcpus() else b"E03"

    # --- registers and memory -------------------------------------------------------------

    def _cmd_registers(self, rest: bytes) -> bytes:
        out = bytearray()
        for number in range(len(REGISTERS)):
            value = self.target.read_register(self.general, number)
            out += value.hex().encode() if value is not None else b"xx" * _size(number)
        return bytes(out)

    def _cmd_write_registers(self, rest: bytes) -> bytes:
        data = bytes.fromhex(rest.decode())
        offset = 0
        for number in range(len(REGISTERS)):
            size = _size(number)
            if offset + size > len(data):
                break
            self.target.write_register(self.general, number, data[offset : offset + size])
            offset += size
        return b"OK"

    def _cmd_register(self, rest: bytes) -> bytes:
        number = int(rest, 16)
        if not 0 <= number < len(REGISTERS):
            return b"E04"
        value = self.target.read_register(self.general, number)
        return value.hex().encode() if value is not None else b"E05"

    def _cmd_write_register(self, rest: bytes) -> bytes:
        number_text, value_text = rest.split(b"=")
        number, value = int(number_text, 16), bytes.fromhex(value_text.decode())
        if not 0 <= number < len(REGISTERS) or len(value) != _size(number):
            return b"E04"
        return b"OK" if self.target.write_register(self.general, number, value) else b"E05"

    def _cmd_memory(self, rest: bytes) -> bytes:
        address, length = (int(x, 16) for x in rest.split(b","))
        data = self.target.read_memory(self.general, address, min(length, MAX_MEMORY))
        return data.hex().encode() if data else b"E14"  # (EFAULT, as gdbserver says it)

    def _cmd_write_memory(self, rest: bytes) -> bytes:
        where, hex_data = rest.split(b":")
        address, length = (int(x, 16) for x in where.split(b","))
        data = bytes.fromhex(hex_data.decode())
        if len(data) != length:
            return b"E01"
        return b"OK" if self.target.write_memory(self.general, address, data) else b"E14"

    def _cmd_write_binary(self, rest: bytes) -> bytes:
        where, _, data = rest.partition(b":")  # (unescaped by the framing)
        address, length = (int(x, 16) for x in where.split(b","))
        if len(data) != length:
            return b"E01"
        if not data:
            return b"OK"  # (gdb probing whether X works)
        return b"OK" if self.target.write_memory(self.general, address, data) else b"E14"

    # --- breakpoints and running ----------------------------------------------------------

    def _cmd_insert(self, rest: bytes) -> bytes:
        return self._breakpoint(rest, True)

    def _cmd_remove(self, rest: bytes) -> bytes:
        return self._breakpoint(rest, False)

    def _breakpoint(self, rest: bytes, on: bool) -> bytes:
        kind_text, address_text, length_text = rest.split(b",")[:3]
        kind = BREAKPOINT_KINDS.get(int(kind_text))
        if kind is None:
            return b""
        address, length = int(address_text, 16), int(length_text.split(b";")[0], 16)
        return b"OK" if self.target.set_breakpoint(kind, address, length, on) else b"E0e"

    def _cmd_continue(self, rest: bytes) -> bytes | None:
        if rest:
            return b"E01"  # (continuing at another address: not offered)
        self.running = True
        self.target.resume(None)
        return None

    def _cmd_step(self, rest: bytes) -> bytes | None:
        if rest:
            return b"E01"
        self.running = True
        self.target.resume(self.general)
        return None

    def _cmd_v(self, rest: bytes) -> bytes | None:
        if rest == b"Cont?":
            return b"vCont;c;C;s;S"
        if rest.startswith(b"Cont;"):
            step = None
            for action in rest[5:].split(b";"):
                verb, _, thread = action.partition(b":")
                if verb[:1] in (b"s", b"S"):
                    step = int(thread, 16) - 1 if thread and thread != b"-1" else self.general
            if step is not None and not 0 <= step < self.target.vcpus():
                return b"E02"
            self.running = True
            self.target.resume(step)
            return None
        if rest.startswith(b"Kill"):
            return b"OK"
        return b""  # (vMustReplyEmpty, and what the stub does not do)

    def _cmd_detach(self, rest: bytes) -> bytes:
        return b"OK"

    def _cmd_kill(self, rest: bytes) -> bytes | None:
        return None


_NAMES = {
    b"q": "query", b"Q": "set", b"?": "why", b"H": "thread", b"T": "alive",
    b"g": "registers", b"G": "write_registers", b"p": "register", b"P": "write_register",
    b"m": "memory", b"M": "write_memory", b"X": "write_binary",
    b"Z": "insert", b"z": "remove", b"c": "continue", b"s": "step", b"v": "v",
    b"D": "detach", b"k": "kill",
}  # fmt: skip


def _size(number: int) -> int:
    return REGISTERS[number].bits // 8


def _chunk(document: bytes, offset: int, length: int) -> bytes:
    """A piece of a qXfer document: `m` and more to come, or `l` and the last of it."""
    piece = document[offset : offset + min(length, MAX_PACKET - 1)]
    return (b"l" if offset + len(piece) >= len(document) else b"m") + piece
