"""Structured channel pruning over torch-pruning's dependency graph."""
from yolo_prune.pruning.importance import IMPORTANCES, get_importance
from yolo_prune.pruning.pruner import PruneGroup, PruneResult, PruningError, conv_out_channels, prune_model

__all__ = ["IMPORTANCES", "PruneGroup", "PruneResult", "PruningError", "conv_out_channels", "get_importance",
           "prune_model"]
