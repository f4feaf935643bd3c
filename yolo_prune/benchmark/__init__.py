"""Latency / FPS (preprocess, inference, NMS; fp32 / fp16; batch 1 / N) and MACs / params."""
from yolo_prune.benchmark.latency import benchmark_suite, measure_latency, torch_threads
from yolo_prune.benchmark.stats import model_stats

__all__ = ["benchmark_suite", "measure_latency", "model_stats", "torch_threads"]
