"""All Warp kernels of surgtwin, grouped by concern. ``surgtwin`` only builds, launches and checks.

Kernels take arrays and scalars only (float64 throughout the quasi-static solver, so CPU and CUDA
agree to round-off and verification tests can check closed forms tightly).
"""
