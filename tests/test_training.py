"""Training with the Hugging Face stack: Trainer (padding, resume, perplexity), PEFT LoRA, device_map,
torch.compile without graph breaks."""

import math

import pytest
import torch
from helpers import CORPUS, build_tokenizer, randomize_, tiny_config
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from modeling_xlstm import XLSTMForCausalLM
from modeling_xlstm.training import PerplexityCallback


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def make_model(tokenizer, style="paper", seed=0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(style, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides)
    return XLSTMForCausalLM(config)


def text_dataset(tokenizer, texts):
    return [{"input_ids": tokenizer(text).input_ids} for text in texts]


def make_trainer(tmp_path, model, tokenizer, max_steps, save_steps=None):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=max_steps,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=text_dataset(tokenizer, CORPUS),
        eval_dataset=text_dataset(tokenizer, CORPUS[:8]),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[PerplexityCallback()],
    )


def logged_losses(trainer):
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


def test_trainer_loss_falls_and_evaluate_reports_perplexity(tmp_path, tokenizer):
    trainer = make_trainer(tmp_path, make_model(tokenizer), tokenizer, max_steps=40)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = logged_losses(trainer)
    assert losses[40] < 0.6 * losses[1], losses
    assert after["eval_loss"] < 0.6 * before["eval_loss"]
    assert after["eval_perplexity"] == pytest.approx(math.exp(after["eval_loss"]))


def test_resume_from_checkpoint_reproduces_the_next_losses(tmp_path, tokenizer):
    first = make_trainer(tmp_path / "a", make_model(tokenizer), tokenizer, max_steps=6, save_steps=3)
    first.train()
    # a differently initialised model: only a real resume (weights, optimizer, data order) reproduces the losses
    resumed = make_trainer(tmp_path / "b", make_model(tokenizer, seed=1), tokenizer, max_steps=6, save_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    expected, got = logged_losses(first), logged_losses(resumed)
    assert resumed.state.global_step == 6
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (step, got, expected)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padding_changes_neither_logits_nor_loss_of_real_tokens(tokenizer, padding_side):
    model = randomize_(make_model(tokenizer, style="paper")).eval()
    texts = ["the fox", "gates decide what to write into memory", "a state"]
    tokenizer.padding_side = padding_side
    try:
        batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(text_dataset(tokenizer, texts))
    finally:
        tokenizer.padding_side = "right"
    with torch.no_grad():
        padded = model(**batch)
        token_losses = []
        for row, text in enumerate(texts):
            ids = torch.tensor([tokenizer(text).input_ids])
            alone = model(ids, labels=ids)
            real = batch["attention_mask"][row].bool()
            torch.testing.assert_close(padded.logits[row, real], alone.logits[0], atol=1e-4, rtol=0)
            token_losses.append(alone.loss * (ids.shape[1] - 1))
    # the collator marks padding with label -100, so the batch loss is the mean over real next-token targets
    n_targets = sum(len(tokenizer(t).input_ids) - 1 for t in texts)
    if padding_side == "right":
        torch.testing.assert_close(padded.loss, torch.stack(token_losses).sum() / n_targets, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", ["large", "paper"])
def test_trl_sft_trainer_trains_the_models_own_loss_soft_cap_included(tmp_path, tokenizer, style):
    """TRL's SFTTrainer computes the loss from the backbone's hidden states and the LM head's weights itself, reading
    the logit soft cap under Gemma 2's name: it must get the loss of the model's own forward."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    model = randomize_(make_model(tokenizer, style, eos_token_id=tokenizer.eos_token_id, output_logit_soft_cap=1.0))
    args = trl.SFTConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, report_to=[], use_cpu=True,
        disable_tqdm=True, max_length=64, dataset_text_field="text", dataloader_num_workers=0,
        completion_only_loss=False,
    )
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict({"text": CORPUS[:8]}), processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        theirs = trainer.compute_loss(trainer.model, dict(batch))
    torch.testing.assert_close(theirs, own, rtol=1e-5, atol=0)


def test_peft_lora_on_the_paper_mlstm_gates_is_applied(tokenizer):
    """The paper mLSTM layer computes its two gates in one matmul over a sequence; a LoRA adapter on those gate
    modules must still count (the adapted model gives the merged model's logits), over a sequence and when
    decoding."""
    from peft import LoraConfig, get_peft_model

    base = make_model(tokenizer, style="paper")
    mlstm_blocks = [index for index, kind in enumerate(base.config.block_types) if kind == "mlstm"]
    targets = rf"backbone\.blocks\.({'|'.join(map(str, mlstm_blocks))})\.mixer\.(igate|fgate)"
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=targets, lora_dropout=0.0)).eval()
    adapted = [module for name, module in model.named_modules() if name.endswith(("igate", "fgate"))
               and hasattr(module, "lora_B")]
    assert len(adapted) == 2 * len(mlstm_blocks)
    with torch.no_grad():
        for module in adapted:  # LoRA starts as the identity (B = 0): give it an effect
            module.lora_B["default"].weight.normal_(0, 1.0)
        ids = torch.tensor([tokenizer(t).input_ids[:12] for t in CORPUS[:2]])
        adapted_logits = model(input_ids=ids).logits
        prefix = model(input_ids=ids[:, :-1], use_cache=True)
        adapted_step = model(input_ids=ids[:, -1:], cache=prefix.cache, use_cache=True).logits
        merged = model.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits
    assert (adapted_logits - make_model(tokenizer, style="paper")(input_ids=ids).logits).abs().max() > 1e-2
    torch.testing.assert_close(adapted_logits, merged_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapted_step[:, -1], merged_logits[:, -1], atol=1e-5, rtol=0)


def test_peft_lora_trains_saves_reloads_and_merges(tmp_path, tokenizer):
    from peft import LoraConfig, PeftModel, get_peft_model

    targets = ["q", "k", "v", "out_proj", "proj_up_gate", "proj_up", "proj_down"]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(make_model(tokenizer, style="large"), lora)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)

    ids = torch.tensor([tokenizer(t).input_ids[:8] for t in CORPUS[:4]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(make_model(tokenizer, style="large"), tmp_path / "adapter").eval()
    merged = reloaded.merge_and_unload()
    assert type(merged) is XLSTMForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)


def test_device_map_auto_splits_at_block_boundaries(tmp_path):
    torch.manual_seed(0)
    model = randomize_(XLSTMForCausalLM(tiny_config("large", hidden_size=64, num_hidden_layers=4))).eval()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path / "model")
    total_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    loaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": total_bytes // 2},
        offload_folder=str(tmp_path / "offload"),
    )
    device_map = loaded.hf_device_map
    assert set(device_map.values()) == {"cpu", "disk"}, device_map
    # `_no_split_modules = ["XLSTMBlock"]`: a block is never cut across devices
    assert all(name.count(".") <= 2 for name in device_map if name.startswith("backbone.blocks")), device_map
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected)


@pytest.mark.parametrize("logits_with_loss", [True, False])
@pytest.mark.parametrize("style", ["paper", "large"])
def test_torch_compile_traces_the_training_step_without_graph_breaks(style, logits_with_loss):
    model = randomize_(XLSTMForCausalLM(tiny_config(style, logits_with_loss=logits_with_loss))).train()
    ids = torch.randint(0, 97, (2, 12))
    explanation = torch._dynamo.explain(model)(ids, labels=ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("style", ["paper", "large"])
def test_backprop_through_a_carried_state_equals_one_long_sequence(style):
    """Stateful training: the final states of one segment are the initial states of the next, under autograd."""
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))

    def loss_and_grads(segments):
        torch.manual_seed(0)
        model = randomize_(XLSTMForCausalLM(tiny_config(style))).train()
        logits, cache, start = [], None, 0
        for length in segments:
            out = model(ids[:, start : start + length], cache=cache, use_cache=True)
            logits.append(out.logits)
            cache, start = out.cache, start + length
        logits = torch.cat(logits, dim=1)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
        loss.backward()
        return loss, {name: p.grad for name, p in model.named_parameters()}

    whole_loss, whole_grads = loss_and_grads([20])
    split_loss, split_grads = loss_and_grads([7, 1, 12])
    torch.testing.assert_close(split_loss, whole_loss, atol=1e-5, rtol=0)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_truncated_bptt_detaches_between_segments():
    model = randomize_(XLSTMForCausalLM(tiny_config("paper"))).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(0))
    cache = None
    for start in range(0, 30, 10):
        segment = ids[:, start : start + 10]
        out = model(segment, labels=segment, cache=cache, use_cache=True)
        optimizer.zero_grad()
        out.loss.backward()  # would fail ("backward through the graph a second time") without the detach
        optimizer.step()
        cache = out.cache.detach_()
        assert all(not t.requires_grad for layer in cache.layers for t in layer.recurrent_states.values() if t is not None)
    assert cache.get_seq_length() == 30
