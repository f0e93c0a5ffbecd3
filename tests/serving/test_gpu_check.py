"""`bench gpu`, the CUDA check, on what these machines have: it refuses without CUDA, and
its measurement (the official SDK, 1 and 16 streams, tokens from the usage chunks) runs
against a real model server on the CPU."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu


def test_without_cuda_the_gpu_check_says_where_to_run_it() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run for real")
    with pytest.raises(RuntimeError, match="machine with an NVIDIA GPU"):
        gpu.run(log=lambda line: None)


@pytest.mark.slow
def test_the_measurement_reports_completion_tokens_per_second_for_1_and_16_streams(tiny_chat_server: str) -> None:
    rates = gpu.measure(tiny_chat_server + "/v1", "unused", model="tiny-chat", per_stream=1)
    assert set(rates) == {1, 16} and all(rate > 0 for rate in rates.values())
    figures = gpu.GpuFigures("none (CPU)", [gpu.Run("builtin", "cpu", rates)])
    assert "| builtin | cpu |" in gpu.table(figures) and figures.as_json()["builtin_16_streams_tokens_per_s"] > 0
