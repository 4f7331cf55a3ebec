"""The API socket on the host: Firecracker's requests, answered over a real Unix socket, with
the VM's start recorded instead of done (the lab's tests boot real guests through it)."""

import json
import socket
import subprocess
import sys

import pytest

from elvisor.api.client import request
from elvisor.api.control import Api
from elvisor.api.instance import Instance
from elvisor.api.server import ApiServer
from elvisor.config import DiskConfig, NetConfig, VmConfig
from elvisor.errors import UserError


class Recorded(Instance):
    """An instance whose start records the VM it would build."""

    def __init__(self) -> None:
        super().__init__("test-vm")
        self.configs: list[VmConfig] = []

    def start(self, config: VmConfig) -> None:
        self.configs.append(config)


@pytest.fixture
def api(tmp_path):
    """(the socket, the instance) of an API server on a socket in tmp_path."""
    instance = Recorded()
    sock = tmp_path / "api.sock"
    api = Api(instance)
    with ApiServer(sock, api.handle) as server:
        server.start()
        yield sock, instance
    api.close()
    assert not sock.exists(), "the socket was left behind"


def test_a_microvm_configured_and_started_through_the_api(api, kernel, disk) -> None:
    sock, instance = api
    assert request(sock, "GET", "/") == (
        200,
        {"id": "test-vm", "state": "Not started", "vmm_version": "0.1.0", "app_name": "elvisor"},
    )
    calls = [
        ("PUT", "/boot-source", {"kernel_image_path": str(kernel), "boot_args": "console=ttyS0"}),
        ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}),
        ("PATCH", "/machine-config", {"mem_size_mib": 96}),
        ("PUT", "/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(disk),
                                   "is_root_device": True, "is_read_only": False}),
        ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap7",
                                             "guest_mac": "06:00:ac:10:00:02"}),
        ("PUT", "/vsock", {"guest_cid": 7, "uds_path": "/tmp/v.sock"}),
        ("PUT", "/entropy", {}),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]  # fmt: skip
    for method, path, body in calls:
        assert request(sock, method, path, body) == (204, None), (method, path)
    assert instance.configs == [
        VmConfig(
            kernel=kernel,
            cmdline="console=ttyAMA0 root=/dev/vda rw",
            cpus=2,
            memory=96 << 20,
            disks=(DiskConfig(disk),),
            nets=(NetConfig("tap", "tap7", bytes.fromhex("0600ac100002")),),
            vsock_cid=7,
            rng=True,
            reboot=False,
        )
    ]
    status, config = request(sock, "GET", "/vm/config")
    assert status == 200 and isinstance(config, dict)
    assert config["machine-config"]["mem_size_mib"] == 96
    assert [d["drive_id"] for d in config["drives"]] == ["rootfs"]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/nowhere", None, "invalid request method and/or path: GET /nowhere"),
        ("DELETE", "/boot-source", None, "invalid request method and/or path: DELETE"),
        ("PUT", "/machine-config", {"vcpu_count": "2", "mem_size_mib": 64},
         "`vcpu_count` must be an integer, not '2'"),
        ("PUT", "/machine-config", {"vcpu_count": 2}, "missing field `mem_size_mib`"),
        ("PUT", "/machine-config", {"vcpu_count": 64, "mem_size_mib": 64}, "not from 1 to 32"),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "smt": True}, "x86"),
        ("PUT", "/boot-source", {"kernel_image_path": "/k", "colour": "red"},
         "unknown field `colour`"),
        ("PUT", "/boot-source", [1, 2], "the body must be a JSON object"),
        ("PUT", "/drives/a", {"drive_id": "b", "path_on_host": "/d", "is_root_device": False},
         "the id in the path (a) differs from the body's (b)"),
        ("PUT", "/drives/a", {"drive_id": "a", "path_on_host": "/d", "is_root_device": False,
                              "rate_limiter": {}}, "elvisor has no rate limiters"),
        ("PUT", "/balloon", {"amount_mib": 1, "deflate_on_oom": True}, "no balloon device"),
        ("PUT", "/mmds", {}, "no MMDS"),
        ("PUT", "/cpu-config", {}, "no CPU templates"),
        ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, "SendCtrlAltDel is for x86"),
        ("PUT", "/actions", {"action_type": "InstanceStart"}, "without a kernel"),
        ("PUT", "/actions", {"action_type": "Explode"}, "unknown action_type 'Explode'"),
        ("PUT", "/actions", {"action_type": "FlushMetrics"}, "PUT /metrics first"),
        ("PATCH", "/vm", {"state": "Paused"}, "has not been started"),
        ("PATCH", "/drives/a", {"drive_id": "a"}, "for a started microVM"),
    ],
)  # fmt: skip
def test_bad_requests_get_400_and_a_fault_message(api, method, path, body, message) -> None:
    sock, instance = api
    status, answer = request(sock, method, path, body)
    assert status == 400
    assert isinstance(answer, dict) and message in answer["fault_message"]
    assert request(sock, "GET", "/")[0] == 200  # and the API goes on
    assert instance.configs == []


def raw_exchange(sock, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(4096), b""))


def test_bad_json_and_bad_http_are_answered_not_fatal(api) -> None:
    sock, _ = api
    bad_json = b"PUT /boot-source HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope"
    answer = raw_exchange(sock, bad_json)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"fault_message": "the body is not valid JSON' in answer
    too_big = b"PUT /boot-source HTTP/1.1\r\nContent-Length: 999999\r\n\r\n{}"
    assert raw_exchange(sock, too_big).startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(sock, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert request(sock, "GET", "/")[0] == 200


def test_requests_on_one_kept_alive_connection(api) -> None:
    sock, _ = api
    one = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    answer = raw_exchange(sock, one * 3)
    assert answer.count(b"HTTP/1.1 200 OK") == 3


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path) -> None:
    sock = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # (a killed process's socket file: nobody listens)
    with ApiServer(sock, Api(Recorded()).handle) as server:
        server.start()
        with pytest.raises(UserError, match="another process is listening there"):
            ApiServer(sock, Api(Recorded()).handle)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a socket"):
        ApiServer(tmp_path / "file", Api(Recorded()).handle)


def test_firecracker_configuration_file_is_the_same_vm_as_the_api(kernel, disk, tmp_path) -> None:
    document = {
        "boot-source": {"kernel_image_path": str(kernel), "boot_args": "console=ttyS0 quiet"},
        "drives": [{"drive_id": "data", "path_on_host": str(disk), "is_root_device": False,
                    "is_read_only": True}],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "network-interfaces": [],
        "balloon": None,
    }  # fmt: skip
    api = Api(Recorded())
    api.load(document)
    from elvisor.config import vm_from_settings

    config = vm_from_settings(api.resources.settings())
    disks = (DiskConfig(disk, readonly=True),)
    assert config == VmConfig(
        kernel=kernel, cmdline="console=ttyAMA0 quiet", memory=64 << 20, disks=disks, rng=False,
        reboot=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}, "without a kernel"),
        ({"balloon": {"amount_mib": 1, "deflate_on_oom": False}}, "`balloon`: elvisor has no"),
        ({"boot-source": {}}, "missing field `kernel_image_path`"),
        ({"gpu": {}}, "unknown section `gpu`"),
        ({"drives": {}}, "expected an array"),
    ],
)
def test_bad_firecracker_configuration_files(tmp_path, document, message: str) -> None:
    config = tmp_path / "vm.json"
    config.write_text(json.dumps(document))
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "firecracker", "--no-api", "--config-file", str(config)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"elvisor: error: {config}: "), result.stderr
    assert message in lines[0]


def test_no_api_needs_a_configuration_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "firecracker", "--no-api"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--no-api needs --config-file" in result.stderr


def test_ctl_without_a_vm_is_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elvisor", "ctl", str(tmp_path / "none.sock"), "status"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr == f"elvisor: error: nothing listens on {tmp_path}/none.sock: is "
        "elvisor running with --api-sock?\n"
    )


def test_metrics_lines_and_the_logger_go_where_the_api_says(api, tmp_path) -> None:
    sock, _ = api
    metrics, log_file = tmp_path / "metrics.json", tmp_path / "elvisor.log"
    assert request(sock, "PUT", "/metrics", {"metrics_path": str(metrics)}) == (204, None)
    assert request(sock, "PUT", "/logger", {"log_path": str(log_file), "level": "warning",
                                            "show_level": True}) == (204, None)  # fmt: skip
    assert request(sock, "PUT", "/actions", {"action_type": "FlushMetrics"}) == (204, None)
    (line,) = metrics.read_text().splitlines()
    assert json.loads(line)["utc_timestamp_ms"] > 0  # (no VM yet: no counters)
    status, answer = request(sock, "PUT", "/metrics", {"metrics_path": str(metrics)})
    assert status == 400 and "already set up" in answer["fault_message"]  # type: ignore[index]
    import logging

    logger = logging.getLogger("elvisor.test")
    try:
        logger.info("not at this level")
        logger.warning("seen at this level")
        text = log_file.read_text()
        assert "WARNING" in text and "seen at this level" in text and "not at" not in text
    finally:  # (the logger is the process's: put it back)
        root = logging.getLogger("elvisor")
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        root.propagate = True
        root.setLevel(logging.NOTSET)
    status, answer = request(sock, "PUT", "/logger", {"level": "loud"})
    assert status == 400 and "level is one of" in answer["fault_message"]  # type: ignore[index]


def test_metrics_are_written_periodically_while_the_vm_runs(tmp_path, monkeypatch) -> None:
    import time

    from elvisor.api import telemetry
    from elvisor.vm import State

    class Running:
        state = State.RUNNING

        class vm:
            @staticmethod
            def metrics() -> dict[str, object]:
                return {"vcpus": [{"exits": {"KVM_EXIT_MMIO": 7}}]}

    monkeypatch.setattr(telemetry, "METRICS_PERIOD", 0.05)
    path = tmp_path / "metrics.json"
    metrics = telemetry.Metrics(path, Running)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while len(path.read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) >= 3 and lines[0]["vcpus"][0]["exits"]["KVM_EXIT_MMIO"] == 7
