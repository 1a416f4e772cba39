"""surgtwin: a GPU-accelerated digital twin of the patient's anatomy for surgical planning.

Stages (one module each): Volume/LabelMap (``volume``) -> SurfaceMesh/TetMesh (``mesh``) ->
Model/State/Solver (``sim``) -> Procedure (``procedure``) -> RiskReport (``risk``, ``report``).
Heavy modules are imported lazily so ``surgtwin.sim`` runs with only numpy, scipy and warp.
"""
__version__ = "0.1.0"
