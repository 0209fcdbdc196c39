"""The matmuls alone: how far ahead of a competitor any implementation of the same model can get on a CPU.

On a CPU both sides of our comparisons run the same float32 matmuls over the same weights: every `nn.Linear` of the
model, the LM head included. `linear_layers_step(model, batch, seq_len)` returns a function that runs exactly those
matmuls and nothing else: each Linear of `model` once, in module order (so the weights stream through the caches as
in a forward), on a random input of the shape it gets in a forward over [batch, seq_len] tokens, plus their backward
(input and weight gradients) when `backward`. (Where a forward multiplies by two weights at once, as the paper mLSTM
layer does with its two gate projections, the floor runs them one by one: the same arithmetic.) Its time is a floor
for any implementation of the model; (competitor's time) / (this time) is the largest ratio an implementation with
no other cost at all could reach against that competitor at that shape. The benchmarks record it next to the
measured ratio, as the account of a target that the measured ratio does not reach.

The layout of a weight changes what a CPU BLAS makes of it: at a few rows, MKL multiplies a transposed contiguous copy
([in_features, out_features], as generate()'s decoding steps hold them, see FlatDecodeStep) faster than nn.Linear's
[out_features, in_features]. `transposed=True` times the matmuls on such copies (forward only); a floor for decoding
is the faster of the two layouts.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def linear_layers_step(
    model: nn.Module,
    batch: int,
    seq_len: int,
    backward: bool = False,
    lm_head_positions: int | None = None,
    transposed: bool = False,
) -> Callable[[], None]:
    """A function running every Linear of `model` once on inputs [batch, seq_len, in_features] (the output layer,
    `model.get_output_embeddings()`, on `lm_head_positions` positions instead when given, as a forward with
    `logits_to_keep` computes it), and, with `backward`, the gradients of inputs and weights as a training step does.
    With `transposed`, on transposed contiguous copies of the weights instead of the modules (made here, once)."""
    if transposed and backward:
        raise ValueError("transposed=True times forward matmuls only (the copies are a decoding layout); pass "
                         "backward=False.")
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    generator = torch.Generator().manual_seed(0)
    work = []
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        positions = lm_head_positions if module is output_layer and lm_head_positions is not None else seq_len
        x = torch.randn(batch, positions, module.in_features, generator=generator, dtype=module.weight.dtype)
        if transposed:  # as a decoding step multiplies: rows [batch * positions, in_features]
            weight, bias = module.weight.detach().t().contiguous(), module.bias
            module = (lambda x, weight=weight, bias=bias:
                      torch.mm(x, weight) if bias is None else torch.addmm(bias.detach(), x, weight))
            x = x.flatten(0, -2)
        work.append((module, x.requires_grad_(backward)))

    def run() -> None:
        with torch.set_grad_enabled(backward):
            for module, x in work:
                y = module(x)
                if backward:
                    y.backward(torch.ones_like(y))
        if backward:
            model.zero_grad(set_to_none=True)
            for _, x in work:
                x.grad = None

    return run
