"""Small configurations, weight randomization and the other helpers shared by the tests."""

import contextlib
import importlib
import logging
import traceback
import warnings
from pathlib import Path

import torch

from modeling_xlstm import XLSTMConfig
from modeling_xlstm.compat import CACHE_NAME


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


def slstm_run_with_grads(fn, gates, recurrent, bias, init, mask, seed=1):
    """Run the sLSTM sequence `fn(gates, recurrent, bias, state, mask)` and back-propagate a random linear functional
    of h and all four final states (in float32, or float64 for float64 outputs); returns h, the final state and the
    gradients of every input (the initial state's too, when `init` is given)."""
    leaves = [x.detach().clone().requires_grad_() for x in (gates, recurrent, bias)]
    state = None
    if init is not None:
        state = tuple(s.detach().clone().requires_grad_() for s in init)
        leaves += list(state)
    h, final = fn(*leaves[:3], state, mask)
    g = torch.Generator().manual_seed(seed)
    outputs = (h, *final)
    dtypes = [torch.promote_types(o.dtype, torch.float32) for o in outputs]
    weights = [torch.randn(o.shape, generator=g, dtype=d).to(o.device) for o, d in zip(outputs, dtypes)]
    loss = sum((o.to(d) * w).sum() for o, d, w in zip(outputs, dtypes, weights))
    grads = torch.autograd.grad(loss, leaves)
    return h.detach(), tuple(s.detach() for s in final), grads


def generated_cache(output):
    """The cache of a `generate(..., return_dict_in_generate=True)` output, under the installed release's name
    (`cache` from transformers 5.24 on, `past_key_values` before)."""
    return getattr(output, CACHE_NAME)


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


_OUR_DIRS = tuple(
    str(Path(module.__file__).resolve().parent) for module in (
        importlib.import_module("modeling_xlstm"),
        importlib.import_module("modeling_xlstm.kernels"),
        importlib.import_module("modeling_xlstm.conversion"),
    )
)
# frames that only relay a warning: the emitting libraries and the standard machinery between caller and record
_RELAY_PARTS = ("/transformers/", "/torch/", "/logging/", "/warnings.py", "/functools.py", "/contextlib.py")


def _attributed_to_us(stack: list[traceback.FrameSummary]) -> bool:
    """Whether the innermost frame outside transformers, torch and the warning machinery is in this package."""
    for frame in reversed(stack):
        filename = str(Path(frame.filename).resolve())
        if any(part in filename for part in _RELAY_PARTS) or filename == str(Path(__file__).resolve()):
            continue
        return filename.startswith(_OUR_DIRS)
    return False


@contextlib.contextmanager
def no_warnings_from_our_code():
    """Fail if code of this package triggers a Python warning or a transformers warning log (deprecations included).

    Warnings that other libraries raise on their own (PEFT reading a deprecated transformers property, say) pass: a
    warning counts as ours when the innermost frame outside transformers/torch/the logging machinery is ours.
    """
    caught: list[str] = []

    def on_warning(message, category, filename, lineno, file=None, line=None):
        if _attributed_to_us(traceback.extract_stack()):
            caught.append(f"{category.__name__}: {message} ({filename}:{lineno})")

    class Handler(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING and _attributed_to_us(traceback.extract_stack()):
                caught.append(f"log {record.name} {record.levelname}: {record.getMessage()}")

    handler = Handler()
    if hasattr(logging.Logger, "warning_once"):  # transformers' once-only warnings: let each fire again here
        logging.Logger.warning_once.cache_clear()
    root = logging.getLogger("transformers")
    ours = logging.getLogger("modeling_xlstm")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        previous, warnings.showwarning = warnings.showwarning, on_warning
        root.addHandler(handler)
        ours.addHandler(handler)
        try:
            yield caught
        finally:
            warnings.showwarning = previous
            root.removeHandler(handler)
            ours.removeHandler(handler)
    assert not caught, "warnings raised from modeling_xlstm code:\n" + "\n".join(caught)
