"""Resource discovery: CPU affinity and cgroup quotas, memory limits, GPUs through a fake NVML, stats."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from fake_nvml import TWO_GPUS, FakeDriverNotLoaded, FakeLibraryNotFound, FakeNVML, FakeNVMLError

from agents.daemon.discovery import (
    GpuProbe,
    HostStats,
    cgroup_cpu_limit,
    cgroup_memory_limit,
    cpu_capacity,
    discover,
    kernel_gpu_stats,
    memory_capacity,
)

ROOT = Path(__file__).resolve().parents[3]
GiB = 1024**3


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def v2_tree(tmp_path: Path, own: str = "/", files: dict[str, str] | None = None) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory\n")
    for rel, text in (files or {}).items():
        write(root / rel, text)
    self_cgroup = write(tmp_path / "self-cgroup", f"0::{own}\n")
    return root, self_cgroup


def v1_tree(tmp_path: Path, files: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        write(root / rel, text)
    (root / "memory").mkdir(parents=True, exist_ok=True)
    self_cgroup = write(tmp_path / "self-cgroup", f"4:memory:{own}\n2:cpu,cpuacct:{own}\n0::/\n")
    return root, self_cgroup


def meminfo(tmp_path: Path, total: int, available: int | None = None) -> Path:
    available = total // 2 if available is None else available
    return write(tmp_path / "meminfo", f"MemTotal:       {total // 1024} kB\nMemFree:        1 kB\n"
                                       f"MemAvailable:   {available // 1024} kB\n")


# -- CPUs ---------------------------------------------------------------------------------------

def test_it_honours_the_cgroup_v2_cpu_quota(tmp_path):
    root, own = v2_tree(tmp_path, files={"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root, own) == Decimal("1.5")
    assert cpu_capacity({0, 1, 2, 3}, root, own) == Decimal("1.5")


def test_an_unlimited_cgroup_v2_quota_leaves_the_affinity_mask(tmp_path):
    root, own = v2_tree(tmp_path, files={"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root, own) is None
    assert cpu_capacity({0, 1, 2, 3}, root, own) == 4


def test_the_tightest_quota_along_the_cgroup_path_wins(tmp_path):
    root, own = v2_tree(tmp_path, own="/kubepods/pod1", files={
        "cpu.max": "max 100000\n", "kubepods/cpu.max": "200000 100000\n", "kubepods/pod1/cpu.max": "max 100000\n",
    })
    assert cgroup_cpu_limit(root, own) == 2
    assert cpu_capacity(range(8), root, own) == 2


def test_it_honours_the_cgroup_v1_cfs_quota(tmp_path):
    root, own = v1_tree(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                                   "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root, own) == Decimal("0.5")
    root2, own2 = v1_tree(tmp_path / "unlimited", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root2, own2) is None
    assert cpu_capacity({0, 1}, root2, own2) == 2


def test_the_affinity_mask_caps_a_larger_quota(tmp_path):
    root, own = v2_tree(tmp_path, files={"cpu.max": "400000 100000\n"})
    assert cpu_capacity({3}, root, own) == 1


def test_the_real_affinity_is_used_by_default(tmp_path):
    root, own = v2_tree(tmp_path)
    assert cpu_capacity(None, root, own) == len(os.sched_getaffinity(0))


# -- memory -------------------------------------------------------------------------------------

def test_it_honours_the_cgroup_v2_memory_limit(tmp_path):
    root, own = v2_tree(tmp_path, own="/app", files={"memory.max": "max\n", "app/memory.max": f"{GiB}\n"})
    info = meminfo(tmp_path, 4 * GiB)
    assert cgroup_memory_limit(root, own) == GiB
    assert memory_capacity(info, root, own) == GiB


def test_an_unlimited_cgroup_leaves_meminfo(tmp_path):
    root, own = v2_tree(tmp_path, files={"memory.max": "max\n"})
    assert memory_capacity(meminfo(tmp_path, 4 * GiB), root, own) == 4 * GiB
    v1root, v1own = v1_tree(tmp_path / "v1", {"memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert cgroup_memory_limit(v1root, v1own) is None


def test_it_honours_the_cgroup_v1_memory_limit(tmp_path):
    root, own = v1_tree(tmp_path, {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                   "memory/docker/abc/memory.limit_in_bytes": f"{2 * GiB}\n"}, own="/docker/abc")
    assert memory_capacity(meminfo(tmp_path, 8 * GiB), root, own) == 2 * GiB


def test_reservations_and_caps_shape_the_offered_capacity(tmp_path):
    root, own = v2_tree(tmp_path, files={"cpu.max": "max 100000\n", "memory.max": "max\n"})
    info = meminfo(tmp_path, 8 * GiB)
    resources = discover(reserved_cpu=Decimal(1), reserved_mem=GiB, affinity=range(4), cgroup_root=root,
                         self_cgroup=own, meminfo=info)
    assert resources.capacity() == {"cpu": "3", "mem": str(7 * GiB)}
    assert resources.slot_types() == {"cpu": "count", "mem": "bytes"}
    assert resources.compute_plugins() == {} and resources.devices() == []
    capped = discover(cpu_limit=Decimal("1.5"), mem_limit=2 * GiB, affinity=range(4), cgroup_root=root,
                      self_cgroup=own, meminfo=info)
    assert capped.capacity() == {"cpu": "1.5", "mem": str(2 * GiB)}


# -- GPUs through a fake NVML -------------------------------------------------------------------

def pci_tree(tmp_path: Path) -> Path:
    root = tmp_path / "pci"
    write(root / "0000:19:00.0" / "numa_node", "0\n")
    write(root / "0000:3b:00.0" / "numa_node", "1\n")
    return root


def test_two_gpus_become_cuda_device_slots_with_their_details(tmp_path):
    nvml = FakeNVML(TWO_GPUS)
    probe = GpuProbe(nvml=nvml, pci_root=pci_tree(tmp_path))
    root, own = v2_tree(tmp_path)
    resources = discover(gpu_probe=probe, affinity=range(2), cgroup_root=root, self_cgroup=own,
                         meminfo=meminfo(tmp_path, GiB))
    assert resources.capacity()["cuda.device"] == "2"
    assert resources.slot_types()["cuda.device"] == "count"
    assert resources.compute_plugins() == {"cuda": {"driver_version": "550.54.15", "cuda_version": "12.4",
                                                    "nvml_version": None}}
    assert resources.devices() == [
        {"slot": "cuda.device", "id": "0", "uuid": "GPU-aaaa-0000", "model": "NVIDIA H100 80GB HBM3",
         "memory": 85520809984, "numa_node": 0, "bus_id": "00000000:19:00.0"},
        {"slot": "cuda.device", "id": "1", "uuid": "GPU-bbbb-1111", "model": "NVIDIA H100 80GB HBM3",
         "memory": 85520809984, "numa_node": 1, "bus_id": "00000000:3B:00.0"},
    ]
    assert probe.stats() == [{"id": "0", "util": "3", "mem_used": "1048576"},
                             {"id": "1", "util": "97", "mem_used": "2048"}]
    probe.close()
    assert nvml.shutdowns == 1


def test_the_device_mask_takes_indices_or_uuids(tmp_path):
    by_index = GpuProbe(nvml=FakeNVML(TWO_GPUS), mask=["1"], pci_root=tmp_path).discover()
    assert [d.uuid for d in by_index.devices] == ["GPU-bbbb-1111"]
    assert by_index.devices[0].index == 1 and by_index.devices[0].numa_node is None
    by_uuid = GpuProbe(nvml=FakeNVML(TWO_GPUS), mask=["gpu-aaaa-0000"]).discover()
    assert [d.to_wire()["id"] for d in by_uuid.devices] == ["0"]


def test_a_mask_matching_nothing_means_no_cuda_slot(tmp_path):
    nvml = FakeNVML(TWO_GPUS)
    assert GpuProbe(nvml=nvml, mask=["7"]).discover() is None
    assert nvml.shutdowns == 1


def test_a_missing_nvml_library_quietly_means_no_cuda_slot(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="agents.daemon")
    for error in (FakeLibraryNotFound("NVML Shared Library Not Found"), FakeDriverNotLoaded("Driver Not Loaded")):
        probe = GpuProbe(nvml=FakeNVML(TWO_GPUS, init_error=error))
        assert probe.discover() is None
        assert probe.stats() == []
    root, own = v2_tree(tmp_path)
    resources = discover(gpu_probe=GpuProbe(nvml=FakeNVML(init_error=FakeLibraryNotFound("gone"))),
                         affinity=range(2), cgroup_root=root, self_cgroup=own, meminfo=meminfo(tmp_path, GiB))
    assert "cuda.device" not in resources.capacity()
    assert resources.devices() == [] and resources.compute_plugins() == {}
    assert all(r.levelno <= logging.DEBUG and not r.exc_info for r in caplog.records)


def test_an_nvml_error_during_init_means_no_cuda_slot(tmp_path, caplog):
    probe = GpuProbe(nvml=FakeNVML(TWO_GPUS, init_error=FakeNVMLError("Unknown Error")))
    assert probe.discover() is None
    assert not any(r.exc_info for r in caplog.records)


def test_zero_devices_mean_no_cuda_slot():
    nvml = FakeNVML([])
    assert GpuProbe(nvml=nvml).discover() is None
    assert nvml.initialised == 1 and nvml.shutdowns == 1


def test_the_real_nvml_without_a_gpu_is_quiet(caplog):
    caplog.set_level(logging.DEBUG)
    probe = GpuProbe()  # the real pynvml: no driver on this machine
    info = probe.discover()
    if info is None:
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    probe.close()


# -- stats and the CLI --------------------------------------------------------------------------

def test_host_stats_report_cpu_utilisation_and_used_memory(tmp_path):
    stat = write(tmp_path / "stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0\ncpu1 50 0 50 400 0\n")
    stats = HostStats(proc_stat=stat, meminfo=meminfo(tmp_path, 4 * GiB, available=3 * GiB))
    assert stats.snapshot() == {"cpu_util": "0", "mem_used": str(GiB)}
    write(tmp_path / "stat", "cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 75 0 75 450 0 0 0 0\ncpu1 75 0 75 450 0\n")
    # 100 busy ticks of 200 on 2 CPUs: 100 % of one core
    assert stats.snapshot()["cpu_util"] == "100"


def test_the_discover_flag_prints_the_capacity_as_json():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_AGENT_")}
    result = subprocess.run([sys.executable, "-m", "agents.daemon", "--discover", "--reserved-cpu", "0",
                             "--mem-limit", "1g", "--agent-id", "discover-test"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["capacity"]["mem"] == str(GiB)
    assert Decimal(data["capacity"]["cpu"]) > 0
    assert data["agent_id"] == "discover-test"
    assert data["slot_types"]["cpu"] == "count"


def test_discover_json_uses_the_injected_nvml_and_the_mask():
    from agents.daemon.cli import discover_json
    from agents.daemon.config import AgentConfig

    nvml = FakeNVML(TWO_GPUS)
    data = discover_json(AgentConfig(agent_id="gpu-node", gpu_devices=("1",)), nvml=nvml)
    assert data["capacity"]["cuda.device"] == "1"
    assert [d["uuid"] for d in data["devices"]] == ["GPU-bbbb-1111"]
    assert data["compute_plugins"]["cuda"]["cuda_version"] == "12.4"
    assert data["gpu_stats"] == [{"id": "1", "util": "97", "mem_used": "2048"}]
    assert nvml.shutdowns == 1


# -- per-kernel GPU figures ---------------------------------------------------------------------

def test_a_kernels_gpu_figures_are_the_mean_utilisation_and_the_memory_used_on_its_gpus():
    probe = GpuProbe(nvml=FakeNVML(TWO_GPUS))
    probe.discover()
    readings = probe.readings()
    assert [(r.uuid, r.util, r.mem_used) for r in readings] == [("GPU-aaaa-0000", 3, 1048576),
                                                               ("GPU-bbbb-1111", 97, 2048)]
    assert kernel_gpu_stats(readings, ["GPU-aaaa-0000", "GPU-bbbb-1111"]) == {"cuda_util": "50",
                                                                             "cuda_mem": str(1048576 + 2048)}
    assert kernel_gpu_stats(readings, ["gpu-bbbb-1111"]) == {"cuda_util": "97", "cuda_mem": "2048"}
    three = TWO_GPUS + [dict(TWO_GPUS[0], uuid="GPU-cccc-2222", util=1, used=0)]
    probe3 = GpuProbe(nvml=FakeNVML(three))
    probe3.discover()
    assert kernel_gpu_stats(probe3.readings(), ["GPU-aaaa-0000", "GPU-bbbb-1111", "GPU-cccc-2222"])["cuda_util"] \
        == "33.7"


def test_a_kernel_without_gpus_or_bound_to_an_unread_gpu_gets_no_gpu_figures(caplog):
    caplog.set_level(logging.DEBUG, logger="agents.daemon")
    gpus = [TWO_GPUS[0], dict(TWO_GPUS[1], broken=True)]
    probe = GpuProbe(nvml=FakeNVML(gpus))
    probe.discover()
    readings = probe.readings()
    assert [r.uuid for r in readings] == ["GPU-aaaa-0000"]  # the lost GPU is left out
    assert probe.stats() == [{"id": "0", "util": "3", "mem_used": "1048576"}]
    assert kernel_gpu_stats(readings, []) == {}
    assert kernel_gpu_stats(readings, ["GPU-bbbb-1111"]) == {}
    assert kernel_gpu_stats(readings, ["GPU-aaaa-0000", "GPU-bbbb-1111"]) == {}  # no partial figure
    assert kernel_gpu_stats(readings, ["GPU-aaaa-0000"]) == {"cuda_util": "3", "cuda_mem": "1048576"}
    assert all(r.levelno <= logging.DEBUG for r in caplog.records)
    assert GpuProbe(nvml=FakeNVML(TWO_GPUS)).readings() == []  # never discovered: nothing to read
