"""Greedy decoding without the host in the loop: one decode step on static buffers, captured in a CUDA graph.

`generate()` is the general path (sampling, beams, stopping criteria, streamers; with
`cache_implementation="static"` and a `compile_config` it compiles the decoding step). Its loop, however, reads
every new token back on the host to check the stopping criteria, which at batch 1 on a GPU costs about as much as
the step itself. For serving greedy continuations of a fixed length, `GreedyDecoder` keeps everything on the device:
the step reads the current token from a static `[B, 1]` buffer, runs the model one token on a fixed cache, writes
the argmax back into the buffer and into the output row, and advances a device-side position. On CUDA the step is
captured once in a `torch.cuda.CUDAGraph` (optionally compiled by inductor first) and replayed per token; elsewhere
it runs eagerly, the same code. The cache is zeroed in place between prompts (`XLSTMCache.reset()` keeps tensor
addresses), so one capture serves every prompt of that batch size.

    decoder = GreedyDecoder.for_model(model, batch_size=1, max_new_tokens=256)
    new_tokens = decoder.generate(input_ids)   # [B, 256], the tokens greedy generate() would give (no EOS stop)

`GreedyDecoder` itself drives any model through a `step_logits(token [B, 1]) -> logits [B, V]` function on a cache
the caller owns; the 7B benchmark runs transformers' xLSTM through the same harness.
"""

from __future__ import annotations

from typing import Callable

import torch

from .cache import XLSTMCache

MODES = ("eager", "graph", "compile-graph")


class GreedyDecoder:
    """Fixed-length greedy decoding of one batch size with a step captured in a CUDA graph (see the module docstring).

    Args:
        step_logits: runs the model one token on its cache: token ids [B, 1] -> next-token logits [B, V].
        batch_size, max_new_tokens: the static shapes of the buffers.
        device: where the buffers live; a CUDA graph is captured only on CUDA.
        mode: "graph" (capture the eager step), "compile-graph" (compile it with inductor, then capture) or
            "eager" (no capture; the default off CUDA).
    """

    def __init__(
        self,
        step_logits: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        max_new_tokens: int,
        device: torch.device | str,
        mode: str = "graph",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.device = torch.device(device)
        self.mode = mode if self.device.type == "cuda" else "eager"
        self.step_logits = step_logits
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.token = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.tokens = torch.zeros(batch_size, max_new_tokens + 1, dtype=torch.long, device=self.device)
        self.position = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.function = torch.compile(self._step, dynamic=False) if self.mode == "compile-graph" else self._step

    @classmethod
    def for_model(cls, model, batch_size: int, max_new_tokens: int, mode: str = "graph") -> "GreedyDecoder":
        """A decoder for an `XLSTMForCausalLM`, with its own `XLSTMCache` (`decoder.cache`) and `generate()`."""
        cache = XLSTMCache(model.config)

        def step_logits(token: torch.Tensor) -> torch.Tensor:
            return model(token, cache=cache, logits_to_keep=1).logits[:, -1]

        decoder = cls(step_logits, batch_size, max_new_tokens, model.device, mode)
        decoder.model, decoder.cache = model, cache
        return decoder

    def _step(self) -> None:
        next_token = self.step_logits(self.token).argmax(-1, keepdim=True)
        self.token.copy_(next_token)
        self.tokens.scatter_(1, self.position, next_token)
        self.position.add_(1)

    def start(self, first_token: torch.Tensor) -> None:
        """Begin a sequence whose first generated token is `first_token` [B] (the argmax after the prompt)."""
        self.token.copy_(first_token.view(-1, 1))
        self.tokens[:, :1].copy_(first_token.view(-1, 1))
        self.position.fill_(1)

    def capture(self, warmup_steps: int = 3) -> None:
        """Warm the step up (Triton and inductor compilation, cuBLAS workspaces), then capture it in a CUDA graph.
        The warm-up steps advance the cache: start a new sequence afterwards. Off CUDA this runs one step."""
        if self.mode == "eager":
            self.function()
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup_steps):
                self.function()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.function()
        torch.cuda.synchronize(self.device)

    def step(self) -> None:
        """One more token: replay the captured graph (or run the step eagerly)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.function()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The `max_new_tokens` greedy tokens after the prompt `input_ids` [B, S] (a decoder made by `for_model`)."""
        if input_ids.shape[0] != self.batch_size:
            raise ValueError(
                f"this decoder was built for batch size {self.batch_size}, got a prompt of batch size "
                f"{input_ids.shape[0]}; build one per batch size."
            )
        if self.graph is None and self.mode != "eager":
            self.cache.reset()
            self.start(self.model(input_ids, cache=self.cache, logits_to_keep=1).logits[:, -1].argmax(-1))
            self.capture()
        self.cache.reset()
        self.start(self.model(input_ids, cache=self.cache, logits_to_keep=1).logits[:, -1].argmax(-1))
        for _ in range(self.max_new_tokens - 1):
            self.step()
        return self.tokens[:, : self.max_new_tokens].clone()


__all__ = ["GreedyDecoder"]
