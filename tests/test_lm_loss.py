"""The loss without the logits (`logits_with_loss=False`, `modeling_xlstm.kernels.lm_loss`): the same loss and
gradients as the full logits, chunk boundaries anywhere, ignored positions, transformers' loss options, autocast,
clear errors, and Trainer on top."""

import math

import pytest
import torch
from helpers import randomize_, tiny_config
from test_training import make_trainer
from test_training import tokenizer as tokenizer  # noqa: F401  (the module fixture)
from transformers.utils import logging

from modeling_xlstm import XLSTMForCausalLM
from modeling_xlstm.kernels import lm_loss
from modeling_xlstm.kernels.lm_loss import linear_cross_entropy, linear_cross_entropy_reference

# Both sides compute the same float32 logits; the fused one sums the loss and the weight's gradient chunk by chunk,
# so float32 additions happen in another order: agreement to a few float32 ulps of the summed values.
RTOL, ATOL = 1e-5, 1e-6


def loss_inputs(N=23, D=12, V=37, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, requires_grad=True)
    weight = (0.5 * torch.randn(V, D, generator=g)).requires_grad_()
    b = (0.1 * torch.randn(V, generator=g)).requires_grad_() if bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    targets[[0, 5, 6, N - 1]] = -100
    return hidden, weight, b, targets


def loss_and_grads(function, hidden, weight, bias, targets, **kwargs):
    tensors = [t for t in (hidden, weight, bias) if t is not None]
    loss = function(hidden, weight, bias, targets, **kwargs)
    return loss.detach(), torch.autograd.grad(3.0 * loss, tensors)  # a scale other than 1 reaches the gradients


@pytest.mark.parametrize("chunk_rows", [1, 4, 23, 100])
# 79: cap + log V above lm_loss.UNSHIFTED_EXP_LIMIT, so each row's exponentials are shifted by its maximum
@pytest.mark.parametrize("soft_cap", [None, 2.0, 79.0])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_loss_and_gradients_equal_the_full_logits(monkeypatch, chunk_rows, soft_cap, bias):
    hidden, weight, b, targets = loss_inputs(bias=bias)
    monkeypatch.setitem(lm_loss.CHUNK_ELEMENTS, "cpu", chunk_rows * weight.shape[0])
    monkeypatch.setattr(lm_loss, "MIN_CHUNK_ROWS", 1)
    assert lm_loss.chunk_rows(hidden.shape[0], weight.shape[0], "cpu") == min(chunk_rows, hidden.shape[0])
    expected_loss, expected = loss_and_grads(linear_cross_entropy_reference, hidden, weight, b, targets,
                                             soft_cap=soft_cap)
    got_loss, got = loss_and_grads(linear_cross_entropy, hidden, weight, b, targets, soft_cap=soft_cap)
    torch.testing.assert_close(got_loss, expected_loss, rtol=RTOL, atol=ATOL)
    for name, g, e in zip(("hidden", "weight", "bias"), got, expected):
        torch.testing.assert_close(g, e, rtol=RTOL, atol=ATOL, msg=name)
    assert got[0][[0, 5, 6, -1]].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.parametrize("soft_cap", [None, 2.0])
def test_only_the_inputs_that_need_a_gradient_get_one(soft_cap):
    hidden, weight, _, targets = loss_inputs()
    weight.requires_grad_(False)
    loss = linear_cross_entropy(hidden, weight, None, targets, soft_cap=soft_cap)
    (grad,) = torch.autograd.grad(loss, hidden)
    reference = linear_cross_entropy_reference(hidden, weight, None, targets, soft_cap=soft_cap)
    (expected,) = torch.autograd.grad(reference, hidden)
    torch.testing.assert_close(grad, expected, rtol=RTOL, atol=ATOL)
    with torch.no_grad():  # no gradient wanted: the loss alone (computed in place, without the slope's buffer)
        got = linear_cross_entropy(hidden, weight, None, targets, soft_cap=soft_cap)
    torch.testing.assert_close(got, loss.detach(), rtol=RTOL, atol=ATOL)


def test_under_bfloat16_autocast_the_matmuls_run_in_bfloat16_like_the_full_logits():
    hidden, weight, _, targets = loss_inputs(N=64, D=32, V=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected_loss, expected = loss_and_grads(linear_cross_entropy_reference, hidden, weight, None, targets,
                                                 soft_cap=3.0)
        got_loss, got = loss_and_grads(linear_cross_entropy, hidden, weight, None, targets, soft_cap=3.0)
    assert got[0].dtype == hidden.dtype and got[1].dtype == weight.dtype
    # the same bfloat16 products; the weight's gradient is summed over chunks in float32 instead of rounded to
    # bfloat16 once (8 significant bits: 2^-8 relative), so agreement to bfloat16 precision
    torch.testing.assert_close(got_loss, expected_loss, rtol=1e-5, atol=1e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=2**-7, atol=2**-7 * e.abs().max().item())


@pytest.mark.parametrize("bad", [37, -5])
def test_a_label_outside_the_vocabulary_is_refused(bad):
    hidden, weight, _, targets = loss_inputs()
    targets[3] = bad
    with pytest.raises(ValueError, match=rf"labels contain token id {bad}, outside the vocabulary \[0, 36\]"):
        linear_cross_entropy(hidden, weight, None, targets)


def model_pair(style, **config):
    torch.manual_seed(0)
    full = randomize_(XLSTMForCausalLM(tiny_config(style, output_logit_soft_cap=3.0, **config)))
    fused = XLSTMForCausalLM(tiny_config(style, output_logit_soft_cap=3.0, logits_with_loss=False, **config))
    fused.load_state_dict(full.state_dict())
    return full, fused


@pytest.mark.parametrize("style", ["large", "paper"])
@pytest.mark.parametrize("loss_options", ["mean", "num_items_in_batch", "shift_labels", "tied_embeddings"])
def test_the_model_without_logits_has_the_loss_and_gradients_of_the_model_with_them(style, loss_options):
    # tied: the head's weight is the embedding's, and its gradient the sum of both uses
    full, fused = model_pair(style, tie_word_embeddings=loss_options == "tied_embeddings")
    assert (fused.lm_head.weight is fused.get_input_embeddings().weight) == (loss_options == "tied_embeddings")
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (3, 21), generator=g)
    labels = input_ids.clone()
    labels[0, :4] = -100
    options = {"labels": labels}
    if loss_options == "num_items_in_batch":
        options["num_items_in_batch"] = torch.tensor(100)
    elif loss_options == "shift_labels":  # as sequence-parallel trainers pass them: already shifted
        options = {"shift_labels": torch.roll(labels, -1, dims=1)}
    results = []
    for model in (full, fused):
        out = model(input_ids=input_ids, **options)
        out.loss.backward()
        results.append((out, {name: p.grad for name, p in model.named_parameters()}))
    (full_out, full_grads), (fused_out, fused_grads) = results
    assert fused_out.logits is None and full_out.logits.shape == (3, 21, 97)
    torch.testing.assert_close(fused_out.loss, full_out.loss, rtol=RTOL, atol=ATOL)
    # the hidden states' gradient (equal to a few float32 ulps) passes back through every block, whose float32
    # arithmetic (normalizations, exponential gates) carries those differences into each parameter's gradient
    for name, grad in full_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_labels_the_model_still_returns_logits():
    full, fused = model_pair("large")
    input_ids = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(fused(input_ids=input_ids).logits, full(input_ids=input_ids).logits)


def test_in_eval_mode_a_forward_with_labels_returns_the_logits_and_their_loss():
    """Evaluation (metrics on logits, Trainer.evaluate's predictions) still gets the logits."""
    full, fused = model_pair("paper")
    full.eval(), fused.eval()
    input_ids = torch.randint(0, 97, (2, 9))
    expected, got = full(input_ids=input_ids, labels=input_ids), fused(input_ids=input_ids, labels=input_ids)
    assert got.logits is not None
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.loss, expected.loss)


def test_an_lm_head_that_is_not_a_plain_linear_gets_the_full_logits_and_a_warning(caplog):
    class Wrapped(torch.nn.Linear):  # an adapter or a quantized layer in the head's place
        pass

    full, fused = model_pair("large")
    head = Wrapped(fused.lm_head.in_features, fused.lm_head.out_features, bias=False)
    head.weight = fused.lm_head.weight
    fused.lm_head = head
    input_ids = torch.randint(0, 97, (2, 9))
    logging.get_logger("modeling_xlstm").addHandler(caplog.handler)
    logging.warning_once.cache_clear()  # once per process: let it fire here whatever ran before
    try:
        out = fused(input_ids=input_ids, labels=input_ids)
    finally:
        logging.get_logger("modeling_xlstm").removeHandler(caplog.handler)
    assert "the LM head is a Wrapped, not an nn.Linear" in caplog.text
    torch.testing.assert_close(out.loss, full(input_ids=input_ids, labels=input_ids).loss)
    assert out.logits is not None


def test_trainer_trains_without_logits_and_evaluates_with_them(tmp_path, tokenizer):  # noqa: F811
    torch.manual_seed(0)
    config = tiny_config("paper", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         logits_with_loss=False)
    model = XLSTMForCausalLM(config)
    trainer = make_trainer(tmp_path, model, tokenizer, max_steps=40)
    before = trainer.evaluate()
    logits_held = []  # per training step: whether its output held logits
    hook = model.register_forward_hook(lambda module, args, out: logits_held.append(out.logits is not None))
    trainer.train()
    hook.remove()
    after = trainer.evaluate()
    assert len(logits_held) == 40 and not any(logits_held)
    assert after["eval_loss"] < 0.6 * before["eval_loss"]
    assert after["eval_perplexity"] == pytest.approx(math.exp(after["eval_loss"]))
    predictions = trainer.predict(trainer.eval_dataset).predictions
    assert predictions.shape[0] == len(trainer.eval_dataset) and predictions.shape[-1] == len(tokenizer)
