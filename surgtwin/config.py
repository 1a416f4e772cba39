"""Structured configs: one dataclass per Hydra config group in ``configs/``.

Hydra/OmegaConf stay at the edge (the CLI); library code receives these plain dataclasses.
Units are in every field name or docstring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class PhantomConfig:
    """Procedural abdominal CT phantom (LPS millimetres, Hounsfield units)."""

    spacing_mm: float = 2.5          # isotropic voxel size
    fov_mm: list = field(default_factory=lambda: [360.0, 280.0, 200.0])  # x (R->L), y (A->P), z (I->S)
    seed: int = 0                    # noise and tumour jitter
    noise_hu: float = 12.0           # Gaussian image noise, standard deviation
    blur_mm: float = 1.2             # partial-volume blur (Gaussian sigma)
    tumor_radius_mm: float = 15.0
    contrast: bool = True            # portal-venous phase enhancement (else non-contrast HU)


@dataclass
class CaseConfig:
    """Where the patient comes from: the built-in phantom (default) or files the user has."""

    image: Optional[str] = None      # CT/MR file or DICOM folder; None = generate the phantom
    series: Optional[str] = None     # DICOM folder with several series: index or SeriesInstanceUID
    modality: str = "CT"             # CT (Hounsfield units) or MR (intensity-normalised where needed)
    labels: Optional[str] = None     # label map (TotalSegmentator / Slicer); None = segment or phantom truth
    # lesions to add to the label map: [{name: liver_tumor, center_mm: [x, y, z], radius_mm: 15}]
    lesions: list = field(default_factory=list)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class SegmentConfig:
    method: str = "auto"             # auto | seeded | threshold | import | totalsegmentator
    seeds: dict = field(default_factory=dict)   # name -> [x, y, z] physical mm (LPS), or voxel i, j, k
    seed_space: str = "physical"     # physical | voxel (seed coordinates)
    source: Optional[str] = None     # method=import: segmentation file or folder
    seed_radius_mm: float = 8.0     # neighbourhood that sets the intensity window
    confidence_multiplier: float = 2.5


MESHERS = ("auto", "grid", "tetgen")   # mesh.mesher: auto = grid (built-in); tetgen = optional AGPL extra


def check_mesher(name) -> str:
    """``mesh.mesher`` as given, or a one-line ConfigError listing the meshers."""
    if str(name) not in MESHERS:
        from .errors import ConfigError

        raise ConfigError(f"mesh.mesher must be one of {', '.join(MESHERS)}, not '{name}'")
    return str(name)


@dataclass
class MeshConfig:
    organ: str = "liver"             # the simulated organ
    structures: list = field(default_factory=lambda: [
        "liver", "liver_tumor", "hepatic_vein", "portal_vein_and_splenic_vein"])
    size_mm: float = 6.0             # tetrahedral grid size (edge of the cubes split into 6 tets)
    snap_boundary: bool = True       # fit the outer boundary nodes to the label boundary
    max_tets: Optional[int] = None   # a tet budget instead of size_mm (size chosen from the volume)
    stl: bool = False                # also write surfaces/<name>.stl
    surface_smoothing: int = 40      # Taubin smoothing iterations for the structure surfaces
    refine_near: list = field(default_factory=list)  # structures (tumour, vessels) with finer elements around them
    refine_ratio: int = 2            # coarse / fine element size near refine_near (1, 2, 4 or 8)
    refine_band_mm: float = 10.0     # distance from refine_near within which elements are fine
    joint: bool = False              # every structure an organ of its own, neighbours sharing tagged faces
    mesher: str = "auto"             # auto | grid (built-in) | tetgen (optional AGPL extra; falls back to grid)


@dataclass
class TissueConfig:
    youngs_kpa: float
    poisson: float
    density_kg_m3: float


def _default_tissues() -> dict:
    return {}  # filled from assets/tissues.json at run time; overrides go here by structure name


@dataclass
class MaterialConfig:
    model: str = "stable_neo_hookean"   # default law of tissues without "law": stable_neo_hookean|corotational|mooney_rivlin
    volumetric: str = "standard"        # or "anp": average nodal pressure (no volumetric locking near nu = 0.5)
    tissues: dict = field(default_factory=_default_tissues)  # structure -> {youngs_kpa, poisson, density_kg_m3}


@dataclass
class BoundaryConfig:
    fix_near: list = field(default_factory=lambda: ["inferior_vena_cava"])  # fix nodes near these labels
    fix_distance_mm: float = 8.0
    support_kpa_per_mm: float = 0.02  # elastic support of the outer surface by neighbours [kPa per mm]
    gravity_m_s2: list = field(default_factory=lambda: [0.0, 9.81, 0.0])   # LPS: supine -> posterior (+y)


@dataclass
class SolverConfig:
    device: str = "cpu"              # cpu | cuda | cuda:N
    load_steps: int = 3              # gravity ramp for the first equilibrium
    newton_max_iter: int = 40
    tol: float = 1e-6                # residual / external-force norm
    cg_max_iter: int = 400
    cg_tol: float = 1e-2             # relative CG tolerance (inexact Newton)


@dataclass
class ResectionStep:
    action: str = "resect"
    target: str = "liver_tumor"      # label the resection is built around
    margin_mm: float = 10.0
    mode: str = "sphere"             # sphere (tumour + margin) | plane | territory (of a vessel branch)
    normal: Optional[list] = None    # plane mode: LPS normal pointing into the removed side; None = auto
    at_mm: Optional[list] = None     # territory mode: where the feeding branch of ``target`` is divided
    jaw_mm: float = 5.0              # territory mode: vessel within this of at_mm is the division


@dataclass
class ProcedureConfig:
    name: str = "resect_tumor"
    steps: list = field(default_factory=lambda: [ResectionStep()])


@dataclass
class ReportConfig:
    images: bool = True
    plots: bool = True               # matplotlib plots in report.html (risk issue: off for large batches)
    image_size: list = field(default_factory=lambda: [900, 700])
    strain_threshold: float = 0.2     # peak-strain flag (Green-Lagrange, max principal)
    remnant_min_percent: float = 30.0  # functional liver remnant below this is flagged


@dataclass
class RiskConfig:
    """Plan settings of the risk assessment (surgtwin/risk.py). No identifiers: height/weight only."""

    liver_condition: str = "normal"  # normal | chemotherapy | cirrhosis: minimum FLR 20 / 30 / 40 %
    height_cm: Optional[float] = None  # with weight_kg: BSA (Mosteller) -> standardized liver volume
    weight_kg: Optional[float] = None
    r1_margin_mm: float = 1.0        # margin under this: R1 risk (critical)
    structure_warning_mm: float = 5.0  # cut or tool path closer than this to a structure: warning
    # tool trajectories to check: [{name: needle, points_mm: [[x, y, z], [x, y, z], ...]}] (LPS mm)
    tool_paths: list = field(default_factory=list)


@dataclass
class RunConfig:
    case: CaseConfig = field(default_factory=CaseConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    procedure: ProcedureConfig = field(default_factory=ProcedureConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    out: Optional[str] = None        # run folder; None = runs/<command>-<timestamp>
