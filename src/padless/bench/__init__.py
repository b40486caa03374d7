"""Offline benchmarks: a reproducible mixed-length workload, a matmul peak, and padless vs. common baselines."""
