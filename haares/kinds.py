"""Job kinds: how the worker starts a child for each `jobs.kind`. Production ships one kind, `train`.

Other kinds are registered by a Python file named in HAARES_KINDS_FILE (paths separated by os.pathsep)
that calls `register_kind` when the worker loads it; the test suite registers its `sleep` kind this
way (tests/fixtures/sleep_kind.py), so that real `haares worker` processes started by tests run it too.
A worker claims only the kinds registered in its process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from haares.errors import HaaresError

KINDS_FILE_ENV = "HAARES_KINDS_FILE"


@dataclass(frozen=True)
class JobKind:
    """One kind of job: the child's argv for a config, and what the worker and time limit need to know."""

    name: str
    argv: Callable[[str], list[str]]
    """The child's command line for a job's config_json (protocol: haares.protocol)."""
    total_steps: Callable[[dict], int] = lambda config: 0
    """Steps the job runs in all (0: not a stepped job), for the live progress line."""
    fixed_seconds: Callable[[dict], float] | None = None
    """How long a job of this kind takes, when its config says (time limit); None: measured (train)."""
    resumes: bool = False
    """Whether attempts resume from checkpoints (hand-off across hosts applies)."""


def _train_argv(config_json: str) -> list[str]:
    return [sys.executable, "-m", "haares.child", "train", config_json]


def _train_steps(config: dict) -> int:
    return int(config.get("train", {}).get("steps", 0))


TRAIN = JobKind("train", _train_argv, _train_steps, resumes=True)

JOB_KINDS: dict[str, JobKind] = {"train": TRAIN}
"""The kinds this process can run, by name; extended by register_kind."""

_loaded: set[str] = set()


def register_kind(kind: JobKind) -> None:
    """Make `kind` runnable by workers in this process (replacing one of the same name)."""
    JOB_KINDS[kind.name] = kind


def load_kinds_files() -> None:
    """Import each file named in HAARES_KINDS_FILE once (each calls register_kind); HaaresError if one fails."""
    for path in filter(None, os.environ.get(KINDS_FILE_ENV, "").split(os.pathsep)):
        if path in _loaded:
            continue
        spec = importlib.util.spec_from_file_location(f"haares_kinds_{len(_loaded)}", path)
        if spec is None or spec.loader is None or not Path(path).is_file():
            raise HaaresError(f"{KINDS_FILE_ENV}: no Python file at {path}")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        _loaded.add(path)


def job_kind(name: str) -> JobKind:
    """The registered kind `name`; HaaresError for one this process does not know."""
    try:
        return JOB_KINDS[name]
    except KeyError:
        raise HaaresError(f"unknown job kind {name!r}; this worker runs {', '.join(sorted(JOB_KINDS))}") from None


def total_steps(name: str, config_json: str) -> int:
    """Steps a job of kind `name` runs in all, from its config (0 for a kind that does not step)."""
    return job_kind(name).total_steps(json.loads(config_json))
