"""Bytes per value of the weight and cache dtypes the planner names."""
from __future__ import annotations

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
