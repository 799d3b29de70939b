"""What every config section shares: the error that names a key, and the checks behind it."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, named by its dotted key."""


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def derive(section: T, prefix: str, **changes: Any) -> T:
    """A copy of a config section with `changes`, validated like a loaded one: a derived config
    that breaks a rule fails here, naming `prefix.<key>`, not deep in the work that uses it.

    >>> from model_src.config import RLConfig
    >>> derive(RLConfig(), "rlcs", group_size=8).group_size
    8
    >>> derive(RLConfig(), "rlcs", group_size=1)
    Traceback (most recent call last):
    ...
    model_src.config.base.ConfigError: config key 'rlcs.group_size': must be >= 2 (advantages are group-relative)
    """
    derived = dataclasses.replace(section, **changes)
    derived.validate(prefix)
    return derived
