"""Checks the worker-child protocol and the outcome mapping without processes: an event survives the
round trip through the pipe format, an undeclared type or field is refused on both sides, a line that
is not an event is a ProtocolError, `outcome_of` maps exit codes, events and stop reasons as
docs/worker.md says, and production knows the `train` kind only (the tests add `sleep`).
"""

from __future__ import annotations

import os

import pytest

from haares import protocol
from haares.outcome import outcome_of
from haares.protocol import EXIT_DEVICE, EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED, EXIT_TERMINAL, EventType


def test_an_event_round_trips_through_the_pipe():
    read_fd, write_fd = os.pipe()
    protocol.write_event(write_fd, EventType.CHECKPOINT, step=20, path="/runs/x/step_00000020.ckpt")
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        (line,) = pipe.readlines()
    assert protocol.decode(line) == (EventType.CHECKPOINT, {"step": 20, "path": "/runs/x/step_00000020.ckpt"})


def test_undeclared_fields_are_refused_when_written_and_when_read():
    with pytest.raises(ValueError, match="no field"):
        protocol.encode(EventType.START, step=0, stage="warmup")
    with pytest.raises(protocol.ProtocolError, match="undeclared"):
        protocol.decode(b'{"type": "start", "step": 0, "stage": "warmup"}\n')


@pytest.mark.parametrize("line", [b"not json\n", b'{"type": "launch"}\n', b'["start"]\n', b'{"step": 3}\n'])
def test_a_line_that_is_not_a_declared_event_is_a_protocol_error(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(line)


def test_every_event_type_declares_its_fields():
    assert set(protocol.EVENT_FIELDS) == set(EventType)


def _outcome(code, **kw):  # noqa: ANN001, ANN202
    args = dict(result=None, error=None, stop_reason=None, preempted_step=None, checkpoint_step=None)
    return outcome_of(code, **{**args, **kw})


def test_a_result_and_exit_0_succeed_at_the_final_step():
    ended = _outcome(EXIT_OK, result={"final_step": 120}, checkpoint_step=100)
    assert (ended.outcome, ended.end_step, ended.result) == ("succeeded", 120, {"final_step": 120})


def test_exit_0_without_a_result_is_a_failure():
    ended = _outcome(EXIT_OK)
    assert (ended.outcome, ended.error) == ("failed", "child exited 0 without reporting a result")


def test_preemption_is_requeued_from_the_preempted_step():
    ended = _outcome(EXIT_PREEMPTED, stop_reason="preempt", preempted_step=37, checkpoint_step=30)
    assert (ended.outcome, ended.end_step, ended.error) == ("preempted", 37, "preempted (worker stopped)")
    # Stopped because the database was unreachable, killed before it could say so: still preempted.
    assert _outcome(-9, stop_reason="db_down").error == "preempted (database unreachable)"


def test_a_cancel_wins_over_the_exit_code():
    assert _outcome(EXIT_PREEMPTED, stop_reason="cancel").outcome == "cancelled"


def test_terminal_and_device_failures():
    terminal = _outcome(EXIT_TERMINAL, last_log_line="NonFiniteLoss: loss is nan")
    assert (terminal.outcome, terminal.terminal, terminal.error) == ("failed", True, "NonFiniteLoss: loss is nan")
    device = _outcome(EXIT_DEVICE, error="the worker promised GPU 7")
    assert (device.outcome, device.terminal, device.error) == ("failed", False, "the worker promised GPU 7")


def test_out_of_memory_is_requeued_only_beside_other_runs():
    beside = _outcome(EXIT_OUT_OF_MEMORY, error="OutOfMemoryError: CUDA out of memory.", device_shared_with=3,
                      checkpoint_step=40)
    assert (beside.outcome, beside.terminal, beside.end_step) == ("preempted", False, 40)
    assert beside.error.startswith("OutOfMemoryError: CUDA out of memory. (beside 3 other run(s)")
    alone = _outcome(EXIT_OUT_OF_MEMORY, error="OutOfMemoryError: CUDA out of memory.")
    assert (alone.outcome, alone.terminal) == ("failed", True)
    assert "alone on the GPU" in alone.error


def test_a_signal_names_itself_and_other_codes_fall_back_to_the_log():
    assert _outcome(-9).error == "killed by signal SIGKILL"
    assert _outcome(1, last_log_line="RuntimeError: boom").error == "RuntimeError: boom"
    assert _outcome(3).error == "exit code 3"


def test_production_runs_train_only_and_the_tests_add_sleep_through_the_kinds_file():
    import subprocess
    import sys

    probe = "from haares.kinds import JOB_KINDS, load_kinds_files; a = sorted(JOB_KINDS); load_kinds_files(); " \
            "print(a, sorted(JOB_KINDS))"
    env = {k: v for k, v in os.environ.items() if k != "HAARES_KINDS_FILE"}
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert bare.stdout.split() == ["['train']", "['train']"]
    tested = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert tested.stdout.strip() == "['train'] ['sleep', 'train']"
