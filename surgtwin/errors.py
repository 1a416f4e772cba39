"""Exceptions that the CLI turns into one-line messages and a non-zero exit."""


class SurgtwinError(Exception):
    """Base class: anything raised as this is a user-facing, one-line problem."""

    exit_code = 2


class InputError(SurgtwinError):
    """A file is missing, unreadable, of the wrong format or empty."""


class LabelError(SurgtwinError):
    """A label map lacks a structure the stage needs, or is empty."""


class MeshError(SurgtwinError):
    """A structure cannot be meshed."""


class SolverError(SurgtwinError):
    """A solve failed (divergence, inverted elements, NaN); the message says why."""

    exit_code = 3


class ConfigError(SurgtwinError):
    """A configuration value or override is invalid."""
