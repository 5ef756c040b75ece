"""The experiment grids: which runs each study has, and their readable ids."""

from __future__ import annotations

from typing import Any

__all__ = ["cross_checks"]


def cross_checks(cfg: dict[str, Any]) -> list[str]:
    """Return problems that span several keys of a resolved config (empty when fine)."""
    return []
