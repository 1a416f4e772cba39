"""Shared fixture: ``device`` runs a test on the CPU and on every CUDA device present (marked ``gpu``)."""
from __future__ import annotations

import pytest
import warp as wp

DEVICES = [pytest.param(d.alias, marks=pytest.mark.gpu, id=f"gpu-{d.alias}") for d in wp.get_cuda_devices()]
DEVICES.append(pytest.param("cpu", id="cpu"))


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
