"""Which kernels training pins, on which machines, and that a pinned process says so."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from tests.support import REPO
from train.kernels import NATIVE, kernels_in_use, pinned_environment

AVX512_NUMPY_2 = {"baseline": ["X86_V2"], "found": ["X86_V3", "X86_V4", "AVX512_ICL"], "not found": ["AVX512_SPR"]}
AVX2_NUMPY_2 = {"baseline": ["X86_V2"], "found": ["X86_V3"], "not found": ["X86_V4", "AVX512_ICL", "AVX512_SPR"]}
AVX512_NUMPY_1 = {"baseline": ["SSE", "SSE3"], "found": ["AVX2", "FMA3", "AVX512F", "AVX512_SKX"], "not found": []}
PINNED = {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def test_an_avx512_machine_and_an_avx2_machine_get_the_same_kernels():
    assert pinned_environment({}, "x86_64", AVX512_NUMPY_2) == PINNED
    assert pinned_environment({}, "x86_64", AVX2_NUMPY_2) == PINNED  # disabling what it lacks changes nothing
    assert pinned_environment({}, "AMD64", AVX512_NUMPY_1) == {
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512_SKX",
    }


def test_nothing_is_added_once_pinned_when_asked_for_native_or_where_avx2_is_missing():
    assert pinned_environment(PINNED, "x86_64", AVX512_NUMPY_2) == {}
    assert pinned_environment({NATIVE: "1"}, "x86_64", AVX512_NUMPY_2) == {}
    assert pinned_environment({}, "aarch64", {"baseline": ["NEON"], "found": ["ASIMDHP"], "not found": []}) == {}
    older = {"baseline": ["X86_V2"], "found": [], "not found": ["X86_V3", "X86_V4"]}  # a CPU without AVX2
    assert pinned_environment({}, "x86_64", older) == {}


def test_only_what_differs_is_set():
    assert pinned_environment({"OPENBLAS_CORETYPE": "Haswell"}, "x86_64", AVX2_NUMPY_2) == {
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"
    }


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the pins apply to x86-64 only")
def test_a_training_command_restarts_with_the_pinned_kernels_and_records_them():
    """A process started without the pins restarts itself and then runs OpenBLAS's AVX2 kernels, no AVX-512 loop."""
    simd = np.show_config(mode="dicts")["SIMD Extensions"]
    if not pinned_environment({}, "x86_64", simd):
        pytest.skip("this CPU has no AVX2: nothing is pinned")
    probe = (
        "import json; from train.kernels import restart_with_pinned_kernels, kernels_in_use; "
        "restart_with_pinned_kernels(); import scipy.linalg; print(json.dumps(kernels_in_use()))"
    )
    environ = {k: v for k, v in os.environ.items() if k not in (*PINNED, NATIVE, "RECSYS_KERNELS_RESTARTED")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=environ, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    reported = json.loads(out.stdout)
    assert reported["blas"] == ["Haswell"]
    assert not set(reported["numpy_simd"]) & {"X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F"}
    assert kernels_in_use()["machine"] == "x86_64"
