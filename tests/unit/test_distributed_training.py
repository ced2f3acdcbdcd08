"""Data-parallel training's pieces (training/distributed.py) in two real gloo processes: a step over two halves of a
batch, gradients averaged, is the step one process takes over the whole batch."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from training import distributed
from training.distributed import World

ROWS = 8


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(ROWS, 3, generator=generator), torch.randn(ROWS, 1, generator=generator)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Embedding(5, 2))  # the embedding: no grad


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, w: World) -> None:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    optimiser.zero_grad()
    loss = nn.functional.mse_loss(model[2](model[1](model[0](x))), y)  # mean over this process's rows
    loss.backward()
    distributed.average_gradients(model, w)
    optimiser.step()


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        w = distributed.world()
        model = _model(seed=100 + rank)  # different starts: same_start gives both rank 0's
        distributed.same_start(model, w)
        x, y = _data()
        half = ROWS // 2
        batches = list(distributed.shard([(x[:half], y[:half]), (x[half:], y[half:]), (x, y)], w))
        assert len(batches) == 1  # the third batch has no partner: left out on both
        _step(model, *batches[0], w)
        told = distributed.from_main([float(rank + 1), 2.5], w, torch.device("cpu"))
        torch.save({"state": model.state_dict(), "told": told, "world": w}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shard_gives_each_rank_every_size_th_batch_and_drops_an_incomplete_last_group():
    batches = list(range(7))
    assert list(distributed.shard(batches, World(0, 2))) == [0, 2, 4]
    assert list(distributed.shard(batches, World(1, 2))) == [1, 3, 5]
    assert list(distributed.shard(batches, World(2, 3))) == [2, 5]
    assert list(distributed.shard(batches, World())) == batches  # one process takes everything


def test_a_step_in_two_processes_equals_one_process_step_over_the_whole_batch(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo talks over the loopback
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "rank")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]
    single = _model(seed=100)  # rank 0's start
    _step(single, *_data(), World())
    for name, value in single.state_dict().items():
        for r in ranks:
            assert torch.allclose(r["state"][name], value, atol=1e-6), name
    assert [r["told"] for r in ranks] == [[1.0, 2.5], [1.0, 2.5]]  # rank 0's figures reach rank 1
    assert [r["world"] for r in ranks] == [World(0, 2, 0), World(1, 2, 0)]
    # one process: nothing to average, nothing sent
    alone = _model(seed=100)
    assert distributed.from_main([3.0], World(), torch.device("cpu")) == [3.0]
    distributed.average_gradients(alone, World())
    assert all(p.grad is None for p in alone.parameters())
