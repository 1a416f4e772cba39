"""Locate packaged data (``assets/``, ``configs/``) from an installed wheel or from a checkout."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _package_dir(package: str, checkout_dir: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    path = _ROOT / checkout_dir
    if not path.is_dir():
        raise FileNotFoundError(f"surgtwin data folder '{checkout_dir}' not found (broken installation)")
    return path


def assets_dir() -> Path:
    """Folder holding labels.json, tissues.json."""
    return _package_dir("surgtwin._assets", "assets")


def configs_dir() -> Path:
    """Folder holding the Hydra config tree (config.yaml and groups)."""
    return _package_dir("surgtwin._configs", "configs")
