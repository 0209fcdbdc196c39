"""The language-model loss straight from the last hidden states: LM head, optional logit soft cap and cross-entropy
in one autograd Function that never holds the [N, V] logits.

Logits are computed a chunk of rows at a time. For each chunk the forward computes its loss and, when a gradient is
wanted, its gradients with respect to the hidden states, the head's weight and bias, so the backward only scales them
by the incoming gradient (the loss is a scalar: nothing downstream needs the logits). Peak memory is two chunk-sized
float32 buffers instead of several [N, V] float32 tensors (logits, log-probabilities, the soft cap's output and their
gradients), and each elementwise pass runs over a chunk that fits in cache.

`linear_cross_entropy_reference` is the same loss in plain ops (what `XLSTMForCausalLM` computes with
`logits_with_loss=True`): the test oracle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Float32 logits per chunk: 4M elements (16 MB) keep a chunk and its gradient within a server CPU's last-level cache;
# on accelerators larger chunks keep the head's matmuls large.
CHUNK_ELEMENTS = {"cpu": 1 << 22}
DEFAULT_CHUNK_ELEMENTS = 1 << 26
# Fewer rows leave the head's matmuls too thin: on a 2-core EPYC (fp32, D 256) the loss and gradients of 4,096 rows at
# a vocabulary of 50,304 took 4.3 s in chunks of 64 rows, 3.4 s in chunks of 256, 3.1-3.2 s in chunks of 512-1,024.
MIN_CHUNK_ROWS = 256


def chunk_rows(num_rows: int, vocab_size: int, device_type: str) -> int:
    """Rows of logits per chunk on `device_type`."""
    rows = max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS.get(device_type, DEFAULT_CHUNK_ELEMENTS) // vocab_size)
    return max(1, min(num_rows, rows))


# exp(capped logit) without a shift: at most e^cap per logit and V e^cap per row, within float32 (e^88) while
# cap + log V stays below this; at least e^-cap, far above float32's smallest normal number (e^-87)
UNSHIFTED_EXP_LIMIT = 80.0


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `targets` under soft_cap(hidden @ weight.T + bias), rows whose target is
    `ignore_index` left out. hidden [N, D], weight [V, D], bias [V] or None, targets [N]; matmuls in `compute_dtype`,
    logits and loss in float32 (as `logits = lm_head(hidden).float()` under autocast).

    Per chunk the logits go through as few full passes as the math allows, in place: each pass over a [n, V] float32
    chunk costs about as much as the next (tanh several times more), and torch.logsumexp takes four of them plus a
    fresh [n, V] tensor. Capped logits lie in [-cap, cap], so their exponentials need no row maximum subtracted
    (see UNSHIFTED_EXP_LIMIT), and the soft cap's slope 1 - tanh^2 comes from the tanh already computed."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, soft_cap, ignore_index, compute_dtype):
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        want_grad = want_hidden or want_weight or want_bias
        N, V = hidden.shape[0], weight.shape[0]
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        valid = targets != ignore_index
        safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)  # [N, 1]
        weights = valid.to(torch.float32).unsqueeze(1)  # [N, 1]: 1 for a counted row, 0 for an ignored one
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        grad_bias = torch.zeros(V, dtype=torch.float32, device=weight.device) if want_bias else None
        rows = chunk_rows(N, V, hidden.device.type)
        shift_rows = soft_cap is None or soft_cap + math.log(V) >= UNSHIFTED_EXP_LIMIT
        exp_buffer = None  # one chunk-sized buffer for every chunk: a fresh large tensor costs page faults on a CPU
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes are explicit here
            for start in range(0, N, rows):
                part = slice(start, min(N, start + rows))
                logits = F.linear(h[part], w, b).float()  # [n, V]
                if soft_cap is not None:
                    logits = logits.div_(soft_cap).tanh_()  # capped logits / cap, in [-1, 1]
                target_logits = logits.gather(1, safe_targets[part])
                scaled = logits  # the (capped) logits, overwritten by their exponentials
                if soft_cap is not None:
                    target_logits.mul_(soft_cap)
                    if want_grad:  # the tanh stays for the slope: the capped logits go to a buffer
                        if exp_buffer is None:
                            exp_buffer = torch.empty((rows, V), dtype=torch.float32, device=hidden.device)
                        scaled = torch.mul(logits, soft_cap, out=exp_buffer[: logits.shape[0]])
                    else:
                        scaled = logits.mul_(soft_cap)
                shift = scaled.amax(dim=-1, keepdim=True) if shift_rows else None
                exps = (scaled if shift is None else scaled.sub_(shift)).exp_()
                sums = exps.sum(dim=-1, keepdim=True)  # [n, 1]
                log_normalizer = sums.log() if shift is None else sums.log().add_(shift)
                loss += ((log_normalizer - target_logits) * weights[part]).sum()
                if not want_grad:
                    continue
                # d loss / d capped logits = softmax - one-hot of the target, on counted rows
                grad = exps.mul_(weights[part] / sums)
                grad.scatter_add_(1, safe_targets[part], -weights[part])
                if soft_cap is not None:  # d cap tanh(z / cap) / dz = 1 - tanh^2, from the tanh kept in `logits`
                    grad.addcmul_(grad, logits.square_(), value=-1.0)
                if want_bias:
                    grad_bias += grad.sum(0)
                grad = grad.to(compute_dtype)
                if want_hidden:
                    grad_hidden[part] = grad @ w
                if want_weight:
                    grad_weight += (grad.t() @ h[part]).float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.input_dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.input_dtypes
        return (
            None if grad_hidden is None else grad_hidden * grad_loss.to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * grad_loss).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_loss).to(bias_dtype),
            None, None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    soft_cap: float | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Summed cross-entropy of `targets` [N] under the logits soft_cap(hidden [N, D] @ weight.T + bias) (float32),
    without holding those logits; rows whose target is `ignore_index` are left out. Matmuls run in the autocast dtype
    when autocast is on for hidden's device, in weight's dtype otherwise."""
    if not torch.compiler.is_compiling():  # one host sync; under compile, the gather below fails on a bad index instead
        outside = (targets != ignore_index) & ((targets < 0) | (targets >= weight.shape[0]))
        if outside.any():
            bad = int(targets[outside][0])
            raise ValueError(
                f"labels contain token id {bad}, outside the vocabulary [0, {weight.shape[0] - 1}] of the LM head; "
                f"use ids below {weight.shape[0]}, or {ignore_index} for positions to leave out of the loss."
            )
    device_type = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    return LinearCrossEntropy.apply(hidden, weight, bias, targets, soft_cap, ignore_index, compute_dtype)


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    *,
    soft_cap: float | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """The same loss in plain ops, holding the full logits."""
    logits = F.linear(hidden, weight, bias).float()
    if soft_cap is not None:
        logits = soft_cap * torch.tanh(logits / soft_cap)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
