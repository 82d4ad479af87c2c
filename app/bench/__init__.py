"""Benchmarks: ours against a reference (llama.cpp, a sort-based sampler), side by side; `reason bench`."""
