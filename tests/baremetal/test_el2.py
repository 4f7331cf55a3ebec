"""The EL2 hypervisor (baremetal/) under QEMU's virt machine with virtualization=on, on this
host (software-emulated, no KVM needed): built and run by `elvisor baremetal`."""

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "build" / "guests"
ELVISOR = [sys.executable, "-m", "elvisor", "baremetal"]
TIMEOUT = 120  # against a hung machine, not a timing assertion
LINUX_TIMEOUT = 600  # a Linux boot under software-emulated EL2 (a hang guard, as above)


def baremetal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ELVISOR, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


class Console:
    """`elvisor baremetal run ARGS` with its console on pipes: what it printed so far, input
    sent when the test says."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*ELVISOR, "run", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = ""
        self.seen = 0  # where the next expect() looks from

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *_: object) -> None:
        self.process.kill()
        self.process.wait()

    def expect(self, *texts: str, timeout: float = LINUX_TIMEOUT) -> None:
        """Until each of `texts` is printed (in any order) after what the last expect() found;
        fails on a timeout, or when QEMU exits first."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while any((missing := text) not in self.output[self.seen :] for text in texts):
            left = deadline - time.monotonic()
            assert left > 0, f"no {missing!r} in {timeout} s:\n{self.output[-3000:]}"
            if select.select([stdout], [], [], min(left, 1))[0]:
                chunk = stdout.read() or b""
                assert chunk, f"exited:\n{self.output[-3000:]}"
                self.output += chunk.decode(errors="replace").replace("\r", "")
        self.seen = max(self.output.index(text, self.seen) + len(text) for text in texts)

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def exit_status(self) -> int:
        status = self.process.wait(timeout=TIMEOUT)
        assert self.process.stdout is not None
        rest = self.process.stdout.read() or b""
        self.output += rest.decode(errors="replace").replace("\r", "")
        return status


def beside_smp(tmp_path: Path, name: str, cpus: int = 1) -> str:
    """A VMs file: the test guest `name` (64 MiB, `cpus` vCPUs), and beside it the smp guest
    on 2 vCPUs, whose "cpu1 reported in" shows the VM next door went on."""
    vms = tmp_path / "vms.toml"
    vms.write_text(
        f'[[vm]]\nbinary = "{guest(name)}"\nmemory = "64M"\ncpus = {cpus}\n'
        f'[[vm]]\nbinary = "{guest("smp.bin")}"\nmemory = "64M"\ncpus = 2\n'
    )
    return str(vms)


def guest(name: str) -> str:
    path = GUESTS / name
    assert path.exists(), f"{path} is missing: run `make guests`"
    return str(path)


@pytest.mark.parametrize(("cpu", "gic"), [("max", "3"), ("cortex-a53", "2")])
def test_banner_at_el2_then_a_guest_prints_and_powers_off(cpu: str, gic: str) -> None:
    result = baremetal("run", "--cpu", cpu, "--gic", gic, "--binary", guest("hello.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "elvisor EL2 on QEMU virt: CPU 0, MIDR" in out
    assert ("Cortex-A53" in out) == (cpu == "cortex-a53")
    assert "linux,dummy-virt, 1 CPU, memory 40000000-" in out  # from QEMU's device tree
    assert "[vm0] hello from the guest\n" in out  # through the virtual PL011
    assert out.index("hello from the guest") < out.index("VM vm0 powered off")  # PSCI
    assert "no VM is left: powering off" in out


def test_guest_starts_its_second_vcpu_with_psci() -> None:
    result = baremetal("run", "--cpus", "2", "--binary", guest("smp.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[vm0] cpu1: context ok\n[vm0] cpu0: cpu1 reported in\n" in result.stdout


def test_a_guest_reading_hypervisor_memory_is_stopped_and_the_other_vm_lives_on(tmp_path):
    vms = beside_smp(tmp_path, "read_hypervisor.bin")
    result = baremetal("run", "--vms", vms)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "VM vm0: RAM 40400000-443fffff, CPUs 0-0" in out
    assert "VM vm1: RAM 44400000-483fffff, CPUs 1-2" in out
    assert "[vm0] reading the hypervisor's memory" in out
    assert "VM vm0 vCPU 0: read outside its memory and devices: " in out
    assert "FAR 0000000040080000 IPA 40080000" in out
    assert "read it" not in out
    assert "[vm1] cpu0: cpu1 reported in" in out  # the other VM went on
    assert out.index("VM vm1 powered off") < out.index("no VM is left: powering off")


def test_not_at_el2_is_said_plainly(tmp_path) -> None:
    image = tmp_path / "el2.img"
    built = baremetal("build", "-o", str(image), "--binary", guest("hello.bin"))
    assert built.returncode == 0, built.stderr
    qemu = subprocess.Popen(
        ["qemu-system-aarch64", "-M", "virt", "-cpu", "max", "-m", "512M", "-nodefaults",
         "-display", "none", "-serial", "stdio", "-kernel", str(image)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert qemu.stdout is not None
        os.set_blocking(qemu.stdout.fileno(), False)
        out, deadline = b"", time.monotonic() + TIMEOUT
        while b"not EL2" not in out and time.monotonic() < deadline:
            out += qemu.stdout.read() or b""
            time.sleep(0.1)
        assert b"elvisor: started at EL1, not EL2: " in out
        assert qemu.poll() is None  # it stops there (the hypervisor cannot power off from EL1)
    finally:
        qemu.kill()
        qemu.wait()


def test_raspberry_pi_4_image_builds(tmp_path) -> None:
    image = tmp_path / "kernel8.img"
    built = baremetal("build", "--platform", "rpi4", "-o", str(image), "--binary",
                      guest("hello.bin"))  # fmt: skip
    assert built.returncode == 0, built.stderr
    data = image.read_bytes()
    assert data[56:60] == b"ARM\x64"  # an arm64 Image, as the Pi's firmware loads kernel8.img
    assert int.from_bytes(data[8:16], "little") == 0x80000  # text_offset


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[[vm]]\nbinary = 3\n", "VM 0: binary must be a string, not 3"),
        ("[[vm]]\nbinary = 'hello.bin'\ndisk = 'x'\n", "VM 0: unknown key 'disk'"),
        ("vm = 1\n", "describe each VM in a [[vm]] table"),
        ("[[vm]\n", "is not valid TOML"),
        ("[[vm]]\nbinary = 'x.bin'\ncpus = 9\n", "one CPU each: qemu-virt has 8"),
    ],
)
def test_bad_vm_descriptions_are_one_line(tmp_path, toml: str, message: str) -> None:
    (tmp_path / "x.bin").write_bytes(b"\x00" * 16)
    vms = tmp_path / "vms.toml"
    vms.write_text(toml)
    result = baremetal("build", "-o", str(tmp_path / "img"), "--vms", str(vms))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def gdb_packet(sock: socket.socket, command: str) -> bytes:
    """Send one gdb remote-protocol packet; its answer (after the acknowledgement)."""
    checksum = sum(command.encode()) % 256
    sock.sendall(f"${command}#{checksum:02x}".encode())
    answer = b""
    while not (answer.count(b"#") and len(answer) >= answer.rindex(b"#") + 3):
        chunk = sock.recv(4096)
        assert chunk, "the gdb stub hung up"
        answer += chunk
    assert answer.startswith(b"+"), answer  # acknowledged
    sock.sendall(b"+")  # and we acknowledge the answer
    return answer[1:]


def test_gdb_holds_the_machine_until_it_says_continue() -> None:
    qemu = subprocess.Popen([*ELVISOR, "run", "--gdb", "--binary", guest("hello.bin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert qemu.stderr is not None and qemu.stdout is not None
        assert b"gdb-multiarch" in qemu.stderr.readline()  # how to attach, said first
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", 1234), timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "QEMU's gdb stub never listened"
                time.sleep(0.2)
        with sock:
            assert gdb_packet(sock, "?").startswith(b"$T05")  # stopped, before any instruction
            assert gdb_packet(sock, "g").startswith(b"$")  # the registers can be read
            os.set_blocking(qemu.stdout.fileno(), False)
            assert qemu.stdout.read() is None  # not a byte yet: the CPUs are held
            os.set_blocking(qemu.stdout.fileno(), True)
            sock.sendall(b"$c#63")  # continue
            out, _ = qemu.communicate(timeout=TIMEOUT)
        assert b"[vm0] hello from the guest" in out
        assert qemu.returncode == 0
    finally:
        qemu.kill()
        qemu.wait()


def test_system_reset_starts_the_vm_again() -> None:
    qemu = subprocess.Popen([*ELVISOR, "run", "--binary", guest("reset.bin")],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert qemu.stdout is not None
        lines = [qemu.stdout.readline().rstrip() for _ in range(10)]  # banner, VM, 3 boots
        assert lines[-6:] == [b"[vm0] booted", b"elvisor EL2: VM vm0 resets"] * 3, lines
    finally:
        qemu.kill()
        qemu.wait()


@pytest.mark.parametrize("cpu", ["max", "cortex-a53"])
def test_virtual_timer_interrupts_reach_each_vm_on_gicv3(tmp_path, cpu: str) -> None:
    """Each VM's guest takes its own EL1 virtual timer's interrupts (list registers, linked to
    the physical interrupt), on its own CPU."""
    vms = tmp_path / "vms.toml"
    vms.write_text(2 * f'[[vm]]\nbinary = "{guest("vtimer.bin")}"\nmemory = "64M"\n')
    result = baremetal("run", "--cpu", cpu, "--gic", "3", "--vms", str(vms))
    assert result.returncode == 0, result.stdout + result.stderr
    for vm in ("vm0", "vm1"):
        assert f"[{vm}] vtimer: 3 interrupts taken\n" in result.stdout
        assert f"VM {vm} powered off" in result.stdout


@pytest.mark.parametrize("gic", ["3", "2"])
def test_a_guest_writing_garbage_to_its_gic_harms_nothing(tmp_path, gic: str) -> None:
    """Random values in every register of its distributor (ITARGETSR and GICD_SGIR on GICv2)
    and of each of its redistributors, random SGIs: the hypervisor lives on, and so does the
    VM beside it. On GICv3, an SGI for a vCPU the VM does not have (ICC_SGI1R's RS field)
    reaches none of its vCPUs."""
    vms = beside_smp(tmp_path, "gic_garbage.bin", 2)
    result = baremetal("run", "--gic", gic, "--vms", vms)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[vm0] gic garbage: survived\n" in result.stdout
    assert "[vm1] cpu0: cpu1 reported in\n" in result.stdout
    assert "stopped" not in result.stdout
    if gic == "3":
        assert "[vm0] gic garbage: an SGI for Aff0 16 reached no vCPU\n" in result.stdout


def test_a_guest_abusing_psci_and_hypercalls_harms_nothing(tmp_path) -> None:
    """Random HVC/SMC function IDs and arguments, CPU_ON with random MPIDRs and entry points,
    then CPU_ON racing SYSTEM_RESET, three times: no vCPU is switched on by a CPU_ON from
    before a reset, and the VM beside it goes on."""
    vms = beside_smp(tmp_path, "psci_garbage.bin", 3)
    result = baremetal("run", "--vms", vms)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("[vm0] psci garbage: racing a reset\n") == 3
    assert out.count("elvisor EL2: VM vm0 resets\n") == 3
    assert "[vm0] psci garbage: survived the resets\n" in out
    assert "stale" not in out and "stopped" not in out
    assert "[vm1] cpu0: cpu1 reported in\n" in out


def test_a_load_pair_from_a_device_stops_only_its_vm(tmp_path) -> None:
    """LDP from the UART's window: no syndrome to emulate it from. Its VM is stopped with
    the fault's registers; the VM beside it goes on."""
    vms = beside_smp(tmp_path, "fault.bin")
    result = baremetal("run", "--vms", vms)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "VM vm0 stopped" in out
    assert "FAR 0000000009000000" in out
    assert "[vm1] cpu0: cpu1 reported in\n" in out
    assert out.index("VM vm0 stopped") < out.index("no VM is left: powering off")


@pytest.mark.parametrize(("cpu", "gic", "cpus"),
                         [("max", "3", 1), ("max", "2", 2), ("cortex-a53", "3", 2),
                          ("cortex-a53", "2", 1)])  # fmt: skip
def test_linux_reaches_its_shell_answers_and_powers_off(cpu: str, gic: str, cpus: int) -> None:
    """The default guest's kernel and initrd (as `elvisor run` boots them) under the EL2
    hypervisor: its virtual GIC, timer, PL011 (input by interrupt) and, with 2 vCPUs, SGIs."""
    with Console("--cpu", cpu, "--gic", gic, "--cpus", str(cpus)) as console:
        console.expect("[vm0] ~ # ")
        console.send("echo answer-$((6*7)) $(nproc); poweroff -f\n")
        console.expect(f"[vm0] answer-42 {cpus}\n")
        assert console.exit_status() == 0
    assert "VM vm0 powered off\nelvisor EL2: no VM is left: powering off\n" in console.output


def test_two_linux_vms_each_answer_their_own_command_and_cannot_read_each_other(tmp_path):
    vms = tmp_path / "vms.toml"
    vms.write_text('[[vm]]\nmemory = "192M"\n[[vm]]\nmemory = "192M"\ncpus = 2\n')
    with Console("--vms", str(vms)) as console:
        console.expect("input goes to VM vm0 (Ctrl-\\ passes it to the next)")
        ram = re.search(r"VM vm0: RAM ([0-9a-f]+)-", console.output)
        assert ram is not None
        console.expect("[vm0] ~ # ", "[vm1] ~ # ")
        console.send("echo zero-$((6*7)) $(nproc)\n")
        console.expect("[vm0] zero-42 1\n")
        console.send("\x1c")  # Ctrl-\\: the input goes to vm1
        console.expect("elvisor EL2: input goes to VM vm1\n")
        console.send("echo one-$((6*8)) $(nproc)\n")
        console.expect("[vm1] one-48 2\n")
        console.send(f"devmem 0x{ram[1]}\n")  # vm0's first word, from vm1
        console.expect("VM vm1 stopped: a trap it cannot continue from\n")
        assert "read outside its memory and devices: " in console.output
        assert f"IPA {ram[1]}\n" in console.output
        console.expect("elvisor EL2: input goes to VM vm0\n")  # the one left
        console.send("echo still-here; poweroff -f\n")
        console.expect("[vm0] still-here\n")
        assert console.exit_status() == 0
    assert "no VM is left: powering off" in console.output
    assert "[vm0] zero-42" not in console.output.split("[vm1] one-48")[1]  # each its own input


def test_linux_with_two_vcpus_reboots() -> None:
    """PSCI SYSTEM_RESET while the other vCPU runs: it is stopped (a physical SGI brings it to
    EL2), the payloads are loaded again and vCPU 0 starts over."""
    with Console("--cpu", "cortex-a53", "--cpus", "2") as console:
        console.expect("[vm0] ~ # ")
        console.send("reboot -f\n")
        console.expect("elvisor EL2: VM vm0 resets\n")
        console.expect("[vm0] elvisor-guest: init reached")  # booted again
        console.expect("[vm0] ~ # ")
        console.send("echo again $(nproc); poweroff -f\n")
        console.expect("[vm0] again 2\n")
        assert console.exit_status() == 0
