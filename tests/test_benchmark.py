"""Params / MACs and latency measurement (what is timed, how it is summarised)."""
from __future__ import annotations

import copy

import pytest
import torch
from _fixtures_data import OracleDetector
from torch import nn

from yolo_prune.benchmark import benchmark_suite, measure_latency, model_stats


def test_model_stats_counts_a_conv_exactly():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    stats = model_stats(model, 32)
    assert stats["params_m"] == pytest.approx(8 * 3 * 9 / 1e6)
    assert stats["gmacs"] == pytest.approx(8 * 3 * 9 * 32 * 32 / 1e9)
    assert model_stats(model, (16, 32))["gmacs"] == pytest.approx(stats["gmacs"] / 2)


def test_model_stats_keeps_batchnorm_statistics_and_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = copy.deepcopy(model.state_dict())
    model_stats(model, 16)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_measure_latency_reports_stages_and_spread():
    calls = []

    def fuse(m: nn.Module) -> nn.Module:
        calls.append(m)
        return m

    model = OracleDetector()
    threads = torch.get_num_threads()
    r = measure_latency(model, 64, batch=2, warmup=1, runs=5, threads=1, fuse=fuse)
    assert torch.get_num_threads() == threads and r["threads"] == 1
    assert len(calls) == 1 and calls[0] is not model  # the copy is fused, not the caller's model
    for stage in ("latency", "preprocess", "nms", "end_to_end"):
        assert 0 < r[f"{stage}_ms_p10"] <= r[f"{stage}_ms_median"] <= r[f"{stage}_ms_p90"]
    assert r["end_to_end_ms_median"] >= r["latency_ms_median"]
    assert r["fps"] == pytest.approx(1000 / r["latency_ms_median"])
    assert (r["batch"], r["runs"], r["half"], r["fused"]) == (2, 5, False, True)


def test_measure_latency_without_nms_and_bad_settings():
    r = measure_latency(OracleDetector(), 64, warmup=0, runs=2, nms=False)
    assert r["nms_ms_median"] is None and r["includes"]["nms"] == "not measured"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        measure_latency(OracleDetector(), 64, device="cpu", half=True)
    with pytest.raises(ValueError, match="runs must be"):
        measure_latency(OracleDetector(), 64, runs=0)


def test_benchmark_suite_on_cpu_is_fp32_per_batch():
    rows = benchmark_suite(OracleDetector(), 64, batches=(1, 2), warmup=0, runs=2)
    assert [(r["batch"], r["half"]) for r in rows] == [(1, False), (2, False)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_benchmark_suite_on_cuda_adds_fp16():
    rows = benchmark_suite(OracleDetector(), 64, batches=(1,), device="cuda", warmup=1, runs=3)
    assert [r["half"] for r in rows] == [False, True] and "cuda" in rows[0]["device"]


def test_channels_last_layout_keeps_outputs_and_is_reported():
    """NHWC timing must time the same computation.

    A YOLO model (with non-4D anchor buffers) converts, and gives the same outputs as in NCHW.
    """
    from conftest import build_yolov7

    from yolo_prune.benchmark.latency import to_channels_last

    model = build_yolov7("yolov7-tiny", width=0.125)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[0]
        nhwc = to_channels_last(copy.deepcopy(model))(x.contiguous(memory_format=torch.channels_last))[0]
    torch.testing.assert_close(nhwc, ref, rtol=1e-4, atol=1e-4)
    assert measure_latency(model, 64, runs=1, warmup=0, nms=False)["channels_last"] is True
    assert measure_latency(model, 64, runs=1, warmup=0, nms=False, channels_last=False)["channels_last"] is False
