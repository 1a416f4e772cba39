"""Simulation core: imports only numpy, scipy and warp (plus surgtwin's plain-Python errors).

ModelSpec (host, SI units) --finalize(device)--> Model (immutable device arrays) ;
Model.state() --> State (positions) ; StaticSolver(model).solve(state) --> SolveReport.
"""
from .model import Model, ModelSpec, State, lame_parameters, mooney_rivlin_constants
from .static import SolveReport, StaticSolver, element_strain
from .terms import Elasticity, NodalPressureElasticity, NodeLoads, Term, default_terms, elasticity_term

__all__ = ["Elasticity", "NodalPressureElasticity", "NodeLoads", "elasticity_term", "mooney_rivlin_constants", "Term", "default_terms", "Model", "ModelSpec", "State", "StaticSolver", "SolveReport", "element_strain", "lame_parameters"]
