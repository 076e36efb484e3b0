"""Run under torchrun: for every dataset, worker count and policy given, each
rank streams two epochs through a DataLoader, all-reduces once per batch (a
hang here means unequal batch counts), and rank 0 writes what every rank
read to --out as JSON."""

import argparse
import faulthandler
import json

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from loaders import StreamingTarDataset


def sample_index(sample):
    return sample["__index__"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # If a rank hangs, its threads' stacks reach the test's failure message.
    faulthandler.dump_traceback_later(360, exit=True)  # before the test gives up (400 s)
    dist.init_process_group("gloo")
    runs = []
    for data in args.data:
        for workers in [int(w) for w in args.workers.split(",")]:
            for drop_last in (False, True):
                dataset = StreamingTarDataset(data, seed=3, drop_last=drop_last, transform=sample_index)
                batched = dataset.batched(args.batch_size, collation_fn=np.array)
                loader = DataLoader(batched, batch_size=None, num_workers=workers)
                epochs = []
                for epoch in range(2):
                    batched.set_epoch(epoch)
                    indices = []
                    for batch in loader:
                        indices += batch.tolist()
                        flag = torch.ones(1)
                        dist.all_reduce(flag)
                    epochs.append(indices)
                # the same epoch again must give the same stream
                batched.set_epoch(1)
                again = [i for batch in loader for i in batch.tolist()]
                runs.append({
                    "data": data, "workers": workers, "drop_last": drop_last,
                    "len": len(dataset), "batches": len(batched), "loader_len": len(loader),
                    "epochs": epochs, "again": again,
                })
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, runs)
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(everyone, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
