"""`--verify`: run the source implementation and the converted model on the same tokens, compare the logits.

Needs the source's implementation installed (`xlstm` for nxai-xlstm / nxai-large, transformers' own xLSTM and
`xlstm` + `mlstm_kernels` for hf-xlstm). Both models are held in memory in float32, so verifying a 7B checkpoint
needs about 2 x 28 GB of RAM (or a GPU); the conversion itself does not.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers.utils import logging

from .errors import ConversionError
from .formats import NATIVE_KERNELS, paper_model_section

logger = logging.get_logger(__name__)


def _reference_paper(source) -> torch.nn.Module:
    from dacite import Config, from_dict
    from xlstm import xLSTMLMModel, xLSTMLMModelConfig

    section = copy.deepcopy(paper_model_section(source.document))
    slstm = ((section.get("slstm_block") or {}).get("slstm")) if isinstance(section.get("slstm_block"), dict) else None
    if slstm is not None:
        slstm["backend"] = "vanilla"  # the CUDA cell cannot run on CPU; the weights are re-laid out below
    section["context_length"] = max(int(section.get("context_length", -1) or -1), 64)
    config = from_dict(xLSTMLMModelConfig, section, config=Config(strict=False))
    model = xLSTMLMModel(config)
    state_dict = {name: source.tensors.get(name) for name in source.tensors.names()}
    for index, block in enumerate(model.xlstm_block_stack.blocks):
        cell = getattr(block.xlstm, "slstm_cell", None)
        if cell is None:
            continue
        prefix = f"xlstm_block_stack.blocks.{index}.xlstm.slstm_cell."
        kernel, bias = state_dict[prefix + "_recurrent_kernel_"], state_dict[prefix + "_bias_"]
        if tuple(kernel.shape) != tuple(cell._recurrent_kernel_.shape):  # saved by the CUDA backend
            from xlstm.blocks.slstm.cell import sLSTMCell_cuda

            cuda_cell = sLSTMCell_cuda(copy.deepcopy(cell.config), skip_backend_init=True)
            kernel = cell._recurrent_kernel_ext2int(cuda_cell._recurrent_kernel_int2ext(kernel))
            bias = cell._bias_ext2int(cuda_cell._bias_int2ext(bias))
        state_dict[prefix + "_recurrent_kernel_"], state_dict[prefix + "_bias_"] = kernel, bias
    model.load_state_dict(state_dict)
    return model


def _reference_large(source) -> torch.nn.Module:
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    fields = set(xLSTMLargeConfig.__dataclass_fields__)
    settings = {key: value for key, value in source.document.items() if key in fields}
    settings.update(NATIVE_KERNELS, mode="inference", return_last_states=False, weight_mode=source.plan.config.weight_mode)
    model = xLSTMLarge(xLSTMLargeConfig(**settings))
    model.load_state_dict({name: source.tensors.get(name) for name in source.tensors.names()})
    return model


def _reference_hf(source) -> torch.nn.Module:
    from transformers import xLSTMForCausalLM

    folder = source.path if source.path.is_dir() else source.path.parent
    return xLSTMForCausalLM.from_pretrained(folder, dtype=torch.float32, **NATIVE_KERNELS)


@torch.no_grad()
def verify_conversion(source, out: Path, seq_len: int = 32, seed: int = 0) -> float:
    """Max |logits(ours) - logits(source implementation)| on random tokens, in float32. Logged and returned."""
    from modeling_xlstm import XLSTMForCausalLM

    builders = {"nxai-xlstm": _reference_paper, "nxai-large": _reference_large, "hf-xlstm": _reference_hf}
    try:
        reference = builders[source.source_format](source)
    except ImportError as error:
        raise ConversionError(
            f"--verify needs the source implementation ({error.name or error}); install it "
            "(pip install xlstm mlstm-kernels) or convert without --verify"
        ) from None
    reference = reference.float().eval()
    ours = XLSTMForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    vocab = ours.config.vocab_size
    tokens = torch.randint(0, vocab, (1, seq_len), generator=torch.Generator().manual_seed(seed))
    theirs = reference(tokens)
    theirs = getattr(theirs, "logits", theirs)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    mine = ours(tokens, use_cache=False).logits
    diff = (mine.float() - theirs.float()).abs().max().item()
    message = f"verify: max |logit difference| to the {source.source_format} implementation = {diff:.3e} (float32, {seq_len} tokens)"
    logger.info(message)
    return diff
