"""CPU against CUDA on the same problems (runs where a CUDA device is present: `pytest -m gpu`)."""
from __future__ import annotations

import pytest
import warp as wp

from surgtwin.verify_devices import TOLERANCE, device_agreement

CUDA = [pytest.param(d.alias, marks=pytest.mark.gpu, id=d.alias) for d in wp.get_cuda_devices()]


@pytest.mark.parametrize("device", CUDA)
def test_cuda_matches_cpu(device):
    rows = device_agreement(device)
    assert len(rows) == 5
    for r in rows:
        assert r.passed, f"{r.name}: {r.rel_error:.2e} > {TOLERANCE:g} ({r.note})"
