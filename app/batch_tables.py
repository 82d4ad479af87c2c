"""Datasets as people keep them: Parquet and Arrow files (pyarrow), and a local Hugging Face `datasets` folder —
one written by `save_to_disk`, a cache folder of `.arrow` shards, or a dataset repository's data files — read
with the `datasets` library offline: nothing is downloaded.

Every reader returns (fingerprint, rows as dicts); a table that cannot be read is one ValueError that says why.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

TABLE_SUFFIXES = (".parquet", ".arrow", ".feather")
DATA_SUFFIXES = (*TABLE_SUFFIXES, ".jsonl", ".json", ".csv")
# A cached split's shards: NAME-SPLIT.arrow or NAME-SPLIT-00000-of-00003.arrow (`cache-*.arrow` are map() results).
_CACHED_SPLIT = re.compile(r"-(?P<split>[^-]+?)(?:-\d{5}-of-\d{5})?\.arrow$")
_FINGERPRINT_CHUNK = 1 << 20


def is_table(path: Path) -> bool:
    """Whether the input is a table file or a folder (as opposed to JSONL or CSV text)."""
    return path.is_dir() or path.suffix.lower() in TABLE_SUFFIXES


def read_table(path: Path, split: str | None = None) -> tuple[str, list[dict]]:
    """(fingerprint, rows) of a Parquet or Arrow file or a `datasets` folder (`split` picks among several)."""
    if not path.exists():
        raise ValueError(f"cannot read {path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path, split)
    import pyarrow as pa

    try:
        table = _parquet(path) if path.suffix.lower() == ".parquet" else _arrow(path)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"cannot read {path.name} as {path.suffix.lstrip('.')}: {exc}") from exc
    return fingerprint([path], path), table.to_pylist()


def _parquet(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _arrow(path: Path):
    """An Arrow IPC file (Feather v2), else an IPC stream (what `datasets` writes in its cache)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_stream(source).read_all()


def _read_folder(path: Path, split: str | None) -> tuple[str, list[dict]]:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        datasets = offline_datasets()
        return fingerprint(_data_files(path), path, split), pick_split(datasets.load_from_disk(str(path)), split).to_list()
    if shards := _cached_shards(path):
        return _read_cache(path, shards, split)
    files = _data_files(path)
    if not files:
        raise ValueError(f"{path} holds no dataset: no save_to_disk files, .arrow shards or data files "
                         f"({', '.join(DATA_SUFFIXES)})")
    datasets = offline_datasets()
    with tempfile.TemporaryDirectory(prefix="reason-datasets-") as cache:  # its Arrow copy lives only this long
        loaded = datasets.load_dataset(str(path), cache_dir=cache)
        return fingerprint(files, path, split), pick_split(loaded, split).to_list()


def _read_cache(path: Path, shards: dict[str, list[Path]], split: str | None) -> tuple[str, list[dict]]:
    datasets = offline_datasets()
    chosen = pick_split(shards, split)
    parts = [datasets.Dataset.from_file(str(shard)) for shard in chosen]
    return fingerprint(chosen, path, split), datasets.concatenate_datasets(parts).to_list()


def _cached_shards(path: Path) -> dict[str, list[Path]]:
    """split -> its .arrow shards in order, in one cached version of a dataset."""
    files = [f for f in sorted(path.rglob("*.arrow")) if not f.name.startswith("cache-") and _CACHED_SPLIT.search(f.name)]
    folders = sorted({f.parent for f in files})
    if len(folders) > 1:
        raise ValueError(f"{path} holds several cached versions; give one folder: "
                         + ", ".join(str(f) for f in folders[:5]))
    shards: dict[str, list[Path]] = {}
    for file in files:
        shards.setdefault(_CACHED_SPLIT.search(file.name)["split"], []).append(file)
    return shards


def _data_files(path: Path) -> list[Path]:
    return [f for f in sorted(path.rglob("*")) if f.is_file() and f.suffix.lower() in DATA_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(path).parts)]


def pick_split(splits, split: str | None):
    """The one split of a dataset (a Dataset has none to pick), or the one named; ValueError listing the splits."""
    if not hasattr(splits, "keys"):
        return splits
    names = list(splits.keys())
    if split is None and len(names) == 1:
        return splits[names[0]]
    if split is None:
        raise ValueError(f"the dataset has splits {', '.join(names)}: choose one with --split")
    if split not in splits:
        raise ValueError(f"the dataset has no split {split!r}; it has {', '.join(names)}")
    return splits[split]


def offline_datasets():
    """The `datasets` module with the Hub switched off, so a missing file is an error and never a download."""
    # Both libraries read these variables once, when first imported; set them first, and on the
    # already-imported modules too (a test or another page may have imported them).
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets
    import huggingface_hub.constants

    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    return datasets


def fingerprint(files: list[Path], root: Path, split: str | None = None) -> str:
    """sha256 over each file's name, size, first and last MiB (cheap for large tables) and the split."""
    digest = hashlib.sha256(str(split).encode())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if file != root else file.name}:{size}".encode())
        with file.open("rb") as f:
            digest.update(f.read(_FINGERPRINT_CHUNK))
            f.seek(max(0, size - _FINGERPRINT_CHUNK))
            digest.update(f.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()
