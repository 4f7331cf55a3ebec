"""The VM's life cycle through the Python API: start, pause, resume, stop, from any thread."""

import struct
import threading
import time

import pytest

from elvisor.config import VmConfig
from elvisor.console import Console
from elvisor.vm import Outcome, State, Vm, VmStateError

COUNTERS = 0x4010_0000  # counter.S: one per vCPU
WAIT = 120.0  # bound against a hung guest, not a timing assertion


def counters(vm: Vm) -> tuple[int, int]:
    return struct.unpack("<QQ", vm.memory.read(COUNTERS, 16))


def until_both_count_past(vm: Vm, floor: tuple[int, int]) -> tuple[int, int]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        now = counters(vm)
        if now[0] > floor[0] and now[1] > floor[1]:
            return now
        time.sleep(0.05)
    raise AssertionError(f"the guest's counters stayed at {counters(vm)}, not past {floor}")


@pytest.mark.every_host
def test_a_paused_guest_makes_no_progress_and_goes_on_after_resume(guest) -> None:
    output = bytearray()
    config = VmConfig(binary=guest("counter.elf"), cpus=2)
    with Vm(config, Console(None, output.extend)) as vm:
        assert vm.state is State.CREATED
        vm.start()
        assert vm.state is State.RUNNING
        until_both_count_past(vm, (0, 0))
        for _ in range(3):
            vm.pause()
            assert vm.state is State.PAUSED
            held = counters(vm)
            time.sleep(0.5)
            assert counters(vm) == held, "a vCPU ran while the VM was paused"
            vm.resume()
            until_both_count_past(vm, held)
        vm.stop()
        assert vm.state is State.STOPPED
        assert vm.result is not None and vm.result.outcome is Outcome.STOPPED
        assert output == b"counting\n"


def test_life_cycle_calls_in_the_wrong_state_are_refused(guest) -> None:
    with Vm(VmConfig(binary=guest("counter.elf"), cpus=2), Console(None, lambda b: None)) as vm:
        for call in (vm.pause, vm.resume):
            with pytest.raises(VmStateError, match="created"):
                call()
        vm.start()
        for call in (vm.start, vm.resume):
            with pytest.raises(VmStateError, match="running"):
                call()
        vm.pause()
        for call in (vm.start, vm.pause):
            with pytest.raises(VmStateError, match="paused"):
                call()
        vm.stop()  # from paused
        vm.stop()  # and again: nothing to do
        for call in (vm.start, vm.pause, vm.resume):
            with pytest.raises(VmStateError, match="stopped"):
                call()


def test_pause_resume_and_stop_from_other_threads_while_run_waits(guest) -> None:
    """`run()` in the main thread, driven by another, as the API socket drives it."""
    with Vm(VmConfig(binary=guest("counter.elf"), cpus=2), Console(None, lambda b: None)) as vm:
        seen: list[object] = []

        def drive() -> None:
            try:
                until_both_count_past(vm, (0, 0))
                vm.pause()
                seen.append(vm.state)
                vm.resume()
                until_both_count_past(vm, counters(vm))
            finally:
                vm.stop()

        driver = threading.Thread(target=drive)
        threading.Timer(0.1, driver.start).start()
        result = vm.run()
        driver.join()
        assert seen == [State.PAUSED]
        assert result.outcome is Outcome.STOPPED and result.exit_status == 0
        assert vm.state is State.STOPPED


def test_pause_after_the_guest_ended_is_refused_with_the_reason(guest) -> None:
    """hello.elf powers off at once: its VM can be waited for, not paused, and then stopped."""
    with Vm(VmConfig(binary=guest("hello.elf")), Console(None, lambda b: None)) as vm:
        vm.start()
        result = vm.wait(WAIT)
        assert result is not None and result.outcome is Outcome.POWEROFF
        with pytest.raises(VmStateError, match="ended"):
            vm.pause()
        vm.stop()
        assert vm.result is result
