"""Atomic, checksummed training checkpoints and the RNG state they carry.

A checkpoint is `step_<step>.ckpt` in a run's checkpoint folder: a torch.save payload followed by a
fixed-size trailer holding its length and sha256, so a truncated or corrupt file is detected and
skipped (with a warning), never loaded. Writes go to a temp file, fsync, os.replace, fsync of the
folder; the newest `keep` checkpoints are kept. Knows nothing of models, optimizers or the queue.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import torch

from haares.checkpoint_names import checkpoint_path, list_checkpoints
from haares.durable import fsync_dir

_TRAILER_MAGIC = b"\nHAARES-CKPT v1 sha256="


class CorruptCheckpoint(Exception):
    """A checkpoint file failed its length or checksum test, or could not be unpickled."""


def save_checkpoint(ckpt_dir: Path, *, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` atomically as the checkpoint of `step`; delete all but the newest `keep`.

    A crash at any point leaves either the previous set of checkpoints or the new one, never a
    half-written file under a checkpoint name (flax PR #1200).
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(ckpt_dir, step)
    with _atomic_open(final, "wb") as raw:
        writer = _HashingWriter(raw)
        torch.save(state, writer)
        raw.write(_trailer(writer.sha.hexdigest(), writer.length))
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in ckpt_dir.glob(".step_*.ckpt.tmp*"):
        # Temp files of writers that died mid-write (ours would have been renamed by now).
        if not stale.name.endswith(f".tmp{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return final


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint onto the CPU after checking its length and sha256; CorruptCheckpoint if bad."""
    data = Path(path).read_bytes()
    tail = len(_trailer("0" * 64, 0))
    if len(data) < tail:
        raise CorruptCheckpoint(f"{path}: {len(data)} bytes, shorter than its trailer (truncated)")
    payload, trailer = data[:-tail], data[-tail:]
    if not trailer.startswith(_TRAILER_MAGIC):
        raise CorruptCheckpoint(f"{path}: no checksum trailer (truncated or not a haares checkpoint)")
    digest, length = _parse_trailer(trailer)
    if length != len(payload):
        raise CorruptCheckpoint(f"{path}: payload is {len(payload)} bytes, trailer says {length}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path}: sha256 mismatch (corrupt file)")
    try:
        # weights_only: tensors, containers and plain scalars only; rng_state() is built to fit.
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means unusable
        raise CorruptCheckpoint(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from exc


def load_latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that passes its checks, as (path, state); None if there is none.

    Each newer file that fails is reported with a `warnings.warn` (RuntimeWarning) and skipped.
    """
    for _step, path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return path, read_checkpoint(path)
        except (CorruptCheckpoint, OSError) as exc:
            warnings.warn(f"skipping unusable checkpoint: {exc}", RuntimeWarning, stacklevel=2)
    return None


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (temp file, fsync, os.replace, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextmanager
def _atomic_open(path: Path, mode: str, **kwargs: Any) -> Iterator[IO]:
    """A handle on a temp file beside `path` that replaces `path` only once fully written and
    fsynced; on any error the temp file is removed and `path` is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a training step may draw from: torch CPU, the CUDA device's, numpy's and Python's.

    Plain tensors, lists and ints only, so checkpoints load with `weights_only=True`.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` captured (the CUDA part only when training on CUDA)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- helpers -----------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through (torch.save streams into it)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.length += view.nbytes
        return self.raw.write(view)

    def flush(self) -> None:
        self.raw.flush()


def _trailer(hexdigest: str, length: int) -> bytes:
    return _TRAILER_MAGIC + hexdigest.encode() + f" bytes={length:020d}\n".encode()


def _parse_trailer(trailer: bytes) -> tuple[str, int]:
    body = trailer[len(_TRAILER_MAGIC):].decode("ascii", errors="replace")
    digest, _, rest = body.partition(" bytes=")
    try:
        return digest, int(rest.strip())
    except ValueError:
        return digest, -1
