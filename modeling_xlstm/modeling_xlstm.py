"""The xLSTM family as a Transformers model: any residual stack of mLSTM and sLSTM blocks.

Read top to bottom: norms and small building blocks, the three sequence mixers (the 7B-style mLSTM layer,
the paper's mLSTM layer, the sLSTM layer), the feed-forward network, the residual block, and the
`PreTrainedModel` classes. Shapes: B batch, S sequence, D hidden size, NH heads, DH head dim.

Recurrent state lives in a transformers `Cache` whose layers are linear-attention layers
(`transformers.cache_utils.LinearAttentionLayer`): per block, the state tensors of its recurrence in the
recurrent slots and the causal-conv buffer in conv slot 0 (see `modeling_xlstm.cache`).
"""

from __future__ import annotations

import math
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import logging

from .backend import check_backend, mlstm_op, mlstm_step_op, slstm_op
from .cache import StateLayout, XLSTMCache, check_cache, read_layer_state, write_layer_state
from .compat import (
    CACHE_NAME,
    OTHER_CACHE_NAME,
    XLSTMCausalLMOutput,
    XLSTMGenerationHooks,
    XLSTMModelOutput,
    XLSTMPreTrainedHooks,
    resolve_cache_argument,
    save_under_own_names,
)
from .configuration_xlstm import XLSTMConfig
from .kernels.lm_loss import linear_cross_entropy
from .packing import PACKING_INPUTS, document_starts, packed_layout

logger = logging.get_logger(__name__)

# True while generate() runs, after it checked the prompt's token ids (see XLSTMModel._check_input_ids)
_PROMPT_CHECKED: ContextVar[bool] = ContextVar("xlstm_prompt_checked", default=False)
# the model whose generate() runs, and its FlatDecodeStep once a decoding step asked for it
_DECODE_STEP: ContextVar["DecodeStepSlot | None"] = ContextVar("xlstm_decode_step", default=None)


class _SoftCap(torch.autograd.Function):
    """cap * tanh(values / cap) in one new tensor, with the backward read from the output alone:
    d/dx = 1 - (out / cap)^2. Autograd of the three plain ops would allocate three logits-sized tensors forward
    and three backward; on a CPU each fresh allocation of that size costs page faults as well as a pass."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, cap: float) -> torch.Tensor:
        out = values.div(cap).tanh_().mul_(cap)
        ctx.save_for_backward(out)
        ctx.cap = cap
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        return torch.addcmul(grad, grad, out.square(), value=-1.0 / ctx.cap**2), None


def soft_cap(values: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(values / cap): a smooth bound on |values| (identity when cap is None)."""
    if cap is None:
        return values
    if values.requires_grad and torch.is_grad_enabled():
        return _SoftCap.apply(values, cap)
    return values.div(cap).tanh_().mul_(cap)


# --------------------------------------------------------------------------------------------------------------
# Norms and building blocks
# --------------------------------------------------------------------------------------------------------------


class XLSTMNorm(nn.Module):
    """A norm over the last dimension with a per-channel weight and optional bias; statistics in float32 when
    `force_float32` (under low-precision weights). Subclasses say how to normalize, and may do a float32 input in one
    fused torch op (`normalize_affine`)."""

    def __init__(self, dim: int, eps: float, use_bias: bool = False, force_float32: bool = True):
        super().__init__()
        self.eps = eps
        self.force_float32 = force_float32
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if use_bias else None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normalize_affine(self, x: torch.Tensor) -> torch.Tensor:
        """normalize(x) * weight (+ bias), all in x's dtype."""
        x = self.normalize(x) * self.weight
        return x if self.bias is None else x + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or not self.force_float32:
            return self.normalize_affine(x)
        x = self.normalize(x.float()).to(x.dtype) * self.weight
        return x if self.bias is None else x + self.bias


class XLSTMRMSNorm(XLSTMNorm):
    """RMSNorm over the last dimension."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)

    def normalize_affine(self, x: torch.Tensor) -> torch.Tensor:
        x = F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        return x if self.bias is None else x + self.bias


class XLSTMLayerNorm(XLSTMNorm):
    """LayerNorm over the last dimension."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps)

    def normalize_affine(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class XLSTMMultiHeadLayerNorm(XLSTMNorm):
    """LayerNorm of each head separately: [B, S, NH, DH] -> [B, S, NH * DH], with a per-channel weight."""

    def __init__(self, num_heads: int, head_dim: int, eps: float, use_bias: bool = False, force_float32: bool = True):
        super().__init__(num_heads * head_dim, eps, use_bias, force_float32)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps).flatten(-2)


def make_norm(config: XLSTMConfig, dim: int) -> nn.Module:
    """The block-level norm of the configured style: RMSNorm (7B) or LayerNorm (paper)."""
    norm_class = XLSTMRMSNorm if config.block_style == "large" else XLSTMLayerNorm
    return norm_class(dim, config.norm_eps, config.use_bias, config.norm_reduction_force_float32)


class XLSTMCausalConv1d(nn.Module):
    """Depthwise causal convolution over time that can continue from the last `kernel_size - 1` inputs.

    forward(x [B, S, F], conv_state [B, F, K-1] | None) -> (y [B, S, F], new conv_state [B, F, K-1]).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor, conv_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, channels = x.shape
        if S == 1:  # a decode step
            y, conv_state = self.one_token(x[:, 0], self.weight[:, 0], self.bias, conv_state)
            return y.unsqueeze(1), conv_state
        x = x.transpose(1, 2)
        if conv_state is None:
            conv_state = x.new_zeros(B, channels, self.kernel_size - 1)
        full = torch.cat([conv_state.to(x.dtype), x], dim=-1)  # [B, F, K-1+S]
        y = F.conv1d(full, self.weight, self.bias, groups=channels).transpose(1, 2)  # [B, S, F]
        return y, full[..., full.shape[-1] - (self.kernel_size - 1) :]

    @staticmethod
    def one_token(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, conv_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One input per row: x [B, F], weight [F, K] (the kernel without its group dim), bias [F], conv_state
        [B, F, K-1] or None (zeros) -> (y [B, F], the new conv state). One dot product per channel: F.conv1d's setup
        would cost more than its arithmetic."""
        if conv_state is None:
            conv_state = x.new_zeros(x.shape[0], x.shape[1], weight.shape[-1] - 1)
        full = torch.cat([conv_state.to(x.dtype), x.unsqueeze(-1)], dim=-1)  # [B, F, K]
        return torch.linalg.vecdot(full, weight).add_(bias), full[..., 1:]


class XLSTMHeadwiseLinear(nn.Module):
    """Block-diagonal linear map: the input is split into `num_heads` blocks, each mapped by its own matrix.

    weight: [num_heads, out_features // num_heads, in_features // num_heads].
    """

    # Over a sequence, blocks narrower than this many inputs are multiplied in groups: the blocks of a group form one
    # block-diagonal matrix (zeros between them), so the batched matmul has a few [tokens, ~48] operands instead of
    # many [tokens, 4] ones (the paper's q/k/v blocks), whose per-block cost dwarfs their arithmetic, forward and
    # backward alike; the extra multiplications by zero cost less than that.
    GROUP_WIDTH = 48

    def __init__(self, in_features: int, out_features: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, out_features // num_heads, in_features // num_heads))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        block_inputs = in_features // num_heads
        # blocks per group: the largest divisor of num_heads whose group stays within GROUP_WIDTH inputs
        self.blocks_per_group = max(
            (n for n in range(1, num_heads + 1) if num_heads % n == 0 and n * block_inputs <= self.GROUP_WIDTH),
            default=1,
        )

    def grouped_weight(self) -> torch.Tensor:
        """The weight as [groups, group outputs, group inputs]: each group's blocks on the diagonal of one matrix."""
        per = self.blocks_per_group
        if per == 1:
            return self.weight
        heads, block_out, block_in = self.weight.shape
        eye = torch.eye(per, dtype=self.weight.dtype, device=self.weight.device)
        diagonal = torch.einsum("gbod,bc->gbocd", self.weight.view(heads // per, per, block_out, block_in), eye)
        return diagonal.reshape(heads // per, per * block_out, per * block_in)

    @staticmethod
    def rows_product(x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        """The blocks' product, without the bias, for one token per row: x [B, in], weight_t [heads, in / heads,
        out / heads] (the weight transposed) -> [B, out]. A batched matmul over the blocks: einsum's own setup
        (permutes, reshapes) would take longer than the arithmetic."""
        B, heads = x.shape[0], weight_t.shape[0]
        return torch.bmm(x.view(B, heads, -1).transpose(0, 1), weight_t).transpose(0, 1).reshape(B, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[1] == 1:  # one token per row (a decode step)
            x = self.rows_product(x[:, 0], self.weight.transpose(1, 2)).unsqueeze(1)
        else:  # for sequences einsum is the faster one
            weight = self.grouped_weight()
            x = torch.einsum("...gd,god->...go", x.unflatten(-1, (weight.shape[0], -1)), weight).flatten(-2)
        return x if self.bias is None else x + self.bias


# --------------------------------------------------------------------------------------------------------------
# Sequence mixers. Each: forward(x [B, S, D], mask [B, S] bool | None, cache) -> [B, S, D]; the recurrence itself
# is one call of `mlstm_op` / `slstm_op` (modeling_xlstm.backend)
# --------------------------------------------------------------------------------------------------------------


class XLSTMLargeMLSTMLayer(nn.Module):
    """The mLSTM layer of xLSTM 7B: q, k, v, output gate and gates projected from the (normed) input.

    Parameter names follow transformers' xLSTM and NX-AI's xLSTMLarge so their checkpoints load by name.
    """

    @staticmethod
    def state_layout(config: XLSTMConfig) -> StateLayout:
        """mLSTM state (C [NH, DHQK, DHV], n [NH, DHQK], m [NH, 1]) per sequence; no conv buffer."""
        DHQK, DHV = config.qk_dim // config.num_heads, config.v_dim // config.num_heads
        NH = config.num_heads
        return StateLayout(states=((NH, DHQK, DHV), (NH, DHQK), (NH, 1)), conv=None)

    def __init__(self, config: XLSTMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        D, NH = config.hidden_size, config.num_heads
        self.qk_dim, self.v_dim = config.qk_dim, config.v_dim
        # read per token: plain attributes are read in a fraction of the time a config field takes
        self.num_heads, self.gate_soft_cap, self.eps = NH, config.gate_soft_cap, config.eps
        if config.weight_mode == "single":
            self.q = nn.Linear(D, self.qk_dim, bias=config.use_bias)
            self.k = nn.Linear(D, self.qk_dim, bias=config.use_bias)
            self.v = nn.Linear(D, self.v_dim, bias=config.use_bias)
            self.ogate_preact = nn.Linear(D, self.v_dim, bias=config.use_bias)
            self.igate_preact = nn.Linear(D, NH, bias=True)
            self.fgate_preact = nn.Linear(D, NH, bias=True)
        else:
            self.qkv_opreact = nn.Linear(D, 2 * self.qk_dim + 2 * self.v_dim, bias=config.use_bias)
            self.ifgate_preact = nn.Linear(D, 2 * NH, bias=True)
        self.multihead_norm = XLSTMMultiHeadLayerNorm(
            NH, self.v_dim // NH, config.norm_eps, config.use_bias, config.norm_reduction_force_float32
        )
        self.out_proj = nn.Linear(self.v_dim, D, bias=config.use_bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k [..., qk_dim], v, o [..., v_dim] and the soft-capped gate pre-activations i, f [..., NH] of
        x [..., D]."""
        NH, cap = self.num_heads, self.gate_soft_cap
        if self.config.weight_mode == "single":
            q, k, v, o = self.q(x), self.k(x), self.v(x), self.ogate_preact(x)
            i, f = soft_cap(self.igate_preact(x), cap), soft_cap(self.fgate_preact(x), cap)
        else:
            q, k, v, o = self.qkv_opreact(x).split([self.qk_dim, self.qk_dim, self.v_dim, self.v_dim], dim=-1)
            i, f = soft_cap(self.ifgate_preact(x), cap).split([NH, NH], dim=-1)
        return q, k, v, o, i, f

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]; or one decode token per row, [B, D] -> [B, D] (no mask), continuing the cache."""
        B, NH = x.shape[0], self.num_heads
        q, k, v, o, i, f = self.project(x)
        _, state = read_layer_state(cache, self.layer_idx, batch_size=B)
        if x.dim() == 2:
            h, state = mlstm_step_op(
                q.view(B, NH, -1), k.view(B, NH, -1), v.view(B, NH, -1), i, f, state=state, eps=self.eps,
                backend=self.config.backend,
            )
        else:
            S = x.shape[1]
            h, state = mlstm_op(
                q.view(B, S, NH, -1), k.view(B, S, NH, -1), v.view(B, S, NH, -1), i, f, state=state, mask=mask,
                chunk_size=self.config.chunk_size, eps=self.eps, backend=self.config.backend,
            )
        write_layer_state(cache, self.layer_idx, None, state, self.config.inference_state_dtype)
        h = self.multihead_norm(h)
        return self.out_proj(torch.sigmoid(o) * h)


class XLSTMPaperMLSTMLayer(nn.Module):
    """The mLSTM layer of the xLSTM paper: up-projection, causal conv, block-diagonal q/k/v, learnable skip.

    x -> up_proj -> (x_m, z); q, k from silu(conv(x_m)), v from x_m; gates read cat(q, k, v);
    h = (norm(mLSTM(q, k, v)) + skip * silu(conv(x_m))) * silu(z) -> down_proj.
    """

    @staticmethod
    def state_layout(config: XLSTMConfig) -> StateLayout:
        """mLSTM state (C [NH, DH, DH], n [NH, DH], m [NH, 1]) and the conv buffer [inner, K-1] per sequence."""
        NH, inner, K = config.num_heads, config.mlstm_inner_dim, config.conv1d_kernel_size
        DH = inner // NH
        return StateLayout(states=((NH, DH, DH), (NH, DH), (NH, 1)), conv=(inner, K - 1) if K > 0 else None)

    def __init__(self, config: XLSTMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        D, NH, inner = config.hidden_size, config.num_heads, config.mlstm_inner_dim
        self.inner_dim = inner
        num_blocks = inner // config.qkv_proj_blocksize
        self.up_proj = nn.Linear(D, 2 * inner, bias=config.use_bias)
        self.conv1d = XLSTMCausalConv1d(inner, config.conv1d_kernel_size) if config.conv1d_kernel_size > 0 else None
        self.q_proj = XLSTMHeadwiseLinear(inner, inner, num_blocks, bias=config.use_bias)
        self.k_proj = XLSTMHeadwiseLinear(inner, inner, num_blocks, bias=config.use_bias)
        self.v_proj = XLSTMHeadwiseLinear(inner, inner, num_blocks, bias=config.use_bias)
        self.igate = nn.Linear(3 * inner, NH, bias=True)
        self.fgate = nn.Linear(3 * inner, NH, bias=True)
        self.outnorm = XLSTMMultiHeadLayerNorm(
            NH, inner // NH, config.norm_eps, use_bias=False, force_float32=config.norm_reduction_force_float32
        )
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.down_proj = nn.Linear(inner, D, bias=config.use_bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]; or one decode token per row, [B, D] -> [B, D], as a sequence of length 1."""
        if x.dim() == 2:
            return self.forward(x.unsqueeze(1), None, cache).squeeze(1)
        B, S, _ = x.shape
        NH = self.config.num_heads
        x_mlstm, z = self.up_proj(x).split(self.inner_dim, dim=-1)
        if mask is not None:
            x_mlstm = x_mlstm * mask.unsqueeze(-1).to(x_mlstm.dtype)
        conv_state, recurrent_state = read_layer_state(cache, self.layer_idx, batch_size=B)
        if self.conv1d is not None:
            x_conv, conv_state = self.conv1d(x_mlstm, conv_state)
            x_conv = F.silu(x_conv)
        else:
            x_conv = F.silu(x_mlstm)
        q, k, v = self.q_proj(x_conv), self.k_proj(x_conv), self.v_proj(x_mlstm)
        gate_input = torch.cat([q, k, v], dim=-1)
        # Over a sequence, both gates in one matmul: its backward to gate_input is then one product with 2 NH inner
        # terms, not two and a sum. Not for a decode step (concatenating the weights would cost more than the two
        # tiny matmuls), and only while both are plain nn.Linear: an adapter (PEFT) or a quantized layer put in their
        # place must be called as the module it is.
        if S > 1 and type(self.igate) is nn.Linear and type(self.fgate) is nn.Linear:
            gate_weight = torch.cat([self.igate.weight, self.fgate.weight])
            gate_bias = torch.cat([self.igate.bias, self.fgate.bias])
            i, f = F.linear(gate_input, gate_weight, gate_bias).chunk(2, dim=-1)
        else:
            i, f = self.igate(gate_input), self.fgate(gate_input)
        h, recurrent_state = mlstm_op(
            q.view(B, S, NH, -1), k.view(B, S, NH, -1), v.view(B, S, NH, -1), i, f, state=recurrent_state, mask=mask,
            chunk_size=self.config.chunk_size, eps=self.config.eps, backend=self.config.backend,
        )
        write_layer_state(cache, self.layer_idx, conv_state, recurrent_state, self.config.inference_state_dtype)
        h = self.outnorm(h) + self.learnable_skip * x_conv
        return self.dropout(self.down_proj(h * F.silu(z)))


class XLSTMSLSTMLayer(nn.Module):
    """The sLSTM layer: optional causal conv feeding the i/f gates, head-wise gate projections, the sLSTM cell
    with a block-diagonal recurrent matrix, and a per-head norm.

    recurrent_kernel: [NH, DH_in, 4, DH_out] (gate order i, f, z, o); bias: [NH, 4, DH].
    """

    @staticmethod
    def state_layout(config: XLSTMConfig) -> StateLayout:
        """sLSTM state (h, c, n, m, each [NH, DH]) and the conv buffer [D, K-1] per sequence."""
        NH, DH, K = config.slstm_num_heads, config.slstm_head_dim, config.slstm_conv1d_kernel_size
        return StateLayout(states=((NH, DH),) * 4, conv=(config.hidden_size, K - 1) if K > 0 else None)

    def __init__(self, config: XLSTMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        D, NH = config.hidden_size, config.slstm_num_heads
        DH = D // NH
        self.num_heads, self.head_dim = NH, DH
        K = config.slstm_conv1d_kernel_size
        self.conv1d = XLSTMCausalConv1d(D, K) if K > 0 else None
        self.igate = XLSTMHeadwiseLinear(D, D, NH)
        self.fgate = XLSTMHeadwiseLinear(D, D, NH)
        self.zgate = XLSTMHeadwiseLinear(D, D, NH)
        self.ogate = XLSTMHeadwiseLinear(D, D, NH)
        self.recurrent_kernel = nn.Parameter(torch.empty(NH, DH, 4, DH))
        self.bias = nn.Parameter(torch.empty(NH, 4, DH))
        self.group_norm = XLSTMMultiHeadLayerNorm(
            NH, DH, config.norm_eps, use_bias=False, force_float32=config.norm_reduction_force_float32
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        """x: [B, S, D] -> [B, S, D]; or one decode token per row, [B, D] -> [B, D], as a sequence of length 1."""
        if x.dim() == 2:
            return self.forward(x.unsqueeze(1), None, cache).squeeze(1)
        B, S, D = x.shape
        conv_state, cell_state = read_layer_state(cache, self.layer_idx, batch_size=B)
        if self.conv1d is not None:
            x_in = x if mask is None else x * mask.unsqueeze(-1).to(x.dtype)
            x_conv, conv_state = self.conv1d(x_in, conv_state)
            x_conv = F.silu(x_conv)
        else:
            x_conv = x
        gates = torch.stack([self.igate(x_conv), self.fgate(x_conv), self.zgate(x), self.ogate(x)], dim=2)
        gates = gates.view(B, S, 4, self.num_heads, self.head_dim)
        h, cell_state = slstm_op(
            gates, self.recurrent_kernel, self.bias, state=cell_state, mask=mask, backend=self.config.backend
        )
        write_layer_state(cache, self.layer_idx, conv_state, cell_state, self.config.inference_state_dtype)
        return self.group_norm(self.dropout(h))


# --------------------------------------------------------------------------------------------------------------
# Feed-forward and the residual block
# --------------------------------------------------------------------------------------------------------------

_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "swish": F.silu, "relu": F.relu}


class XLSTMFeedForward(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)); SwiGLU in the 7B style, GeLU-gated in the paper's."""

    def __init__(self, config: XLSTMConfig):
        super().__init__()
        self.config = config
        D, hidden = config.hidden_size, config.ffn_dim
        self.ffn_dim = hidden
        if config.weight_mode == "single":
            self.proj_up_gate = nn.Linear(D, hidden, bias=config.use_bias)
            self.proj_up = nn.Linear(D, hidden, bias=config.use_bias)
        else:
            self.proj_up_gate_z = nn.Linear(D, 2 * hidden, bias=config.use_bias)
        self.proj_down = nn.Linear(hidden, D, bias=config.use_bias)
        self.act_fn = _ACTIVATIONS[config.ffn_act_fn]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.weight_mode == "single":
            gate, up = self.proj_up_gate(x), self.proj_up(x)
        else:
            gate, up = self.proj_up_gate_z(x).split(self.ffn_dim, dim=-1)
        x = self.proj_down(self.act_fn(gate) * up)
        return self.dropout(x) if self.training else x  # (dropout is the identity in eval mode: no module call)


def mixer_class(config: XLSTMConfig, layer_idx: int) -> type[nn.Module]:
    """The sequence-mixer class of block `layer_idx`: sLSTM, or the mLSTM layer of the configured style."""
    if config.block_types[layer_idx] == "slstm":
        return XLSTMSLSTMLayer
    return XLSTMLargeMLSTMLayer if config.block_style == "large" else XLSTMPaperMLSTMLayer


def state_layouts(config: XLSTMConfig) -> tuple[StateLayout, ...]:
    """What every block of a model built from `config` keeps in the cache, as its mixer declares it."""
    return tuple(mixer_class(config, idx).state_layout(config) for idx in range(config.num_hidden_layers))


class XLSTMBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: x + mixer(norm(x)), then x + ffn(norm(x)) when the block has a feed-forward.

    The mixer is an mLSTM or sLSTM layer per `config.block_types[layer_idx]`. The 7B style gives every block a
    feed-forward; the paper style gives one to sLSTM blocks only (its mLSTM block is up-projected instead).
    """

    def __init__(self, config: XLSTMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.block_type = config.block_types[layer_idx]
        self.norm_mixer = make_norm(config, config.hidden_size)
        self.mixer = mixer_class(config, layer_idx)(config, layer_idx)
        if config.block_style == "large" or self.block_type == "slstm":
            self.norm_ffn = make_norm(config, config.hidden_size)
            self.ffn = XLSTMFeedForward(config)
        else:
            self.norm_ffn = self.ffn = None

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None, cache: Cache | None = None
    ) -> torch.Tensor:
        """hidden_states: [B, S, D] (mask [B, S] bool or None), or [B, D] for one decode token per row (no mask,
        continuing the cache) -> the same shape."""
        hidden_states = hidden_states + self.mixer(self.norm_mixer(hidden_states), mask, cache)
        if self.ffn is not None:
            hidden_states = hidden_states + self.ffn(self.norm_ffn(hidden_states))
        return hidden_states


# --------------------------------------------------------------------------------------------------------------
# generate()'s decoding step without module calls
# --------------------------------------------------------------------------------------------------------------


class DecodeProjection:
    """The linear maps that read one input, and the affine part of the norm before them, as a decoding step
    multiplies them.

    With a copy: one weight, the maps' rows concatenated and the norm's per-channel weight folded in (where the norm
    has no bias), transposed to [in, out] and made contiguous. At a few rows a CPU BLAS multiplies that layout faster
    than nn.Linear's [out, in] (MKL 2024.2 on a 2-core AVX2 EPYC, the small benchmark model's weights at batch 1 to
    8: 1.5-1.9x), and one matmul costs less than several; the numbers differ from the modules' in the last bits of the
    matmuls' rounding. Without a copy: the modules' own weights, one F.linear each, the modules' numbers bit for bit.
    """

    def __init__(self, linears: list[nn.Linear], pieces: list[list[int]], norm: XLSTMNorm | None, copy: bool):
        """pieces[j]: the sizes linears[j]'s output is split into (one size: not split); norm: the norm whose output
        the maps read, or None."""
        fold = copy and norm is not None and norm.bias is None
        # what the step applies after normalizing: the norm's weight unless folded, its bias
        self.norm_weight = None if norm is None or fold else norm.weight
        self.norm_bias = None if norm is None else norm.bias
        if not copy:
            self.weight = self.bias = None
            self.linears = [(linear.weight, linear.bias, sizes if len(sizes) > 1 else None)
                            for linear, sizes in zip(linears, pieces)]
            return
        self.linears = None
        self.sizes = [size for sizes in pieces for size in sizes]
        with torch.no_grad():  # copies for decoding, whoever builds them
            weight = torch.cat([linear.weight for linear in linears])
            self.weight = (weight * norm.weight if fold else weight).t().contiguous()
            self.bias = None
            if any(linear.bias is not None for linear in linears):  # a map without one adds zeros: exact
                self.bias = torch.cat([weight.new_zeros(linear.out_features) if linear.bias is None else linear.bias
                                       for linear in linears])

    @staticmethod
    def copy_bytes(linears: list[nn.Linear]) -> int:
        return sum(param.numel() * param.element_size() for linear in linears for param in linear.parameters())

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [B, in], normalized and multiplied by norm_weight (+ norm_bias) where those are set -> the pieces."""
        if self.linears is None:
            y = torch.mm(x, self.weight) if self.bias is None else torch.addmm(self.bias, x, self.weight)
            # (split_with_sizes: Tensor.split is a Python wrapper around it that costs more than it does)
            return y.split_with_sizes(self.sizes, dim=-1) if len(self.sizes) > 1 else [y]
        pieces = []
        for weight, bias, sizes in self.linears:
            y = F.linear(x, weight, bias)
            pieces.extend(y.split_with_sizes(sizes, dim=-1) if sizes else [y])
        return pieces


class FlatDecodeStep:
    """One decode token of a float32 model as straight tensor code: the ops of the modules' forward on [B, D] rows,
    without the modules around them, and with the projections multiplied as `DecodeProjection`s.

    In a small model a decode step costs its dispatch and Python overhead, and matmuls of a few rows that run far below
    the BLAS's speed in nn.Linear's layout, not its arithmetic: a 7B-style block makes 17 module calls, each with its
    hook checks and attribute lookups, around the ~30 tensor ops of the recurrence. `generate()` builds one at its first
    decoding step (`for_model`, None where the model is not plain) and runs its decoding steps through it; everything
    else (the prompt, direct calls, training, a compiled decoding step) runs the modules. Plain means: no hooks on any
    module (accelerate's device hooks, user hooks), every projection a bare `nn.Linear` or `XLSTMHeadwiseLinear` (not
    a PEFT adapter or a quantized layer), float32 weights, eval mode. Blocks of every kind (7B-style and paper-style
    mLSTM, sLSTM) run flat.
    """

    # The projections are multiplied as copies (see DecodeProjection), in the order the step reads them, while the
    # copies take at most this many bytes in all; the rest multiply the weights in place. The copies are made per
    # generate() call and held only during it.
    COPY_BYTES = 32 * 2**20

    def __init__(self, model: "XLSTMForCausalLM"):
        backbone, config = model.backbone, model.config
        self.embedding = backbone.embeddings.weight
        self.act_fn, self.copy_budget = _ACTIVATIONS[config.ffn_act_fn], self.COPY_BYTES
        self.blocks = [self._block(block) for block in backbone.blocks]  # (step function, what it reads)
        out_norm = backbone.out_norm if isinstance(backbone.out_norm, XLSTMNorm) else None
        self.out_norm = None if out_norm is None else (type(out_norm) is XLSTMLayerNorm, out_norm.eps)
        self.head = self._projection([model.lm_head], [[model.lm_head.out_features]], out_norm)
        self.logit_soft_cap = config.output_logit_soft_cap

    def _block(self, block: XLSTMBlock) -> tuple:
        if isinstance(block.mixer, XLSTMLargeMLSTMLayer):
            return self._mlstm_block, self._block_weights(block)
        if isinstance(block.mixer, XLSTMPaperMLSTMLayer):
            return self._paper_mlstm_block, self._paper_block_weights(block)
        return self._slstm_block, self._slstm_block_weights(block)

    def _projection(self, linears: list[nn.Linear], pieces: list[list[int]], norm: XLSTMNorm | None):
        size = DecodeProjection.copy_bytes(linears)
        copy = size <= self.copy_budget
        self.copy_budget -= size if copy else 0
        return DecodeProjection(linears, pieces, norm, copy)

    def _block_weights(self, block: XLSTMBlock) -> tuple:
        """What a 7B-style mLSTM block's step reads, gathered once: settings, then its projections."""
        mixer, config = block.mixer, block.mixer.config
        qk, v, NH = mixer.qk_dim, mixer.v_dim, mixer.num_heads
        if config.weight_mode == "single":
            mixer_in = [mixer.q, mixer.k, mixer.v, mixer.ogate_preact, mixer.igate_preact, mixer.fgate_preact]
            mixer_pieces = [[qk], [qk], [v], [v], [NH], [NH]]
        else:
            mixer_in, mixer_pieces = [mixer.qkv_opreact, mixer.ifgate_preact], [[qk, qk, v, v], [NH, NH]]
        return (
            (mixer.layer_idx, NH, mixer.gate_soft_cap, mixer.eps, config.backend, config.inference_state_dtype),
            (block.norm_mixer.eps, mixer.multihead_norm.eps),
            self._projection(mixer_in, mixer_pieces, block.norm_mixer),
            self._projection([mixer.out_proj], [[config.hidden_size]], mixer.multihead_norm),
            self._ffn_weights(block),
        )

    def _ffn_weights(self, block: XLSTMBlock) -> tuple:
        """A block's feed-forward as its step reads it: (norm kind and eps, up projections, down projection)."""
        ffn = block.ffn
        if ffn.config.weight_mode == "single":
            ffn_in, ffn_pieces = [ffn.proj_up_gate, ffn.proj_up], [[ffn.ffn_dim], [ffn.ffn_dim]]
        else:
            ffn_in, ffn_pieces = [ffn.proj_up_gate_z], [[ffn.ffn_dim, ffn.ffn_dim]]
        return (
            (type(block.norm_ffn) is XLSTMLayerNorm, block.norm_ffn.eps),
            self._projection(ffn_in, ffn_pieces, block.norm_ffn),
            self._projection([ffn.proj_down], [[ffn.config.hidden_size]], None),
        )

    def _slstm_block_weights(self, block: XLSTMBlock) -> tuple:
        """What an sLSTM block's step reads, gathered once: settings, its norm's, conv's, gate maps' (as
        [heads, in / heads, out / heads]), cell's and output norm's weights as they are, then its feed-forward."""
        mixer, config, norm = block.mixer, block.mixer.config, block.norm_mixer
        conv = mixer.conv1d
        return (
            (mixer.layer_idx, mixer.num_heads, config.backend, config.inference_state_dtype),
            (type(norm) is XLSTMLayerNorm, norm.eps, norm.weight, norm.bias),
            None if conv is None else (conv.weight[:, 0], conv.bias),
            [gate.weight.transpose(1, 2) for gate in (mixer.igate, mixer.fgate, mixer.zgate, mixer.ogate)],
            (mixer.recurrent_kernel, mixer.bias),
            (mixer.group_norm.eps, mixer.group_norm.weight, mixer.group_norm.bias),
            self._ffn_weights(block),
        )

    def _paper_block_weights(self, block: XLSTMBlock) -> tuple:
        """What a paper-style mLSTM block's step reads, gathered once: settings, the conv's and the block-diagonal
        maps' weights (theirs, as they are), the output norm's and skip's, then its three dense projections."""
        mixer, config = block.mixer, block.mixer.config
        conv = mixer.conv1d
        return (
            (mixer.layer_idx, config.num_heads, config.eps, config.backend, config.inference_state_dtype),
            block.norm_mixer.eps,
            None if conv is None else (conv.weight[:, 0], conv.bias),  # [inner, K], [inner]
            # q and k read the conv's output, v the up-projection's: weights as [heads, in / heads, out / heads]
            [(linear.weight.transpose(1, 2), linear.bias) for linear in (mixer.q_proj, mixer.k_proj, mixer.v_proj)],
            (mixer.outnorm.eps, mixer.outnorm.weight, mixer.outnorm.bias),
            mixer.learnable_skip,
            self._projection([mixer.up_proj], [[mixer.inner_dim, mixer.inner_dim]], block.norm_mixer),
            self._projection([mixer.igate, mixer.fgate], [[config.num_heads], [config.num_heads]], None),
            self._projection([mixer.down_proj], [[config.hidden_size]], None),
        )

    @classmethod
    def for_model(cls, model: "XLSTMForCausalLM") -> "FlatDecodeStep | None":
        backbone = model.backbone
        if model.training or backbone.embeddings.weight.dtype != torch.float32:
            return None
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return None
        for module in model.modules():
            if module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"):
                return None
        if type(backbone.embeddings) is not nn.Embedding or type(model.lm_head) is not nn.Linear:
            return None
        if type(backbone.out_norm) not in (XLSTMRMSNorm, XLSTMLayerNorm, nn.Identity):
            return None
        for block in backbone.blocks:
            if isinstance(block.mixer, XLSTMLargeMLSTMLayer):
                norms = (block.norm_mixer, block.norm_ffn, block.mixer.multihead_norm)
                if [type(norm) for norm in norms] != [XLSTMRMSNorm, XLSTMRMSNorm, XLSTMMultiHeadLayerNorm]:
                    return None
                others = [module for module in (*block.mixer.children(), *block.ffn.children()) if module not in norms]
                if not all(type(module) in (nn.Linear, nn.Dropout) for module in others):
                    return None
            else:  # a paper-style mLSTM block or an sLSTM block of either style
                parts = (nn.Linear, nn.Dropout, XLSTMHeadwiseLinear, XLSTMCausalConv1d, XLSTMMultiHeadLayerNorm)
                if not all(type(module) in parts for module in block.mixer.children()):
                    return None
                if isinstance(block.mixer, XLSTMPaperMLSTMLayer) and type(block.norm_mixer) is not XLSTMLayerNorm:
                    return None
                if isinstance(block.mixer, XLSTMSLSTMLayer):
                    mixer, norms = block.mixer, (type(block.norm_mixer), type(block.norm_ffn))
                    if not all(norm in (XLSTMLayerNorm, XLSTMRMSNorm) for norm in norms):
                        return None
                    if any(gate.bias is not None for gate in (mixer.igate, mixer.fgate, mixer.zgate, mixer.ogate)):
                        return None  # (the step's gate products add none)
                    if not all(type(module) in (nn.Linear, nn.Dropout) for module in block.ffn.children()):
                        return None
        return cls(model)

    @staticmethod
    def _norm(x: torch.Tensor, layer_norm: bool, eps: float, weight: torch.Tensor | None,
              bias: torch.Tensor | None) -> torch.Tensor:
        """XLSTMLayerNorm (layer_norm) or XLSTMRMSNorm on float32 with the given affine part (the weight passed into
        the norm's op, as the modules do: the same numbers)."""
        if layer_norm:
            return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        x = F.rms_norm(x, x.shape[-1:], weight, eps)
        return x if bias is None else x + bias

    def _norm_for(self, x: torch.Tensor, layer_norm: bool, eps: float, projection: DecodeProjection) -> torch.Tensor:
        """The norm before `projection`, with the affine part the projection leaves to the step."""
        return self._norm(x, layer_norm, eps, projection.norm_weight, projection.norm_bias)

    @staticmethod
    def _multihead_norm(h: torch.Tensor, eps: float, weight: torch.Tensor | None,
                        bias: torch.Tensor | None) -> torch.Tensor:
        """XLSTMMultiHeadLayerNorm on float32 [B, NH, DH] -> [B, NH * DH], with the given affine part (either may be
        None: folded into the projection after it, or absent)."""
        h = F.layer_norm(h, h.shape[-1:], eps=eps).flatten(-2)
        h = h if weight is None else h * weight
        return h if bias is None else h + bias

    def _ffn(self, x: torch.Tensor, weights: tuple) -> torch.Tensor:
        """x + XLSTMFeedForward(norm_ffn(x)) on [B, D] rows."""
        (layer_norm, eps), ffn_in, down = weights
        gate, value = ffn_in(self._norm_for(x, layer_norm, eps, ffn_in))
        return x + down(self.act_fn(gate) * value)[0]

    def _mlstm_block(self, x: torch.Tensor, weights: tuple, cache: Cache) -> torch.Tensor:
        """XLSTMBlock.forward of a 7B-style mLSTM block on [B, D] rows."""
        (layer_idx, NH, cap, eps, backend, state_dtype), norm_eps, mixer_in, out, ffn = weights
        B = x.shape[0]
        q, k, v, o, i, f = mixer_in(self._norm_for(x, False, norm_eps[0], mixer_in))
        _, state = read_layer_state(cache, layer_idx, batch_size=B)
        h, state = mlstm_step_op(
            q.view(B, NH, -1), k.view(B, NH, -1), v.view(B, NH, -1), soft_cap(i, cap), soft_cap(f, cap),
            state=state, eps=eps, backend=backend,
        )
        write_layer_state(cache, layer_idx, None, state, state_dtype)
        h = self._multihead_norm(h, norm_eps[1], out.norm_weight, out.norm_bias)
        return self._ffn(x + out(torch.sigmoid(o) * h)[0], ffn)

    @staticmethod
    def _headwise(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """XLSTMHeadwiseLinear on [B, in] rows; weight_t: its weight transposed, [heads, in / heads, out / heads]."""
        y = XLSTMHeadwiseLinear.rows_product(x, weight_t)
        return y if bias is None else y + bias

    def _paper_mlstm_block(self, x: torch.Tensor, weights: tuple, cache: Cache) -> torch.Tensor:
        """XLSTMBlock.forward of a paper-style mLSTM block on [B, D] rows."""
        (layer_idx, NH, eps, backend, state_dtype), norm_eps, conv, qkv, out_norm, skip, up, gates, down = weights
        B = x.shape[0]
        x_mlstm, z = up(self._norm_for(x, True, norm_eps, up))
        conv_state, state = read_layer_state(cache, layer_idx, batch_size=B)
        x_conv = x_mlstm
        if conv is not None:
            x_conv, conv_state = XLSTMCausalConv1d.one_token(x_mlstm, *conv, conv_state)
        x_conv = F.silu(x_conv)
        q, k, v = (self._headwise(t, *weight) for t, weight in zip((x_conv, x_conv, x_mlstm), qkv))
        i, f = gates(torch.cat([q, k, v], dim=-1))
        h, state = mlstm_step_op(
            q.view(B, NH, -1), k.view(B, NH, -1), v.view(B, NH, -1), i, f, state=state, eps=eps, backend=backend
        )
        write_layer_state(cache, layer_idx, conv_state, state, state_dtype)
        h = self._multihead_norm(h, *out_norm) + skip * x_conv
        return x + down(h * F.silu(z))[0]

    def _slstm_block(self, x: torch.Tensor, weights: tuple, cache: Cache) -> torch.Tensor:
        """XLSTMBlock.forward of an sLSTM block on [B, D] rows."""
        (layer_idx, NH, backend, state_dtype), norm, conv, gate_maps, cell, out_norm, ffn = weights
        B = x.shape[0]
        x_norm = self._norm(x, *norm)
        conv_state, state = read_layer_state(cache, layer_idx, batch_size=B)
        x_conv = x_norm
        if conv is not None:
            x_conv, conv_state = XLSTMCausalConv1d.one_token(x_norm, *conv, conv_state)
            x_conv = F.silu(x_conv)
        # XLSTMHeadwiseLinear's decode-step products: i, f read the conv's output, z, o the normed input
        conv_heads, norm_heads = (t.view(B, NH, -1).transpose(0, 1) for t in (x_conv, x_norm))  # [NH, B, DH]
        gates = torch.stack([torch.bmm(heads, weight) for heads, weight in
                             zip((conv_heads, conv_heads, norm_heads, norm_heads), gate_maps)], dim=1)
        h, state = slstm_op(gates.permute(2, 1, 0, 3).unsqueeze(1), *cell, state=state, mask=None, backend=backend)
        write_layer_state(cache, layer_idx, conv_state, state, state_dtype)
        return self._ffn(x + self._multihead_norm(h[:, 0], *out_norm), ffn)

    def __call__(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """input_ids [B, 1] -> next-token logits [B, 1, V] (float32, soft-capped), the cache advanced in place."""
        x = F.embedding(input_ids[:, 0], self.embedding)  # [B, D]
        for run, weights in self.blocks:
            x = run(x, weights, cache)
        if self.out_norm is not None:
            x = self._norm_for(x, *self.out_norm, self.head)
        logits = soft_cap(self.head(x)[0].float(), self.logit_soft_cap)
        if isinstance(cache, XLSTMCache):
            cache.record_tokens(1, logits.device)
        return logits.unsqueeze(1)


class DecodeStepSlot:
    """generate()'s FlatDecodeStep for `model`, built when the first eager decoding step asks for it: a generation
    of one token, or one whose decoding steps are compiled, never makes the copies."""

    def __init__(self, model: "XLSTMForCausalLM"):
        self.model, self._built, self._step = model, False, None

    def step(self) -> FlatDecodeStep | None:
        if not self._built:
            self._step, self._built = FlatDecodeStep.for_model(self.model), True
        return self._step


# --------------------------------------------------------------------------------------------------------------
# Pre-trained model classes
# --------------------------------------------------------------------------------------------------------------


def _small_init_std(dim: int) -> float:
    """'Transformers without Tears' (Nguyen & Salazar, 2019) init: std = sqrt(2 / (5 dim))."""
    return math.sqrt(2 / (5 * dim))


def _wang_init_std(dim: int, num_blocks: int) -> float:
    """Wang init of residual output projections (GPT-NeoX): std = 2 / (num_blocks sqrt(dim))."""
    return 2 / num_blocks / math.sqrt(dim)


def _slstm_forget_bias(config: XLSTMConfig, layer_idx: int) -> torch.Tensor:
    """The paper's 'powerlaw_blockdependent' forget-gate bias of one head: deeper blocks remember longer."""
    DH = config.slstm_head_dim
    depth = layer_idx / (config.num_hidden_layers - 1) if config.num_hidden_layers > 1 else 0.0
    position = torch.arange(DH, dtype=torch.float32) / max(DH - 1, 1)
    return -(-5.0 + 12.0 * position ** (0.3 + 1.3 * depth))


_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


def _foreign_xlstm_config_dict(pretrained_model_name_or_path, kwargs: dict) -> dict | None:
    """The config.json of a transformers `xlstm` checkpoint (model_type "xlstm"), or None for anything else."""
    hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
    try:
        config_dict, _ = XLSTMConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
    except (OSError, ValueError):
        return None  # no readable config.json: let from_pretrained report it
    return config_dict if config_dict.get("model_type") == "xlstm" else None


class XLSTMPreTrainedModel(XLSTMPreTrainedHooks, PreTrainedModel):
    config_class = XLSTMConfig
    config: XLSTMConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _no_split_modules = ["XLSTMBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True  # transformers < 5.25 refuses assisted generation by it; generate() below refuses it itself
    _supports_cache_class = True
    # what generate() and transformers' test mixins read: an XLSTMCache has fixed shapes, updated in place, and the
    # forward compiles without graph breaks (checks that need a host sync are skipped while compiling)
    _can_compile_fullgraph = True

    def __init__(self, config: XLSTMConfig, *inputs, **kwargs):
        check_backend(config.backend)
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, which also loads transformers' own `xlstm` checkpoints directly.

        A folder or Hub repo whose config.json has `model_type: "xlstm"` (e.g. NX-AI/xLSTM-7b) is read without a
        conversion step: its config is translated into an `XLSTMConfig` (block_style="large"; kernel names are
        dropped, our `backend` picks kernels) and its weight names are mapped with transformers' `key_mapping`
        (`norm_mlstm` -> `norm_mixer`, `mlstm_layer` -> `mixer`). Keyword arguments that are `XLSTMConfig` fields
        (e.g. `backend="native"`) override the translated config. `save_pretrained` then writes our own format.
        """
        foreign = None
        if kwargs.get("config") is None and pretrained_model_name_or_path is not None:
            foreign = _foreign_xlstm_config_dict(pretrained_model_name_or_path, kwargs)
        if foreign is None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        from .conversion.formats import HF_XLSTM_KEY_MAPPING, hf_xlstm_config

        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in XLSTMConfig.__annotations__}
        kwargs["config"] = hf_xlstm_config(foreign, **overrides)
        kwargs.setdefault("key_mapping", HF_XLSTM_KEY_MAPPING)
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        save_under_own_names(model)
        return model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The published initialisations: small init for input projections and embeddings, Wang init for
        residual output projections, and the papers' gate biases."""
        config = self.config
        D, L = config.hidden_size, config.num_hidden_layers
        small, wang = _small_init_std(D), _wang_init_std(D, L)

        def linear_(layer: nn.Module | None, std: float) -> None:
            if layer is None:
                return
            init.normal_(layer.weight, mean=0.0, std=std)
            if getattr(layer, "bias", None) is not None:
                init.zeros_(layer.bias)

        if isinstance(module, XLSTMNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=small)
        elif isinstance(module, XLSTMForCausalLM) and not config.tie_word_embeddings:
            init.normal_(module.lm_head.weight, mean=0.0, std=small)
        elif isinstance(module, XLSTMCausalConv1d):
            # torch's default Conv1d init, as in the reference implementation
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, XLSTMLargeMLSTMLayer):
            NH = config.num_heads
            forget_bias = torch.linspace(3.0, 6.0, NH)
            if config.weight_mode == "single":
                for layer in (module.q, module.k, module.v, module.ogate_preact):
                    linear_(layer, small)
                init.zeros_(module.igate_preact.weight)
                init.zeros_(module.fgate_preact.weight)
                init.constant_(module.igate_preact.bias, -10.0)
                init.copy_(module.fgate_preact.bias, forget_bias)
            else:
                linear_(module.qkv_opreact, small)
                init.zeros_(module.ifgate_preact.weight)
                init.copy_(module.ifgate_preact.bias, torch.cat([torch.full((NH,), -10.0), forget_bias]))
            linear_(module.out_proj, wang)
        elif isinstance(module, XLSTMPaperMLSTMLayer):
            for layer in (module.up_proj, module.q_proj, module.k_proj, module.v_proj):
                linear_(layer, small)
            linear_(module.down_proj, wang)
            init.ones_(module.learnable_skip)
            init.zeros_(module.igate.weight)
            init.normal_(module.igate.bias, mean=0.0, std=0.1)
            init.zeros_(module.fgate.weight)
            init.copy_(module.fgate.bias, torch.linspace(3.0, 6.0, config.num_heads))
        elif isinstance(module, XLSTMSLSTMLayer):
            for layer in (module.igate, module.fgate, module.zgate, module.ogate):
                linear_(layer, small)
            if config.slstm_recurrent_weight_init == "zeros":
                init.zeros_(module.recurrent_kernel)
            else:
                init.uniform_(module.recurrent_kernel, -1 / math.sqrt(D), 1 / math.sqrt(D))
            self._init_slstm_bias(module)
        elif isinstance(module, XLSTMFeedForward):
            for name in ("proj_up_gate", "proj_up", "proj_up_gate_z"):
                linear_(getattr(module, name, None), small)
            linear_(module.proj_down, wang)

    def _init_slstm_bias(self, module: XLSTMSLSTMLayer) -> None:
        config, NH, DH = self.config, module.num_heads, module.head_dim
        scheme = config.slstm_bias_init
        if scheme == "standard":
            bound = 1 / math.sqrt(config.hidden_size)
            init.uniform_(module.bias, -bound, bound)
            return
        bias = torch.zeros(NH, 4, DH)
        if scheme == "powerlaw_blockdependent":
            bias[:, 1] = _slstm_forget_bias(config, module.layer_idx)
        elif scheme == "small_init":
            bias[:, 1] = torch.linspace(3.0, 6.0, DH)
        init.copy_(module.bias, bias)


class XLSTMModel(XLSTMPreTrainedModel):
    """The xLSTM backbone: embedding, residual stack of blocks, optional output norm."""

    def __init__(self, config: XLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout if config.embedding_dropout else 0.0)
        self.blocks = nn.ModuleList([XLSTMBlock(config, idx) for idx in range(config.num_hidden_layers)])
        self.out_norm = make_norm(config, config.hidden_size) if config.add_out_norm else nn.Identity()
        # fixed by the weights' shapes; a cache passed to forward must hold these (checked per call)
        self._state_layouts = state_layouts(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        # skipped where a host sync is impossible or costly: under torch.compile, while a CUDA graph is captured
        # (a decode step captured once and replayed per token must not read a tensor back on the host), and inside
        # generate(), which checked the prompt once and feeds back tokens the LM head chose (every one < vocab_size)
        if torch.compiler.is_compiling() or _PROMPT_CHECKED.get():
            return
        if input_ids.is_cuda and torch.cuda.is_current_stream_capturing():
            return
        outside = (input_ids < 0) | (input_ids >= self.config.vocab_size)
        if outside.any():  # one host sync; the details only on failure
            bad = int(input_ids[outside][0])
            raise ValueError(
                f"input_ids contains token id {bad}, outside the vocabulary [0, {self.config.vocab_size - 1}] of this "
                "model; check that the tokenizer matches the model (config.vocab_size)."
            )

    def _check_inputs(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> tuple[int, int]:
        """Refuse malformed inputs with an error that says what to pass instead; returns (B, S)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "Pass exactly one of input_ids or inputs_embeds (got both or neither); drop one of them "
                "(inputs_embeds replaces the embedding lookup of input_ids)."
            )
        if input_ids is not None:
            if input_ids.ndim != 2:
                raise ValueError(
                    f"input_ids has shape {tuple(input_ids.shape)}; it must be 2-D [batch, sequence]. For a single "
                    "sequence add the batch dimension: input_ids[None] (or tokenizer(..., return_tensors='pt'))."
                )
            if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
            B, S = input_ids.shape
        else:
            D = self.config.hidden_size
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != D:
                raise ValueError(
                    f"inputs_embeds has shape {tuple(inputs_embeds.shape)}; it must be [batch, sequence, {D}] "
                    f"(hidden_size={D} of this model), e.g. model.get_input_embeddings()(input_ids)."
                )
            B, S = inputs_embeds.shape[:2]
        if B == 0 or S == 0:
            raise ValueError(
                f"The input is empty (batch {B}, sequence length {S}); pass at least one token per row."
            )
        if attention_mask is not None and (
            attention_mask.ndim != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < S
        ):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the input is [{B}, {S}]; pass a 2-D mask "
                f"[{B}, {S}] (or [{B}, past + {S}]) with 0 at padding."
            )
        if input_ids is not None:
            self._check_input_ids(input_ids)
        return B, S

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> XLSTMModelOutput | tuple:
        """
        Args:
            input_ids: [B, S] token ids (or `inputs_embeds` [B, S, D], not both).
            attention_mask: [B, S] (or [B, past + S]; the last S columns are used) with 0 at padding: a padded
                position leaves every recurrent state untouched.
            cache: a Cache holding the recurrent states of a previous call (`past_key_values` is accepted as the
                older name of the same argument); the sequence continues from it and it is updated in place and
                returned, whatever `use_cache` says.
            use_cache: without a `cache`, create one and return it. Defaults to `config.use_cache` in eval mode.
            position_ids / cu_seq_lens_q / cu_seq_lens_k / max_length_q / max_length_k / seq_idx: packed rows (several
                documents per row, as padding-free collators send them): every document starts from a fresh state
                and gets the outputs it gets alone. Positions that restart mark document starts; without restarts
                these inputs change nothing. Not combinable with a cache or with padding.
        Returns:
            `BaseModelOutputWithPast` with `last_hidden_state` [B, S, D], the cache (as `.cache`; also readable as
            `.past_key_values`) and, if asked, `hidden_states` (embedding output and the output of every block; the
            last one after `out_norm`).
        """
        cache = resolve_cache_argument(cache, past_key_values)
        packing = {key: kwargs.pop(key) for key in PACKING_INPUTS if key in kwargs}
        _check_no_unused_inputs(kwargs, "XLSTMModel.forward")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        B, S = self._check_inputs(input_ids, inputs_embeds, attention_mask)
        starts = document_starts(packing, (B, S), attention_mask) if packing else None
        if starts is not None:
            if cache is not None or use_cache:
                raise ValueError(
                    "Packed rows (position_ids / cu_seq_lens / seq_idx marking several documents per row) cannot "
                    "use a cache: a row's state would mix documents. Pass no cache and use_cache=False, or one "
                    "document per row."
                )
            use_cache = False
        if cache is not None:
            if self.gradient_checkpointing and self.training:
                raise ValueError(
                    "A cache cannot be carried through a forward with gradient checkpointing: the recomputation in "
                    "the backward pass would read the already-updated state. Call "
                    "model.activation_checkpointing_disable() for stateful training, or pass no cache."
                )
            if not torch.compiler.is_compiling():
                check_cache(cache, self.config, B, self._state_layouts)
        else:
            if use_cache is None:
                use_cache = self.config.use_cache and not self.training
            if self.gradient_checkpointing and self.training and use_cache:
                logger.warning_once(
                    "use_cache=True is incompatible with gradient checkpointing; setting use_cache=False."
                )
                use_cache = False
            if use_cache:
                cache = XLSTMCache(self.config)
        if input_ids is not None:
            inputs_embeds = self.embeddings(input_ids)

        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -S:].to(device=inputs_embeds.device, dtype=torch.bool)

        # packed rows run as a batch of documents, each from a fresh state (see modeling_xlstm.packing)
        layout = packed_layout(starts.to(inputs_embeds.device)) if starts is not None else None
        hidden_states = self.embedding_dropout(inputs_embeds) if self.training else inputs_embeds
        if layout is not None:
            hidden_states, mask = layout.unpack(hidden_states), None
        # One token per row and no padding (a decode step): the blocks take [B, D] rows, on which every projection is
        # a single matmul call and the recurrence one step; at small sizes a step costs its op count, not arithmetic.
        one_token = S == 1 and mask is None and layout is None
        if one_token:
            hidden_states = hidden_states[:, 0]
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for block in self.blocks:
            hidden_states = block(hidden_states, mask, cache)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        hidden_states = self.out_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states[-1] = hidden_states
        if one_token:
            hidden_states = hidden_states.unsqueeze(1)
            if output_hidden_states:
                all_hidden_states = [h.unsqueeze(1) for h in all_hidden_states]
        if layout is not None:
            hidden_states = layout.repack(hidden_states, B)
            if output_hidden_states:
                all_hidden_states = [layout.repack(h, B) for h in all_hidden_states]
        if isinstance(cache, XLSTMCache):
            cache.record_tokens(S, hidden_states.device)

        outputs = XLSTMModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            **{CACHE_NAME: cache},
        )
        return outputs if return_dict else outputs.to_tuple()


# Extra keyword inputs that forward() honours; anything else is refused rather than silently dropped.
_LOSS_INPUTS = ("num_items_in_batch", "ignore_index", "shift_labels")
# generate() options (arguments or generation-config fields) that ask for assisted / speculative decoding
_ASSISTED_GENERATION_OPTIONS = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")


def _check_no_unused_inputs(kwargs: dict, where: str, also_reads: str = "") -> None:
    """Refuse the keyword inputs that `where` got in `**kwargs` and does not use; `also_reads` names its own extras."""
    if kwargs.get("output_attentions"):
        raise ValueError(
            f"output_attentions=True was passed to {where}, but xLSTM blocks have no attention weights to return; "
            "drop the argument."
        )
    unused = sorted(key for key in kwargs if key != "output_attentions")
    if unused:
        raise TypeError(
            f"{where} got inputs it does not use: {unused}. An xLSTM model reads input_ids (or inputs_embeds), "
            "attention_mask, cache (alias past_key_values), use_cache, output_hidden_states, return_dict"
            + ", the packing inputs " + ", ".join(PACKING_INPUTS) + also_reads
            + "; remove the others from the call (or from the batch your data collator builds)."
        )


class XLSTMForCausalLM(XLSTMPreTrainedModel, XLSTMGenerationHooks, GenerationMixin):
    """xLSTM language model: the backbone and a linear LM head (tied to the embedding if configured)."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: XLSTMConfig):
        super().__init__(config)
        self.backbone = XLSTMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.backbone.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @torch.no_grad()
    def fuse_projections(self) -> "XLSTMForCausalLM":
        """Convert the model in place from `weight_mode="single"` to `"fused"` and return it.

        Per 7B-style mLSTM layer, q, k, v and the output gate become one matmul (`qkv_opreact`, rows in that order)
        and the input and forget gates another (`ifgate_preact`); per feed-forward, gate and up projection become
        one (`proj_up_gate_z`). The outputs are the same numbers (the rows of a fused weight are the single
        weights, concatenated), with fewer, larger matmuls: fewer kernel launches per decode step and better
        matmul efficiency in prefill. The 7B checkpoints are stored in single mode; call this before serving.
        `save_pretrained` then writes a fused checkpoint (config.weight_mode "fused"). A no-op when already fused.
        Not for LoRA/PEFT-wrapped models (their adapters target the single projections by name).
        """
        if self.config.weight_mode == "fused":
            return self

        def fused_linear(parts: list[nn.Linear]) -> nn.Linear:
            first = parts[0]
            has_bias = first.bias is not None
            out_features = sum(part.out_features for part in parts)
            fused = nn.Linear(first.in_features, out_features, bias=has_bias, device="meta")
            fused.weight = nn.Parameter(torch.cat([part.weight for part in parts]), first.weight.requires_grad)
            if has_bias:
                fused.bias = nn.Parameter(torch.cat([part.bias for part in parts]), first.bias.requires_grad)
            return fused

        configs = {id(self.config): self.config}
        for module in self.modules():
            if isinstance(module, XLSTMLargeMLSTMLayer):
                module.qkv_opreact = fused_linear([module.q, module.k, module.v, module.ogate_preact])
                module.ifgate_preact = fused_linear([module.igate_preact, module.fgate_preact])
                for name in ("q", "k", "v", "ogate_preact", "igate_preact", "fgate_preact"):
                    delattr(module, name)
            elif isinstance(module, XLSTMFeedForward):
                module.proj_up_gate_z = fused_linear([module.proj_up_gate, module.proj_up])
                del module.proj_up_gate, module.proj_up
            else:
                continue
            configs[id(module.config)] = module.config
        for config in configs.values():  # every module reads weight_mode from its config at forward time
            config.weight_mode = "fused"
        return self

    # generate() ------------------------------------------------------------------------------------------------

    def generate(self, inputs: torch.Tensor | None = None, *args, **kwargs):
        """`GenerationMixin.generate`, taking the cache as `cache=` or `past_key_values=` on every supported release.

        The attention mask is checked against the prompt here: generate() drops a mask of all ones before the model
        would see its shape. Assisted decoding is refused before any work (transformers 5.25 would run the prompt
        first, and mark a cache the caller passed). The prompt's token ids are checked here, once, and the decoding
        steps go through a `FlatDecodeStep` where the model allows one; neither changes what is generated.
        """
        config = kwargs.get("generation_config") or self.generation_config
        assisted = [name for name in _ASSISTED_GENERATION_OPTIONS
                    if kwargs.get(name) is not None or getattr(config, name, None) is not None]
        if assisted:
            raise ValueError(
                f"Assisted (speculative) decoding was asked for ({', '.join(assisted)}), which xLSTM models do not "
                "support: it rolls the cache back to the accepted tokens, and a recurrent state cannot be rolled back. "
                "Generate without it."
            )
        if OTHER_CACHE_NAME in kwargs:
            kwargs[CACHE_NAME] = resolve_cache_argument(kwargs.pop("cache", None), kwargs.pop("past_key_values", None))
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if isinstance(prompt, torch.Tensor) and isinstance(mask, torch.Tensor) and prompt.ndim == 2:
            B, S = prompt.shape
            continuing = kwargs.get(CACHE_NAME) is not None
            if mask.ndim != 2 or mask.shape[0] != B or (mask.shape[1] < S if continuing else mask.shape[1] != S):
                raise ValueError(
                    f"attention_mask has shape {tuple(mask.shape)} but the prompt is [{B}, {S}]; pass the mask the "
                    f"tokenizer returned with the prompt ([{B}, {S}], 0 at padding)."
                )
        checked = isinstance(prompt, torch.Tensor) and not prompt.dtype.is_floating_point and prompt.numel() > 0
        if checked:
            self.backbone._check_input_ids(prompt)  # once here, so that no decoding step pays a host sync for it
        tokens = _PROMPT_CHECKED.set(checked), _DECODE_STEP.set(DecodeStepSlot(self))
        try:
            return super().generate(inputs, *args, **kwargs)
        finally:
            _PROMPT_CHECKED.reset(tokens[0])
            _DECODE_STEP.reset(tokens[1])

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> dict:
        """Feed only the tokens the cache has not consumed, and the padding mask only where it can matter.

        The mask is passed for the prompt (and every step without a cache), cut to the tokens fed; a generated token
        is never padding, so decoding steps get none, which keeps the step's inputs fixed in shape for compilation.
        """
        cache = resolve_cache_argument(cache, past_key_values)
        if cache is not None and not is_first_iteration and next_sequence_length == 1 and not kwargs.keys() - {
            "logits_to_keep", "use_cache"
        }:  # a decoding step: what the generic version returns for it, without its per-step lookups (model.device)
            return {"input_ids": input_ids[:, -1:].clone(memory_format=torch.contiguous_format), CACHE_NAME: cache,
                    **kwargs}
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            attention_mask=None,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        model_inputs.pop("attention_mask", None)
        fed = model_inputs["input_ids"] if model_inputs.get("input_ids") is not None else model_inputs["inputs_embeds"]
        length = fed.shape[1]
        decoding = cache is not None and length == 1 and not is_first_iteration
        if attention_mask is not None and not decoding:
            model_inputs["attention_mask"] = attention_mask[:, -length:].to(fed.device)
        return model_inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> XLSTMCausalLMOutput | tuple:
        """
        Args: those of `XLSTMModel.forward`, and
            labels: [B, S] token ids; the loss is the cross-entropy of predicting labels[:, t + 1] from position t
                (shifted inside), ignoring -100. `num_items_in_batch` (as `Trainer` passes it) normalises the summed
                loss instead of averaging over the batch's tokens.
            logits_to_keep: compute logits for the last `logits_to_keep` positions only (0 = all), or for the
                positions in a 1-D index tensor.
        Returns:
            `CausalLMOutputWithPast` with `loss`, `logits` [B, S', V] in float32 (soft-capped when configured; None
            in training mode when a loss is computed and `config.logits_with_loss` is False: the loss then never
            holds them), the cache (`.cache`, also readable as `.past_key_values`) and `hidden_states` if asked.
        """
        cache = resolve_cache_argument(cache, past_key_values)
        slot = None if torch.compiler.is_compiling() else _DECODE_STEP.get()
        decode_step = slot.step() if (
            slot is not None and slot.model is self and cache is not None and input_ids is not None
            and inputs_embeds is None and input_ids.shape[1] == 1 and attention_mask is None and labels is None
            and not kwargs and isinstance(logits_to_keep, int) and logits_to_keep in (0, 1)
            and not (self.config.output_hidden_states if output_hidden_states is None else output_hidden_states)
            and (self.config.return_dict if return_dict is None else return_dict)
        ) else None
        if decode_step is not None:  # an eager decoding step of generate() (see FlatDecodeStep)
            check_cache(cache, self.config, input_ids.shape[0], self.backbone._state_layouts)
            return XLSTMCausalLMOutput(logits=decode_step(input_ids, cache), **{CACHE_NAME: cache})
        loss_kwargs = {key: kwargs.pop(key) for key in _LOSS_INPUTS if key in kwargs}
        packing = {key: kwargs.pop(key) for key in PACKING_INPUTS if key in kwargs}
        _check_no_unused_inputs(
            kwargs,
            "XLSTMForCausalLM.forward",
            ", labels, logits_to_keep and the loss options " + ", ".join(_LOSS_INPUTS),
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **packing,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = outputs.last_hidden_state[:, keep, :]
        with_loss = labels is not None or loss_kwargs.get("shift_labels") is not None
        # as Liger-Kernel's fused losses: only training steps skip the logits; evaluation and metrics still get them
        if with_loss and self.training and not self.config.logits_with_loss and self._lm_head_fusable():
            logits, loss = None, self._loss_without_logits(hidden_states, labels, **loss_kwargs)
        else:
            logits = soft_cap(self.lm_head(hidden_states).float(), self.config.output_logit_soft_cap)
            loss = None
            if with_loss:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs
                )

        result = XLSTMCausalLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **{CACHE_NAME: getattr(outputs, CACHE_NAME)}
        )
        return result if return_dict else result.to_tuple()

    def _lm_head_fusable(self) -> bool:
        """Whether the LM head is a plain nn.Linear whose weights the fused loss can read (an adapter or a quantized
        layer in its place must be called as the module it is)."""
        if type(self.lm_head) is nn.Linear:
            return True
        logger.warning_once(
            f"logits_with_loss=False computes the loss from the LM head's weights, but the LM head is a "
            f"{type(self.lm_head).__name__}, not an nn.Linear; computing the loss from the full logits instead."
        )
        return False

    def _loss_without_logits(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss transformers' `ForCausalLMLoss` computes from the logits, here from the hidden states [B, S, D]
        without holding the logits (`modeling_xlstm.kernels.lm_loss`)."""
        if shift_labels is None:
            shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        targets = shift_labels.reshape(-1).to(hidden_states.device)
        summed = linear_cross_entropy(
            hidden_states.reshape(-1, hidden_states.shape[-1]), self.lm_head.weight, self.lm_head.bias, targets,
            soft_cap=self.config.output_logit_soft_cap, ignore_index=ignore_index,
        )
        if num_items_in_batch is None:
            return summed / (targets != ignore_index).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(summed.device)
        return summed / num_items_in_batch


__all__ = ["XLSTMPreTrainedModel", "XLSTMModel", "XLSTMForCausalLM", "XLSTMBlock", "state_layouts"]
