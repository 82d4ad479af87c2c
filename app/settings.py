"""Runtime settings, read once from `REASON_*` environment variables; CLI flags override them."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "reason-studio"


@dataclass(frozen=True)
class Settings:
    home: Path  # all state (database, caches, edited templates) lives under here
    model_path: str | None  # None: the default SmolLM2 model shipped with the package
    device: str
    dtype: str | None

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        return cls(
            home=Path(environ.get("REASON_HOME") or _default_home()),
            model_path=environ.get("REASON_MODEL") or None,
            device=environ.get("REASON_DEVICE", "auto"),
            dtype=environ.get("REASON_DTYPE") or None,
        )

    def with_overrides(self, **overrides) -> "Settings":
        """A copy with the CLI flags that were given (None means not given)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
