"""Small configurations, weight randomization and benchmark-script imports shared by the tests."""

import contextlib
import importlib
import sys
from pathlib import Path

import torch

from modeling_xlstm import XLSTMConfig


def tiny_config(block_style: str = "large", **overrides) -> XLSTMConfig:
    """A 4-block model with an sLSTM block at position 1 and a small chunk size (so short tests cross chunks)."""
    settings = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=4,
        slstm_at=[1],
        num_heads=2,
        slstm_num_heads=2,
        block_style=block_style,
        chunk_size=8,
        mlstm_proj_factor=2.0,
        ffn_round_up_to_multiple_of=16,
    )
    settings.update(overrides)
    return XLSTMConfig(**settings)


@torch.no_grad()
def randomize_(model: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter: the published init zeroes gate weights and sLSTM recurrent kernels, which would
    leave those paths untested."""
    g = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(scale * torch.randn(param.shape, generator=g).to(param.dtype))
    return model


CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a recurrent network keeps a state that summarises the past",
    "the matrix memory stores key value pairs with exponential gates",
    "scalar memory mixes information across heads through recurrent weights",
    "language models predict the next token from the tokens before it",
    "padding tokens must not change what the model remembers",
    "the dog sleeps while the fox runs through the forest",
    "gates decide what to write into memory and what to forget",
] * 4


def build_tokenizer(corpus=CORPUS, vocab_size: int = 400):
    """A small byte-level BPE tokenizer trained on `corpus` with the `tokenizers` library (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@contextlib.contextmanager
def benchmark_module(name: str):
    """Import `benchmarks/<name>.py` (the scripts import their siblings, e.g. `results`, by plain name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
