"""Hydra at the edge: compose ``configs/`` + command-line ``key=value`` overrides into a RunConfig."""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import RunConfig
from .errors import ConfigError
from .resources import configs_dir

ConfigStore.instance().store(name="base_run", node=RunConfig)


def compose_run_config(overrides: list[str] | None = None) -> tuple[RunConfig, str]:
    """RunConfig dataclass and its resolved YAML (saved beside every run's outputs)."""
    overrides = list(overrides or [])
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override '{o}' must look like key=value")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(configs_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
        run = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0]
        raise ConfigError(f"invalid configuration: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    return run, yaml_text


def config_yaml(cfg: RunConfig) -> str:
    """The YAML of a RunConfig as it is now (after any programmatic change), for config.yaml."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
