"""How a VM ends: guest failures, the console escape, signals, and bad input."""

import signal


def test_guest_fault_ends_with_a_register_dump_and_status_1(guest, elvisor_run) -> None:
    result = elvisor_run("--binary", str(guest("fault.elf")))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "vCPU 0:" in err and "KVM_RUN failed" in err
    assert "PC=0000000040080008" in err  # the ldp: the third instruction
    assert "X5 =000000000000fa17" in err
    assert "Traceback" not in err


def test_ctrl_a_x_quits(elvisor_run) -> None:
    result = elvisor_run(stdin=b"\x01x")
    assert result.returncode == 0
    assert b"stopped (Ctrl-A x)" in result.stderr


def test_sigterm_and_sigint_end_the_vm_in_order(guest, console_session) -> None:
    """Even with the vCPU spinning in the guest, never exiting to elvisor by itself."""
    for sig, status, ignored in (
        (signal.SIGTERM, 143, False),
        (signal.SIGINT, 130, False),
        (signal.SIGINT, 130, True),  # even when elvisor's parent ignored SIGINT
    ):
        session = console_session("--binary", str(guest("spin.elf")), ignore_sigint=ignored)
        session.expect(rb"spinning\n")
        session.proc.send_signal(sig)
        assert session.wait() == status


def test_memory_too_small_for_the_kernel(elvisor_run) -> None:
    result = elvisor_run("--memory", "16M")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "does not fit in guest RAM" in lines[0]


def test_more_cpus_than_kvm_allows(elvisor_run) -> None:
    result = elvisor_run("--cpus", "100000")
    assert result.returncode == 2
    assert b"this host's KVM allows at most" in result.stderr


def test_reset_reboots_the_guest(guest, console_session) -> None:
    session = console_session("--binary", str(guest("reset.elf")))
    session.expect(rb"booted\nbooted\nbooted\n")  # reset, rebuilt, booted again, ...


def test_reset_with_no_reboot_ends_with_status_0(guest, elvisor_run) -> None:
    result = elvisor_run("--binary", str(guest("reset.elf")), "--no-reboot")
    assert result.returncode == 0
    assert result.stdout == b"booted\n"
