"""Everything this package relies on in transformers that differs between the releases it supports.

Supported: every release from the oldest that pyproject.toml allows (5.23) to the newest, tested at both ends by CI.
When a new release comes out, this file is the one to review: the names below, and the private hooks that
`XLSTMGenerationHooks` overrides (their signatures and when `generate()` calls them).

Private transformers behaviour relied on (all of it overridden or touched here, nowhere else):
- `PreTrainedModel._initialize_weights` (`XLSTMPreTrainedHooks`), `_supports_default_dynamic_cache`;
- `PreTrainedModel._weight_conversions`, set by `from_pretrained(key_mapping=...)` (`save_under_own_names`);
- `GenerationMixin._prepare_cache_for_generation`, `_valid_auto_compile_criteria`, `_prefill`, and
  `CompileConfig._compile_all_devices` (`XLSTMGenerationHooks`);
- what `GenerationMixin.prepare_inputs_for_generation` returns for a decoding step (the last column of `input_ids`,
  the cache and the remaining keywords), which `XLSTMForCausalLM.prepare_inputs_for_generation` builds itself for a
  one-token step, without the generic version's per-step `model.device` lookups;
- the fields of `cache_utils.LinearAttentionLayer` that `modeling_xlstm.cache` writes directly (`has_previous_state`,
  `recurrent_states`/`conv_states` slots and their `is_*_initialized` flags), where the public `update_*_state`
  methods would copy a state that autograd still needs (stateful training) or never mark a state-only layer as
  holding a state.

Known differences:
- 5.24 renamed the cache everywhere from `past_key_values` to `cache`: the keyword `generate()` passes to `forward` and
  `prepare_inputs_for_generation`, the key in generate's `model_kwargs`, and the field of the output classes
  (`BaseModelOutputWithPast.cache`). The old name is deprecated (removal announced for 5.40); reading
  `output.past_key_values` on 5.24 logs a deprecation warning. `CACHE_NAME` is the name of the installed release.
- 5.24's `_prefill` stopped trimming the prompt to the tokens a linear-attention cache has not consumed yet when
  generation continues from a returned cache (5.25 trims again, by a per-layer token count our cache does not
  keep); `XLSTMGenerationHooks._prefill` trims first, on every release, and the parent then has nothing to trim.
- 5.25 dropped `PreTrainedModel._is_stateful`, by which earlier releases refused assisted decoding before any work;
  5.25 refuses it only after running the prompt, with a cache the caller passed already marked. `generate()`
  refuses it itself, up front.
- 5.25 depends on Hugging Face's kernel hub, the package `kernels`, and imports it with `transformers.modeling_utils`.
  From a checkout's root our `kernels/` folder would shadow it: `kernels/__init__.py` hands the name over.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import XLSTMCache

# "cache" from transformers 5.24 on, "past_key_values" before
_OUTPUT_FIELDS = {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
CACHE_NAME = "cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"
OTHER_CACHE_NAME = "past_key_values" if CACHE_NAME == "cache" else "cache"
CACHE_NAMES = ("cache", "past_key_values")


def resolve_cache_argument(cache, past_key_values):
    """The cache passed under either name (the current `cache` or the older `past_key_values`); both is an error."""
    if cache is not None and past_key_values is not None:
        raise ValueError(
            "Both `cache` and `past_key_values` were passed; they are two names for the same argument. Pass the "
            "cache once, as `cache=` (`past_key_values=` is the name transformers used before 5.24)."
        )
    return cache if cache is not None else past_key_values


def _with_both_cache_names(output_class: type, name: str) -> type:
    """A subclass of a transformers output class whose cache is readable as `.cache` and `.past_key_values` on every
    supported release, without the deprecation warning 5.24 logs for the old name; the field itself (what `keys()`,
    `to_tuple()` and `generate()` see) keeps the installed release's name."""

    def read_cache(self):
        return getattr(self, CACHE_NAME)

    return type(name, (output_class,), {
        OTHER_CACHE_NAME: property(read_cache, doc="The recurrent-state cache (same object as `." + CACHE_NAME + "`)."),
        "__doc__": output_class.__doc__,
        "__module__": __name__,
    })


XLSTMModelOutput = _with_both_cache_names(BaseModelOutputWithPast, "XLSTMModelOutput")
XLSTMCausalLMOutput = _with_both_cache_names(CausalLMOutputWithPast, "XLSTMCausalLMOutput")


class XLSTMPreTrainedHooks:
    """The private `PreTrainedModel` hooks this package overrides. Mixed into `XLSTMPreTrainedModel`."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # transformers excludes class names containing "xlstm" because its own xLSTM has a custom cache; ours is
        # a standard Cache of linear-attention layers (`XLSTMCache`, see `_prepare_cache_for_generation`).
        return True

    def _initialize_weights(self, module, is_custom_code: bool = False) -> None:
        # Our layers initialise the parameters of their child Linears themselves; transformers' shortcut for custom
        # code would skip every module without direct parameters (the layers). `_init_weights` uses
        # `transformers.initialization`, which leaves parameters loaded from a checkpoint untouched.
        super()._initialize_weights(module, is_custom_code=False)


def save_under_own_names(model) -> None:
    """After `from_pretrained(..., key_mapping=...)` read a checkpoint under other names (transformers' `xlstm`),
    make `save_pretrained` write this package's names instead of mapping them back."""
    model._weight_conversions = None


class XLSTMGenerationHooks:
    """The private `GenerationMixin` hooks this model overrides, in one place (see the module docstring).

    Mixed into `XLSTMForCausalLM` before `GenerationMixin`.
    """

    def _prepare_cache_for_generation(
        self, generation_config, model_kwargs: dict, generation_mode, batch_size: int, max_cache_length: int
    ) -> None:
        """generate() keeps the recurrent states in an `XLSTMCache` (O(1) memory per sequence).

        `cache_implementation` None/"dynamic" gives a plain one, "static" one marked compileable (generate() then
        compiles the decoding step where transformers auto-compiles, or wherever `compile_config` asks). A cache the
        user passes is used and updated in place; an empty plain `DynamicCache(config=model.config)` is wrapped
        (sharing its layers), since only an `XLSTMCache` can tell generate() how many tokens it has consumed.
        """
        user_cache = model_kwargs.get(CACHE_NAME)
        if user_cache is not None:
            if not isinstance(user_cache, XLSTMCache):
                model_kwargs[CACHE_NAME] = XLSTMCache.wrap(user_cache, self.config)
            return super()._prepare_cache_for_generation(
                generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
            )
        if generation_config.use_cache is False:
            return None
        implementation = generation_config.cache_implementation
        if implementation not in (None, "dynamic", "static"):
            raise ValueError(
                f"cache_implementation={implementation!r} is not supported by xLSTM models, whose cache is a "
                'fixed-size recurrent state; use cache_implementation="static" (compileable) or "dynamic" (the default).'
            )
        model_kwargs[CACHE_NAME] = XLSTMCache(self.config, compileable=implementation == "static")
        return None

    def _valid_auto_compile_criteria(self, model_kwargs: dict, generation_config) -> bool:
        """transformers compiles the decoding step on accelerators only; with a static (compileable) xLSTM cache, an
        explicit `compile_config` compiles it on any device, CPU included."""
        compile_config = generation_config.compile_config
        cache = model_kwargs.get(CACHE_NAME)
        if compile_config is not None and isinstance(cache, XLSTMCache) and cache.is_compileable:
            if compile_config._compile_all_devices is None:
                compile_config._compile_all_devices = True
        return super()._valid_auto_compile_criteria(model_kwargs, generation_config)

    def _prefill(self, input_ids: torch.LongTensor, generation_config, model_kwargs: dict, *args, **kwargs):
        """Feed the prompt minus the tokens a continued cache has already consumed.

        When generation continues from a returned cache, `input_ids` is the whole sequence so far, as generate()
        returned it plus any new tokens (the convention of transformers: as long as the attention mask); only the
        tokens the cache has not seen are fed, on every release (5.24 no longer trims for linear-attention caches),
        with and without `prefill_chunk_size`. Only the new tokens may be passed instead when the attention mask
        covers the whole sequence (it is then longer than `input_ids`).
        """
        cache = model_kwargs.get(CACHE_NAME)
        seen = cache.get_seq_length() if isinstance(cache, XLSTMCache) else 0
        if seen:
            if model_kwargs.get("inputs_embeds") is not None:
                raise ValueError(
                    "generate() cannot continue a cache from inputs_embeds; continue it with input_ids (the whole "
                    "sequence so far, or only the new tokens)."
                )
            mask = model_kwargs.get("attention_mask")
            mask_length = mask.shape[1] if mask is not None else getattr(generation_config, "_mask_length", -1)
            if mask_length == input_ids.shape[1] and input_ids.shape[1] > seen:
                input_ids = input_ids[:, seen:]
        return super()._prefill(input_ids, generation_config, model_kwargs, *args, **kwargs)
