"""Runtime settings, read once from `REASON_*` environment variables; CLI flags override them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "reason-studio"


def _otlp_traces_url(environ) -> str | None:
    """OpenTelemetry's rule: the traces endpoint as given, else the general endpoint + /v1/traces."""
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def _weight_cache(value: str | None, home: Path) -> Path | None:
    """REASON_WEIGHT_CACHE: a folder, or "off"; unset: `weights` under the home."""
    if value is None or not value.strip():
        return home / "weights"
    return None if value.strip().lower() in ("off", "0", "false", "no") else Path(value)


@dataclass(frozen=True)
class Settings:
    home: Path  # all state (database, caches, edited templates) lives under here
    model_path: str | None  # None: the default SmolLM2 model shipped with the package
    device: str
    dtype: str | None
    weights: str | None = None  # "packed" or "dense"; None: the engine's default for the device and dtype
    kv_cache_mb: float | None = None  # the engine's paged KV pool budget; None: its default
    base_url: str | None = None  # an OpenAI-compatible server (…/v1); None: `reason serve` on this machine
    api_key: str | None = field(default=None, repr=False)  # its bearer token; also the key `reason serve` requires
    otel_traces_url: str | None = None  # runs are exported there as OpenTelemetry spans (app/telemetry.py); None: not
    otel_capture_content: bool = False  # spans carry prompts, completions and tool input/output too
    weight_cache: Path | None = None  # packed weights kept here between loads (engine/weight_cache.py); None: not kept
    kernels: str = "auto"  # packed layers: "native" (AVX-512 VNNI), "torch" (PyTorch's), "auto"

    def engine_options(self) -> dict:
        """Keyword arguments for engine.load_model besides the path."""
        return {"device": self.device, "dtype": self.dtype, "weights": self.weights, "kv_cache_mb": self.kv_cache_mb,
                "weight_cache": self.weight_cache, "kernels": self.kernels}

    @classmethod
    def from_env(cls, environ=os.environ) -> Settings:
        home = Path(environ.get("REASON_HOME") or _default_home())
        return cls(
            home=home,
            model_path=environ.get("REASON_MODEL") or None,
            device=environ.get("REASON_DEVICE", "auto"),
            dtype=environ.get("REASON_DTYPE") or None,
            weights=environ.get("REASON_WEIGHTS") or None,
            kv_cache_mb=float(environ["REASON_KV_CACHE_MB"]) if environ.get("REASON_KV_CACHE_MB") else None,
            base_url=environ.get("REASON_BASE_URL") or None,
            api_key=environ.get("REASON_API_KEY") or None,
            otel_traces_url=_otlp_traces_url(environ),
            otel_capture_content=environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() == "true",
            weight_cache=_weight_cache(environ.get("REASON_WEIGHT_CACHE"), home),
            kernels=environ.get("REASON_KERNELS") or "auto",
        )

    def with_overrides(self, **overrides) -> Settings:
        """A copy with the CLI flags that were given (None means not given)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
