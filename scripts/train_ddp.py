#!/usr/bin/env python3
"""A short, real DDP training run over packed shards: the example to copy.

Run it with torchrun (CPU, gloo) on a dataset made by ``python -m packer
build`` (images with a ``.json`` holding ``{"label": int}`` or a ``.cls``
member, like ``make demo``'s), e.g.::

    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py build/demo/shards \\
        --loader streaming --epochs 2 --checkpoint /tmp/ckpt.pt

What it shows
-------------
* either loader: ``--loader streaming`` (``StreamingTarDataset`` batched in
  its pipeline) or ``--loader indexed`` (``IndexedTarDataset`` with
  ``ShardAwareSampler``), both in a ``ResumableLoader``, which sets the epoch
  before each epoch and knows how many batches the loop has consumed;
* equal batch counts on every rank (no DDP hang), a tqdm progress bar of the
  exact length on rank 0;
* a checkpoint (model, optimizer and the loader's state: epoch and position)
  written atomically every ``--save-every`` steps and at the end; started
  again with the same ``--checkpoint``, the run continues with exactly the
  samples not yet consumed, even with another number of ranks or workers
  (the global batch is ``ranks x --batch-size``).

The model is deliberately tiny (a small CNN on ``--image-size`` pixel
images) so that the input pipeline, not the model, is what this exercises.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loaders import IndexedTarDataset, ResumableLoader, ShardAwareSampler, StreamingTarDataset  # noqa: E402


class ToTensors:
    """Decoded sample -> (image tensor C x H x W in [0, 1], label)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        found = [sample[ext] for ext in ("jpg", "jpeg", "png", "webp") if ext in sample]
        if not found:
            raise ValueError(f"sample {sample['__key__']!r} has no jpg/png/webp image")
        image = found[0]
        image = image.resize((self.size, self.size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        if "cls" in sample:
            label = int(sample["cls"])
        elif "json" in sample and "label" in sample["json"]:
            label = int(sample["json"]["label"])
        else:
            raise ValueError(f"sample {sample['__key__']!r} has no .cls member or json label")
        return pixels, label


def collate(batch):
    images, labels = zip(*batch)
    return torch.stack(images), torch.tensor(labels)


def tiny_cnn(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, classes),
    )


def make_loader(args: argparse.Namespace) -> ResumableLoader:
    to_tensors = ToTensors(args.image_size)
    if args.loader == "streaming":
        dataset = StreamingTarDataset(args.data, seed=args.seed, decode="rgb", transform=to_tensors)
        return ResumableLoader(dataset.batched(args.batch_size, collation_fn=collate), batch_size=None,
                               num_workers=args.workers)
    dataset = IndexedTarDataset(args.data, decode="rgb", transform=to_tensors)
    sampler = ShardAwareSampler(dataset, seed=args.seed, batch_size=args.batch_size)
    return ResumableLoader(dataset, sampler=sampler, batch_size=args.batch_size, num_workers=args.workers,
                           collate_fn=collate)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, loader: ResumableLoader, step: int) -> None:
    """Rank 0 writes; a temporary name then a rename, so a crash never leaves half a checkpoint."""
    if dist.get_rank() != 0:
        return
    state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict(), "step": step}
    temp = path.with_name(f".{path.name}.tmp")
    torch.save(state, temp)
    os.replace(temp, path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="a dataset directory made by 'python -m packer build' (or tar files)")
    parser.add_argument("--loader", choices=["streaming", "indexed"], default="streaming")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument("--classes", type=int, default=10, help="labels are 0 .. classes-1")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in this run (to try resuming)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file: resumed from when it exists")
    parser.add_argument("--save-every", type=int, default=50, help="steps between checkpoints")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(args.seed)
    model = nn.parallel.DistributedDataParallel(tiny_cnn(args.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loader = make_loader(args)
    step = 0
    if args.checkpoint is not None and args.checkpoint.exists():
        state = torch.load(args.checkpoint, weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        step = state["step"]
        if rank == 0:
            print(f"resumed from {args.checkpoint}: step {step}, epoch {state['loader']['epoch']}, "
                  f"position {state['loader']['position']}", flush=True)
    from tqdm import tqdm

    steps_this_run = 0
    stop = False
    for epoch in range(loader.epoch, args.epochs):
        total = torch.zeros(2)
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}", disable=rank != 0, leave=True)
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()  # DDP all-reduces the gradients: every rank must take every step
            optimizer.step()
            step += 1
            steps_this_run += 1
            total += torch.tensor([loss.item() * len(labels), len(labels)])
            bar.update(1)
            if args.checkpoint is not None and step % args.save_every == 0:
                save_checkpoint(args.checkpoint, model, optimizer, loader, step)
            if args.max_steps is not None and steps_this_run >= args.max_steps:
                stop = True
                break
        bar.close()
        dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch}: mean loss {total[0] / max(total[1], 1):.4f} over {int(total[1])} samples, step {step}", flush=True)
        if stop:
            break
    if args.checkpoint is not None:
        save_checkpoint(args.checkpoint, model, optimizer, loader, step)
        if rank == 0:
            print(f"saved {args.checkpoint} at step {step}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
