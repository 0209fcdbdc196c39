"""The model as a user meets it: full-sequence, piecewise and token-by-token forwards agree; the Auto classes
build it; save/load round-trips exactly; it trains; the published initialisation is applied."""

import inspect
import math

import pytest
import torch
from helpers import randomize_, tiny_config
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel

from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM, XLSTMModel

STYLES = ["paper", "large"]


def make_model(style: str, **overrides) -> XLSTMForCausalLM:
    torch.manual_seed(0)
    return randomize_(XLSTMForCausalLM(tiny_config(style, **overrides))).eval()


def token_ids(batch: int, length: int, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def forward_in_pieces(model, ids, sizes):
    """Run `ids` through the model in consecutive pieces of the given sizes, carrying the cache."""
    logits, cache, start = [], None, 0
    for size in sizes:
        out = model(ids[:, start : start + size], cache=cache, use_cache=True)
        logits.append(out.logits)
        cache, start = out.cache, start + size
    assert start == ids.shape[1]
    return torch.cat(logits, dim=1)


# chunk_size is 8: lengths below, at and above it, and not multiples of it
PIECES = {5: [2, 3], 8: [8], 19: [7, 5, 7], 24: [8, 16]}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("length", sorted(PIECES))
def test_full_piecewise_and_stepwise_forward_agree(style, length):
    model = make_model(style)
    ids = token_ids(2, length)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        piecewise = forward_in_pieces(model, ids, PIECES[length])
        stepwise = forward_in_pieces(model, ids, [1] * length)
    # DESIGN §4: float32, atol 1e-4
    torch.testing.assert_close(piecewise, full, atol=1e-4, rtol=0)
    torch.testing.assert_close(stepwise, full, atol=1e-4, rtol=0)


def test_large_style_mlstm_only_and_fused_weights():
    for weight_mode in ("single", "fused"):
        model = make_model("large", slstm_at=[], weight_mode=weight_mode)
        ids = token_ids(1, 13)
        with torch.no_grad():
            full = model(ids).logits
            stepwise = forward_in_pieces(model, ids, [1] * 13)
        torch.testing.assert_close(stepwise, full, atol=1e-4, rtol=0)


def test_all_slstm_paper_model_without_conv():
    model = make_model("paper", slstm_at="all", slstm_conv1d_kernel_size=0)
    ids = token_ids(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(forward_in_pieces(model, ids, [4, 6]), model(ids).logits, atol=1e-4, rtol=0)


def test_states_are_float32_under_bf16_weights():
    model = make_model("paper").to(torch.bfloat16)
    with torch.no_grad():
        out = model(token_ids(1, 9), use_cache=True)
    assert out.logits.dtype == torch.float32
    layer = out.cache.layers[0]
    assert layer.recurrent_states[0].dtype == torch.float32
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("style", STYLES)
def test_auto_classes_build_from_config(style):
    config = tiny_config(style)
    settings = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    assert type(AutoConfig.for_model("xlstm_stack", **settings)) is XLSTMConfig
    assert type(AutoModel.from_config(config)) is XLSTMModel
    assert type(AutoModelForCausalLM.from_config(config)) is XLSTMForCausalLM


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("tie", [False, True])
def test_save_and_load_reproduce_logits_exactly(tmp_path, style, tie):
    model = make_model(style, tie_word_embeddings=tie)
    ids = token_ids(2, 11)
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is XLSTMForCausalLM
    assert loaded.config.block_types == model.config.block_types
    if tie:
        assert loaded.lm_head.weight.data_ptr() == loaded.backbone.embeddings.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected)


@pytest.mark.parametrize("style", STYLES)
def test_loss_is_shifted_cross_entropy_and_decreases(style):
    torch.manual_seed(0)
    model = XLSTMForCausalLM(tiny_config(style)).train()
    ids = token_ids(4, 16)
    out = model(ids, labels=ids)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_every_parameter_gets_a_gradient():
    model = make_model("paper").train()
    model(token_ids(2, 10), labels=token_ids(2, 10)).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


# transformers 5.25 added `every_n_layers`: it counts the GradientCheckpointingLayer modules, our blocks
CHECKPOINTING_OPTIONS = inspect.signature(PreTrainedModel.activation_checkpointing_enable).parameters
EVERY_N_LAYERS = [1, 2] if "every_n_layers" in CHECKPOINTING_OPTIONS else [1]


@pytest.mark.parametrize("every_n_layers", EVERY_N_LAYERS)
@pytest.mark.parametrize("style", STYLES)
def test_gradient_checkpointing_gives_the_same_gradients(style, every_n_layers):
    ids = token_ids(2, 12)
    grads = []
    for checkpointing in (False, True):
        model = make_model(style).train()
        if checkpointing:
            kwargs = {"every_n_layers": every_n_layers} if every_n_layers > 1 else {}
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False}, **kwargs)
            flags = [block.gradient_checkpointing for block in model.backbone.blocks]
            assert flags == [i % every_n_layers == 0 for i in range(len(flags))] and len(flags) > 1, flags
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=0, msg=name)


def test_logits_to_keep_and_hidden_states():
    model = make_model("large")
    ids = token_ids(2, 9)
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        last = model(ids, logits_to_keep=1)
    assert last.logits.shape == (2, 1, 97)
    torch.testing.assert_close(last.logits, full.logits[:, -1:])
    assert len(full.hidden_states) == model.config.num_hidden_layers + 1


def test_inputs_embeds_equal_input_ids():
    model = make_model("paper")
    ids = token_ids(1, 6)
    with torch.no_grad():
        from_ids = model(ids).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(from_embeds, from_ids)


def test_published_initialisation():
    torch.manual_seed(0)
    config = tiny_config("large", hidden_size=256, num_heads=4, slstm_num_heads=4, num_hidden_layers=4)
    model = XLSTMForCausalLM(config)
    blocks = model.backbone.blocks
    mlstm = blocks[0].mixer
    assert torch.all(mlstm.igate_preact.bias == -10.0)
    torch.testing.assert_close(mlstm.fgate_preact.bias, torch.linspace(3.0, 6.0, 4))
    assert torch.all(mlstm.igate_preact.weight == 0) and torch.all(mlstm.fgate_preact.weight == 0)
    small = math.sqrt(2 / (5 * 256))
    wang = 2 / 4 / math.sqrt(256)
    assert abs(mlstm.q.weight.std().item() - small) < 0.1 * small
    assert abs(mlstm.out_proj.weight.std().item() - wang) < 0.1 * wang
    assert abs(model.backbone.embeddings.weight.std().item() - small) < 0.1 * small

    slstm = blocks[1].mixer
    assert torch.all(slstm.recurrent_kernel == 0)
    # powerlaw_blockdependent forget bias: from -(-5) = 5 at the first unit down to -7 at the last
    forget = slstm.bias[:, 1]
    torch.testing.assert_close(forget[:, 0], torch.full((4,), 5.0))
    torch.testing.assert_close(forget[:, -1], torch.full((4,), -7.0))
    assert torch.all(slstm.bias[:, [0, 2, 3]] == 0)

    paper = XLSTMForCausalLM(tiny_config("paper")).backbone.blocks[0].mixer
    assert torch.all(paper.learnable_skip == 1)
    torch.testing.assert_close(paper.fgate.bias, torch.linspace(3.0, 6.0, 2))


BAD_CONFIGS = [
    (dict(block_types=["mlstm", "xlstm", "mlstm", "mlstm"]), "block_types"),
    (dict(block_types=["mlstm", "slstm"]), "block_types"),
    (dict(slstm_at=[7]), "slstm_at"),
    (dict(num_heads=3), "num_heads"),
    (dict(slstm_num_heads=5), "slstm_num_heads"),
    (dict(block_style="tiny"), "block_style"),
    (dict(backend="cuda"), "backend"),
    (dict(weight_mode="split"), "weight_mode"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(qk_dim_factor=0.3), "qk_dim_factor"),
    (dict(block_style="paper", qkv_proj_blocksize=5), "qkv_proj_blocksize"),
    (dict(ffn_act_fn="tanh"), "ffn_act_fn"),
    (dict(inference_state_dtype="int8"), "inference_state_dtype"),
]


@pytest.mark.parametrize("overrides,field", BAD_CONFIGS)
def test_bad_configs_fail_at_construction_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_triton_backend_without_cuda_fails_at_model_creation():
    config = tiny_config(backend="triton")
    with pytest.raises(ValueError, match="CUDA"):
        XLSTMForCausalLM(config)


def test_aliases_of_the_reference_configs():
    config = XLSTMConfig(embedding_dim=48, num_blocks=3, num_heads=4, slstm_num_heads=4, vocab_size=10)
    assert (config.hidden_size, config.num_hidden_layers) == (48, 3)
    assert config.embedding_dim == 48 and config.num_blocks == 3


def test_soft_cap_values_and_gradient():
    """The soft cap's own backward (used for logits and gates) against float64 finite differences, and its
    values against the plain formula with and without autograd; the input is never modified."""
    from modeling_xlstm.modeling_xlstm import soft_cap

    x = 40 * torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = 15.0 * torch.tanh(x / 15.0)
    before = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(soft_cap(x, 15.0), expected, rtol=0, atol=1e-12)
    assert torch.equal(x, before)
    leaf = x.clone().requires_grad_()
    torch.testing.assert_close(soft_cap(leaf, 15.0), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: soft_cap(t, 15.0), (leaf,))
    assert soft_cap(x, None) is x


@pytest.mark.parametrize(
    "in_features, num_heads, blocks_per_group",
    [(384, 96, 12), (512, 128, 8), (28, 7, 7), (44, 11, 11), (192, 4, 1), (8, 1, 1)],
)
def test_headwise_linear_groups_blocks_exactly(in_features, num_heads, blocks_per_group):
    """Over a sequence, narrow blocks are multiplied in block-diagonal groups (a speed measure): outputs and
    gradients equal those of each block multiplied on its own, in float64 (the zeros between the blocks add exact
    zeros, so only the summation order can differ); a decode step (one token per row) gives the same outputs."""
    from modeling_xlstm.modeling_xlstm import XLSTMHeadwiseLinear

    generator = torch.Generator().manual_seed(0)
    layer = XLSTMHeadwiseLinear(in_features, in_features, num_heads, bias=True).double()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, dtype=torch.float64, generator=generator))
    assert layer.blocks_per_group == blocks_per_group
    x = torch.randn(2, 5, in_features, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 5, in_features, dtype=torch.float64, generator=generator)

    blocks = x.unflatten(-1, (num_heads, -1))
    expected = torch.cat([blocks[..., h, :] @ layer.weight[h].T for h in range(num_heads)], dim=-1) + layer.bias
    expected_grads = torch.autograd.grad(expected, (x, layer.weight, layer.bias), upstream)
    got = layer(x)
    grads = torch.autograd.grad(got, (x, layer.weight, layer.bias), upstream)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        steps = torch.cat([layer(x[:, t : t + 1]) for t in range(x.shape[1])], dim=1)
    torch.testing.assert_close(steps, expected.detach(), rtol=1e-12, atol=1e-12)
