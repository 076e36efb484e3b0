"""Run under torchrun: consume global batches of one epoch through a
ResumableLoader (streaming or indexed), optionally after loading a saved
state and optionally stopping after --steps batches to save the state.
Rank 0 writes every global batch consumed (ranks' batches concatenated in
rank order) and the saved state to --out as JSON."""

import argparse
import faulthandler
import json

import numpy as np
import torch
import torch.distributed as dist

from loaders import IndexedTarDataset, ResumableLoader, ShardAwareSampler, StreamingTarDataset


def sample_index(sample):
    return sample["__index__"]


def make_loader(args):
    if args.loader == "streaming":
        dataset = StreamingTarDataset(args.data, seed=9, drop_last=args.drop_last, transform=sample_index)
        return ResumableLoader(dataset.batched(args.batch_size, collation_fn=np.array), batch_size=None, num_workers=args.workers)
    dataset = IndexedTarDataset(args.data, transform=sample_index)
    sampler = ShardAwareSampler(dataset, seed=9, drop_last=args.drop_last, batch_size=args.batch_size)
    return ResumableLoader(dataset, sampler=sampler, batch_size=args.batch_size, num_workers=args.workers,
                           collate_fn=np.array)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--loader", choices=["streaming", "indexed"], required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--drop-last", action="store_true")
    parser.add_argument("--steps", type=int, default=-1, help="stop after this many batches (-1: end of epoch)")
    parser.add_argument("--state", help="a JSON file with a state to resume from")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # If a rank hangs, its threads' stacks reach the test's failure message.
    faulthandler.dump_traceback_later(270, exit=True)  # before the test gives up (300 s)
    dist.init_process_group("gloo")
    loader = make_loader(args)
    if args.state:
        with open(args.state) as f:
            loader.load_state_dict(json.load(f))
    expected = len(loader)  # batches this iteration will hand out
    batches = []
    for batch in loader:  # a batch handed out counts as consumed
        batches.append(batch.tolist())
        dist.all_reduce(torch.ones(1))
        if len(batches) == args.steps:
            break
    state = loader.state_dict()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {"batches": batches, "state": state, "len": expected})
    if dist.get_rank() == 0:
        steps = {len(r["batches"]) for r in everyone}
        assert len(steps) == 1, f"ranks consumed different numbers of batches: {steps}"
        global_batches = [sum((r["batches"][k] for r in everyone), []) for k in range(steps.pop())]
        states = [r["state"] for r in everyone]
        assert all(s == states[0] for s in states), "ranks disagree on the state"
        with open(args.out, "w") as f:
            json.dump({"global_batches": global_batches, "state": states[0], "lens": [r["len"] for r in everyone]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
