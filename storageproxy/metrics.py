"""What a volume's file system and block device say about it now (``GET /volume/performance-metric``):
``statvfs`` bytes and inodes, and I/O rates over a short sample when the volume sits on a
block device (the kernel's counters in ``/sys/dev/block/<major>:<minor>/stat``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

PERF_SAMPLE_SECONDS = 0.2
SECTOR_BYTES = 512  # the unit of the sector counts in /sys/dev/block/*/stat, whatever the device's


def _block_stat(path: Path, sysfs: Path) -> Path | None:
    """The kernel's I/O counters of the block device holding ``path``, if it is one (not tmpfs, overlay, NFS)."""
    dev = os.stat(path).st_dev
    stat_file = sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}" / "stat"
    return stat_file if stat_file.is_file() else None


def _read_counters(stat_file: Path) -> tuple[int, ...]:
    """(reads, sectors read, ms reading, writes, sectors written, ms writing) so far."""
    fields = [int(f) for f in stat_file.read_text().split()]
    return fields[0], fields[2], fields[3], fields[4], fields[6], fields[7]


def io_rates(before: tuple[int, ...], after: tuple[int, ...], seconds: float) -> dict:
    """Operations and bytes per second and the mean latency of an operation (microseconds)
    between two readings of a device's counters ``seconds`` apart."""
    reads, read_sectors, read_ms, writes, write_sectors, write_ms = (b - a for a, b in zip(before, after))
    return {
        "iops_read": reads / seconds,
        "iops_write": writes / seconds,
        "io_bytes_read": read_sectors * SECTOR_BYTES / seconds,
        "io_bytes_write": write_sectors * SECTOR_BYTES / seconds,
        "io_usec_read": 1000.0 * read_ms / reads if reads else 0.0,
        "io_usec_write": 1000.0 * write_ms / writes if writes else 0.0,
    }


def measure_volume(root: Path, sample_seconds: float = PERF_SAMPLE_SECONDS, sysfs: Path = Path("/sys")) -> dict:
    """What the volume's file system says now (``statvfs``: bytes and inodes) and, when it
    sits on a block device, its I/O rates over ``sample_seconds`` (from the kernel's counters)."""
    fs = os.statvfs(root)
    metric = {
        "capacity_bytes": fs.f_blocks * fs.f_frsize,
        "used_bytes": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
        "available_bytes": fs.f_bavail * fs.f_frsize,
        "inodes_total": fs.f_files,
        "inodes_used": fs.f_files - fs.f_ffree,
    }
    stat_file = _block_stat(root, sysfs)
    if stat_file is not None:
        start, before = time.monotonic(), _read_counters(stat_file)
        time.sleep(sample_seconds)
        after, seconds = _read_counters(stat_file), time.monotonic() - start
        metric.update(io_rates(before, after, seconds))
    return metric


