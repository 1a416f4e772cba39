"""Explicit central-difference dynamics (TLED style): lumped mass, no solve, a stable time step from the mesh.

Stable time step. For a linear tet with lumped mass rho V / 4 per node and shape-function gradients g_a,
u.K u = V (mu |grad u + grad u^T|^2 / 2 + lambda (div u)^2) <= V (2 mu G_max + lambda tr G) |u|^2, with
G = sum_a g_a g_a^T (3x3), so the largest element frequency obeys omega_e^2 <= (4/rho)(2 mu G_max + lambda tr G):
    dt_e = 2 / omega_e = L_e / c_e,   L_e = sqrt((lambda + 2 mu) / (2 mu G_max + lambda tr G)),
c_e = sqrt((lambda + 2 mu) / rho_e) the dilatational wave speed. By the element eigenvalue inequality
(Irons & Treharne) dt_crit >= min_e dt_e for the assembled mesh. For a regular tet of edge a the bound is
exact: dt_e = a / sqrt((6 lambda + 4 mu) / rho). Node springs (support springs, attachments, contact
penalties) add k/m to omega^2.
The solver runs at ``safety`` (default 0.9, room for stiffening under large strain) times that step and
refuses a larger requested step. Mass scaling raises the density of the elements that limit the step
(to reach ``mass_scaling_dt``) without changing gravity loads.

``step(state_in, state_out, control, dt)`` advances dt in equal sub-steps no longer than the stable step,
with prescribed nodes and tool positions moving linearly across the sub-steps. Nothing in the loop
reads back to the host; element inversion and non-finite values are checked once per step. ``relax``
runs damped steps (dynamic relaxation) to static equilibrium.

A sub-step is two launches: the element forces (plus any extra terms) accumulate into a force buffer, then
one node kernel adds gravity and springs, takes the central-difference step and clears the buffer. The
sub-step loop is captured once per (sub-step count, control) in a graph and replayed: a CUDA graph on CUDA,
Warp's CPU graph (replayed in C++, no Python per launch) on CPU; the sub-step and damping are read from a
small device array, so one graph serves every dt and damping. Warp runs a CPU kernel on one thread;
``threads=N`` (CPU, plain elasticity) splits the element range in N parts launched from N Python threads
(a launch releases the GIL), each into its own force buffer (Warp's CPU atomics are plain adds), summed by
the node kernel; that loop runs uncaptured. The calling thread launches part 0 and takes any part that no
helper thread has started (a helper whose core is busy elsewhere then costs nothing), so the result is the
same whichever thread runs a part.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import warp as wp

from kernels import elasticity as ke
from kernels import integrate as ki

from ..errors import SolverError
from .control import Control
from .model import Model, State, lame_parameters
from .static import StaticSolver
from .stepping import StepReport, begin_terms, element_health, ensure_velocity
from .terms import Elasticity, NodeLoads, Term


def element_time_steps(model: Model, density: np.ndarray | None = None) -> np.ndarray:
    """Per-element stable time step L_e / c_e [s] (inf for dead elements); ``density`` overrides rho [kg/m^3]."""
    spec = model.spec
    x = spec.points[spec.tets]
    dm = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], axis=2)
    out = np.full(len(spec.tets), np.inf)
    live = spec.alive
    dmi = np.linalg.inv(dm[live])                                  # rows are g_1..g_3
    g0 = -dmi.sum(axis=1)
    gram = np.einsum("eai,eaj->eij", dmi, dmi) + np.einsum("ei,ej->eij", g0, g0)   # sum_a g_a g_a^T
    g_max = np.linalg.eigvalsh(gram)[:, -1]
    g_tr = np.trace(gram, axis1=1, axis2=2)
    mu, lam = lame_parameters(spec.youngs[live], spec.poisson[live])
    rho = (spec.density if density is None else np.asarray(density, np.float64))[live]
    out[live] = 1.0 / np.sqrt((2.0 * mu * g_max + lam * g_tr) / rho)
    return out


def node_stiffness(model: Model, terms: list[Term]) -> np.ndarray:
    """Largest nodal spring stiffness [N/m] per node from support springs and the terms that report one."""
    k = np.where(model.node_used, model.spec.spring_k, 0.0).astype(np.float64)
    for term in terms:
        extra = getattr(term, "node_stiffness", None)
        if extra is not None:
            k = k + extra()
    return k


def stable_time_step(model: Model, terms: list[Term] = (), *, mass: np.ndarray | None = None,
                     density: np.ndarray | None = None) -> float:
    """Critical time step bound [s]: 2 / sqrt(omega_elements^2 + max k/m) (no safety factor)."""
    dt_e = element_time_steps(model, density).min()
    m = model.node_mass if mass is None else mass
    k = node_stiffness(model, list(terms))
    free = model.node_free & (m > 0)
    w2 = (2.0 / dt_e) ** 2 + (float(np.max(k[free] / m[free])) if free.any() else 0.0)
    return 2.0 / math.sqrt(w2)


def scaled_density(model: Model, target_dt: float, safety: float) -> np.ndarray:
    """Element densities raised so that safety * dt_e >= target_dt (mass scaling)."""
    dt_e = element_time_steps(model)
    need = target_dt / safety
    factor = np.where(dt_e < need, (need / np.where(np.isfinite(dt_e), dt_e, need)) ** 2, 1.0)
    return model.spec.density * factor


class ExplicitSolver:
    """Central-difference stepping on the model's terms plus ``extra_terms``.

    dt: sub-step [s] (default: the stable step times ``safety``; a larger one raises SolverError);
    damping: mass-proportional damping c [1/s] (0 = undamped); mass_scaling_dt: target sub-step [s] for
    mass scaling; use_graph: capture the sub-step loop in a graph (CUDA or Warp CPU graph); threads: CPU
    threads for the element forces (1, or N > 1 for plain elasticity on CPU, then uncaptured).
    """

    def __init__(self, model: Model, *, extra_terms: list[Term] = (), dt: float | None = None,
                 safety: float = 0.9, damping: float = 0.0, mass_scaling_dt: float | None = None,
                 max_cutbacks: int = 2, use_graph: bool = True, threads: int = 1):
        if not 0 < safety <= 1:
            raise SolverError(f"safety factor must be in (0, 1], got {safety}")
        self.model = model
        self.static = StaticSolver(model, extra_terms=extra_terms)
        self.terms = self.static.terms
        d, n = model.device, model.node_count
        spec = model.spec
        density = scaled_density(model, mass_scaling_dt, safety) if mass_scaling_dt else spec.density
        mass = np.zeros(n)
        live = spec.alive
        np.add.at(mass, spec.tets[live].ravel(), np.repeat(model.rest_volume[live] * density[live] / 4.0, 4))
        self.added_mass_fraction = float(mass.sum() / max(model.node_mass.sum(), 1e-300) - 1.0)
        self.mass = wp.array(mass, dtype=wp.float64, device=d)
        self.dt_critical = stable_time_step(model, self.terms, mass=mass, density=density)
        self.dt_stable = safety * self.dt_critical
        if dt is not None and dt > self.dt_stable * (1 + 1e-12):
            raise SolverError(f"explicit time step {dt:.3e} s exceeds the stable step {self.dt_stable:.3e} s "
                              f"(= {safety} x min element length / dilatational wave speed); use a smaller dt, "
                              "mass_scaling_dt or the implicit solver")
        self.dt = float(dt) if dt is not None else self.dt_stable
        self.damping = float(damping)
        self.max_cutbacks = int(max_cutbacks)
        elastic, loads = self.terms[0], next(t for t in self.terms if isinstance(t, NodeLoads))
        threads = min(int(threads), len(spec.tets))           # never an empty part
        split = threads > 1 and model.device.is_cpu and type(elastic) is Elasticity
        self.threads = threads if split else 1
        self.use_graph = bool(use_graph) and self.threads == 1
        self._x, self._v = (wp.zeros(n, dtype=wp.vec3d, device=d) for _ in range(2))
        self._f = wp.zeros((self.threads, n), dtype=wp.vec3d, device=d)     # one force buffer per thread
        self._f0 = self._f[0]
        inv_mass = np.divide(model.node_free, mass, out=np.zeros(n), where=model.node_free & (mass > 0))
        self._inv_mass = wp.array(inv_mass, dtype=wp.float64, device=d)      # free / m, 0 where not free
        self._coef = wp.zeros(3, dtype=wp.float64, device=d)                 # see ki.central_difference_update
        self._update = wp.launch(ki.central_difference_update, dim=n, device=d, record_cmd=True, inputs=[
            self._f, model.mass, model.gravity_vector(1.0), model.spring_k, model.anchors, self._inv_mass,
            self._coef, self._x, self._v])
        self._terms = [t for t in self.terms if t is not loads and not (split and t is elastic)]
        ends = np.linspace(0, len(spec.tets), self.threads + 1).astype(int) if split else []
        self._parts = [wp.launch(ke.eval_tet_forces, dim=int(hi - lo), device=d, record_cmd=True,
                                 inputs=[model.element_range(int(lo), int(hi)), self._x, self._f[j]])
                       for j, (lo, hi) in enumerate(zip(ends[:-1], ends[1:]))]
        self._bad = wp.zeros(2, dtype=wp.int32, device=d)
        self._graphs: dict = {}

    # ------------------------------------------------------------ the sub-step loop
    def _substeps(self, count: int, control: Control | None, helpers: "_Helpers | None" = None):
        self._f.zero_()
        for k in range(count):
            if helpers is not None:
                helpers.start()
                self._parts[0].launch()
            for term in self._terms:
                term.add_forces(self._x, self._f0, 1.0)
            if helpers is not None:
                helpers.finish()
            self._update.launch()
            if control is not None:
                control.advance(self._x, (k + 1) / count)
            begin_terms(self.terms, self._x)
        self._bad.zero_()
        wp.launch(ki.check_elements, dim=len(self.model.spec.tets), inputs=[self.model.elements, self._x, 0.0,
                  self._bad], device=self.model.device)

    def _run(self, count: int, h: float, control: Control | None, damping: float):
        c = 0.5 * damping * h
        self._coef.assign(np.array([h, (1.0 - c) / (1.0 + c), h / (1.0 + c)]))
        if self.threads > 1:
            with _Helpers(self._parts[1:]) as helpers:
                self._substeps(count, control, helpers)
            return
        if not self.use_graph:
            self._substeps(count, control)
            return
        # the graph refers to the arrays of the controls in use (step's, the terms'): recapture on a new layout
        controls = {id(c): c for c in [control] + [getattr(t, "control", None) for t in self.terms] if c is not None}
        key = (count, id(control), tuple(sorted((k, c.revision) for k, c in controls.items())))
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= 8:
                self._graphs.clear()
            with wp.ScopedCapture(device=self.model.device) as capture:
                self._substeps(count, control)
            entry = self._graphs[key] = (capture.graph, list(controls.values()))   # held: ids stay unique
        wp.capture_launch(entry[0])

    def step(self, state_in: State, state_out: State, control: Control | None, dt: float) -> StepReport:
        """Advance dt [s] in ceil(dt / self.dt) sub-steps; cut back (twice the sub-steps) on a bad step."""
        if not dt > 0:
            raise SolverError(f"time step must be positive, got {dt}")
        ensure_velocity(state_in)
        inv0, _ = element_health(self.model, state_in.x)
        count = max(1, math.ceil(dt / self.dt - 1e-9))
        for cut in range(self.max_cutbacks + 1):
            wp.copy(self._x, state_in.x)
            wp.copy(self._v, state_in.v)
            if control is not None:
                control.begin(self._x)
            self._run(count, dt / count, control, self.damping)
            inv, nan = (int(v) for v in self._bad.numpy())
            if nan == 0 and inv <= inv0:
                wp.copy(state_out.x, self._x)
                wp.copy(ensure_velocity(state_out), self._v)
                return StepReport(count, cut, inverted=inv)
            why = f"{nan} element(s) non-finite" if nan else f"{inv} inverted element(s) (had {inv0})"
            if control is not None:
                control.advance(self._x, 0.0)                  # tools back to the step start
            count *= 2
        raise SolverError(f"explicit step of {dt:.3e} s failed after {self.max_cutbacks} cut-backs "
                          f"(sub-step {dt / count * 2:.3e} s, stable {self.dt_stable:.3e} s): {why}")

    # ------------------------------------------------------------ dynamic relaxation
    def relax(self, state: State, control: Control | None = None, *, damping: float | None = None,
              tol: float = 1e-6, max_steps: int = 200_000, check_every: int = 200) -> StepReport:
        """Damped explicit steps until the free-node residual is below tol (relative, as StaticSolver).

        ``damping`` c [1/s] defaults to 2 omega_1, omega_1 the lowest frequency estimated by the Rayleigh
        quotient of the static load's shape, then re-estimated at every check from the displacement so far
        (Underwood's adaptive dynamic relaxation).
        """
        adaptive = damping is None
        c = self.estimate_critical_damping(state) if adaptive else float(damping)
        ensure_velocity(state)
        state.v.zero_()
        x_start = wp.clone(state.x)
        ext = self.static._external_scale(1.0)
        steps, r = 0, float("inf")
        while steps < max_steps:
            self.step_count(state, control, check_every, c)
            steps += check_every
            f = self.static.forces(state.x, 1.0)
            r = math.sqrt(max(self.static._dot(f, f), 0.0))
            if not math.isfinite(r):
                raise SolverError(f"dynamic relaxation diverged after {steps} sub-steps")
            if r <= tol * ext:
                return StepReport(steps, 0, relative_residual=r / ext)
            if adaptive:
                u = state.x.numpy() - x_start.numpy()
                c = self._rayleigh_damping(state, u) or c
        raise SolverError(f"dynamic relaxation did not reach tolerance {tol:g} in {max_steps} sub-steps "
                          f"(relative residual {r / ext:.2e})")

    def step_count(self, state: State, control: Control | None, count: int, damping: float) -> None:
        """``count`` sub-steps of self.dt in place (no cut-back; health checked)."""
        wp.copy(self._x, state.x)
        wp.copy(self._v, ensure_velocity(state))
        if control is not None:
            control.begin(self._x)
        self._run(count, self.dt, control, damping)
        inv, nan = (int(v) for v in self._bad.numpy())
        if nan:
            raise SolverError(f"explicit sub-steps produced {nan} non-finite element(s)")
        wp.copy(state.x, self._x)
        wp.copy(state.v, self._v)

    def _rayleigh_damping(self, state: State, u: np.ndarray) -> float:
        """2 sqrt(u.K(x) u / u.M u) on the free nodes (0 when u vanishes)."""
        m = self.model
        u = u * m.node_free[:, None]
        mass = self.mass.numpy()
        den = float(np.sum(mass[:, None] * u * u))
        if den <= 0.0:
            return 0.0
        ku = wp.zeros(m.node_count, dtype=wp.vec3d, device=m.device)
        self.static._hessian_product(state.x, wp.array(u, dtype=wp.vec3d, device=m.device), ku)
        num = float(np.sum(u * ku.numpy() * m.node_free[:, None]))
        return 2.0 * math.sqrt(max(num, 0.0) / den)

    def estimate_critical_damping(self, state: State) -> float:
        """2 omega from the Rayleigh quotient of u = M^-1 f at ``state`` (the load's shape) [1/s]."""
        mass = self.mass.numpy()[:, None]
        f = self.static.forces(state.x, 1.0).numpy()
        return self._rayleigh_damping(state, np.divide(f, mass, out=np.zeros_like(f), where=mass > 0))

    def energy(self, state: State) -> float:
        """Kinetic (with the solver's possibly scaled masses) + potential energy [J]."""
        e = wp.zeros(1, dtype=wp.float64, device=self.model.device)
        if state.v is not None:
            wp.launch(ki.eval_kinetic_energy, dim=self.model.node_count, inputs=[state.v, self.mass, e],
                      device=self.model.device)
        return float(e.numpy()[0]) + self.static.energy(state.x, 1.0)


class _Helpers:
    """Threads sharing the element parts 1.. of each sub-step with the calling thread: whoever is free takes
    the next part (each part scatters into its own buffer, so the result does not depend on who took it),
    and a helper that wakes late (its core busy with other work) costs nothing."""

    def __init__(self, launches):
        self._launches = list(launches)
        self._lock = threading.Lock()
        self._pending, self._taken = [], 0
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._stop, self._error = False, None
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in self._launches]

    def _next(self, helper: bool):
        with self._lock:
            if not self._pending:
                return None
            self._taken += helper
            return self._pending.pop()

    def _work(self):
        while True:
            self._go.acquire()
            if self._stop:
                return
            while (launch := self._next(True)) is not None:
                try:
                    launch.launch()
                except Exception as err:  # noqa: BLE001 - handed to the calling thread by finish()
                    self._error = err
                self._done.release()

    def start(self):
        with self._lock:
            self._pending, self._taken = list(self._launches), 0
        for _ in self._threads:
            self._go.release()

    def finish(self):
        """Launch the parts no helper has taken, then wait for those they took."""
        while (launch := self._next(False)) is not None:
            launch.launch()
        for _ in range(self._taken):
            self._done.acquire()
        if self._error is not None:
            raise self._error

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        for _ in self._threads:
            self._go.release()
        for t in self._threads:
            t.join()
