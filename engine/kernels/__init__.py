"""Kernels of our own: Triton ones for the GPU path (sampling), and the AVX-512 VNNI int4 matmul for the CPU
(cpu_matmul), each with a plain PyTorch reference beside it in `engine/`."""
