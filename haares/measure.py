"""Honest measurement for training runs: a pausable training clock, peak memory, device and code provenance.

The clock synchronises CUDA before every reading, so queued kernels are charged to the right interval;
evaluation and checkpointing are excluded by pausing it. Knows nothing of models or the queue.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from typing import Any

import torch

import haares
from haares.provenance import git_state


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on `device` (no-op on the CPU) so a clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainClock:
    """Accumulates seconds while running; `pause()`/`resume()` bracket eval and checkpoint time.

    `total` (seconds) survives resumes: it starts from the value stored in a checkpoint.
    """

    def __init__(self, device: torch.device, *, total: float = 0.0) -> None:
        self.device = device
        self.total = total
        self._started: float | None = None

    def resume(self) -> None:
        """Start counting (synchronising first, so earlier device work is not charged)."""
        if self._started is None:
            synchronize(self.device)
            self._started = time.perf_counter()

    def pause(self) -> float:
        """Stop counting; returns the running total in seconds."""
        if self._started is not None:
            synchronize(self.device)
            self.total += time.perf_counter() - self._started
            self._started = None
        return self.total

    def read(self) -> float:
        """The total so far, including the open interval, without pausing (synchronises)."""
        if self._started is None:
            return self.total
        synchronize(self.device)
        return self.total + time.perf_counter() - self._started


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process so far: CUDA max_memory_allocated on GPU, peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_name(device: torch.device | str) -> str:
    """A human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (x86_64, 2 threads)'.

    The one place haares names a device: run summaries, eval rows and `haares bench` show this name;
    an attempt records `device_identity`, the same GPU name plus its UUID.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def device_identity(device: torch.device | str) -> str:
    """Which device exactly, for the attempt's record: the GPU's name plus ' GPU-<uuid>' (identical GPUs
    of one host told apart), or 'cpu'."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    name = device_name(device)
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return f"{name} GPU-{uuid}" if uuid is not None else name


def code_version() -> dict[str, Any]:
    """Provenance of the code that trained a run: package version, git SHA and dirty flag, torch version.

    git fields are None when the package does not sit in a git checkout (an installed wheel).
    """
    sha, dirty = git_state()
    return {
        "haares": haares.__version__,
        "git_sha": sha,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }

