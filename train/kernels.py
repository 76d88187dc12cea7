"""The same model from the same data and seed on any x86-64 machine with AVX2: numpy's and OpenBLAS's kernels pinned.

Both libraries pick their kernels by CPU when they load: OpenBLAS its
SkylakeX kernels on an AVX-512 machine and Haswell or Zen ones elsewhere,
numpy its AVX-512 loops where it can. Their float sums differ in the last
bits, the ALS factors and the features with them, and the ranker's splits
turn that into another model: trained twice on one machine with native and
with AVX2 kernels, 1,000 of 1,200 recorded answers differed and the backtest
moved by 0.002 (docs/training.md). The training commands therefore restart
themselves with the kernels every x86-64-v3 machine has, before any work.
``RECSYS_NATIVE_KERNELS=1`` lets the libraries choose (the model is then
reproducible on that kind of CPU only).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from typing import Any, TypedDict

NATIVE = "RECSYS_NATIVE_KERNELS"
OPENBLAS_AVX2 = "Haswell"  # OpenBLAS's AVX2 + FMA kernels: what every x86-64-v3 CPU runs
# numpy's dispatch targets beyond AVX2 (the names of numpy 2.x, then of 1.x): disabled when the build has them.
BEYOND_AVX2 = ("X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F", "AVX512CD", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL")
AVX2_NAMES = ("X86_V3", "AVX2")
# numpy's ``show_config(mode="dicts")["SIMD Extensions"]`` as its stubs type it: a TypedDict, not a Mapping[str, list].
SIMDExtensions = TypedDict("SIMDExtensions", {"baseline": list[str], "found": list[str], "not found": list[str]})


def pinned_environment(environ: Mapping[str, str], machine: str, simd: SIMDExtensions) -> dict[str, str]:
    """The variables to add so that numpy and OpenBLAS load AVX2 kernels.

    ``simd`` is numpy's ``show_config(mode="dicts")["SIMD Extensions"]``.
    Nothing when they are in force already, when asked for native kernels,
    or off x86-64 or without AVX2 (pinning there would pick kernels the CPU
    cannot run).
    """
    if environ.get(NATIVE) == "1" or machine.lower() not in ("x86_64", "amd64"):
        return {}
    runnable = {*simd.get("baseline", []), *simd.get("found", [])}
    if not runnable & set(AVX2_NAMES):
        return {}
    dispatched = [*simd.get("found", []), *simd.get("not found", [])]
    wanted = {
        "OPENBLAS_CORETYPE": OPENBLAS_AVX2,
        "NPY_DISABLE_CPU_FEATURES": " ".join(t for t in dispatched if t in BEYOND_AVX2),
    }
    return {name: value for name, value in wanted.items() if value and environ.get(name) != value}


def restart_with_pinned_kernels() -> None:
    """Re-run this command with the pinned kernels, unless they are in force (then return at once).

    For a command's ``__main__`` only: the libraries read the variables when
    they load, so the process must start again with them.
    """
    import numpy as np

    updates = pinned_environment(os.environ, platform.machine(), np.show_config(mode="dicts")["SIMD Extensions"])
    if updates and os.environ.get("RECSYS_KERNELS_RESTARTED") != "1":  # never twice, whatever numpy reports
        environ = {**os.environ, **updates, "RECSYS_KERNELS_RESTARTED": "1"}
        sys.stdout.flush()
        # This interpreter with its own command line again: nothing from outside is run.
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)  # nosec B606


def kernels_in_use() -> dict[str, Any]:
    """What the model card records: the BLAS kernels and numpy loops this process runs."""
    import numpy as np
    from threadpoolctl import threadpool_info

    simd = np.show_config(mode="dicts")["SIMD Extensions"]
    blas = sorted({str(lib.get("architecture")) for lib in threadpool_info() if lib.get("user_api") == "blas"})
    return {
        "blas": blas,
        "numpy_simd": [*simd.get("baseline", []), *simd.get("found", [])],
        "machine": platform.machine(),
    }
