"""Packed rows: several documents concatenated in one row, as padding-free collators send them.

transformers' `DataCollatorWithFlattening` and TRL's padding-free packing (`SFTTrainer(packing=True)`) put several
documents in one row and mark where each starts: `position_ids` that restart (0, 1, 2, 0, 1, ...), and optionally
`cu_seq_lens_q/k` (cumulative document lengths over the flattened batch), `max_length_q/k` and `seq_idx` (the
document index of every token). A recurrent model must not carry any state (mLSTM C/n/m, sLSTM h/c/n/m, causal-conv
buffers) from one document into the next.

The model does this by running the documents as a batch: `PackedLayout.unpack` moves the tokens of every document to
a row of their own, starting at position 0 and right-padded to the longest document; the blocks run on that batch
exactly as they run on each document alone (same positions, same chunk partition, fresh states; a padded tail comes
after the document and cannot change its outputs); `PackedLayout.repack` puts the outputs back in the packed order.
This covers every kernel (native and Triton) and every form (parallel, chunkwise, sequence) without touching them.
The cost is the padding: documents of equal length cost what the same tokens cost as a batch; very unequal ones pad
the short ones to the longest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACKING_INPUTS = ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


@dataclass
class PackedLayout:
    """Where each token of a [B, T] packed batch goes in the [num_docs, max_len] batch of documents."""

    doc: torch.Tensor  # [B * T] document index of every token
    offset: torch.Tensor  # [B * T] position of every token inside its document
    num_docs: int
    max_len: int

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] in packed order -> [num_docs, max_len, ...], one document per row, zero-padded at the end."""
        flat = x.flatten(0, 1)
        out = flat.new_zeros(self.num_docs, self.max_len, *flat.shape[1:])
        return out.index_put((self.doc, self.offset), flat)

    def repack(self, docs: torch.Tensor, batch_size: int) -> torch.Tensor:
        """[num_docs, max_len, ...] -> [B, T, ...] in packed order (the inverse of `unpack` on the real tokens)."""
        return docs[self.doc, self.offset].unflatten(0, (batch_size, -1))


def _starts_from_position_ids(position_ids: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if position_ids.ndim == 1:
        position_ids = position_ids.unsqueeze(0)
    if tuple(position_ids.shape) != shape:
        raise ValueError(
            f"position_ids has shape {tuple(position_ids.shape)} but the input is {list(shape)}; pass one position per "
            "token (as DataCollatorWithFlattening does)."
        )
    starts = torch.ones(shape, dtype=torch.bool, device=position_ids.device)
    # a document continues while positions go up by one; any other step starts a new one
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return starts


def _starts_from_cu_seq_lens(cu_seq_lens: torch.Tensor, name: str, shape: tuple[int, int]) -> torch.Tensor:
    B, T = shape
    cu = cu_seq_lens.flatten().long()
    if cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != B * T or bool((cu[1:] <= cu[:-1]).any()):
        raise ValueError(
            f"{name} must rise strictly from 0 to the number of tokens {B * T} (cumulative document lengths over the "
            f"flattened batch), got {cu.tolist()}."
        )
    starts = torch.zeros(B * T, dtype=torch.bool, device=cu.device)
    starts[cu[:-1]] = True
    starts = starts.view(B, T)
    if not bool(starts[:, 0].all()):
        raise ValueError(f"{name} puts a document across two rows of the batch; each row must start a document.")
    return starts


def _starts_from_seq_idx(seq_idx: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if seq_idx.ndim == 1:
        seq_idx = seq_idx.unsqueeze(0)
    if tuple(seq_idx.shape) != shape:
        raise ValueError(f"seq_idx has shape {tuple(seq_idx.shape)} but the input is {list(shape)}.")
    starts = torch.ones(shape, dtype=torch.bool, device=seq_idx.device)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    return starts


def document_starts(inputs: dict, shape: tuple[int, int], attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, T] bool, True where a document starts (always at t = 0), or None when no row holds several documents.

    The boundaries come from every packing input given (`position_ids`, `cu_seq_lens_q/k`, `seq_idx`); inputs that
    disagree are an error. A restart preceded only by padding (left padding with position ids counted from the first
    real token) is no boundary: padding leaves the states untouched anyway.
    """
    sources = {}
    if inputs.get("position_ids") is not None:
        sources["position_ids"] = _starts_from_position_ids(inputs["position_ids"], shape)
    for name in ("cu_seq_lens_q", "cu_seq_lens_k"):
        if inputs.get(name) is not None:
            sources[name] = _starts_from_cu_seq_lens(inputs[name], name, shape)
    if inputs.get("seq_idx") is not None:
        sources["seq_idx"] = _starts_from_seq_idx(inputs["seq_idx"], shape)
    if not sources:
        return None
    (first_name, starts), *others = sources.items()
    for name, other in others:
        if not torch.equal(other.to(starts.device), starts):
            raise ValueError(
                f"{first_name} and {name} mark different document boundaries; pass consistent packing inputs (as one "
                "collator produces them), or only one of them."
            )
    if attention_mask is not None:
        real = attention_mask[:, -shape[1]:].to(device=starts.device, dtype=torch.bool)
        if not bool(real.all()):
            seen_real = torch.cumsum(real.long(), dim=1) - real.long() > 0  # a real token before this position
            if bool((starts & real & seen_real).any()):
                raise ValueError(
                    "Packed rows (several documents per row) cannot be combined with padding in attention_mask: drop "
                    "the padding (padding-free collators need none) or the packing inputs."
                )
            return None  # ordinary (left) padding: the restarts are at the first real token of each row
    starts[:, 0] = True
    if not bool(starts[:, 1:].any()):
        return None
    for name in ("max_length_q", "max_length_k"):
        if inputs.get(name) is not None:
            longest = int(_layout_lengths(starts).max())
            if int(inputs[name]) != longest:
                raise ValueError(f"{name}={int(inputs[name])} but the longest document is {longest} tokens.")
    return starts


def _layout_lengths(starts: torch.Tensor) -> torch.Tensor:
    flat = starts.flatten()
    begin = torch.nonzero(flat).flatten()
    end = torch.cat([begin[1:], begin.new_tensor([flat.numel()])])
    return end - begin


def packed_layout(starts: torch.Tensor) -> PackedLayout:
    """The layout of the documents whose starts are marked in `starts` [B, T] (each row starts one)."""
    flat = starts.flatten()
    doc = torch.cumsum(flat.long(), dim=0) - 1
    begin = torch.nonzero(flat).flatten()
    offset = torch.arange(flat.numel(), device=flat.device) - begin[doc]
    return PackedLayout(doc=doc, offset=offset, num_docs=begin.numel(), max_len=int(_layout_lengths(starts).max()))
