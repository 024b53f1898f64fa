"""How many CPUs this process may really use: its affinity, its cgroup's quota, its pod's limit.

`os.sched_getaffinity` counts the CPUs the process may be scheduled on, which
in a Kubernetes pod is usually every core of the node: a CPU limit is not an
affinity but a CFS quota (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` /
`cpu.cfs_period_us` in v1). A pod limited to one CPU on a 16-core node that
sizes a thread pool by its affinity runs 16 threads into one CPU's quota; the
whole cgroup is then throttled for most of each period, and even requests that
need a millisecond (the kubelet's /livez) wait for the next one.

The quota is read the way the JVM and the Go runtime read it: the process's
cgroup from /proc/self/cgroup, where that hierarchy is mounted from
/proc/self/mountinfo, and the smallest quota on the path from the process's
cgroup up to the mount's root (a parent's quota bounds its children).
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_SELF_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class _Hierarchy:
    """Where one cgroup hierarchy with the cpu controller is mounted, and this process in it."""

    version: int
    mount_point: Path
    directory: Path  # the process's own cgroup directory under the mount point


def cgroup_cpu_limit(
    cgroup_file: Path = PROC_SELF_CGROUP, mountinfo_file: Path = PROC_SELF_MOUNTINFO
) -> float | None:
    """The CPUs the process's cgroup quota allows (1.5 for 150 ms per 100 ms); None when
    no quota applies, or when the cgroup files cannot be read (not Linux, no /proc)."""
    try:
        cgroups = cgroup_file.read_text()
        mounts = mountinfo_file.read_text()
    except OSError:
        return None
    limits = [
        limit
        for hierarchy in _cpu_hierarchies(cgroups, mounts)
        if (limit := _smallest_quota(hierarchy)) is not None
    ]
    return min(limits, default=None)


def usable_cpus(limit: float | None = None) -> int:
    """Whole CPUs the process may use: the least of its affinity, its cgroup's quota and
    ``limit`` (a CPU limit known otherwise, e.g. from the Downward API), rounded up
    (a 1.5-CPU limit allows two threads to run, as Kubernetes' own rounding does)
    and never below 1."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cpus = float(os.cpu_count() or 1)
    for bound in (cgroup_cpu_limit(), limit):
        if bound is not None:
            cpus = min(cpus, bound)
    return max(1, math.ceil(cpus))


def _cpu_hierarchies(cgroups: str, mounts: str) -> list[_Hierarchy]:
    """The hierarchies that can carry a CPU quota: cgroup v2's unified one, and v1's with
    the cpu controller (a hybrid machine has both; only the one with the controller
    holds quota files)."""
    paths: dict[str, str] = {}  # "cgroup2", or "cpu" for v1's cpu controller -> cgroup path
    for line in cgroups.splitlines():
        hierarchy_id, controllers, path = line.split(":", 2)
        if hierarchy_id == "0" and controllers == "":
            paths["cgroup2"] = path
        elif "cpu" in controllers.split(","):
            paths["cpu"] = path
    found = []
    for line in mounts.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        root, mount_point = fields[3], fields[4]
        filesystem, super_options = fields[separator + 1], fields[separator + 3]
        if filesystem == "cgroup2" and "cgroup2" in paths:
            key, version = "cgroup2", 2
        elif filesystem == "cgroup" and "cpu" in super_options.split(","):
            key, version = "cpu", 1
        else:
            continue
        relative = _relative(paths[key], root)
        if relative is None:
            continue
        if ".." in Path(relative).parts:
            # A cgroup outside the namespace's view (a process moved after the
            # namespace was made): the nearest place the mount shows is its root.
            relative = ""
        mount = Path(_unescape(mount_point))
        found.append(_Hierarchy(version, mount, mount / relative))
    return found


def _relative(cgroup_path: str, mount_root: str) -> str | None:
    """The process's cgroup relative to what the mount shows; None when the mount shows
    another part of the hierarchy. With a cgroup namespace, or a container runtime's bind
    mount of the container's own cgroup, the mount's root is the process's cgroup itself."""
    if mount_root == "/":
        return cgroup_path.lstrip("/")
    if cgroup_path == mount_root:
        return ""
    if cgroup_path.startswith(mount_root.rstrip("/") + "/"):
        return cgroup_path[len(mount_root.rstrip("/")) + 1 :]
    return None


def _smallest_quota(hierarchy: _Hierarchy) -> float | None:
    smallest: float | None = None
    directory = hierarchy.directory
    while True:
        quota = _quota_v2(directory) if hierarchy.version == 2 else _quota_v1(directory)
        if quota is not None:
            smallest = quota if smallest is None else min(smallest, quota)
        if directory == hierarchy.mount_point or directory == directory.parent:
            return smallest
        directory = directory.parent


def _quota_v2(directory: Path) -> float | None:
    """cpu.max is "<quota> <period>" in microseconds, or "max <period>" for none."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if quota == "max" or int(period) <= 0:
        return None
    return int(quota) / int(period)


def _quota_v1(directory: Path) -> float | None:
    """cpu.cfs_quota_us is -1 for none."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def _unescape(field: str) -> str:
    """mountinfo writes a space in a path as \\040 (and tab, newline, backslash alike)."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field
