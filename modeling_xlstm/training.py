"""Helpers for training xLSTM models with the Hugging Face `Trainer`."""

from __future__ import annotations

import math

from transformers import TrainerCallback


class PerplexityCallback(TrainerCallback):
    """Adds `<prefix>_perplexity = exp(<prefix>_loss)` to the metrics `Trainer.evaluate()` returns.

    The eval loss of a causal LM is the mean token negative log-likelihood, so its exponential is the
    perplexity per token of the tokenizer.
    """

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None:
            return
        for key in [k for k in metrics if k.endswith("_loss")]:
            metrics[key[: -len("loss")] + "perplexity"] = math.exp(min(metrics[key], 700.0))


__all__ = ["PerplexityCallback"]
