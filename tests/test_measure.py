"""Device names have one home (haares.measure): the summary's name and the attempt's identity agree.

The CUDA branch runs on the CPU with torch's device queries replaced, so the UUID suffix is checked too.
"""

from __future__ import annotations

import types

import torch

from haares import measure


def test_cpu_names():
    assert measure.device_name("cpu").startswith("cpu (")
    assert measure.device_name(torch.device("cpu")) == measure.device_name("cpu")
    assert measure.device_identity("cpu") == "cpu"


def test_a_gpus_identity_is_its_name_plus_its_uuid(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(uuid="abc-1"))
    assert measure.device_name("cuda") == "NVIDIA H200"
    assert measure.device_identity("cuda") == "NVIDIA H200 GPU-abc-1"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: types.SimpleNamespace())
    assert measure.device_identity(torch.device("cuda")) == "NVIDIA H200"
