"""Configuration of the xLSTM family: any stack of sLSTM and mLSTM blocks, in the paper's or the 7B style."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

BLOCK_TYPES = ("mlstm", "slstm")
BLOCK_STYLES = ("large", "paper")
BACKENDS = ("auto", "triton", "native")
WEIGHT_MODES = ("single", "fused")
STATE_DTYPES = ("float32", "bfloat16", "float16")
FFN_ACTIVATIONS = ("gelu", "silu", "swish", "relu")
SLSTM_BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard", "zeros")
SLSTM_RECURRENT_INITS = ("zeros", "standard")

# Defaults that differ between the two block styles; `None` in the config means "the style's default".
_STYLE_DEFAULTS = {
    "large": {"norm_eps": 1e-6, "ffn_proj_factor": 2.667, "ffn_act_fn": "silu"},
    "paper": {"norm_eps": 1e-5, "ffn_proj_factor": 1.3, "ffn_act_fn": "gelu"},
}


def round_up_to_multiple(value: float, multiple_of: int) -> int:
    """The smallest multiple of `multiple_of` that is >= `value`."""
    return int(math.ceil(value / multiple_of) * multiple_of)


class XLSTMConfig(PreTrainedConfig):
    r"""
    Configuration of an xLSTM language model: a residual stack of mLSTM and sLSTM blocks.

    Two block styles are available:

    - `"large"` (default): the xLSTM 7B architecture. Every block is RMSNorm -> sequence mixer -> residual,
      RMSNorm -> SwiGLU feed-forward -> residual. The mLSTM mixer projects q, k (`qk_dim_factor * hidden_size`),
      v and the output gate (`v_dim_factor * hidden_size`) directly from the input, soft-caps its gate
      pre-activations at `gate_soft_cap` and normalizes each head's output. Logits are soft-capped at
      `output_logit_soft_cap`.
    - `"paper"`: the blocks of the xLSTM paper (Beck et al., 2024). LayerNorm pre-norms; the mLSTM block
      up-projects by `mlstm_proj_factor`, applies a causal convolution and block-diagonal q/k/v projections
      (`qkv_proj_blocksize`), has a learnable skip connection and no feed-forward; the sLSTM block is followed
      by a gated feed-forward network (`ffn_proj_factor`, GeLU).

    In both styles the per-layer block kinds are free: `block_types=["mlstm", "slstm", ...]`, or the
    convenience `slstm_at=[1, 5]` (indices of the sLSTM blocks, or `"all"`).

    Args:
        vocab_size: Vocabulary size.
        hidden_size: Width of the residual stream (alias `embedding_dim`).
        num_hidden_layers: Number of blocks (alias `num_blocks`).
        block_types: Per-layer block kind, `"mlstm"` or `"slstm"`, of length `num_hidden_layers`.
        slstm_at: Indices of sLSTM blocks (or `"all"`); used when `block_types` is not given.
        block_style: `"large"` (xLSTM 7B) or `"paper"`.
        num_heads: Number of mLSTM heads.
        use_bias: Biases in the linear projections (and norms in the large style).
        norm_eps: Epsilon of all norms (default 1e-6 in the large style, 1e-5 in the paper style).
        norm_reduction_force_float32: Compute norm statistics in float32 under low-precision weights.
        add_out_norm: Norm after the last block (alias `add_post_blocks_norm`).
        tie_word_embeddings: Share the input embedding and the LM head.
        qk_dim_factor / v_dim_factor: Large style: q/k and v widths as fractions of `hidden_size`.
        gate_soft_cap: Large style: soft cap of the mLSTM gate pre-activations (`None` disables).
        output_logit_soft_cap: Soft cap of the output logits (`None` disables; alias `final_logit_softcapping`).
        logits_with_loss: Whether a forward in training mode given `labels` also returns the logits (default).
            With `False` such a forward computes the loss chunk by chunk straight from the last hidden states (LM
            head, soft cap and cross-entropy fused, `modeling_xlstm.kernels.lm_loss`) and returns `logits=None`: the
            [B, S, V] float32 logits and their gradient are never held, which saves memory and time in training at
            large vocabularies. In eval mode (evaluation, metrics on logits, generation) the logits are always
            computed. Keep `True` when something reads the logits of training steps.
        weight_mode: Large style: `"single"` (separate q, k, v, gate projections) or `"fused"` (one matrix).
        ffn_proj_factor: Feed-forward width as a multiple of `hidden_size` (2.667 large, 1.3 paper).
        ffn_round_up_to_multiple_of: Feed-forward width is rounded up to a multiple of this.
        ffn_act_fn: Activation of the gated feed-forward (`"silu"` large, `"gelu"` paper).
        mlstm_proj_factor: Paper style: mLSTM up-projection factor (inner width rounded up to a multiple of 64).
        qkv_proj_blocksize: Paper style: block size of the block-diagonal q/k/v projections.
        conv1d_kernel_size: Paper style: causal conv kernel size in the mLSTM block (0 disables).
        slstm_num_heads: Number of sLSTM heads (the recurrent matrix is block-diagonal over them).
        slstm_conv1d_kernel_size: Causal conv kernel size in the sLSTM block (0 disables).
        slstm_bias_init / slstm_recurrent_weight_init: sLSTM initialisation schemes of the paper.
        chunk_size: Chunk length of the chunkwise mLSTM kernel.
        eps: Epsilon of the mLSTM denominator.
        inference_state_dtype: dtype of the recurrent states kept in the cache (float32 by default).
        backend: `"auto"` (Triton on CUDA, native elsewhere), `"triton"` or `"native"`.
        dropout: Dropout after each mixer / feed-forward output (paper style).
        embedding_dropout: Apply `dropout` to the embeddings as well.
    """

    model_type = "xlstm_stack"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the name from transformers 5.24 on, and before
    attribute_map = {
        "embedding_dim": "hidden_size",
        "num_blocks": "num_hidden_layers",
        "add_post_blocks_norm": "add_out_norm",
        # the name Gemma 2 gave the logit soft cap, read by clients that compute the loss from the LM head's weights
        # themselves (TRL 1.16's SFTTrainer, among others): without it they would train without the cap
        "final_logit_softcapping": "output_logit_soft_cap",
    }

    vocab_size: int = 50304
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    block_types: list[str] | None = None
    slstm_at: list[int] | str | None = None
    block_style: str = "large"
    num_heads: int = 8
    use_bias: bool = False
    norm_eps: float | None = None
    norm_reduction_force_float32: bool = True
    add_out_norm: bool = True
    tie_word_embeddings: bool = False
    # large (xLSTM 7B) style
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    gate_soft_cap: float | None = 15.0
    output_logit_soft_cap: float | None = 30.0
    logits_with_loss: bool = True
    weight_mode: str = "single"
    # feed-forward
    ffn_proj_factor: float | None = None
    ffn_round_up_to_multiple_of: int = 64
    ffn_act_fn: str | None = None
    # paper style
    mlstm_proj_factor: float = 2.0
    qkv_proj_blocksize: int = 4
    conv1d_kernel_size: int = 4
    slstm_num_heads: int = 4
    slstm_conv1d_kernel_size: int = 4
    slstm_bias_init: str = "powerlaw_blockdependent"
    slstm_recurrent_weight_init: str = "zeros"
    # numerics and kernels
    chunk_size: int = 64
    eps: float = 1e-6
    inference_state_dtype: str = "float32"
    backend: str = "auto"
    dropout: float = 0.0
    embedding_dropout: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        # aliases used by the xlstm package and transformers' own xLSTM (see `attribute_map`)
        for alias, name in self.attribute_map.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                default = type(self).__dataclass_fields__[name].default
                if getattr(self, name) not in (value, default):
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} and its alias {alias}={value!r} disagree; "
                        "give only one of them."
                    )
                setattr(self, name, value)
        if self.block_style not in BLOCK_STYLES:
            raise ValueError(f"block_style must be one of {BLOCK_STYLES}, got {self.block_style!r}.")
        for name, default in _STYLE_DEFAULTS[self.block_style].items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        self.block_types = self._resolve_block_types()
        self.slstm_at = [idx for idx, kind in enumerate(self.block_types) if kind == "slstm"]
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def _resolve_block_types(self) -> list[str]:
        if self.num_hidden_layers is None or self.num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers must be a positive integer, got {self.num_hidden_layers}.")
        if self.block_types is not None:
            block_types = [str(kind).lower() for kind in self.block_types]
            unknown = sorted({kind for kind in block_types if kind not in BLOCK_TYPES})
            if unknown:
                raise ValueError(f"block_types has unknown block kinds {unknown}; use only {list(BLOCK_TYPES)}.")
            if len(block_types) != self.num_hidden_layers:
                raise ValueError(
                    f"block_types has {len(block_types)} entries but num_hidden_layers={self.num_hidden_layers}; "
                    "give one block kind per layer."
                )
            if self.slstm_at not in (None, [], "all") and sorted(self.slstm_at) != [
                i for i, kind in enumerate(block_types) if kind == "slstm"
            ]:
                raise ValueError("slstm_at disagrees with block_types; give only one of them.")
            return block_types
        slstm_at = self.slstm_at or []
        if slstm_at == "all":
            slstm_at = list(range(self.num_hidden_layers))
        bad = [i for i in slstm_at if not isinstance(i, int) or not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(
                f"slstm_at has positions {bad} outside 0..{self.num_hidden_layers - 1} (num_hidden_layers="
                f"{self.num_hidden_layers}); sLSTM positions are 0-based block indices."
            )
        return ["slstm" if i in slstm_at else "mlstm" for i in range(self.num_hidden_layers)]

    def validate_architecture(self) -> None:
        """Raise a ValueError naming the field and the fix for any inconsistent setting."""

        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(message)

        require(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}.")
        require(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}.")
        require(self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        require(self.weight_mode in WEIGHT_MODES, f"weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}.")
        require(
            self.inference_state_dtype in STATE_DTYPES,
            f"inference_state_dtype must be one of {STATE_DTYPES}, got {self.inference_state_dtype!r}.",
        )
        require(self.ffn_act_fn in FFN_ACTIVATIONS, f"ffn_act_fn must be one of {FFN_ACTIVATIONS}, got {self.ffn_act_fn!r}.")
        require(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}.")
        require(self.eps > 0 and self.norm_eps > 0, "eps and norm_eps must be > 0.")
        require(self.ffn_proj_factor > 0, f"ffn_proj_factor must be > 0, got {self.ffn_proj_factor}.")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        for name in ("gate_soft_cap", "output_logit_soft_cap"):
            cap = getattr(self, name)
            require(cap is None or cap > 0, f"{name} must be > 0 or None (no cap), got {cap}.")

        if "mlstm" in self.block_types:
            require(self.num_heads >= 1, f"num_heads must be >= 1, got {self.num_heads}.")
            if self.block_style == "large":
                for name, width in (("qk_dim_factor", self.qk_dim), ("v_dim_factor", self.v_dim)):
                    require(
                        width >= self.num_heads and width % self.num_heads == 0,
                        f"{name}={getattr(self, name)} gives a width of {width} (hidden_size={self.hidden_size}), "
                        f"which num_heads={self.num_heads} does not divide; change {name}, hidden_size or num_heads.",
                    )
            else:
                inner = self.mlstm_inner_dim
                require(
                    inner % self.num_heads == 0,
                    f"num_heads={self.num_heads} does not divide the mLSTM inner width {inner} "
                    f"(mlstm_proj_factor={self.mlstm_proj_factor} x hidden_size={self.hidden_size}, rounded up to 64); "
                    "change num_heads or mlstm_proj_factor.",
                )
                require(
                    self.qkv_proj_blocksize >= 1 and inner % self.qkv_proj_blocksize == 0,
                    f"qkv_proj_blocksize={self.qkv_proj_blocksize} does not divide the mLSTM inner width {inner}; "
                    "choose a divisor of it (the paper uses 4).",
                )
                require(self.conv1d_kernel_size >= 0, "conv1d_kernel_size must be >= 0 (0 disables the conv).")
        if "slstm" in self.block_types:
            require(
                self.slstm_num_heads >= 1 and self.hidden_size % self.slstm_num_heads == 0,
                f"slstm_num_heads={self.slstm_num_heads} does not divide hidden_size={self.hidden_size}; "
                "choose a divisor of hidden_size.",
            )
            require(self.slstm_conv1d_kernel_size >= 0, "slstm_conv1d_kernel_size must be >= 0 (0 disables the conv).")
            require(
                self.slstm_bias_init in SLSTM_BIAS_INITS,
                f"slstm_bias_init must be one of {SLSTM_BIAS_INITS}, got {self.slstm_bias_init!r}.",
            )
            require(
                self.slstm_recurrent_weight_init in SLSTM_RECURRENT_INITS,
                f"slstm_recurrent_weight_init must be one of {SLSTM_RECURRENT_INITS}, "
                f"got {self.slstm_recurrent_weight_init!r}.",
            )

    # Derived widths -------------------------------------------------------------------------------------------

    @property
    def qk_dim(self) -> int:
        """Large style: total query/key width of an mLSTM layer."""
        return int(self.hidden_size * self.qk_dim_factor)

    @property
    def v_dim(self) -> int:
        """Large style: total value (and output gate) width of an mLSTM layer."""
        return int(self.hidden_size * self.v_dim_factor)

    @property
    def mlstm_inner_dim(self) -> int:
        """Paper style: width inside the up-projected mLSTM block."""
        return round_up_to_multiple(self.mlstm_proj_factor * self.hidden_size, 64)

    @property
    def ffn_dim(self) -> int:
        """Width of the gated feed-forward network."""
        return round_up_to_multiple(self.ffn_proj_factor * self.hidden_size, self.ffn_round_up_to_multiple_of)

    @property
    def slstm_head_dim(self) -> int:
        return self.hidden_size // self.slstm_num_heads

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedConfig.save_pretrained`; a config loaded from a folder whose `auto_map` names this package's
        remote-code module (`trust_remote_code=True` folders) also gets that module written next to config.json,
        so that the saved folder loads with `trust_remote_code=True` as the original did."""
        super().save_pretrained(save_directory, *args, **kwargs)
        auto_map = getattr(self, "auto_map", None) or {}
        from .hub_configs import REMOTE_MODULE, write_remote_code

        if any(str(target).startswith(REMOTE_MODULE + ".") for target in auto_map.values()):
            write_remote_code(save_directory)

    def to_dict(self) -> dict:
        # the block kinds are stored once, as `block_types`; `slstm_at` is only a way to give them
        config_dict = super().to_dict()
        config_dict.pop("slstm_at", None)
        return config_dict

    # What transformers' cache utilities read: every layer keeps recurrent state only.

    @property
    def layer_types(self) -> list[str]:
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def number_of_conv_states(self) -> int:
        # one cache slot per state tensor: mLSTM (C, n, m) and sLSTM (h, c, n, m); the conv buffer uses slot 0
        return 4


__all__ = ["XLSTMConfig"]
