"""Reading and writing a block's recurrent state in a transformers `Cache`.

Every block keeps its state in one `LinearAttentionLayer` of the cache (what `DynamicCache(config=...)` and
`StaticCache(config=...)` build from `XLSTMConfig.layer_types`):

- recurrent slots 0..k-1: the state tensors of the recurrence, mLSTM (C [B,NH,DHQK,DHV], n [B,NH,DHQK],
  m [B,NH,1]) or sLSTM (h, c, n, m, each [B,NH,DH]), stored in `config.inference_state_dtype` (float32 by
  default);
- conv slot 0: the causal-conv buffer [B, F, K-1] (the last K-1 conv inputs), where the block has a conv.

Tensors are updated in place (copy_), so their addresses stay fixed for CUDA graphs.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, LinearAttentionCacheLayerMixin

_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _linear_layer(cache: Cache, layer_idx: int) -> LinearAttentionCacheLayerMixin:
    if layer_idx >= len(cache.layers) or not isinstance(cache.layers[layer_idx], LinearAttentionCacheLayerMixin):
        raise ValueError(
            f"The cache passed as past_key_values has no recurrent-state layer {layer_idx}; build it for this model, "
            "e.g. DynamicCache(config=model.config), or let the model create it (use_cache=True)."
        )
    return cache.layers[layer_idx]


def read_layer_state(
    cache: Cache | None, layer_idx: int, batch_size: int
) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]:
    """(conv buffer or None, recurrent state tuple or None) of block `layer_idx`; (None, None) for no state."""
    if cache is None:
        return None, None
    layer = _linear_layer(cache, layer_idx)
    if not layer.has_previous_state[0]:
        return None, None
    states = []
    for slot in range(layer.number_of_states):
        if not layer.is_recurrent_states_initialized[slot]:
            break
        states.append(layer.recurrent_states[slot])
    cached_batch = states[0].shape[0]
    if cached_batch != batch_size:
        raise ValueError(
            f"The cache holds states for batch size {cached_batch} but the input has batch size {batch_size}; "
            "pass a cache created for this batch (or none, to start a new sequence)."
        )
    conv_state = layer.conv_states[0] if layer.is_conv_states_initialized[0] else None
    return conv_state, tuple(states)


def write_layer_state(
    cache: Cache | None,
    layer_idx: int,
    conv_state: torch.Tensor | None,
    recurrent_state: tuple[torch.Tensor, ...],
    state_dtype: str,
) -> None:
    """Store block `layer_idx`'s new state in the cache (in place); a no-op without a cache."""
    if cache is None:
        return
    layer = _linear_layer(cache, layer_idx)
    dtype = _STATE_DTYPES[state_dtype]
    for slot, tensor in enumerate(recurrent_state):
        cache.update_recurrent_state(tensor.to(dtype), layer_idx, slot)
    if conv_state is not None:
        if not layer.is_conv_states_initialized[0]:
            layer.lazy_initialization(conv_states=conv_state, state_idx=0)
        layer.conv_states[0].copy_(conv_state)
    layer.has_previous_state[0] = True
