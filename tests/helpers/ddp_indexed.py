"""Run under torchrun: every rank reads its ShardAwareSampler share through a
DataLoader, all-reduces once per batch (a hang here means unequal batch
counts), and rank 0 writes what each rank read to --out as JSON."""

import argparse
import faulthandler
import json

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from loaders import IndexedTarDataset, ShardAwareSampler


def sample_index(sample):
    return sample["__index__"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--drop-last", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # If a rank hangs, its threads' stacks reach the test's failure message.
    faulthandler.dump_traceback_later(210, exit=True)  # before the test gives up (240 s)
    dist.init_process_group("gloo")
    dataset = IndexedTarDataset(args.data, transform=sample_index)
    sampler = ShardAwareSampler(dataset, seed=3, drop_last=args.drop_last)
    loader = DataLoader(dataset, sampler=sampler, batch_size=4, num_workers=args.workers)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        indices = []
        for batch in loader:
            indices += batch.tolist()
            flag = torch.ones(1)
            dist.all_reduce(flag)
        seen.append(indices)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {"rank": dist.get_rank(), "len": len(sampler), "epochs": seen})
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
