"""Bench settings that must be in place before numpy is imported."""

import os

# OpenBLAS worker threads spin after numpy loads them; on a 2-core machine they
# steal time from the single-threaded loops measured here. No bench uses BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
