"""GNOLR training throughput on CPU and, when one is visible, on a CUDA GPU with mixed precision (bf16 autocast).

Runs the project's own model and training loop (training.ordinal, training.trainer.fit) on synthetic batches shaped
like the Tmall training set (ids, 36 user and 14 item dense features, 50-token sequences, 4 level boundaries), so it
needs no warehouse: it is the prepared check for a lent GPU machine. Prints samples/s per device.

    python benchmarks/gnolr_gpu.py --rows 200000 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _figures import record_figure  # benchmarks/ is on sys.path when a script here runs

from training import ordinal, trainer
from training.data import Batch

ATTRIBUTE_VALUES = (20, 130, 50)  # H&M-like category, subcategory and colour vocabularies (0 = unknown)


def synthetic_batches(rows: int, batch_size: int, seed: int, users: int, items: int, length: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, rows, batch_size):
        n = min(batch_size, rows - start)
        levels = rng.integers(0, 5, (n, length))
        levels[:, : length // 2] = 0  # half the history is padding, as for most users
        out.append(
            Batch(
                user=rng.integers(1, users, n),
                user_dense=rng.normal(size=(n, 36)).astype(np.float32),
                seq_items=rng.integers(1, items, (n, length)),
                seq_levels=levels,
                seq_gaps=np.where(levels > 0, rng.integers(1, 17, (n, length)), 0),
                item=rng.integers(1, items, n),
                item_dense=rng.normal(size=(n, 14)).astype(np.float32),
                item_attrs=np.stack([rng.integers(0, v, n) for v in ATTRIBUTE_VALUES], axis=1),
                category=rng.choice(5, n, p=[0.8, 0.17, 0.005, 0.005, 0.02]),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="training rows per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()
    train = synthetic_batches(args.rows, args.batch_size, 0, args.users, args.items, 50)
    validation = synthetic_batches(args.batch_size * 2, args.batch_size, 1, args.users, args.items, 50)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}; devices: {devices}; {args.rows:,} rows x {args.epochs} epochs", flush=True)
    for name in devices:
        device, mixed = trainer.pick_device(name)
        torch.manual_seed(0)
        model = ordinal.OrdinalTwoTower(
            "gnolr",
            args.users,
            args.items,
            36,
            14,
            [0.2, 0.03, 0.025, 0.02],
            dim=16,
            hidden=64,
            sequence_length=50,
            item_attribute_values=ATTRIBUTE_VALUES,
        )
        with tempfile.TemporaryDirectory() as tmp:
            result = trainer.fit(
                model,
                lambda m, x: m.batch_loss(x),
                train=lambda epoch: train,
                validation=lambda: validation,
                device=device,
                mixed_precision=mixed,
                epochs=args.epochs,
                learning_rate=0.001,
                patience=args.epochs,
                checkpoint_dir=Path(tmp),
                name=f"gnolr[{name}]",
            )
        label = f"{name}{' + bf16 autocast' if mixed else ''}"
        if name == "cuda":
            label += f" ({torch.cuda.get_device_name(0)})"
        print(f"GNOLR training on {label}: {result.train_samples_per_s:,.0f} samples/s", flush=True)
        data = f"synthetic Tmall-shaped batches, {args.rows:,} rows x {args.epochs} epochs"
        record_figure("training", f"GNOLR training on {label}", round(result.train_samples_per_s), "samples/s", data)


if __name__ == "__main__":
    main()
