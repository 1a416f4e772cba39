"""Simulation core: imports only numpy, scipy and warp (plus surgtwin's plain-Python errors).

ModelSpec (host, SI units) --finalize(device)--> Model (immutable device arrays) ;
Model.state() --> State (positions) ; StaticSolver(model).solve(state) --> SolveReport.
"""
from .model import Model, ModelSpec, State, lame_parameters
from .static import SolveReport, StaticSolver, element_strain
from .terms import Elasticity, NodeLoads, Term, default_terms

__all__ = ["Elasticity", "NodeLoads", "Term", "default_terms", "Model", "ModelSpec", "State", "StaticSolver", "SolveReport", "element_strain", "lame_parameters"]

# loads, contact and time stepping (Control holds prescribed targets, tool poses and anchors between steps;
# QuasiStaticSolver / ImplicitEulerSolver / ExplicitSolver share step(state_in, state_out, control, dt))
from .contact import ToolContact  # noqa: E402
from .control import Capsule, Control, Plane, Sphere, TriangleMeshTool  # noqa: E402
from .dynamic import ImplicitEulerSolver, Inertia  # noqa: E402
from .explicit import ExplicitSolver, element_time_steps, stable_time_step  # noqa: E402
from .loads import Attachments, Rollers, SurfacePressure, boundary_faces, boundary_nodes  # noqa: E402
from .stepping import QuasiStaticSolver, StepReport, element_health  # noqa: E402

__all__ += ["Attachments", "Rollers", "Capsule", "Control", "ExplicitSolver", "ImplicitEulerSolver", "Inertia", "Plane",
            "QuasiStaticSolver", "Sphere", "StepReport", "SurfacePressure", "ToolContact", "TriangleMeshTool",
            "boundary_faces", "boundary_nodes", "element_health", "element_time_steps", "stable_time_step"]
