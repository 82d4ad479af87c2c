"""`reason bench engine --shape`: the shaped random-weight files and the load/generate report."""
import json
import shutil
from collections import namedtuple

import pytest
from click.testing import CliRunner

from app.bench.gguf_shapes import SHAPES, shaped_gguf, tensor_types
from app.bench.load import format_load_table, resident_fraction
from app.cli import cli
from engine.dequant import type_name
from engine.gguf_file import GGUFFile


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("shapes")
    return work_dir, {recipe: shaped_gguf("tiny", recipe, work_dir) for recipe in ("Q4_0", "Q4_K_M")}


def test_shaped_files_hold_the_recipes_types_and_shapes(shaped):
    _, files = shaped
    for recipe, path in files.items():
        gguf = GGUFFile(path)
        types = {name: type_name(info.ggml_type) for name, info in gguf.tensors.items()}
        assert {name: dims for name, dims, _ in tensor_types(SHAPES["tiny"], recipe)} == \
            {name: tuple(info.shape) for name, info in gguf.tensors.items()}
        assert types["output.weight"] == "Q6_K" and types["blk.0.attn_norm.weight"] == "F32"
        assert len(gguf.require("tokenizer.ggml.tokens")) == SHAPES["tiny"].vocab_size
    q4_k_m = {name: type_name(info.ggml_type) for name, info in GGUFFile(files["Q4_K_M"]).tensors.items()}
    # llama.cpp's use_more_bits: with 2 layers only the last gets Q6_K in attn_v and ffn_down
    assert q4_k_m["blk.0.attn_v.weight"] == "Q4_K" and q4_k_m["blk.1.attn_v.weight"] == "Q6_K"
    assert q4_k_m["blk.1.ffn_down.weight"] == "Q6_K" and q4_k_m["blk.1.ffn_up.weight"] == "Q4_K"


def test_a_shaped_file_is_written_once_and_reused(shaped):
    work_dir, files = shaped
    before = files["Q4_0"].stat().st_mtime_ns
    assert shaped_gguf("tiny", "Q4_0", work_dir) == files["Q4_0"]
    assert files["Q4_0"].stat().st_mtime_ns == before and not list(work_dir.glob("*.partial"))


def test_too_little_disk_space_is_refused_with_what_to_do(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(1 << 30, 1 << 30, 1 << 20))
    with pytest.raises(ValueError, match="GiB free.*--work-dir"):
        shaped_gguf("tiny", "Q4_0", tmp_path)


def test_residency_is_read_from_the_kernel(shaped):
    _, files = shaped
    files["Q4_0"].read_bytes()
    fraction = resident_fraction(files["Q4_0"])
    assert fraction is None or fraction > 0.9  # just read: in the page cache


def test_the_table_shows_every_metric_ratio_and_target():
    side = {"load_s": 2.0, "load_cpu_s": 3.0, "peak_rss_bytes": 2**30, "prefill_tok_s": 10.0, "decode_tok_s": 2.0,
            "ttft_s": 1.5}
    ratios = {k: 1.0 for k in side}
    row = {"file": "llama2-7b Q4_0", "cache": "warm", "ours": side, "llamacpp": side, "ratios": ratios,
           "ours_load_average": 1.0, "llamacpp_load_average": 1.2,
           "ours_cache": {"resident_fraction": 1.0}, "llamacpp_cache": {"resident_fraction": None}}
    report = {"rows": [row], "prompt_tokens": 128, "new_tokens": 16, "threads": 2,
              "targets": [{"file": "llama2-7b Q4_0", "cache": "warm", "metric": "load_s", "max_ratio": 1.5,
                           "ratio": 1.0, "met": True}]}
    table = format_load_table(report)
    assert "load s" in table and "load CPU s" in table and "1024" in table and "decode tok/s" in table and "1.00" in table
    assert "target llama2-7b Q4_0 warm load_s <= 1.5x: 1.00x met" in table and "llamacpp -" in table


@pytest.mark.slow
def test_the_shape_bench_runs_every_file_on_both_sides(shaped):
    work_dir, _ = shaped
    args = ["bench", "engine", "--shape", "tiny", "--work-dir", str(work_dir), "--no-cold",
            "--prompt-tokens", "8", "--new-tokens", "3", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["file"] for row in report["rows"]] == ["tiny Q4_0", "tiny Q4_K_M", "default model"]
    for row in report["rows"]:
        for side in ("ours", "llamacpp"):
            assert row[side]["load_s"] > 0 and row[side]["peak_rss_bytes"] > 0 and row[side]["decode_tokens"] == 3
            rates = row[side]["decode_streams_tok_s"]  # decode: the median of three streams
            assert len(rates) == 3 and row[side]["decode_tok_s"] == sorted(rates)[1]
        assert all(row["ratios"][k] > 0 for k in ("load_s", "peak_rss_bytes", "ttft_s"))
