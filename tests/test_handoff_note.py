"""The note a worker writes when an attempt cannot resume where its job stopped: a checkpoint on
another host (after its grace period) and a checkpoint of this host's name that is gone (a machine
that came back bare) are told apart, and a job with no checkpoint recorded gives no note."""

from __future__ import annotations

from haares.jobs.lease import Lease
from haares.worker_queue import handoff_note, run_dir_for


def lease(ckpt_host: str, step: int = 958) -> Lease:
    return Lease(job_id=1, run_key="abc", kind="train", token="t", attempt_no=2, config_json="{}",
                 method="haares", seed=42, step=step, ckpt_host=ckpt_host, ckpt_dir="/tmp/hh/runs/abc",
                 ckpt_step=step, start_step=step)


def test_other_hosts_checkpoint_says_it_waited(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("HAARES_HOME", str(tmp_path))
    note = handoff_note(lease("host-a"), host="host-b", grace_s=600)
    assert note is not None and "on host host-a" in note and "after waiting 600 s" in note


def test_own_hosts_missing_checkpoint_does_not_claim_a_wait(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("HAARES_HOME", str(tmp_path))
    note = handoff_note(lease("vm"), host="vm", grace_s=600)
    assert note is not None and "recorded on this host" in note and "restarted from step 0" in note
    assert "waiting" not in note


def test_no_checkpoint_recorded_gives_no_note(tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("HAARES_HOME", str(tmp_path))
    assert handoff_note(lease("vm", step=0), host="vm", grace_s=600) is None
    assert not run_dir_for("abc").exists()
