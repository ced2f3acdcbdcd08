"""Data-parallel training: the same training run in several processes started by torchrun, each on its share of
every step's examples, their gradients averaged before every optimiser step.

``training.processes`` above 1 makes :func:`training.run.run` start ``torchrun --standalone --nproc-per-node N -m
training.run`` (one machine: one process per GPU with NCCL, or CPU processes with gloo). Every process builds the
same model from the same seed, reads the same batches in the same order and keeps every ``size``-th of them from its
rank on; a step's gradients are summed over the processes and divided by their number, so a step sees the examples
of ``size`` batches as one process would see one batch of that size. Gradients are averaged by hand rather than by
DistributedDataParallel because the loss functions call the towers' own methods, not the module's ``forward``, which
DDP needs to see. Rank 0 does everything else: validation (its decision is sent to the others, so every process
stops at the same epoch), evaluation, gating and writing; the others only train.

A plain process (no torchrun) is a world of one and every function here is then a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

# torchrun gives every process these; a process without them is not part of a distributed run
WORLD_SIZE, RANK, LOCAL_RANK = "WORLD_SIZE", "RANK", "LOCAL_RANK"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: validates, evaluates and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether this process was started by torchrun as one of several."""
    return int(os.environ.get(WORLD_SIZE, "1")) > 1


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get(LOCAL_RANK, "0")))
    return World()


def join(device_setting: str) -> World:
    """Join torchrun's process group (once): NCCL with this process's own GPU when training runs on CUDA, gloo on
    the CPU. Outside torchrun: a world of one."""
    if launched() and not dist.is_initialized():
        cuda = device_setting != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get(LOCAL_RANK, "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batches: Iterable[T], w: World) -> Iterator[T]:
    """This process's batches: of every ``size`` consecutive batches, the one at its rank. A last group with fewer
    than ``size`` batches is left out, so every process takes the same number of steps (each step waits for all)."""
    if not w.distributed:
        yield from batches
        return
    group: list[T] = []
    for batch in batches:
        group.append(batch)
        if len(group) == w.size:
            yield group[w.rank]
            group = []


def same_start(model: nn.Module, w: World) -> None:
    """Every process starts from rank 0's weights (they are equal already when seeded alike; this makes sure)."""
    if w.distributed:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(model: nn.Module, w: World) -> None:
    """Each parameter's gradient becomes the mean over the processes, in one all-reduce. A parameter no example of
    this process's batch reached has no gradient here but may have one elsewhere: it counts as zero."""
    if not w.distributed:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= w.size
    for grad, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(averaged)


def from_main(values: list[float], w: World, device: torch.device) -> list[float]:
    """Rank 0's values, on every process (the validation figures that decide the best epoch and early stopping)."""
    if not w.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return [float(v) for v in tensor.tolist()]


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


@contextmanager
def main_first(w: World) -> Iterator[None]:
    """Rank 0 runs the body first (it writes what the body caches, e.g. the fetched features); the others run it
    after, and find it written."""
    if not w.main:
        barrier(w)
    yield
    if w.main:
        barrier(w)
