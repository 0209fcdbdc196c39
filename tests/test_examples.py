"""examples/finetune.py as a user runs it: a new model from scratch, and LoRA on the bundled model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import modeling_xlstm  # noqa: F401
from modeling_xlstm.hub_configs import model_path

FINETUNE = Path(__file__).resolve().parents[1] / "examples" / "finetune.py"
# a few small steps on a dozen standard-library files: the script's whole path, in seconds
SMALL_RUN = ["--max-files", "12", "--max-steps", "3", "--block-size", "32", "--batch-size", "2"]


def run_finetune(*args: str, warnings_allowed: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, str(FINETUNE), *SMALL_RUN, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out perplexity" in result.stdout
    if not warnings_allowed:
        assert "warn" not in result.stderr.lower(), result.stderr[-3000:]
    return result


def test_finetune_trains_a_new_model_that_loads_and_generates(tmp_path):
    run_finetune("--output-dir", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(model).__name__ == "XLSTMForCausalLM" and model.config.slstm_at == [1]
    inputs = tokenizer("import os\n", return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs.input_ids.shape[1] + 4


def test_finetune_lora_on_the_bundled_model_trains_its_adapters(tmp_path):
    # warnings allowed: PEFT before 0.22 reads transformers' deprecated `is_gradient_checkpointing`, which warns
    run_finetune(
        "--model", str(model_path("xlstm-tiny-stdlib")), "--lora", "--output-dir", str(tmp_path), warnings_allowed=True
    )
    adapters = load_file(tmp_path / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapters.items() if "lora_B" in name]
    assert lora_b, sorted(adapters)
    # LoRA starts every B at zero: non-zero ones were trained, through the modules the forward really runs
    assert all(tensor.abs().max() > 0 for tensor in lora_b)
