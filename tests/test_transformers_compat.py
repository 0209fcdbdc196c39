"""The same behaviour on every supported transformers release: the cache under its current name (`cache`, 5.24+) and
its older one (`past_key_values`), no warning from our code, a caller's cache always used, and clear errors for
malformed inputs that used to fail deep inside."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CORPUS, build_tokenizer, generated_cache, no_warnings_from_our_code, randomize_, tiny_config
from transformers import DataCollatorForLanguageModeling, GenerationConfig, Trainer, TrainingArguments, pipeline

from modeling_xlstm import XLSTMCache, XLSTMConfig, XLSTMForCausalLM, XLSTMModel
from modeling_xlstm.compat import CACHE_NAME, OTHER_CACHE_NAME


def make_model(style="paper", seed=0, **overrides):
    torch.manual_seed(seed)
    model = randomize_(XLSTMForCausalLM(tiny_config(style, **overrides)), seed=seed).eval()
    model.generation_config = GenerationConfig(pad_token_id=0)
    return model


def ids_of(batch, length, seed=0):
    return torch.randint(1, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


def greedy(model, ids, **kwargs):
    with torch.no_grad():
        return model.generate(ids, do_sample=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The cache under both names
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_takes_the_cache_under_either_name(name):
    model = make_model()
    ids = ids_of(2, 12)
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :7])
        cache = first.cache
        assert cache is first.past_key_values and cache is first[CACHE_NAME]
        rest = model(ids[:, 7:], **{name: cache})
    assert rest.cache is cache and cache.get_seq_length() == 12
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), full, atol=1e-4, rtol=0)


def test_both_cache_names_at_once_is_an_error():
    model = make_model()
    cache = XLSTMCache(model.config)
    with pytest.raises(ValueError, match="Both `cache` and `past_key_values`"):
        model(ids_of(1, 3), cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="Both `cache` and `past_key_values`"):
        model.backbone(ids_of(1, 3), cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="Both `cache` and `past_key_values`"):
        model.generate(ids_of(1, 3), cache=cache, past_key_values=cache, max_new_tokens=2)


def test_output_field_follows_the_installed_release():
    model = make_model()
    with torch.no_grad():
        out = model(ids_of(1, 4))
        base = model.backbone(ids_of(1, 4))
    assert CACHE_NAME in out.keys() and CACHE_NAME in base.keys()
    assert isinstance(out.to_tuple()[1], XLSTMCache)  # logits, cache: as transformers' own outputs order them
    assert set(XLSTMConfig.keys_to_ignore_at_inference) == {"cache", "past_key_values"}


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_generate_continues_from_a_returned_cache_under_either_name(name):
    model = make_model("large")
    ids = ids_of(2, 10)
    reference = greedy(model, ids, max_new_tokens=12)
    first = greedy(model, ids, max_new_tokens=5, return_dict_in_generate=True)
    second = greedy(model, first.sequences, max_new_tokens=7, **{name: generated_cache(first)})
    assert torch.equal(second, reference)


@pytest.mark.parametrize("style", ["paper", "large"])
def test_continuation_and_chunked_prefill_combined_equal_one_generate(style):
    model = make_model(style)
    ids = ids_of(2, 23)
    reference = greedy(model, ids, max_new_tokens=14)
    first = greedy(model, ids[:, :9], max_new_tokens=1, return_dict_in_generate=True, prefill_chunk_size=4)
    cache = generated_cache(first)
    assert cache.get_seq_length() == 9
    # the whole prompt back with the cache: 9 tokens already consumed, 14 to prefill in chunks of 5 (crossing chunk_size 8)
    second = greedy(model, ids, cache=cache, max_new_tokens=14, prefill_chunk_size=5)
    assert torch.equal(second, reference)
    assert cache.get_seq_length() == 23 + 14 - 1


def test_prepare_inputs_for_generation_takes_either_name():
    model = make_model()
    cache = XLSTMCache(model.config)
    for name in ("cache", "past_key_values"):
        inputs = model.prepare_inputs_for_generation(ids_of(1, 5), is_first_iteration=True, **{name: cache})
        assert inputs[CACHE_NAME] is cache and OTHER_CACHE_NAME not in inputs  # forwarded once, under the current name


def test_support_flags_and_fullgraph_compiled_decode_step():
    model = make_model("large")
    assert model._can_compile_fullgraph and model._is_stateful and model._supports_default_dynamic_cache()
    ids = ids_of(1, 6)
    cache = XLSTMCache(model.config, compileable=True)
    with torch.no_grad():
        model(ids[:, :5], cache=cache)
        reference_cache = XLSTMCache(model.config)
        model(ids[:, :5], cache=reference_cache)
        expected = model(ids[:, 5:], cache=reference_cache).logits
        step = torch.compile(model.forward, fullgraph=True, dynamic=False)
        got = step(input_ids=ids[:, 5:], cache=cache).logits
    torch._dynamo.reset()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# A caller's cache is always used
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["train_mode", "config_use_cache_false", "use_cache_false"])
def test_a_passed_cache_is_used_whatever_use_cache_resolves_to(setting):
    model = make_model(use_cache=setting != "config_use_cache_false")
    ids = ids_of(2, 11)
    with torch.no_grad():
        full = model(ids).logits
        cache = XLSTMCache(model.config)
        first = model(ids[:, :6], cache=cache).logits
        if setting == "train_mode":
            model.train()  # dropout is 0 in tiny_config: the numbers do not change
        rest = model(ids[:, 6:], cache=cache, use_cache=False if setting == "use_cache_false" else None)
    assert rest.cache is cache and cache.get_seq_length() == 11
    torch.testing.assert_close(torch.cat([first, rest.logits], dim=1), full, atol=1e-4, rtol=0)


def test_a_cache_with_gradient_checkpointing_in_training_is_refused():
    model = make_model()
    model.activation_checkpointing_enable()
    model.train()
    with pytest.raises(ValueError, match="gradient checkpointing"):
        model(ids_of(1, 4), cache=XLSTMCache(model.config))


# ---------------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["prompt_lookup_num_tokens", "assistant_model", "generation_config"])
def test_assisted_generation_is_refused_before_any_work(option):
    """Every release refuses it; none may first run the prompt or touch a cache the caller passed."""
    model = make_model()
    cache = model(ids_of(1, 5), use_cache=True).cache

    def states():
        return [t.clone() for layer in cache.layers for t in layer.recurrent_states.values() if t is not None]

    before = states()
    value = {"prompt_lookup_num_tokens": 2, "assistant_model": make_model(seed=1),
             "generation_config": GenerationConfig(pad_token_id=0, prompt_lookup_num_tokens=2)}[option]
    with pytest.raises(ValueError, match="Assisted .*not support"):
        greedy(model, ids_of(1, 7), cache=cache, max_new_tokens=2, **{option: value})
    assert cache.get_seq_length() == 5
    assert before and all(torch.equal(a, b) for a, b in zip(before, states(), strict=True))


def test_empty_input_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_one_dimensional_input_ids_are_refused():
    model = make_model()
    with pytest.raises(ValueError, match=r"2-D \[batch, sequence\].*input_ids\[None\]"):
        model(ids_of(1, 5)[0])


def test_inputs_embeds_of_the_wrong_width_are_refused():
    model = make_model()
    with pytest.raises(ValueError, match=r"inputs_embeds has shape \(1, 4, 16\).*hidden_size=32"):
        model(inputs_embeds=torch.randn(1, 4, 16))


def test_generate_refuses_a_mis_shaped_all_ones_mask():
    model = make_model()
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 7\) but the prompt is \[2, 5\]"):
        model.generate(ids_of(2, 5), attention_mask=torch.ones(1, 7, dtype=torch.long), max_new_tokens=2)


def test_unused_inputs_are_refused_not_dropped():
    model = make_model()
    with pytest.raises(TypeError, match=r"does not use: \['token_type_ids'\]"):
        model(ids_of(1, 4), token_type_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no attention weights"):
        model(ids_of(1, 4), output_attentions=True)
    with torch.no_grad():
        model(ids_of(1, 4), output_attentions=False)  # what some callers pass by default


def test_config_alias_disagreeing_with_its_field_is_an_error():
    with pytest.raises(ValueError, match="hidden_size=64 and its alias embedding_dim=128 disagree"):
        XLSTMConfig(hidden_size=64, embedding_dim=128)
    assert XLSTMConfig(embedding_dim=128, num_blocks=3).hidden_size == 128
    assert XLSTMConfig(hidden_size=96, embedding_dim=96).hidden_size == 96


# ---------------------------------------------------------------------------------------------------------------
# No warning from our code through the clients users run
# ---------------------------------------------------------------------------------------------------------------


def test_no_warnings_from_forward_generate_and_pipeline():
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"
    model = make_model("paper", vocab_size=len(tokenizer))
    ids = ids_of(2, 9)
    with no_warnings_from_our_code():
        with torch.no_grad():
            out = model(ids)
            model(ids[:, :1], cache=out.cache)
            model(ids[:, :1], past_key_values=out.past_key_values)
            XLSTMModel(model.config)(ids)
        first = greedy(model, ids, max_new_tokens=3, return_dict_in_generate=True, output_scores=True)
        greedy(model, first.sequences, cache=generated_cache(first), max_new_tokens=2)
        greedy(model, ids, max_new_tokens=3, num_beams=2)
        greedy(model, ids, max_new_tokens=3, prefill_chunk_size=4)
        generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
        generator(["the quick brown fox", "gates"], max_new_tokens=4, do_sample=False, batch_size=2)


def test_no_warnings_from_trainer_predict(tmp_path):
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = XLSTMForCausalLM(tiny_config("large", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True, disable_tqdm=True
    )
    data = [{"input_ids": tokenizer(text).input_ids} for text in CORPUS[:6]]
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    with no_warnings_from_our_code():
        prediction = trainer.predict(data)
    assert prediction.predictions is not None and prediction.metrics["test_loss"] > 0


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face's kernel hub, `kernels`: a dependency of transformers from 5.25 on, imported by transformers
# ---------------------------------------------------------------------------------------------------------------

CHECKOUT = Path(__file__).resolve().parent.parent


def import_kernels_at_the_checkout_root(extra_path: str, code: str) -> str:
    """Run `code` with the checkout's root first on sys.path, as `python -m pytest` from there has it."""
    env = {**os.environ, "PYTHONPATH": extra_path}
    run = subprocess.run([sys.executable, "-c", code], cwd=CHECKOUT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip()


def test_the_checkout_root_does_not_shadow_the_kernel_hub(tmp_path):
    """`kernels/` at the checkout's root is importable as a top-level `kernels` there; where the kernel hub is
    installed, that name must give the hub (transformers 5.25 imports its names at import time), with its
    submodules."""
    hub = tmp_path / "site" / "kernels"
    hub.mkdir(parents=True)
    (hub / "__init__.py").write_text("__version__ = '0.19.1'\nfrom .layer import kernelize\n")
    (hub / "layer.py").write_text("def kernelize(model):\n    return model\n")
    code = "import kernels, kernels.layer; print(kernels.__version__, kernels.kernelize is kernels.layer.kernelize)"
    assert import_kernels_at_the_checkout_root(str(tmp_path / "site"), code) == "0.19.1 True"


def test_transformers_imports_at_the_checkout_root(tmp_path):
    """Without the hub installed, the top-level `kernels` stays our folder without a version, which transformers
    reads as no kernel hub; with it installed (transformers 5.25+), it is the hub's. Either way transformers
    imports."""
    code = ("import os, transformers.modeling_utils, kernels; from transformers.utils.import_utils import "
            "is_kernels_available; print(is_kernels_available(), os.path.dirname(kernels.__file__))")
    available, folder = import_kernels_at_the_checkout_root(str(tmp_path), code).split(" ", 1)
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        assert (available, Path(folder)) == ("False", CHECKOUT / "kernels")
    else:
        assert Path(folder) != CHECKOUT / "kernels"
