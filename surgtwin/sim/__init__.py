"""Simulation core: imports only numpy, scipy and warp (plus surgtwin's plain-Python errors).

ModelSpec (host, SI units) --finalize(device)--> Model (immutable device arrays) ;
Model.state() --> State (positions) ; StaticSolver(model).solve(state) --> SolveReport.
"""
from .model import Model, ModelSpec, State, lame_parameters
from .static import SolveReport, StaticSolver, element_strain
from .terms import Elasticity, NodeLoads, Term, default_terms

__all__ = ["Elasticity", "NodeLoads", "Term", "default_terms", "Model", "ModelSpec", "State", "StaticSolver", "SolveReport", "element_strain", "lame_parameters"]
