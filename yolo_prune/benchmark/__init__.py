"""Latency / FPS (preprocess, inference, NMS; fp32 / fp16; batch 1 / N), MACs / params, the summary row."""
from yolo_prune.benchmark.latency import benchmark_suite, measure_latency, torch_threads
from yolo_prune.benchmark.settings import BenchmarkSettings
from yolo_prune.benchmark.stats import model_stats
from yolo_prune.benchmark.summary import model_summary

__all__ = ["BenchmarkSettings", "benchmark_suite", "measure_latency", "model_stats", "model_summary", "torch_threads"]
