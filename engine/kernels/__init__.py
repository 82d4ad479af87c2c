"""Triton kernels for the GPU path; each has a plain PyTorch reference beside it in `engine/`."""
