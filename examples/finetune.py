"""Fine-tune an xLSTM language model with the Hugging Face Trainer, offline.

By default it trains a small paper-style xLSTM (sLSTM + mLSTM blocks) from scratch on the Python standard
library's own source files, with a byte-level BPE tokenizer trained on them, and reports held-out perplexity:

    python examples/finetune.py --output-dir out/finetune

Fine-tune an existing model folder (e.g. one written by `python -m modeling_xlstm.conversion`) on your own
text files, optionally with LoRA adapters or gradient checkpointing:

    python examples/finetune.py --model path/to/model --data notes/*.txt --lora --output-dir out/lora

Multi-process data parallel training works unchanged through accelerate:

    accelerate launch --num_processes 2 examples/finetune.py --output-dir out/ddp
"""

from __future__ import annotations

import argparse
import math
import random
import sysconfig
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

import modeling_xlstm  # noqa: F401  (registers the xlstm_stack model type)
from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM
from modeling_xlstm.training import PerplexityCallback


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder to fine-tune (default: a new small xLSTM)")
    parser.add_argument("--data", nargs="*", help="text files (default: the standard library's .py files)")
    parser.add_argument("--output-dir", default="out/finetune", help="where checkpoints and the model go")
    parser.add_argument("--max-files", type=int, default=120, help="at most this many data files")
    parser.add_argument("--block-size", type=int, default=128, help="tokens per training example")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--activation-checkpointing", action="store_true", help="recompute blocks in the backward pass (less memory)"
    )
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters on the projections (needs peft)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def read_corpus(paths: list[str] | None, max_files: int, seed: int) -> list[str]:
    if paths:
        files = [Path(p) for p in paths]
    else:
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"error: these data files do not exist: {', '.join(missing)}")
    random.Random(seed).shuffle(files)
    return [f.read_text(encoding="utf-8", errors="replace") for f in files[:max_files]]


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def blocks_of_tokens(tokenizer, texts: list[str], block_size: int) -> list[dict]:
    """Concatenate the documents (separated by EOS) and cut them into equal blocks: no padding needed."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text).input_ids + [tokenizer.eos_token_id])
    return [{"input_ids": ids[i : i + block_size]} for i in range(0, len(ids) - block_size + 1, block_size)]


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    texts = read_corpus(args.data, args.max_files, args.seed)
    held_out = max(1, len(texts) // 10)

    if args.model:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        tokenizer = train_tokenizer(texts[held_out:])
        config = XLSTMConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            num_hidden_layers=4,
            slstm_at=[1],
            num_heads=4,
            block_style="paper",
            chunk_size=64,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = XLSTMForCausalLM(config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    if args.lora:
        from peft import LoraConfig, get_peft_model

        targets = [
            name
            for name in ("q", "k", "v", "out_proj", "up_proj", "down_proj", "proj_up", "proj_up_gate", "proj_down")
            if any(module_name.endswith("." + name) for module_name, _ in model.named_modules())
        ]
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
        model.print_trainable_parameters()

    train_set = blocks_of_tokens(tokenizer, texts[held_out:], args.block_size)
    eval_set = blocks_of_tokens(tokenizer, texts[:held_out], args.block_size)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(20, args.max_steps // 10),
        logging_steps=10,
        save_steps=max(50, args.max_steps // 2),
        activation_checkpointing=args.activation_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),  # torch warns about pinning without a GPU
        report_to=[],
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[PerplexityCallback()],
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    if trainer.is_world_process_zero():
        print(
            f"held-out perplexity: {before['eval_perplexity']:.1f} -> {after['eval_perplexity']:.1f} "
            f"(loss {before['eval_loss']:.3f} -> {after['eval_loss']:.3f}, {math.log2(math.e) * after['eval_loss']:.3f}"
            f" bits/token); model saved to {args.output_dir}"
        )


if __name__ == "__main__":
    main()
