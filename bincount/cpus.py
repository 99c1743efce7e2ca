"""The CPU cores this process may use: what every "auto" sizing (loader workers, inference
threads, rendering processes) starts from."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
