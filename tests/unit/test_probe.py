"""`elvisor doctor`'s verdicts, from reports of hosts elvisor meets."""

from elvisor.kvm.probe import CAPABILITIES, KvmReport, diagnose, format_info, format_verdict


def report(**changes) -> KvmReport:
    caps = {label: 1 for label, _ in CAPABILITIES}
    base = KvmReport(
        api_version=12,
        kernel="6.1.0-rpi7-rpi-2712",
        machine="aarch64",
        page_size=16384,
        kvm_mode="nVHE",
        preferred_target=5,
        max_vcpus=8,
        recommended_vcpus=4,
        ipa_bits=40,
        vgic_v2=True,
        vgic_v3=False,
        smccc_filter=False,
        capabilities=caps,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_raspberry_pi_5_can_run_with_gicv2_and_16k_pages() -> None:
    verdict = diagnose(report())
    assert verdict.can_run and verdict.gic == 2
    text = format_verdict(verdict)
    assert "This host can run elvisor guests: GICv2, 40-bit" in text
    assert "host pages of 16 KiB" in text
    assert "[warn] hypercalls to Python" in text and "Linux 6.4" in text


def test_no_vgic_cannot_run() -> None:
    verdict = diagnose(report(vgic_v2=False))
    assert not verdict.can_run and verdict.gic is None
    assert "[FAIL] interrupt controller" in format_verdict(verdict)
    assert "cannot run elvisor guests" in format_verdict(verdict)


def test_missing_psci_cannot_run() -> None:
    r = report()
    r.capabilities["PSCI 0.2"] = 0
    assert not diagnose(r).can_run


def test_info_table_shows_values() -> None:
    r = report(smccc_filter=True)
    r.capabilities["dirty log (manual protect)"] = 3
    text = format_info(r)
    assert "host page size" in text and "16 KiB" in text
    assert "dirty log (manual protect)" in text and "yes (3)" in text
    assert "vGIC v3" in text
