"""Several slots on one GPU pay only under CUDA MPS: the worker says so when the daemon's pipe is absent."""

from __future__ import annotations

from haares.worker_options import mps_running, slots_note


def test_mps_is_seen_by_its_control_pipe(tmp_path):
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert not mps_running(env)
    (tmp_path / "control").touch()
    assert mps_running(env)


def test_several_gpu_slots_without_mps_get_a_note():
    note = slots_note("0", 4, mps=False)
    assert note is not None and "--slots 4" in note and "nvidia-cuda-mps-control -d" in note


def test_no_note_for_one_slot_the_cpu_or_mps():
    assert slots_note("0", 1, mps=False) is None
    assert slots_note("cpu", 4, mps=False) is None
    assert slots_note("0", 4, mps=True) is None
