"""Distributed data-parallel helpers: the same training script runs alone or under torchrun.

``torchrun --nproc_per_node N`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; when they
are present ``init_distributed`` joins the process group (nccl on CUDA, gloo on CPU). Only
rank 0 writes files and evaluates; the others wait at ``barrier``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True under DDP (more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and validates."""
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """Reads the torchrun environment; a plain ``python`` run is rank 0 of 1."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    world_size=int(os.environ.get("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> DistInfo:
    """Joins the process group when launched by torchrun (idempotent); returns this rank's info."""
    info = dist_info_from_env()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    if device.type == "cuda":
        if torch.cuda.device_count() <= info.local_rank:
            raise RuntimeError(f"LOCAL_RANK {info.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                               f"use --nproc_per_node <= {torch.cuda.device_count()}")
        torch.cuda.set_device(info.local_rank)
    # rank 0 validates and saves while the others wait: allow far longer than the default timeout
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://",
                            timeout=timedelta(hours=3))
    return info


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``) under DDP; ``device`` otherwise."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo, *, sync_bn: bool = False) -> nn.Module:
    """Wraps ``model`` in DDP (optionally converting BatchNorm to SyncBatchNorm) when distributed.

    SyncBatchNorm needs CUDA; on CPU the flag is refused rather than silently ignored.
    """
    if not info.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU kernel); drop the flag")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.DataParallel, DistributedDataParallel)) else model


def barrier(info: DistInfo) -> None:
    """Waits for every rank (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Sends a picklable object from rank ``src`` to all ranks (identity in a single process)."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (for logging losses); unchanged in a single process."""
    if not (info.enabled and dist.is_initialized()):
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / info.world_size


def cleanup_distributed() -> None:
    """Leaves the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
