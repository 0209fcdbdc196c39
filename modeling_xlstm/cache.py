"""The recurrent-state cache of an xLSTM model, on transformers' Cache API.

`XLSTMCache` is a `transformers.cache_utils.Cache` whose layers are the standard linear-attention layers
(`LinearAttentionLayer`, one per block, built from `XLSTMConfig.layer_types` exactly as `DynamicCache(config=...)`
and `StaticCache(config=...)` build them). In each layer:

- recurrent slots 0..k-1 hold the state tensors of the block's recurrence: mLSTM (C [B,NH,DHQK,DHV], n [B,NH,DHQK],
  m [B,NH,1]) or sLSTM (h, c, n, m, each [B,NH,DH]), in `config.inference_state_dtype` (float32 by default, also
  under bf16 weights);
- conv slot 0 holds the causal-conv buffer [B, F, K-1] (the last K-1 conv inputs), where the block has a conv.

The cache holds a fixed amount of memory whatever the number of tokens seen, and its tensors are updated in place
(`copy_`), so their addresses stay fixed for torch.compile / CUDA graphs. On top of the plain layers it counts the
tokens it has consumed (`get_seq_length`, which `generate()` needs to continue from a returned cache; a plain
all-linear-attention `DynamicCache` cannot answer it before transformers 5.25, and from 5.25 on counts only the tokens
a model reports through `update_conv_state` or `increase_count`, which these models do not call), reorders beams
in place, and knows the state shapes of the model it was built for, so that a cache from another model or batch is
refused with a clear error before any compute. The model functions below also accept a plain
`DynamicCache(config=model.config)` in `forward`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers.cache_utils import (
    Cache,
    LinearAttentionCacheLayerMixin,
    LinearAttentionLayer,
    get_layer_types_and_kwargs,
)

from .kernels import autograd_records

_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class StateLayout(NamedTuple):
    """What one block keeps per sequence (batch dimension left out): the shapes of its recurrent state tensors, in
    slot order, and the shape of its causal-conv buffer (None without a conv). Each mixer declares its own
    (`state_layout` in modeling_xlstm.py); `state_layouts(config)` collects them for a model."""

    states: tuple[tuple[int, ...], ...]
    conv: tuple[int, ...] | None


def expected_state_shapes(config) -> tuple[StateLayout, ...]:
    """The per-block state layout of a model built from `config`, as its mixers declare it."""
    from .modeling_xlstm import state_layouts  # the mixers live there, and import this module

    return state_layouts(config)


class XLSTMCache(Cache):
    """Recurrent states of every block of an xLSTM model: O(1) memory in the number of tokens.

    Args:
        config: the model's `XLSTMConfig`.
        compileable: mark the cache as compileable, as `generate(cache_implementation="static")` does; `generate()`
            then compiles the decoding forward on devices where transformers auto-compiles (CUDA), or wherever a
            `compile_config` asks for it. The tensors are the same either way (fixed shapes, updated in place).

    Any extra keyword (such as `max_cache_len`) is accepted and ignored: a recurrent state has no length.

    Example:
        >>> cache = XLSTMCache(model.config)
        >>> out = model(prompt_ids, cache=cache)       # prefill (the cache is updated in place)
        >>> out = model(next_ids, cache=cache)         # continues from the state
        >>> cache.get_seq_length()                                              # tokens consumed so far
    """

    def __init__(self, config, compileable: bool = False, **kwargs):
        layer_types, per_layer_kwargs = get_layer_types_and_kwargs(config)
        layers = [LinearAttentionLayer(**layer_kwargs) for layer_kwargs in per_layer_kwargs]
        super().__init__(layers=layers)
        self.compileable = compileable
        self.state_shapes = expected_state_shapes(config)
        # A 0-d tensor rather than an int: it is advanced inside a (possibly compiled) forward without recompiling.
        self._seen_tokens: torch.Tensor | None = None

    @classmethod
    def wrap(cls, cache: Cache, config) -> "XLSTMCache":
        """An `XLSTMCache` sharing the layers of an empty plain cache (e.g. `DynamicCache(config=model.config)`), so
        that states written through it land in `cache` too. A plain cache that already holds states cannot be
        wrapped: it does not know how many tokens it has consumed, which `generate()` needs."""
        check_cache(cache, config, batch_size=None)
        if any(cache.get_recurrent_state(idx, 0) is not None for idx in range(len(cache.layers))):
            raise ValueError(
                f"generate() cannot continue from a {type(cache).__name__} that already holds states: it does not "
                "count the tokens it has consumed. Continue from the XLSTMCache returned by the model or by generate() "
                "(return_dict_in_generate=True), or start with XLSTMCache(model.config)."
            )
        wrapped = cls(config)
        wrapped.layers = cache.layers
        return wrapped

    @property
    def is_compileable(self) -> bool:
        return self.compileable

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens (padding columns included) the states have consumed since creation or `reset()`."""
        return 0 if self._seen_tokens is None else int(self._seen_tokens)

    def record_tokens(self, num_tokens: int, device: torch.device) -> None:
        """Advance the token count by `num_tokens` (called by the model after each forward)."""
        if self._seen_tokens is None:
            self._seen_tokens = torch.zeros((), dtype=torch.long, device=device)
            if not torch.compiler.is_compiling():
                torch._dynamo.mark_static_address(self._seen_tokens)
        self._seen_tokens.add_(num_tokens)

    def reset(self) -> None:
        """Zero every state and the token count, keeping the tensors (and their addresses)."""
        super().reset()
        if self._seen_tokens is not None:
            self._seen_tokens.zero_()

    def _map_states(self, fn, in_place: bool) -> None:
        for layer in self.layers:
            for slot in range(layer.number_of_states):
                for initialized, store in (
                    (layer.is_conv_states_initialized, layer.conv_states),
                    (layer.is_recurrent_states_initialized, layer.recurrent_states),
                ):
                    if initialized[slot]:
                        if in_place:
                            store[slot].copy_(fn(store[slot]))
                        else:
                            store[slot] = fn(store[slot])

    def detach_(self) -> "XLSTMCache":
        """Cut the autograd graph at the current states (truncated backpropagation through time): the next
        segment starts from these values, and its backward pass stops here."""
        self._map_states(lambda t: t.detach(), in_place=False)
        return self

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row b of every state becomes row beam_idx[b] (in place, so tensor addresses stay fixed)."""
        self._map_states(lambda t: t.index_select(0, beam_idx.to(t.device)), in_place=True)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "An xLSTM cache cannot be cropped: a recurrent state cannot forget its last tokens. Re-run the prompt "
            "instead (speculative/assisted decoding is not supported for recurrent models)."
        )

    @property
    def is_croppable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(layers={len(self.layers)}, seen_tokens={self.get_seq_length()})"


def _linear_layer(cache: Cache, layer_idx: int) -> LinearAttentionCacheLayerMixin:
    if layer_idx >= len(cache.layers) or not isinstance(cache.layers[layer_idx], LinearAttentionCacheLayerMixin):
        raise ValueError(
            f"The cache passed to the model has no recurrent-state layer {layer_idx}; build it for this model, "
            "e.g. XLSTMCache(model.config), or let the model create it (use_cache=True)."
        )
    return cache.layers[layer_idx]


def _check_batch_size(cached_batch: int, batch_size: int) -> None:
    if cached_batch != batch_size:
        raise ValueError(
            f"The cache holds states for batch size {cached_batch} but the input has batch size {batch_size}; "
            "pass a cache created for this batch (or none, to start a new sequence)."
        )


def check_cache(cache: Cache, config, batch_size: int | None, expected: tuple[StateLayout, ...] | None = None) -> None:
    """Refuse, before any compute, a cache that was built for another model or another batch size.

    Checks the number of layers, their kind, and the shape of every state already held against what a model built
    from `config` reads and writes (`expected`: its `state_layouts`, computed from `config` when not given).
    """
    if not isinstance(cache, Cache):
        raise ValueError(
            "The cache must be a transformers Cache (e.g. XLSTMCache(model.config)), got "
            f"{type(cache).__name__}; tuples of tensors are not supported."
        )
    expected = expected if expected is not None else expected_state_shapes(config)
    if isinstance(cache, XLSTMCache):
        if cache.state_shapes != expected:
            raise ValueError(
                "The cache passed to the model was built for another model (its state shapes differ from this "
                "model's: different layer count, block kinds, heads or widths); create one for this model with "
                "XLSTMCache(model.config), or pass none."
            )
        # its shapes were checked through its signature, and only this model's forward writes its states, all
        # layers at once: the first layer that holds a state tells the batch size of all
        if batch_size is not None:
            for layer_idx in range(len(cache.layers)):
                state = cache.get_recurrent_state(layer_idx, 0)
                if state is not None:
                    _check_batch_size(state.shape[0], batch_size)
                    break
        return
    if len(cache.layers) != len(expected):
        raise ValueError(
            f"The cache passed to the model has {len(cache.layers)} layers but this model has {len(expected)} "
            "blocks: it was built for another model; create one with XLSTMCache(model.config), or pass none."
        )
    for layer_idx, (state_shapes, conv_shape) in enumerate(expected):
        conv_state, states = _held_states(cache, layer_idx)
        if not states:
            continue
        held = [tuple(state.shape) for state in states]
        if batch_size is not None:
            _check_batch_size(held[0][0], batch_size)
        conv = tuple(conv_state.shape[1:]) if conv_state is not None else None
        if [shape[1:] for shape in held] != list(state_shapes) or conv != conv_shape:
            raise ValueError(
                f"The cache passed to the model holds, at layer {layer_idx}, states of shapes {held} (conv "
                f"buffer {conv}) but this model's block {layer_idx} ({config.block_types[layer_idx]}) needs "
                f"{[('B', *s) for s in state_shapes]} (conv buffer {conv_shape}): it was built for another "
                "model; create one with XLSTMCache(model.config), or pass none."
            )


def _held_states(cache: Cache, layer_idx: int) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]:
    """(conv buffer or None, the recurrent state tensors held) of layer `layer_idx`: what the Cache's public accessors
    (`get_conv_state`, `get_recurrent_state`) return, read from the layer's slots directly, as they do, without their
    per-call checks (this runs for every block at every decoded token)."""
    layer = _linear_layer(cache, layer_idx)
    held = layer.has_previous_state
    states = []
    for slot in range(layer.number_of_states):
        if not held[slot]:
            break
        states.append(layer.recurrent_states[slot])
    return (layer.conv_states[0] if held[0] else None), tuple(states)


def read_layer_state(
    cache: Cache | None, layer_idx: int, batch_size: int
) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
    """(conv buffer or None, recurrent state tuple or None) of block `layer_idx`; (None, None) for no state."""
    if cache is None:
        return None, None
    conv_state, states = _held_states(cache, layer_idx)
    if not states:
        return None, None
    # check_cache ran before the forward, except under torch.compile: this shape comparison costs no sync
    _check_batch_size(states[0].shape[0], batch_size)
    return conv_state, states


def write_layer_state(
    cache: Cache | None,
    layer_idx: int,
    conv_state: torch.Tensor | None,
    recurrent_state: tuple[torch.Tensor, ...],
    state_dtype: str,
) -> None:
    """Store block `layer_idx`'s new state in the cache (in place); a no-op without a cache.

    When autograd records the state (training through a carried state, e.g. backpropagation through several
    segments), the tensors themselves are stored instead: an in-place copy would overwrite a state that the
    backward pass of the previous segment still needs. `XLSTMCache.detach_()` cuts the graph between segments.
    """
    if cache is None:
        return
    layer = _linear_layer(cache, layer_idx)
    if autograd_records(*recurrent_state, conv_state):
        for slot, tensor in enumerate(recurrent_state):
            layer.recurrent_states[slot] = tensor
            layer.is_recurrent_states_initialized[slot] = True
        if conv_state is not None:
            layer.conv_states[0] = conv_state
            layer.conv_kernel_size[0] = conv_state.shape[-1]
            layer.is_conv_states_initialized[0] = True
        _mark_held(layer, len(recurrent_state))
        return
    dtype = _STATE_DTYPES[state_dtype]
    # a kernel that updated the cache's own buffer in place (the decode steps do) returns that buffer: nothing to copy
    for slot, tensor in enumerate(recurrent_state):
        if not layer.is_recurrent_states_initialized[slot]:
            layer.lazy_initialization(recurrent_states=tensor.to(dtype), state_idx=slot)
        if layer.recurrent_states[slot] is not tensor:
            layer.recurrent_states[slot].copy_(tensor)
    if conv_state is not None:
        if not layer.is_conv_states_initialized[0]:
            layer.lazy_initialization(conv_states=conv_state, state_idx=0)
        layer.conv_states[0].copy_(conv_state)
    _mark_held(layer, len(recurrent_state))


def _mark_held(layer: LinearAttentionCacheLayerMixin, num_states: int) -> None:
    # what the public getters read; transformers' own update_recurrent_state never sets it (its conv update does)
    for slot in range(num_states):
        layer.has_previous_state[slot] = True
