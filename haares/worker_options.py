"""How one worker runs: its options and its device, checked once before anything is claimed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from haares.errors import HaaresError

if TYPE_CHECKING:
    from haares.timelimit import Deadline

_GPU_SPEC = re.compile(r"^\d+(,\d+)*$")


def parse_gpu(spec: str) -> str:
    """Normalise a `--gpu` value: "cpu" or comma-separated GPU indices ("0", "0,1").

    The result is what the child's CUDA_VISIBLE_DEVICES is set to ("" for cpu) and what the
    attempt records as its gpu. Anything else raises HaaresError.
    """
    text = spec.strip().lower()
    if text == "cpu":
        return "cpu"
    if _GPU_SPEC.match(text):
        return ",".join(str(int(part)) for part in text.split(","))
    raise HaaresError(f"--gpu must be 'cpu' or GPU indices such as 0 or 0,1; got {spec!r}")


def visible_gpu_count() -> int:
    """How many CUDA devices a child can be bound to here, as torch in a fresh process counts them.

    A subprocess, because the worker itself never imports torch; CUDA_VISIBLE_DEVICES is removed since
    the worker sets it per child. 0 when torch has no CUDA or the probe fails. Tests monkeypatch this.
    """
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def check_gpu_visible(gpu: str) -> None:
    """Refuse (HaaresError) a normalised --gpu naming a GPU this host does not have; "cpu" always passes."""
    if gpu == "cpu":
        return
    count = visible_gpu_count()
    missing = [i for i in gpu.split(",") if int(i) >= count]
    if missing:
        seen = f"{count} GPU(s), indices 0 to {count - 1}" if count else "no CUDA GPU (or a CPU-only torch build)"
        raise HaaresError(f"--gpu {gpu}: this host has no GPU {', '.join(missing)}; torch sees {seen}. "
                          "Use --gpu cpu, or see the README for a CUDA build of torch")



def mps_running(env: Mapping[str, str] | None = None) -> bool:
    """True when a CUDA MPS control daemon's pipe exists (CUDA_MPS_PIPE_DIRECTORY, default /tmp/nvidia-mps)."""
    env = os.environ if env is None else env
    return (Path(env.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def slots_note(gpu: str, slots: int, *, mps: bool) -> str | None:
    """A warning for several slots on one GPU without CUDA MPS: the children then time-slice the GPU
    (measured on an H200: four small-48L children 0.99x the tokens/s of one; under MPS, four ran side by side)."""
    if slots < 2 or gpu == "cpu" or mps:
        return None
    return (f"--slots {slots} on one GPU without CUDA MPS: the children take turns on the GPU, about one "
            "child's throughput in all; start `nvidia-cuda-mps-control -d` before the worker (docs/slurm.md)")


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs. Times are seconds; tests scale the defaults by about 1/100."""

    gpu: str
    """Normalised --gpu value (see parse_gpu)."""
    slots: int = 1
    """Children (each its own claimed job) at once on the one device."""
    max_jobs: int | None = None
    """Stop claiming after this many claims (--once is 1); None: no limit."""
    wait: bool = False
    """Keep polling an empty queue instead of exiting."""
    heartbeat_s: float = 30.0
    lease_ttl_s: float = 180.0
    poll_s: float = 10.0
    """Idle claim poll; each wait is jittered by +-20%."""
    grace_s: float = 120.0
    """SIGTERM to SIGKILL, for preemption and cancellation."""
    lost_grace_s: float = 5.0
    """SIGTERM to SIGKILL for a child whose lease was taken over (another attempt may be running)."""
    kinds: tuple[str, ...] | None = None
    """Job kinds to claim; None: every kind registered in this process (haares.kinds)."""
    time_limit_s: float | None = None
    """--time-limit: claim only what can finish, preempt every child checkpoint_margin_s before it."""
    checkpoint_margin_s: float | None = None
    """None: haares.timelimit.default_margin (60 s, at most a fifth of the limit)."""
    claim_fraction: float = 0.5
    """Under a time limit, a job with no time estimate is claimed only while more than this fraction remains."""
    checkpoint_grace_s: float = 600.0
    """How long a job whose checkpoint another host holds waits for that host before this one restarts it."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise HaaresError(f"--slots must be at least 1, got {self.slots}")
        if self.max_jobs is not None and self.max_jobs < 1:
            raise HaaresError(f"--max-jobs must be at least 1, got {self.max_jobs}")
        if self.heartbeat_s <= 0 or self.lease_ttl_s < 2 * self.heartbeat_s:
            raise HaaresError(
                f"--lease-ttl ({self.lease_ttl_s:g} s) must be at least twice --heartbeat ({self.heartbeat_s:g} s), "
                "and both positive; the defaults are 180 and 30"
            )
        if self.poll_s <= 0:
            raise HaaresError(f"--poll must be positive, got {self.poll_s:g}")
        if self.time_limit_s is not None:
            self.deadline()  # validates the margin and fraction against the limit

    def deadline(self) -> Deadline | None:
        """A fresh haares.timelimit.Deadline starting now, or None without --time-limit."""
        if self.time_limit_s is None:
            return None
        from haares.timelimit import Deadline, default_margin

        margin = self.checkpoint_margin_s
        return Deadline(self.time_limit_s, default_margin(self.time_limit_s) if margin is None else margin,
                        self.claim_fraction)

    @property
    def reap_every_s(self) -> float:
        """Reaper period: 60 s by default, a third of the TTL when that is shorter."""
        return min(60.0, self.lease_ttl_s / 3)
