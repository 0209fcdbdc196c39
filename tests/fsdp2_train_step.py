"""FSDP2 training with a sharded checkpoint: `fully_shard` on every block (the unit of `_no_split_modules`) and then
on the model, two CPU processes over gloo, AdamW, one global batch of 4 sequences split across the ranks.

    torchrun --nproc_per_node 2 fsdp2_train_step.py OUT STEPS [--save-at N] [--resume]

Prints `LOSSES [...]` (the global mean loss of each step, from rank 0). `--save-at N` writes a sharded checkpoint
(torch.distributed.checkpoint: each rank writes its own shards of the weights and optimizer states) after step N;
`--resume` loads it and runs the remaining steps. Without WORLD_SIZE it runs as one plain process (the reference).
Run by tests/test_distributed.py.
"""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
from helpers import tiny_config

from modeling_xlstm import XLSTMForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("steps", type=int)
    parser.add_argument("--save-at", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0

    torch.manual_seed(0)
    model = XLSTMForCausalLM(tiny_config("paper"))
    data = torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(0))
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for block in model.backbone.blocks:
            fully_shard(block)
        fully_shard(model)
        data = data.chunk(world)[rank]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    checkpoint = os.path.join(args.out, "checkpoint")
    first = 0
    if args.resume:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state, "step": torch.tensor(0)}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        first = int(state["step"])

    losses = []
    for step in range(first, args.steps):
        loss = model(data, labels=data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        global_loss = loss.detach().clone()
        if world > 1:  # equal row counts and lengths per rank: the global mean is the mean of the rank means
            dist.all_reduce(global_loss)
            global_loss /= world
        losses.append(global_loss.item())
        if args.save_at == step + 1:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state, "step": torch.tensor(step + 1)}, checkpoint_id=checkpoint)
    if rank == 0:
        print("LOSSES " + json.dumps(losses), flush=True)
    if world > 1:
        # leave without teardown after a final barrier (gloo's destroy_process_group has hung a rank at exit)
        dist.barrier()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
