"""Checks that `haares bench` rejects every bad argument before measuring anything (one line, exit 2):
a layer count no block count divides, an unknown scheme or precision, a device torch cannot use.
"""

from __future__ import annotations

import sys

import pytest

from haares import bench as bench_mod
from haares.cli.app import main


@pytest.mark.parametrize(("args", "needle"), [
    (["--layers", "7"], "blocks of 3.5 sublayers"),
    (["--schemes", "standard,nosuch"], "model.residual must be one of"),
    (["--precision", "fp16"], "unknown precision 'fp16'"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--device", "tpu"], "use cpu, cuda or cuda:N"),
])
def test_bad_bench_arguments_fail_before_any_measurement(monkeypatch, capsys, args, needle):
    def measured(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the bench started measuring")

    monkeypatch.setattr(bench_mod, "main", measured)
    monkeypatch.setattr(sys, "argv", ["haares", "bench", *(["--device", "cpu"] if "--device" not in args else []), *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
