"""The CPUs a process may really use: cgroup v1 and v2 quotas read from fake cgroup trees."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskstack.common import cpu
from taskstack.common.cpu import cgroup_cpu_limit, usable_cpus

# /proc/self/mountinfo lines as a container (cgroup namespace) and a host show them.
V2_MOUNT = "30 23 0:26 / {mount} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "32 31 0:29 / {mount}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / {mount}/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / {mount}/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(tmp_path: Path, cgroup: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 mount under tmp_path with cpu.max files at the given cgroup paths."""
    mount = tmp_path / "sys/fs/cgroup"
    mount.mkdir(parents=True)
    for path, cpu_max in limits.items():
        write(mount / path.lstrip("/") / "cpu.max", cpu_max + "\n")
    write(tmp_path / "cgroup", f"0::{cgroup}\n")
    write(tmp_path / "mountinfo", V2_MOUNT.format(mount=mount))
    return tmp_path / "cgroup", tmp_path / "mountinfo"


def test_v2_quota_is_quota_over_period(tmp_path: Path) -> None:
    files = v2_tree(tmp_path, "/", {"/": "150000 100000"})
    assert cgroup_cpu_limit(*files) == 1.5


def test_v2_max_means_no_limit(tmp_path: Path) -> None:
    files = v2_tree(tmp_path, "/", {"/": "max 100000"})
    assert cgroup_cpu_limit(*files) is None


def test_v2_the_smallest_quota_on_the_way_up_bounds_the_process(tmp_path: Path) -> None:
    """A pod's quota sits on the pod's cgroup; the container's own may be unlimited."""
    files = v2_tree(
        tmp_path,
        "/kubepods.slice/pod1/container1",
        {
            "/kubepods.slice": "max 100000",
            "/kubepods.slice/pod1": "50000 100000",
            "/kubepods.slice/pod1/container1": "max 100000",
        },
    )
    assert cgroup_cpu_limit(*files) == 0.5


def test_v1_quota_and_minus_one(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    directory = mount / "cpu,cpuacct/docker/abc"
    write(directory / "cpu.cfs_quota_us", "200000\n")
    write(directory / "cpu.cfs_period_us", "100000\n")
    write(mount / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(mount / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(
        tmp_path / "cgroup",
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
    )
    write(tmp_path / "mountinfo", V1_MOUNTS.format(mount=mount))
    files = tmp_path / "cgroup", tmp_path / "mountinfo"
    assert cgroup_cpu_limit(*files) == 2.0
    write(directory / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(*files) is None


def test_a_bind_mounted_container_cgroup_is_the_mount_itself(tmp_path: Path) -> None:
    """Without a cgroup namespace, runtimes mount the container's own cgroup as the root."""
    mount = tmp_path / "sys/fs/cgroup"
    write(mount / "cpu.max", "100000 100000\n")
    write(tmp_path / "cgroup", "0::/kubepods/burstable/pod1/c1\n")
    write(
        tmp_path / "mountinfo",
        f"30 23 0:26 /kubepods/burstable/pod1/c1 {mount} ro - cgroup2 cgroup2 rw\n",
    )
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "mountinfo") == 1.0


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing") is None
    write(tmp_path / "cgroup", "0::/\n")
    write(tmp_path / "mountinfo", "")
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "mountinfo") is None


def test_usable_cpus_is_the_least_bound_rounded_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: None)
    assert usable_cpus() == 16
    assert usable_cpus(1.0) == 1  # a 1-CPU pod on a 16-core node
    assert usable_cpus(1.5) == 2
    assert usable_cpus(0.1) == 1  # never none
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 3.0)
    assert usable_cpus() == 3
    assert usable_cpus(4.0) == 3


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_process_pinned_to_one_cpu_counts_one() -> None:
    counted = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            "from taskstack.common.cpu import usable_cpus; print(usable_cpus())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert counted.stdout.strip() == "1"
