"""The public xLSTM checkpoint formats: how to read their configs and how each of our tensors is made from theirs.

Three formats are known:

- ``nxai-xlstm``: the ``xlstm`` package's ``xLSTMLMModel`` (the NeurIPS paper's models: mLSTM blocks with
  pre-up-projection, sLSTM blocks with a gated feed-forward). Its config is a YAML/JSON of
  ``xLSTMLMModelConfig`` fields, possibly the ``model:`` section of an experiment file.
- ``nxai-large``: the ``xlstm`` package's ``xLSTMLarge`` (the xLSTM 7B architecture), single or fused weights;
  config: ``xLSTMLargeConfig`` fields (``config.yaml`` as read by ``xlstm.xlstm_large.from_pretrained``).
- ``hf-xlstm``: transformers' own ``xlstm`` model type, e.g. ``NX-AI/xLSTM-7b`` (config.json + safetensors).

For each format, `build_plan` returns our `XLSTMConfig` and one `Recipe` per tensor of our model: which source
tensors it is made of, which shapes those must have, and the (cheap, per-tensor) transform.

Facts about the paper format, read from ``xlstm`` 2.0.6 and checked by tests/test_conversion.py:

- sLSTM layer: the module named ``fgate`` produces the *input*-gate pre-activation and ``igate`` the *forget*-gate
  one (``i, f = self.fgate(x_conv), self.igate(x_conv)``); ours are named by what they compute.
- Its LayerNorms (block norms, the post-blocks norm, the mLSTM and sLSTM head norms) store an offset: the scale
  applied is ``1 + weight``. Ours store the scale itself.
- sLSTM cell parameters are stored in the backend's internal layout. "External" layout (ours):
  recurrent kernel ``[NH, DH_in, 4, DH_out]``, bias ``[NH, 4, DH]``, gate order (i, f, z, o).
  ``vanilla``: kernel ``[NH, 4 * DH_out, DH_in]`` (ext.permute(0, 2, 3, 1)), bias ``[4 * NH * DH]`` gate-major
  (ext.permute(1, 0, 2)). ``cuda``: kernel ``[NH, DH_in, 4 * DH_out]`` and bias ``[NH * 4 * DH]``, plain reshapes.
  The kernel's shape tells the two apart; the bias layout follows the kernel's.
- The gated feed-forward's ``proj_up`` is [gate, up] concatenated along dim 0, which is our fused
  ``proj_up_gate_z``; paper conversions therefore use ``weight_mode="fused"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from modeling_xlstm.configuration_xlstm import XLSTMConfig

from .errors import ConversionError

FORMATS = ("nxai-xlstm", "nxai-large", "hf-xlstm")
FORMAT_DESCRIPTIONS = {
    "nxai-xlstm": "xlstm package xLSTMLMModel (paper sLSTM/mLSTM models): state_dict + YAML/JSON config",
    "nxai-large": "xlstm package xLSTMLarge (xLSTM 7B architecture) state_dict, single or fused weights",
    "hf-xlstm": "transformers 'xlstm' model type, e.g. NX-AI/xLSTM-7b (config.json + safetensors)",
}
PAPER_NORM_EPS = 1e-5  # every LayerNorm of the xlstm package's paper model

# transformers' `xlstm` names -> ours (used by the converter and by `XLSTMForCausalLM.from_pretrained`).
HF_XLSTM_KEY_MAPPING = {r"\.norm_mlstm\.": ".norm_mixer.", r"\.mlstm_layer\.": ".mixer."}


@dataclass
class Recipe:
    """How one of our tensors is made: `fn(*source tensors)`, or `synth()` when the source has no counterpart."""

    target: str
    sources: tuple[str, ...] = ()
    shapes: tuple[tuple[tuple[int, ...], ...], ...] = ()  # per source: the shapes it may have
    fn: Callable[..., torch.Tensor] | None = None
    synth: Callable[[], torch.Tensor] | None = None


@dataclass
class Plan:
    source_format: str
    config: XLSTMConfig
    recipes: list[Recipe]
    ignorable: set[str] = field(default_factory=set)  # source keys that may be present and are not needed
    notes: list[str] = field(default_factory=list)


def our_parameter_shapes(config: XLSTMConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors `save_pretrained` writes for `config` (built on the meta device)."""
    from modeling_xlstm.modeling_xlstm import XLSTMForCausalLM

    with torch.device("meta"):
        model = XLSTMForCausalLM(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _offset_to_scale(weight: torch.Tensor) -> torch.Tensor:
    return weight.float() + 1.0


# --------------------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------------------


def detect_format(config_dict: dict[str, Any] | None, names: list[str]) -> str | None:
    """The format of a source from its config and tensor names, or None when it matches none."""
    model_type = (config_dict or {}).get("model_type")
    if model_type == "xlstm":
        return "hf-xlstm"
    if any(name.startswith("xlstm_block_stack.") for name in names) or "token_embedding.weight" in names:
        return "nxai-xlstm"
    if any(".mlstm_layer." in name for name in names):
        if "embedding.weight" in names:
            return "nxai-large"
        if "backbone.embeddings.weight" in names:
            return "hf-xlstm"
    return None


# --------------------------------------------------------------------------------------------------------------
# Paper models (xlstm package xLSTMLMModel)
# --------------------------------------------------------------------------------------------------------------

_PAPER_MODEL_KEYS = {"num_blocks", "embedding_dim", "mlstm_block", "slstm_block", "vocab_size", "slstm_at"}


def paper_model_section(document: dict[str, Any]) -> dict[str, Any]:
    """The xLSTMLMModelConfig fields of a config file: the `model:` section of an experiment file, or the file."""
    model = document.get("model")
    if isinstance(model, dict) and _PAPER_MODEL_KEYS & set(model):
        return model
    return document


def _up_proj_dim(proj_factor: float, dim: int, settings: dict[str, Any]) -> int:
    """The xlstm package's UpProjConfigMixin rounding of proj_factor * dim."""
    multiple_of = settings.get("round_proj_up_to_multiple_of", 64)
    ratio = proj_factor * dim / multiple_of
    ratio = math.ceil(ratio) if settings.get("round_proj_up_dim_up", True) else math.floor(ratio)
    return int(ratio * multiple_of)


@dataclass
class PaperSettings:
    config: XLSTMConfig
    mlstm_bias: bool
    ffn_bias: bool
    group_norm_weight: bool
    slstm_backend: str
    vocab_size: int


def paper_config(document: dict[str, Any]) -> PaperSettings:
    """Translate an xLSTMLMModelConfig (as a dict) into our paper-style XLSTMConfig, checking every width."""
    model = paper_model_section(document)
    problems: list[str] = []

    def section(value: Any, name: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            problems.append(f"config field {name} must be a mapping, got {value!r}")
            return {}
        return value

    vocab_size = model.get("vocab_size", -1)
    dim = model.get("embedding_dim", 128)
    num_blocks = model.get("num_blocks", 1)
    bias = bool(model.get("bias", False))
    mlstm_block = section(model.get("mlstm_block"), "mlstm_block")
    slstm_block = section(model.get("slstm_block"), "slstm_block")
    slstm_at = model.get("slstm_at", [])
    if mlstm_block is None or slstm_at == "all":
        slstm_at = list(range(num_blocks)) if isinstance(num_blocks, int) else []
    if not isinstance(vocab_size, int) or vocab_size < 1:
        problems.append(f"config field vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(dim, int) or dim < 1 or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ConversionError(problems + [f"embedding_dim={dim!r} and num_blocks={num_blocks!r} must be positive integers"])
    if not isinstance(slstm_at, list) or any(not isinstance(i, int) or not 0 <= i < num_blocks for i in slstm_at):
        problems.append(f"config field slstm_at={slstm_at!r} must list block indices in 0..{num_blocks - 1} (or be 'all')")
        slstm_at = []

    mlstm = section((mlstm_block or {}).get("mlstm", {}), "mlstm_block.mlstm") or {}
    slstm = section((slstm_block or {}).get("slstm", {}), "slstm_block.slstm") or {}
    feedforward = (slstm_block or {}).get("feedforward", {})
    if slstm_at and slstm_block is None:
        problems.append("slstm_at places sLSTM blocks but the config has no slstm_block")
    if slstm_at and feedforward is None:
        problems.append("sLSTM blocks without a feed-forward (slstm_block.feedforward: null) are not supported")
    feedforward = section(feedforward, "slstm_block.feedforward") or {}
    if len(slstm_at) < num_blocks and mlstm_block is None:
        problems.append("the config places mLSTM blocks but has no mlstm_block")

    function = slstm.get("function", "slstm")
    if slstm_at and function != "slstm":
        problems.append(f"sLSTM cell function {function!r} is not supported (only 'slstm')")
    ff_type = feedforward.get("ff_type", "ffn_gated")
    if slstm_at and ff_type != "ffn_gated":
        problems.append(f"feed-forward type {ff_type!r} is not supported (only 'ffn_gated')")
    act_fn = feedforward.get("act_fn", "gelu")
    if slstm_at and act_fn not in ("gelu", "swish", "relu"):
        problems.append(f"feed-forward activation {act_fn!r} is not supported (gelu, swish, relu)")
    if problems:
        raise ConversionError(problems)

    mlstm_heads = mlstm.get("num_heads", 4)
    slstm_heads = slstm.get("num_heads", 4)
    slstm_heads = slstm_heads if slstm_heads > 0 else 1
    mlstm_factor = mlstm.get("proj_factor", 2.0)
    ffn_factor = feedforward.get("proj_factor", 1.3)
    ffn_multiple = feedforward.get("round_proj_up_to_multiple_of", 64)
    settings = dict(
        vocab_size=max(int(vocab_size), 1),
        hidden_size=dim,
        num_hidden_layers=num_blocks,
        slstm_at=sorted(slstm_at),
        block_style="paper",
        num_heads=mlstm_heads,
        use_bias=bias or (bool(feedforward.get("bias", False)) and bool(slstm_at)),
        norm_eps=PAPER_NORM_EPS,
        add_out_norm=bool(model.get("add_post_blocks_norm", True)),
        tie_word_embeddings=bool(model.get("tie_weights", False)),
        gate_soft_cap=None,
        output_logit_soft_cap=None,
        weight_mode="fused",
        ffn_proj_factor=ffn_factor,
        ffn_round_up_to_multiple_of=ffn_multiple,
        ffn_act_fn=act_fn,
        mlstm_proj_factor=mlstm_factor,
        qkv_proj_blocksize=mlstm.get("qkv_proj_blocksize", 4),
        conv1d_kernel_size=mlstm.get("conv1d_kernel_size", 4),
        slstm_num_heads=slstm_heads,
        slstm_conv1d_kernel_size=slstm.get("conv1d_kernel_size", 4),
        slstm_bias_init=slstm.get("bias_init", "powerlaw_blockdependent"),
        slstm_recurrent_weight_init=slstm.get("recurrent_weight_init", "zeros"),
        dropout=float(model.get("dropout", 0.0)),
        embedding_dropout=bool(model.get("add_embedding_dropout", False)),
        eps=1e-6,
    )
    # Widths: the reference rounds proj_factor * dim with its own settings; make ours produce the same numbers.
    if len(slstm_at) < num_blocks:
        inner = _up_proj_dim(mlstm_factor, dim, mlstm)
        _match_width(
            settings, "mlstm_inner_dim", "mlstm_proj_factor", inner, dim,
            f"the mLSTM inner width {inner} (proj_factor={mlstm_factor}, embedding_dim={dim}) is not a "
            "multiple of 64, which modeling_xlstm's paper-style mLSTM block requires",
        )
    if slstm_at:
        ffn_dim = _up_proj_dim(ffn_factor, dim, feedforward)
        _match_width(
            settings, "ffn_dim", "ffn_proj_factor", ffn_dim, dim,
            f"the feed-forward width {ffn_dim} (proj_factor={ffn_factor}) cannot be expressed with "
            f"ffn_round_up_to_multiple_of={ffn_multiple}",
        )
    return PaperSettings(
        config=_try_config(settings),
        mlstm_bias=bias,
        ffn_bias=bool(feedforward.get("bias", False)),
        group_norm_weight=bool(slstm.get("group_norm_weight", True)),
        slstm_backend=slstm.get("backend", "cuda"),
        vocab_size=int(vocab_size),
    )


def _match_width(settings: dict[str, Any], width: str, factor: str, target: int, dim: int, error: str) -> None:
    """Make the config's derived `width` equal the reference's `target`: keep the reference factor if our
    rounding already gives it, else use the exact factor target / dim; raise `error` if neither does."""
    if getattr(_try_config(settings), width) == target:
        return
    settings[factor] = target / dim
    if getattr(_try_config(settings), width) != target:
        raise ConversionError(error)


def _try_config(settings: dict[str, Any]) -> XLSTMConfig:
    try:
        return XLSTMConfig(**settings)
    except ValueError as error:
        raise ConversionError(f"the source config gives an invalid modeling_xlstm config: {error}") from None


_BLOCK_KEY = re.compile(r"backbone\.blocks\.(\d+)\.(.+)")


def paper_plan(document: dict[str, Any], source_shapes: dict[str, tuple[int, ...]]) -> Plan:
    info = paper_config(document)
    config = info.config
    NH, DH = config.slstm_num_heads, config.slstm_head_dim
    shapes = our_parameter_shapes(config)
    plan = Plan("nxai-xlstm", config, [])
    if config.tie_word_embeddings:
        plan.ignorable.add("lm_head.weight")  # the tied copy of the embedding

    def zeros(shape):
        return lambda: torch.zeros(shape)

    def ones(shape):
        return lambda: torch.ones(shape)

    for target, shape in shapes.items():
        recipe = Recipe(target)
        if target == "backbone.embeddings.weight":
            recipe.sources = ("token_embedding.weight",)
        elif target == "lm_head.weight":
            recipe.sources = ("lm_head.weight",)
        elif target == "backbone.out_norm.weight":
            recipe.sources, recipe.fn = ("xlstm_block_stack.post_blocks_norm.weight",), _offset_to_scale
        elif target == "backbone.out_norm.bias":
            recipe.synth = zeros(shape)
        else:
            match = _BLOCK_KEY.fullmatch(target)
            if match is None:
                raise AssertionError(f"no paper-format rule for {target}")
            index, rest = int(match.group(1)), match.group(2)
            prefix = f"xlstm_block_stack.blocks.{index}."
            is_slstm = config.block_types[index] == "slstm"
            _paper_block_recipe(recipe, rest, prefix, is_slstm, info, shape, source_shapes, NH, DH, zeros, ones)
        if recipe.sources and not recipe.shapes:
            recipe.shapes = ((shape,),)
        plan.recipes.append(recipe)
    return plan


def _paper_block_recipe(recipe, rest, prefix, is_slstm, info, shape, source_shapes, NH, DH, zeros, ones) -> None:
    layer = prefix + "xlstm."
    if rest == "norm_mixer.weight":
        recipe.sources, recipe.fn = (prefix + "xlstm_norm.weight",), _offset_to_scale
    elif rest == "norm_ffn.weight":
        recipe.sources, recipe.fn = (prefix + "ffn_norm.weight",), _offset_to_scale
    elif rest in ("norm_mixer.bias", "norm_ffn.bias"):
        recipe.synth = zeros(shape)  # paper LayerNorms have no bias
    elif rest.startswith("ffn."):
        name, kind = rest.removeprefix("ffn.").rsplit(".", 1)
        source_name = {"proj_up_gate_z": "proj_up", "proj_down": "proj_down"}[name]
        if kind == "bias" and not info.ffn_bias:
            recipe.synth = zeros(shape)
        else:
            recipe.sources = (f"{prefix}ffn.{source_name}.{kind}",)
    elif not rest.startswith("mixer."):
        raise AssertionError(f"no paper-format rule for block key {rest}")
    elif is_slstm:
        name = rest.removeprefix("mixer.")
        if name == "recurrent_kernel":
            key = layer + "slstm_cell._recurrent_kernel_"
            recipe.sources = (key,)
            recipe.shapes = (((NH, 4 * DH, DH), (NH, DH, 4 * DH)),)
            if _slstm_layout(source_shapes, key, NH, DH, info.slstm_backend) == "vanilla":
                recipe.fn = lambda r: r.reshape(NH, 4, DH, DH).permute(0, 3, 1, 2)
            else:
                recipe.fn = lambda r: r.reshape(NH, DH, 4, DH)
        elif name == "bias":
            key = layer + "slstm_cell._bias_"
            recipe.sources = (key,)
            recipe.shapes = (((4 * NH * DH,),),)
            kernel_key = layer + "slstm_cell._recurrent_kernel_"
            if _slstm_layout(source_shapes, kernel_key, NH, DH, info.slstm_backend) == "vanilla":
                recipe.fn = lambda b: b.reshape(4, NH, DH).permute(1, 0, 2)
            else:
                recipe.fn = lambda b: b.reshape(NH, 4, DH)
        elif name == "group_norm.weight":
            if info.group_norm_weight:
                recipe.sources, recipe.fn = (layer + "group_norm.weight",), _offset_to_scale
            else:
                recipe.synth = ones(shape)
        elif name.startswith("conv1d."):
            recipe.sources = (layer + "conv1d.conv." + name.removeprefix("conv1d."),)
        elif name in ("igate.weight", "fgate.weight"):
            # the paper's module named `fgate` computes the input gate, `igate` the forget gate
            swapped = {"igate.weight": "fgate.weight", "fgate.weight": "igate.weight"}[name]
            recipe.sources = (layer + swapped,)
        elif name in ("zgate.weight", "ogate.weight"):
            recipe.sources = (layer + name,)
        else:
            raise AssertionError(f"no paper-format rule for sLSTM key {name}")
    else:
        name = rest.removeprefix("mixer.")
        module, _, kind = name.rpartition(".")
        if name == "learnable_skip":
            recipe.sources = (layer + "learnable_skip",)
        elif name == "outnorm.weight":
            recipe.sources, recipe.fn = (layer + "mlstm_cell.outnorm.weight",), _offset_to_scale
        elif module in ("igate", "fgate"):
            recipe.sources = (f"{layer}mlstm_cell.{name}",)
        elif module == "conv1d":
            recipe.sources = (f"{layer}conv1d.conv.{kind}",)
        elif module in ("up_proj", "down_proj", "q_proj", "k_proj", "v_proj"):
            source_module = {"up_proj": "proj_up", "down_proj": "proj_down"}.get(module, module)
            if kind == "bias" and not info.mlstm_bias:
                recipe.synth = zeros(shape)
            else:
                recipe.sources = (f"{layer}{source_module}.{kind}",)
        else:
            raise AssertionError(f"no paper-format rule for mLSTM key {name}")


def _slstm_layout(source_shapes, kernel_key, NH, DH, configured: str) -> str:
    shape = source_shapes.get(kernel_key)
    if shape == (NH, 4 * DH, DH):
        return "vanilla"
    if shape == (NH, DH, 4 * DH):
        return "cuda"
    return "vanilla" if configured == "vanilla" else "cuda"


# --------------------------------------------------------------------------------------------------------------
# xLSTM 7B architecture: xlstm package xLSTMLarge and transformers' `xlstm`
# --------------------------------------------------------------------------------------------------------------

# Defaults of xlstm.xlstm_large.model.xLSTMLargeConfig and of transformers' xLSTMConfig where they differ.
_LARGE_DEFAULTS = {
    "nxai-large": {"ffn_proj_factor": 2.6667},
    "hf-xlstm": {
        "ffn_proj_factor": 2.667,
        "vocab_size": 50304,
        "embedding_dim": 4096,
        "num_blocks": 32,
        "num_heads": 8,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
}
_LARGE_COMMON_DEFAULTS = {
    "use_bias": False,
    "norm_eps": 1e-6,
    "norm_reduction_force_float32": True,
    "add_out_norm": True,
    "qk_dim_factor": 0.5,
    "v_dim_factor": 1.0,
    "chunk_size": 64,
    "eps": 1e-6,
    "inference_state_dtype": "float32",
    "ffn_round_up_to_multiple_of": 64,
    "gate_soft_cap": 15.0,
    "output_logit_soft_cap": 30.0,
    "weight_mode": "single",
}


def large_config(
    source: dict[str, Any],
    source_format: str,
    weight_mode: str | None = None,
    tie_word_embeddings: bool = False,
    overrides: dict[str, Any] | None = None,
) -> XLSTMConfig:
    """Translate an xLSTMLargeConfig / transformers xLSTMConfig dict into our large-style XLSTMConfig.

    Kernel names (chunkwise_kernel, sequence_kernel, step_kernel, mode, ...) are the source's choice of
    implementation, not part of the model, and are dropped: our `backend` picks kernels.
    """
    values = {**_LARGE_COMMON_DEFAULTS, **_LARGE_DEFAULTS[source_format]}
    values.update({key: value for key, value in source.items() if value is not None or key.endswith("soft_cap")})
    problems = []
    dims = {values.get(k) for k in ("embedding_dim", "hidden_size") if source.get(k) is not None}
    blocks = {values.get(k) for k in ("num_blocks", "num_hidden_layers") if source.get(k) is not None}
    if len(dims) > 1:
        problems.append(f"embedding_dim and hidden_size disagree ({sorted(dims)})")
    if len(blocks) > 1:
        problems.append(f"num_blocks and num_hidden_layers disagree ({sorted(blocks)})")
    for name in ("vocab_size", "num_heads"):
        if name not in values:
            problems.append(f"the config has no {name}")
    dim = next(iter(dims), values.get("embedding_dim"))
    num_blocks = next(iter(blocks), values.get("num_blocks"))
    if dim is None or num_blocks is None:
        problems.append("the config has no embedding_dim/hidden_size or num_blocks/num_hidden_layers")
    if problems:
        raise ConversionError(problems)
    settings = dict(
        vocab_size=values["vocab_size"],
        hidden_size=dim,
        num_hidden_layers=num_blocks,
        block_style="large",
        num_heads=values["num_heads"],
        use_bias=values["use_bias"],
        norm_eps=values["norm_eps"],
        norm_reduction_force_float32=values["norm_reduction_force_float32"],
        # transformers' xLSTMModel always applies its out_norm, whatever add_out_norm says
        add_out_norm=True if source_format == "hf-xlstm" else values["add_out_norm"],
        tie_word_embeddings=tie_word_embeddings,
        qk_dim_factor=values["qk_dim_factor"],
        v_dim_factor=values["v_dim_factor"],
        gate_soft_cap=values["gate_soft_cap"],
        output_logit_soft_cap=values["output_logit_soft_cap"],
        weight_mode=weight_mode or values["weight_mode"],
        ffn_proj_factor=values["ffn_proj_factor"],
        ffn_round_up_to_multiple_of=values["ffn_round_up_to_multiple_of"],
        ffn_act_fn="silu",
        chunk_size=values["chunk_size"],
        eps=values["eps"],
        inference_state_dtype=values["inference_state_dtype"],
    )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if name in values:
            settings[name] = values[name]
    settings.update(overrides or {})
    return _try_config(settings)


def hf_xlstm_config(source: dict[str, Any], **overrides: Any) -> XLSTMConfig:
    """Our XLSTMConfig for a transformers `xlstm` config.json (also used by `XLSTMForCausalLM.from_pretrained`).

    `overrides` are XLSTMConfig settings applied on top (e.g. `backend="native"`).
    """
    return large_config(source, "hf-xlstm", overrides=overrides)


# Our config -> the source formats' configs (the inverses of `paper_config`, `large_config` and `hf_xlstm_config`;
# used by `--verify`, the tests and the benchmarks to build the reference implementations).

# The pure-PyTorch kernels of mlstm_kernels, for references that must run on CPU.
NATIVE_KERNELS = dict(
    chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native", step_kernel="native"
)


def to_nxai_large_config(config: XLSTMConfig) -> dict[str, Any]:
    """The `xlstm.xlstm_large.model.xLSTMLargeConfig` fields of a large-style (7B) config with mLSTM blocks only."""
    if config.block_style != "large" or "slstm" in config.block_types:
        raise ValueError("xLSTMLarge has 7B-style mLSTM blocks only")
    return dict(
        embedding_dim=config.hidden_size, num_heads=config.num_heads, num_blocks=config.num_hidden_layers,
        vocab_size=config.vocab_size, use_bias=config.use_bias, norm_eps=config.norm_eps,
        norm_reduction_force_float32=config.norm_reduction_force_float32, add_out_norm=config.add_out_norm,
        qk_dim_factor=config.qk_dim_factor, v_dim_factor=config.v_dim_factor, gate_soft_cap=config.gate_soft_cap,
        ffn_proj_factor=config.ffn_proj_factor, ffn_round_up_to_multiple_of=config.ffn_round_up_to_multiple_of,
        output_logit_soft_cap=config.output_logit_soft_cap, weight_mode=config.weight_mode,
        chunk_size=config.chunk_size, eps=config.eps, inference_state_dtype=config.inference_state_dtype,
    )


def to_hf_xlstm_config(config: XLSTMConfig, **settings: Any) -> dict[str, Any]:
    """The `transformers.xLSTMConfig` keyword arguments of a large-style config with mLSTM blocks only; `settings`
    (kernel names, `mode`, dtypes) are added as given. transformers' xLSTM stores single-mode weights."""
    large = to_nxai_large_config(config)
    renamed = {"embedding_dim": "hidden_size", "num_blocks": "num_hidden_layers"}
    hf = {renamed.get(key, key): value for key, value in large.items()}
    hf.update(weight_mode="single", tie_word_embeddings=config.tie_word_embeddings)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(config, name, None) is not None:
            hf[name] = getattr(config, name)
    return {**hf, **settings}


def to_nxai_paper_config(config: XLSTMConfig, context_length: int = 128, slstm_backend: str = "vanilla") -> dict:
    """The `xlstm.xLSTMLMModelConfig` of a paper-style config, as the nested dict its YAML files hold (build it with
    `dacite.from_dict(xLSTMLMModelConfig, ...)`). The reference rounds widths up to multiples of 64, as we do."""
    if config.block_style != "paper" or config.gate_soft_cap is not None or config.output_logit_soft_cap is not None:
        raise ValueError("xLSTMLMModel has paper-style blocks only, without soft caps")
    return dict(
        vocab_size=config.vocab_size, embedding_dim=config.hidden_size, num_blocks=config.num_hidden_layers,
        context_length=context_length, slstm_at=list(config.slstm_at), tie_weights=config.tie_word_embeddings,
        bias=config.use_bias, add_post_blocks_norm=config.add_out_norm, dropout=config.dropout,
        add_embedding_dropout=config.embedding_dropout,
        mlstm_block=dict(mlstm=dict(
            num_heads=config.num_heads, proj_factor=config.mlstm_proj_factor,
            qkv_proj_blocksize=config.qkv_proj_blocksize, conv1d_kernel_size=config.conv1d_kernel_size,
        )),
        slstm_block=dict(
            slstm=dict(
                backend=slstm_backend, num_heads=config.slstm_num_heads,
                conv1d_kernel_size=config.slstm_conv1d_kernel_size, bias_init=config.slstm_bias_init,
                recurrent_weight_init=config.slstm_recurrent_weight_init,
            ),
            feedforward=dict(
                proj_factor=config.ffn_proj_factor, act_fn=config.ffn_act_fn,
                round_proj_up_to_multiple_of=config.ffn_round_up_to_multiple_of,
            ),
        ),
    )


def large_plan(
    document: dict[str, Any], source_format: str, source_shapes: dict[str, tuple[int, ...]]
) -> Plan:
    fused = any(name.endswith("mlstm_layer.qkv_opreact.weight") for name in source_shapes)
    single = any(name.endswith("mlstm_layer.q.weight") for name in source_shapes)
    weight_mode = "fused" if fused and not single else ("single" if single else None)
    tie = bool(document.get("tie_word_embeddings", False)) and "lm_head.weight" not in source_shapes
    config = large_config(document, source_format, weight_mode=weight_mode, tie_word_embeddings=tie)
    plan = Plan(source_format, config, [])
    embedding = "embedding.weight" if source_format == "nxai-large" else "backbone.embeddings.weight"
    for target, shape in our_parameter_shapes(config).items():
        recipe = Recipe(target)
        if target == "backbone.embeddings.weight":
            source = embedding
        else:
            source = target.replace(".norm_mixer.", ".norm_mlstm.").replace(".mixer.", ".mlstm_layer.")
        if target == "backbone.out_norm.bias" and source_format == "hf-xlstm" and source not in source_shapes:
            recipe.synth = lambda shape=shape: torch.zeros(shape)  # transformers' out_norm never has a bias
        else:
            recipe.sources, recipe.shapes = (source,), ((shape,),)
        plan.recipes.append(recipe)
    return plan


def build_plan(source_format: str, document: dict[str, Any], source_shapes: dict[str, tuple[int, ...]]) -> Plan:
    if source_format == "nxai-xlstm":
        return paper_plan(document, source_shapes)
    if source_format in ("nxai-large", "hf-xlstm"):
        return large_plan(document, source_format, source_shapes)
    raise ConversionError(f"unknown source format {source_format!r}; known: {', '.join(FORMATS)}")
