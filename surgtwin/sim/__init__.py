"""Simulation core: imports only numpy, scipy and warp (plus surgtwin's plain-Python errors).

ModelSpec (host, SI units) --finalize(device)--> Model (immutable device arrays) ;
Model.state() --> State (positions, velocities) ; StaticSolver(model).solve(state) --> SolveReport.
Loads, contact and time stepping: Control holds prescribed targets, tool poses and anchors between steps;
QuasiStaticSolver / ImplicitEulerSolver / ExplicitSolver share step(state_in, state_out, control, dt).
"""
from .contact import ToolContact
from .control import Capsule, Control, Plane, Sphere, TriangleMeshTool
from .dynamic import ImplicitEulerSolver, Inertia
from .explicit import ExplicitSolver, element_time_steps, stable_time_step
from .loads import Attachments, Rollers, SurfacePressure, boundary_faces, boundary_nodes
from .model import Model, ModelSpec, State, lame_parameters, mooney_rivlin_constants
from .static import SolveReport, StaticSolver, element_strain
from .stepping import QuasiStaticSolver, StepReport, element_health
from .terms import Elasticity, NodalPressureElasticity, NodeLoads, Term, default_terms, elasticity_term

__all__ = ["Attachments", "Capsule", "Control", "Elasticity", "ExplicitSolver", "ImplicitEulerSolver", "Inertia",
           "Model", "ModelSpec", "NodalPressureElasticity", "NodeLoads", "Plane", "QuasiStaticSolver", "Rollers",
           "SolveReport", "Sphere", "State", "StaticSolver", "StepReport", "SurfacePressure", "Term", "ToolContact",
           "TriangleMeshTool", "boundary_faces", "boundary_nodes", "default_terms", "element_health",
           "element_strain", "element_time_steps", "elasticity_term", "lame_parameters", "mooney_rivlin_constants",
           "stable_time_step"]
