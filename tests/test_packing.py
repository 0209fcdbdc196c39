"""Packed rows (several documents per row, as DataCollatorWithFlattening and TRL's padding-free packing send them):
every document gets exactly the logits, gradients and loss it gets alone."""

import pytest
import torch
from helpers import CORPUS, build_tokenizer, randomize_, tiny_config
from transformers import DataCollatorWithFlattening

from modeling_xlstm import XLSTMCache, XLSTMForCausalLM

# chunk_size is 8 in tiny_config: documents of 3..21 tokens put boundaries inside chunks and documents across them
LENGTHS = [5, 21, 3, 12]
BLOCKS = {"mixed": [1], "slstm": "all", "mlstm": []}


def make_model(style, blocks="mixed", seed=0):
    torch.manual_seed(seed)
    return randomize_(XLSTMForCausalLM(tiny_config(style, slstm_at=BLOCKS[blocks])), seed=seed).eval()


def documents(lengths=LENGTHS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 97, (n,), generator=g) for n in lengths]


def collate(docs, **options):
    return DataCollatorWithFlattening(**options)([{"input_ids": d.tolist()} for d in docs], return_tensors="pt")


@pytest.mark.parametrize("style", ["paper", "large"])
@pytest.mark.parametrize("blocks", sorted(BLOCKS))
def test_packed_row_gives_each_document_its_own_logits_and_gradients(style, blocks):
    """In float64 the packed row and the documents alone agree to rounding (1e-10): the resets are exact. In
    float32 they agree to what batching alone changes on CPU (the same document alone and in a batch of three
    differ by up to 3.6e-5 in these logits: BLAS picks other kernels for other batch sizes), checked at 1e-4."""
    model = make_model(style, blocks).double()
    docs = documents()
    batch = collate(docs)
    assert batch["input_ids"].shape == (1, sum(LENGTHS))
    packed = model(batch["input_ids"], position_ids=batch["position_ids"]).logits
    alone = [model(doc[None]).logits for doc in docs]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), atol=1e-10, rtol=0)

    weights = torch.randn(packed.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model.zero_grad()
    (model(batch["input_ids"], position_ids=batch["position_ids"]).logits * weights).sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    start = 0
    for doc in docs:
        (model(doc[None]).logits * weights[:, start : start + len(doc)]).sum().backward()
        start += len(doc)
    # a parameter gradient sums over every token of every document, in another order when they run as one batch
    for name, param in model.named_parameters():
        if param.grad is not None:
            error = (packed_grads[name] - param.grad).abs().max().item()
            assert error <= 1e-10 * (1 + param.grad.abs().max().item()), (name, error)

    model.float()
    with torch.no_grad():
        packed = model(batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = torch.cat([model(doc[None]).logits for doc in docs], dim=1)
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=0)


@pytest.mark.parametrize("style", ["paper", "large"])
def test_packed_loss_is_the_token_weighted_loss_of_the_documents(style):
    model = make_model(style)
    docs = documents()
    batch = collate(docs)  # labels -100 at every document start, as the collator sets them
    packed = model(**batch).loss
    total, count = 0.0, 0
    for doc in docs:
        loss = model(doc[None], labels=doc[None]).loss
        total, count = total + loss * (len(doc) - 1), count + len(doc) - 1
    torch.testing.assert_close(packed, total / count, atol=1e-5, rtol=0)


def test_every_packing_input_marks_the_same_documents():
    model = make_model("paper")
    docs = documents()
    full = collate(docs, return_flash_attn_kwargs=True, return_seq_idx=True)
    expected = model(full["input_ids"], position_ids=full["position_ids"]).logits
    for key in ("cu_seq_lens_q", "seq_idx"):
        got = model(full["input_ids"], **{key: full[key]}).logits
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    got = model(**{k: v for k, v in full.items() if k != "labels"}).logits  # everything the collator sends
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_inconsistent_packing_inputs_are_an_error():
    model = make_model("paper")
    full = collate(documents(), return_flash_attn_kwargs=True)
    wrong = full["cu_seq_lens_q"].clone()
    wrong[1] += 1
    with pytest.raises(ValueError, match="mark different document boundaries"):
        model(full["input_ids"], position_ids=full["position_ids"], cu_seq_lens_q=wrong)
    with pytest.raises(ValueError, match="max_length_q=3 but the longest document is 21"):
        model(full["input_ids"], position_ids=full["position_ids"], max_length_q=3)


def test_packed_rows_with_a_cache_or_padding_are_refused():
    model = make_model("paper")
    batch = collate(documents())
    with pytest.raises(ValueError, match="cannot use a cache"):
        model(batch["input_ids"], position_ids=batch["position_ids"], cache=XLSTMCache(model.config))
    with pytest.raises(ValueError, match="cannot use a cache"):
        model(batch["input_ids"], position_ids=batch["position_ids"], use_cache=True)
    mask = torch.ones_like(batch["input_ids"])
    mask[0, -2:] = 0
    with pytest.raises(ValueError, match="cannot be combined with padding"):
        model(batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask)


def test_position_ids_without_restarts_change_nothing():
    model = make_model("large")
    ids = documents([9])[0][None]
    plain = model(ids)
    with_positions = model(ids, position_ids=torch.arange(9)[None])
    torch.testing.assert_close(with_positions.logits, plain.logits, atol=0, rtol=0)
    # left padding with positions counted from the first real token is ordinary padding, not packing
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(padded, attention_mask=mask, position_ids=positions)
    torch.testing.assert_close(out.logits[:, 3:], plain.logits, atol=1e-5, rtol=0)


def test_trl_sft_trainer_packing_matches_no_packing(tmp_path):
    """TRL's padding-free packing (one row of several documents, position_ids restarting) and plain padded batches
    of the same documents give the same first-step loss."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tokenizer = build_tokenizer()
    texts = CORPUS[:8]
    losses = {}
    for packing in (True, False):
        torch.manual_seed(0)
        model = randomize_(XLSTMForCausalLM(tiny_config(
            "paper", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
        )))
        args = trl.SFTConfig(
            output_dir=str(tmp_path / str(packing)), per_device_train_batch_size=8, max_steps=1, logging_steps=1,
            learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True, seed=0, packing=packing,
            padding_free=packing, max_length=64, dataset_text_field="text", dataloader_num_workers=0,
            shuffle_dataset=False, completion_only_loss=False,
        )
        trainer = trl.SFTTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), processing_class=tokenizer
        )
        trainer.train()
        losses[packing] = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_trainer_with_data_collator_with_flattening_trains(tmp_path):
    from transformers import Trainer, TrainingArguments

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = XLSTMForCausalLM(tiny_config("large", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    data = [{"input_ids": tokenizer(text).input_ids} for text in CORPUS]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=12, learning_rate=3e-3, logging_steps=1,
        lr_scheduler_type="constant", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithFlattening())
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 12 and losses[-1] < losses[0] * 0.8


@pytest.mark.gpu
@pytest.mark.parametrize("style", ["paper", "large"])
def test_packed_rows_on_the_triton_kernels(style):
    """Real shapes on the GPU kernels: 4 documents of 300-1,500 tokens (boundaries inside 64-token chunks), hidden
    512, float32. The Triton and native kernels differ by rounding, so the packed row is compared with the documents
    run alone on the same kernels."""
    from modeling_xlstm import XLSTMConfig

    torch.manual_seed(0)
    config = XLSTMConfig(
        vocab_size=1024, hidden_size=512, num_hidden_layers=4, slstm_at=[1], num_heads=4, slstm_num_heads=4,
        block_style=style, chunk_size=64, backend="triton",
    )
    model = randomize_(XLSTMForCausalLM(config), scale=0.05).cuda().eval()
    docs = [d.cuda() for d in documents([300, 1500, 717, 64], seed=3)]
    batch = collate([d.cpu() for d in docs])
    with torch.no_grad():
        packed = model(batch["input_ids"].cuda(), position_ids=batch["position_ids"].cuda()).logits
        alone = torch.cat([model(doc[None]).logits for doc in docs], dim=1)
    torch.testing.assert_close(packed, alone, atol=1e-3, rtol=1e-3)


def test_packed_rows_through_the_triton_kernels_in_the_interpreter(monkeypatch):
    """The model's Triton path (chunkwise and parallel mLSTM, sLSTM sequence) on a packed row, run on CPU in Triton's
    interpreter: each document gets the logits it gets alone through the same kernels. Small shapes (head dims of
    16, the interpreter's smallest tile); float32; the documents span chunk boundaries (chunk_size 8)."""
    pytest.importorskip("triton")
    from modeling_xlstm import backend

    kernels = backend.triton_kernels()
    assert kernels is not None
    monkeypatch.setattr(backend, "select_kernels", lambda name, device: kernels)
    torch.manual_seed(0)
    config = tiny_config("large", hidden_size=64, num_heads=2, slstm_num_heads=4, qk_dim_factor=0.5)
    model = randomize_(XLSTMForCausalLM(config), scale=0.1).eval()
    docs = documents([5, 19, 11])
    batch = collate(docs)
    with torch.no_grad():
        packed = model(batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = torch.cat([model(doc[None]).logits for doc in docs], dim=1)
    # the same kernels on the same documents, batched differently: float32 rounding of the batched matmuls
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=0)
