"""Two Trainer steps (two epochs) on one global batch of 4 equal-length sequences; prints the logged losses.

Run by tests/test_distributed.py both as one process (per-device batch 4) and under
`accelerate launch --num_processes 2` (per-device batch 2, gloo on CPU): DDP must give the same losses.
"""

import json
import os
import sys

import torch
from helpers import tiny_config
from transformers import Trainer, TrainingArguments, default_data_collator

from modeling_xlstm import XLSTMForCausalLM


def main(output_dir: str, per_device_batch: int) -> None:
    torch.manual_seed(0)
    model = XLSTMForCausalLM(tiny_config("paper"))
    data = torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in data]
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=per_device_batch,
        max_steps=2,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator)
    trainer.train()
    if trainer.is_world_process_zero():
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        print("LOSSES " + json.dumps(losses), flush=True)
    if torch.distributed.is_initialized():
        # Both ranks are done with collectives once they pass this barrier. Then leave without any teardown: gloo's
        # destroy_process_group has hung a rank here after a finished run, and leaving the group to interpreter
        # exit can abort one (SIGABRT).
        torch.distributed.barrier()
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
