"""The CPU build's two machine-dependent settings (issue 13): a bf16 fallback for
CPUs that emulate bf16, and where the compute threads are bound."""
from __future__ import annotations

import os

from server.engines.vllm_engine import cpu_has_native_bf16, cpu_threads_bind

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"


def test_avx2_only_has_no_native_bf16(tmp_path):
    (tmp_path / "cpuinfo").write_text(AVX2)
    assert not cpu_has_native_bf16(str(tmp_path / "cpuinfo"))


def test_avx512_bf16_or_amx_is_native(tmp_path):
    for text in (SAPPHIRE, ZEN4):
        (tmp_path / "cpuinfo").write_text(text)
        assert cpu_has_native_bf16(str(tmp_path / "cpuinfo"))


def test_no_x86_flags_or_no_cpuinfo_keeps_bf16(tmp_path):
    (tmp_path / "cpuinfo").write_text(ARM)
    assert cpu_has_native_bf16(str(tmp_path / "cpuinfo"))
    assert cpu_has_native_bf16(str(tmp_path / "absent"))


def test_threads_bind_all_lists_the_allowed_cpus():
    ids = sorted(os.sched_getaffinity(0))
    assert cpu_threads_bind("all") == ",".join(map(str, ids))
    assert cpu_threads_bind("0-3") == "0-3"
    assert cpu_threads_bind("nobind") == "nobind"
