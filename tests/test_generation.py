"""generate() on the recurrent-state cache: the cache reproduces the full forward, every decoding mode gives the same
result with and without it, padding leaves the states untouched, generation continues from a returned cache, the
static-cache path compiles once, and bad inputs fail early with errors that say what to do."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from helpers import build_tokenizer, generated_cache, no_warnings_from_our_code, randomize_, tiny_config
from transformers import (
    CompileConfig,
    DynamicCache,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextStreamer,
    pipeline,
)

from modeling_xlstm import XLSTMCache, XLSTMForCausalLM
from modeling_xlstm.modeling_xlstm import DecodeProjection, FlatDecodeStep

STYLES = ["paper", "large"]
# chunk_size is 8 in tiny_config, so prompts of 13+ tokens take the chunkwise path and shorter ones the parallel one
BLOCKS = {"mlstm": [], "slstm": "all", "mixed": [1]}


def make_model(style: str, seed: int = 0, **overrides) -> XLSTMForCausalLM:
    torch.manual_seed(seed)
    model = randomize_(XLSTMForCausalLM(tiny_config(style, **overrides)), seed=seed).eval()
    model.generation_config = GenerationConfig(pad_token_id=0)  # no eos: every run generates max_new_tokens
    return model


def token_ids(batch: int, length: int, seed: int = 0, vocab: int = 97) -> torch.Tensor:
    # ids from 1: 0 is the pad id of these tests
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def new_tokens(model, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, do_sample=False, **kwargs)[:, ids.shape[1] :]


def cache_tensors(cache):
    return [
        t
        for layer in cache.layers
        for store in (layer.recurrent_states, layer.conv_states)
        for t in store.values()
        if t is not None
    ]


# ---------------------------------------------------------------------------------------------------------------
# The cache reproduces the full forward
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("blocks", sorted(BLOCKS))
def test_prefill_then_decode_equals_one_forward(style, blocks):
    model = make_model(style, slstm_at=BLOCKS[blocks])
    ids = token_ids(2, 21)
    prefill = 13  # crosses a chunk boundary
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :prefill], use_cache=True)
        cache = out.cache
        assert isinstance(cache, XLSTMCache) and cache.get_seq_length() == prefill
        logits = [out.logits]
        for t in range(prefill, ids.shape[1]):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            assert out.cache is cache
            logits.append(out.logits)
    assert cache.get_seq_length() == ids.shape[1]
    # DESIGN §4: float32, atol 1e-4 (the chunkwise, parallel and recurrent forms differ by rounding only)
    torch.testing.assert_close(torch.cat(logits, dim=1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("style", STYLES)
def test_a_decode_step_returns_the_hidden_states_of_the_sequence_forward(style):
    # a one-token step runs the blocks on [B, D] rows; what it returns keeps the [B, 1, D] shapes of a sequence
    model = make_model(style, slstm_at=[1])
    ids = token_ids(2, 9)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True, use_cache=False)
        cache = model(ids[:, :-1], use_cache=True).cache
        step = model(ids[:, -1:], cache=cache, output_hidden_states=True)
    assert step.logits.shape == (2, 1, 97)
    assert len(step.hidden_states) == len(full.hidden_states)
    for ours, whole in zip(step.hidden_states, full.hidden_states):
        assert ours.shape == (2, 1, 32)
        # DESIGN §4: float32, atol 1e-4 (the parallel and recurrent forms differ by rounding only)
        torch.testing.assert_close(ours, whole[:, -1:], atol=1e-4, rtol=0)


def test_generate_decoding_steps_read_nothing_back_to_the_host():
    # a read-back (a token-id check, say) would stall a GPU's queue of decode-step kernels at every token
    class CountReadBacks(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._local_scalar_dense:
                counts[-1] += 1
            return func(*args, **(kwargs or {}))

    def enter(*args):
        counts.append(0)
        mode.__enter__()

    model, counts, mode = make_model("large"), [], CountReadBacks()
    model.register_forward_pre_hook(enter)
    model.register_forward_hook(lambda *args: mode.__exit__(None, None, None))
    new_tokens(model, token_ids(2, 7), max_new_tokens=6)
    assert len(counts) == 6 and counts[1:] == [0] * 5


COPY_CASES = {  # case: (style, config overrides, copy budget as a part of the model's weight bytes (None: the
    # default), projections copied); tiny_config puts an sLSTM block at position 1
    "single": ("large", {}, None, "all"), "fused": ("large", {}, None, "all"),
    "only mLSTM blocks": ("large", dict(slstm_at=[]), None, "all"),
    "with biases": ("large", dict(use_bias=True), None, "all"),
    "single, part over the copy budget": ("large", {}, 0.5, "some"),
    "single, over the copy budget": ("large", {}, 0, "none"), "fused, over the copy budget": ("large", {}, 0, "none"),
    "paper": ("paper", {}, None, "all"), "fused, paper": ("paper", {}, None, "all"),
    "paper, with biases": ("paper", dict(use_bias=True), None, "all"),
    "paper, no convs": ("paper", dict(conv1d_kernel_size=0, slstm_conv1d_kernel_size=0), None, "all"),
    "paper, over the copy budget": ("paper", {}, 0, "none"),
}


def decode_projections(step: FlatDecodeStep) -> list:
    """The DecodeProjections a FlatDecodeStep multiplies: its blocks' (found in what each block's step reads) and the
    LM head's."""
    def found_in(weights) -> list:
        if isinstance(weights, DecodeProjection):
            return [weights]
        return [p for part in weights for p in found_in(part)] if isinstance(weights, (tuple, list)) else []

    return [projection for _, weights in step.blocks for projection in found_in(weights)] + [step.head]


@pytest.mark.parametrize("weights", COPY_CASES)
def test_generate_steps_without_module_calls_give_what_the_modules_give(weights, monkeypatch):
    # generate() runs its decoding steps through FlatDecodeStep: the modules' ops on raw weights. Projections it
    # multiplies as transposed copies (norm weights folded in) round the matmuls' last bits differently, and these
    # random 4-block models pass such differences on: moving every weight by one float32 rounding step (2^-24
    # relative) moved their scores by 0.7-3.3e-5 (seeds 0-3, both styles), so copies are held to 5e-5 of scores of
    # size ~1. The modules' own weights give the same numbers.
    style, overrides, budget, expected = COPY_CASES[weights]
    model = make_model(style, **overrides)
    if weights.startswith("fused"):
        model.fuse_projections()
    if budget is not None:
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        monkeypatch.setattr(FlatDecodeStep, "COPY_BYTES", int(budget * weight_bytes))
    step = FlatDecodeStep.for_model(model)
    assert "slstm" in model.config.block_types or weights == "only mLSTM blocks"
    copied = [projection.linears is None for projection in decode_projections(step)]
    assert {"all": all(copied), "some": any(copied) and not all(copied), "none": not any(copied)}[expected]
    ids = token_ids(2, 7)
    kwargs = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        flat = model.generate(ids, **kwargs)
        monkeypatch.setattr(FlatDecodeStep, "for_model", classmethod(lambda cls, model: None))
        modules = model.generate(ids, **kwargs)
    assert torch.equal(flat.sequences, modules.sequences)
    for ours, theirs in zip(flat.scores, modules.scores):
        if expected == "none":
            assert torch.equal(ours, theirs)
        else:
            torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=0)
    assert generated_cache(flat).get_seq_length() == generated_cache(modules).get_seq_length() == 12


def test_generate_builds_its_decoding_step_once_and_only_for_decoding_steps(monkeypatch):
    # the copies cost ~15 ms for the benchmark's small model: once per generate() call, none without a decoding step
    builds, for_model = [], FlatDecodeStep.for_model

    def counted(cls, model):
        builds.append(1)
        return for_model(model)

    monkeypatch.setattr(FlatDecodeStep, "for_model", classmethod(counted))
    model = make_model("large")
    new_tokens(model, token_ids(2, 5), max_new_tokens=1)
    assert builds == []
    new_tokens(model, token_ids(2, 5), max_new_tokens=5)
    assert builds == [1]


def test_generate_runs_the_modules_where_something_hooks_or_wraps_them():
    model = make_model("large")
    assert FlatDecodeStep.for_model(model) is not None
    handle = model.backbone.blocks[0].mixer.q.register_forward_hook(lambda *args: None)  # a user's (or accelerate's)
    assert FlatDecodeStep.for_model(model) is None
    handle.remove()
    model.backbone.blocks[0].ffn.proj_up = torch.nn.Sequential(model.backbone.blocks[0].ffn.proj_up)  # an adapter
    assert FlatDecodeStep.for_model(model) is None
    assert FlatDecodeStep.for_model(make_model("large").train()) is None
    assert FlatDecodeStep.for_model(make_model("large").to(torch.bfloat16)) is None
    paper = make_model("paper")
    assert FlatDecodeStep.for_model(paper) is not None
    mixer = paper.backbone.blocks[0].mixer
    mixer.q_proj = torch.nn.Sequential(mixer.q_proj)  # a wrapped block-diagonal map
    assert FlatDecodeStep.for_model(paper) is None


@pytest.mark.parametrize("style", STYLES)
def test_decoding_keeps_memory_flat_and_states_in_place(style):
    model = make_model(style)
    with torch.no_grad():
        cache = model(token_ids(1, 17), use_cache=True).cache
        tensors = cache_tensors(cache)
        size, addresses = sum(t.numel() for t in tensors), [t.data_ptr() for t in tensors]
        states = [t for layer in cache.layers for t in layer.recurrent_states.values() if t is not None]
        assert {t.dtype for t in states} == {torch.float32}
        for step in range(20):
            model(token_ids(1, 1, seed=step), cache=cache, use_cache=True)
    tensors = cache_tensors(cache)
    assert sum(t.numel() for t in tensors) == size  # O(1) memory in the number of tokens
    assert [t.data_ptr() for t in tensors] == addresses  # updated in place (fixed addresses for CUDA graphs)


def test_states_stay_float32_when_generating_with_bf16_weights():
    model = make_model("paper").to(torch.bfloat16)
    with torch.no_grad():
        out = model.generate(token_ids(1, 6), max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    dtypes = {t.dtype for layer in generated_cache(out).layers for t in layer.recurrent_states.values() if t is not None}
    assert dtypes == {torch.float32}


# ---------------------------------------------------------------------------------------------------------------
# generate(): greedy, sampling, beam search, stopping, streaming, continuation, chunked prefill
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_greedy_generate_equals_argmax_over_full_forwards(style):
    model = make_model(style)
    ids = token_ids(2, 11)
    generated = new_tokens(model, ids, max_new_tokens=10)
    assert generated.shape == (2, 10)
    sequence = ids
    with torch.no_grad():
        for _ in range(10):
            next_token = model(sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated, sequence[:, ids.shape[1] :])
    assert torch.equal(new_tokens(model, ids, max_new_tokens=10, use_cache=False), generated)


@pytest.mark.parametrize("style", STYLES)
def test_beam_search_same_with_and_without_cache(style):
    model = make_model(style)
    ids = token_ids(2, 9)
    kwargs = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, do_sample=False)
    kwargs.update(return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kwargs)
        uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, atol=1e-4, rtol=0)
    # the beams really diverge (so the cache had to be reordered), and greedy is not what beam search returns
    assert not torch.equal(cached.sequences[0], cached.sequences[1])


@pytest.mark.parametrize("style", STYLES)
def test_sampling_same_with_and_without_cache(style):
    model = make_model(style)
    ids = token_ids(2, 7)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        with torch.no_grad():
            runs.append(
                model.generate(ids, do_sample=True, top_k=20, temperature=1.5, max_new_tokens=12, use_cache=use_cache)
            )
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0][:, 7:], new_tokens(model, ids, max_new_tokens=12))  # it did sample


def test_max_new_tokens_eos_and_stopping_criteria():
    model = make_model("large")
    ids = token_ids(1, 5)
    greedy = new_tokens(model, ids, max_new_tokens=12)[0]

    class StopAfter(StoppingCriteria):
        def __init__(self, length):
            self.length = length

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)

    stopped = new_tokens(model, ids, max_new_tokens=12, stopping_criteria=StoppingCriteriaList([StopAfter(5 + 4)]))
    assert torch.equal(stopped[0], greedy[:4])
    eos = int(greedy[6])
    first = int((greedy == eos).nonzero()[0])
    ended = new_tokens(model, ids, max_new_tokens=12, eos_token_id=eos)
    assert torch.equal(ended[0], greedy[: first + 1])


def test_text_streamer_prints_the_generated_text(capsys):
    tokenizer = build_tokenizer()
    model = make_model("paper", vocab_size=len(tokenizer))
    prompt = tokenizer("the quick brown", return_tensors="pt")
    with torch.no_grad():
        streamer = TextStreamer(tokenizer, skip_prompt=True)
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False, streamer=streamer)
    printed = capsys.readouterr().out
    assert printed.strip() == tokenizer.decode(out[0, prompt.input_ids.shape[1] :]).strip()
    assert printed.strip()


@pytest.mark.parametrize("style", STYLES)
def test_generation_continues_from_a_returned_cache(style):
    model = make_model(style)
    ids = token_ids(2, 10)
    with torch.no_grad():
        reference = model.generate(ids, max_new_tokens=12, do_sample=False)
        first = model.generate(ids, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
        cache = generated_cache(first)
        assert cache.get_seq_length() == 10 + 5 - 1  # the last generated token is not fed yet
        # pass the whole sequence back with its cache: only the unseen token is fed
        second = model.generate(first.sequences, cache=cache, max_new_tokens=7, do_sample=False)
    assert torch.equal(second, reference)
    assert cache.get_seq_length() == 10 + 12 - 1


def test_generation_continues_a_left_padded_batch_from_its_cache():
    model = make_model("paper")
    ids, mask = left_padded([token_ids(1, 4, seed=1)[0], token_ids(1, 9, seed=2)[0]])
    with torch.no_grad():
        reference = model.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=False)
        first = model.generate(
            ids, attention_mask=mask, max_new_tokens=4, do_sample=False, return_dict_in_generate=True
        )
        full_mask = torch.cat([mask, torch.ones(2, 4, dtype=mask.dtype)], dim=1)
        second = model.generate(
            first.sequences, attention_mask=full_mask, cache=generated_cache(first), max_new_tokens=5,
            do_sample=False,
        )
    assert torch.equal(second, reference)


@pytest.mark.parametrize("style", STYLES)
def test_chunked_prefill_generates_the_same(style):
    model = make_model(style)
    ids = token_ids(2, 19)
    expected = new_tokens(model, ids, max_new_tokens=6)
    assert torch.equal(new_tokens(model, ids, max_new_tokens=6, prefill_chunk_size=5), expected)


def test_generate_from_inputs_embeds_equals_from_input_ids():
    model = make_model("large")
    ids = token_ids(1, 8)
    embeds = model.get_input_embeddings()(ids).detach()
    with torch.no_grad():
        from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=6, do_sample=False)
    assert torch.equal(from_embeds, new_tokens(model, ids, max_new_tokens=6))


def test_a_plain_dynamic_cache_is_used_in_place():
    model = make_model("paper")
    ids = token_ids(1, 8)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model.generate(ids, cache=cache, max_new_tokens=4, do_sample=False)
    assert torch.equal(out[:, 8:], new_tokens(model, ids, max_new_tokens=4))
    assert all(layer.has_previous_state[0] for layer in cache.layers)  # the user's object holds the states
    with pytest.raises(ValueError, match="does not count"):
        model.generate(out, cache=cache, max_new_tokens=2)


# ---------------------------------------------------------------------------------------------------------------
# Padding
# ---------------------------------------------------------------------------------------------------------------


def left_padded(prompts, pad_id: int = 0):
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = prompt
        mask[row, length - len(prompt) :] = 1
    return ids, mask


@pytest.mark.parametrize("style", STYLES)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(style):
    # sLSTM and mLSTM blocks, conv layers in both kinds (the large style has no conv in its mLSTM layer)
    model = make_model(style, slstm_at=[1, 2], conv1d_kernel_size=4, slstm_conv1d_kernel_size=4)
    prompts = [token_ids(1, n, seed=n)[0] for n in (3, 9, 17)]
    ids, mask = left_padded(prompts)
    kwargs = dict(max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        batch = model.generate(ids, attention_mask=mask, **kwargs)
        for row, prompt in enumerate(prompts):
            alone = model.generate(prompt[None], **kwargs)
            assert torch.equal(batch.sequences[row, ids.shape[1] :], alone.sequences[0, len(prompt) :]), row
            # the scores too: the padding changed nothing, up to float32 rounding of different kernel paths
            for batch_scores, alone_scores in zip(batch.scores, alone.scores):
                torch.testing.assert_close(batch_scores[row], alone_scores[0], atol=1e-4, rtol=0)


def test_padding_in_a_forward_leaves_every_state_untouched():
    model = make_model("paper", slstm_at=[1, 2])
    prompt = token_ids(1, 6)
    ids, mask = left_padded([prompt[0]], pad_id=0)
    padded_ids = torch.cat([torch.full((1, 5), 7), prompt], dim=1)  # arbitrary ids under the padding
    padded_mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(prompt, use_cache=True).cache
        padded = model(padded_ids, attention_mask=padded_mask, use_cache=True).cache
    for a, b in zip(cache_tensors(alone), cache_tensors(padded)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Static cache and torch.compile
# ---------------------------------------------------------------------------------------------------------------


def test_static_cache_compiled_decoding_compiles_once():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() keeps the counters of compilations earlier in the process
    model = make_model("paper")
    ids = token_ids(2, 9)
    expected = new_tokens(model, ids, max_new_tokens=10)
    # backend="eager": dynamo's tracing and guards (what decides recompiles) without inductor's C++ build time
    # a compile_config is enough on CPU too (transformers alone compiles on accelerators only)
    compile_config = CompileConfig(backend="eager", fullgraph=True, dynamic=False)
    with torch._dynamo.config.patch(error_on_recompile=True), no_warnings_from_our_code():
        with torch.no_grad():
            out = model.generate(
                ids, max_new_tokens=10, do_sample=False, cache_implementation="static", compile_config=compile_config,
                return_dict_in_generate=True,
            )
    assert isinstance(generated_cache(out), XLSTMCache) and generated_cache(out).is_compileable
    assert torch.equal(out.sequences[:, 9:], expected)
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every decoding step, no graph break
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------


def test_text_generation_pipeline_returns_text():
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    model = make_model("paper", vocab_size=len(tokenizer))
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    prompts = ["the quick brown fox", "gates decide"]
    results = generator(prompts, max_new_tokens=8, do_sample=False, batch_size=2)
    for prompt, result in zip(prompts, results):
        text = result[0]["generated_text"]
        assert isinstance(text, str) and text.startswith(prompt) and len(text) > len(prompt)
        # batched (left-padded) and alone give the same text
        assert generator(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"] == text


# ---------------------------------------------------------------------------------------------------------------
# Errors before any compute
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def model_and_embedding_calls():
    model = make_model("paper")
    calls = []
    model.get_input_embeddings().register_forward_hook(lambda *args: calls.append(1))
    return model, calls


def test_token_ids_outside_the_vocabulary(model_and_embedding_calls):
    model, calls = model_and_embedding_calls
    for bad in (97, -1):
        ids = token_ids(1, 5)
        ids[0, 2] = bad
        with pytest.raises(ValueError, match=rf"token id {bad}, outside the vocabulary \[0, 96\].*tokenizer"):
            model(ids)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            model.generate(ids, max_new_tokens=2)
    assert not calls


def test_input_ids_and_inputs_embeds_together(model_and_embedding_calls):
    model, calls = model_and_embedding_calls
    ids = token_ids(1, 5)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=torch.zeros(1, 5, 32))
    assert not calls


def test_cache_for_another_batch_size(model_and_embedding_calls):
    model, calls = model_and_embedding_calls
    with torch.no_grad():
        cache = model(token_ids(2, 5), use_cache=True).cache
    before = [t.clone() for t in cache_tensors(cache)]
    calls.clear()
    with pytest.raises(ValueError, match="batch size 2 but the input has batch size 3"):
        model(token_ids(3, 1), cache=cache)
    assert not calls
    assert all(torch.equal(a, b) for a, b in zip(before, cache_tensors(cache)))


@pytest.mark.parametrize(
    "other",
    [
        dict(num_hidden_layers=3, slstm_at=[1]),  # another layer count
        dict(slstm_at=[2]),  # another block layout
        dict(num_heads=4),  # another state shape
    ],
)
def test_cache_for_another_model(model_and_embedding_calls, other):
    model, calls = model_and_embedding_calls
    other_model = make_model("paper", **other)
    with torch.no_grad():
        plain = DynamicCache(config=other_model.config)
        other_model(token_ids(1, 5), cache=plain, use_cache=True)
        returned = other_model(token_ids(1, 5), use_cache=True).cache
        for cache in (XLSTMCache(other_model.config), returned, plain):
            with pytest.raises(ValueError, match="another model.*XLSTMCache\\(model.config\\)"):
                model(token_ids(1, 1), cache=cache)
            with pytest.raises(ValueError, match="another model"):
                model.generate(token_ids(1, 3), cache=cache, max_new_tokens=2)
    assert not calls


def test_unsupported_cache_implementation():
    model = make_model("large")
    with pytest.raises(ValueError, match='cache_implementation="static"'):
        model.generate(token_ids(1, 3), max_new_tokens=2, cache_implementation="quantized")
