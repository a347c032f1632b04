"""Checks the smaller `haares run` answers of issue 12: --cell on a grid without cells says so, a device
torch cannot use is refused before any data is prepared, and a resumed run says from which step.
"""

from __future__ import annotations

import pytest
from fixtures.tiny import run_args as _args
from typer.testing import CliRunner

from haares.cli.app import app
from haares.errors import HaaresError
from haares.runner import check_device, resolve_run


def test_a_cell_on_a_grid_without_cells():
    with pytest.raises(HaaresError, match="grid 'smoke' has no cells; drop --cell 24L"):
        resolve_run(grid="smoke", method="haares", seed=42, cell="24L")


def test_a_device_torch_cannot_use_is_refused_before_data(monkeypatch):
    import torch

    from haares import data

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(HaaresError, match="torch sees 0 CUDA device"):
        check_device("cuda:0")
    with pytest.raises(HaaresError, match="use cpu, cuda or cuda:N"):
        check_device("tpu")

    def no_data(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("data was prepared before the device was checked")

    monkeypatch.setattr(data, "prepare", no_data)
    result = CliRunner().invoke(app, ["run", "--grid", "smoke", "--method", "haares", "--seed", "42",
                                      "--device", "cuda"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --device cuda: torch sees 0 CUDA device")


def test_a_resumed_run_says_from_which_step(tmp_path):
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(app, _args(run_dir))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, _args(run_dir))
    assert again.exit_code == 0, again.output
    assert "resuming from step 6" in again.output
