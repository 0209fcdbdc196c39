"""GreedyDecoder: the serving path without the host in the loop gives exactly the tokens of greedy generate()."""

import pytest
import torch
from helpers import randomize_, tiny_config
from transformers import GenerationConfig

from modeling_xlstm import XLSTMForCausalLM
from modeling_xlstm.decoding import GreedyDecoder


@pytest.mark.parametrize("style", ["paper", "large"])
def test_greedy_decoder_equals_greedy_generate_and_is_reusable(style):
    torch.manual_seed(0)
    model = randomize_(XLSTMForCausalLM(tiny_config(style))).eval()
    model.generation_config = GenerationConfig(pad_token_id=0)
    decoder = GreedyDecoder.for_model(model, batch_size=2, max_new_tokens=9)
    assert decoder.mode == "eager"  # no CUDA here: the same step, run without capture
    for seed in (0, 1):  # a second prompt reuses the decoder (cache zeroed in place)
        prompt = torch.randint(1, 97, (2, 13), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model.generate(prompt, max_new_tokens=9, do_sample=False)[:, 13:]
        assert torch.equal(decoder.generate(prompt), expected)


def test_greedy_decoder_refuses_another_batch_size():
    model = XLSTMForCausalLM(tiny_config("large")).eval()
    decoder = GreedyDecoder.for_model(model, batch_size=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="built for batch size 2"):
        decoder.generate(torch.ones(1, 4, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["graph", "compile-graph"])
def test_cuda_graph_decoder_equals_eager(mode):
    torch.manual_seed(0)
    model = randomize_(XLSTMForCausalLM(tiny_config("large"))).cuda().eval()
    prompt = torch.randint(1, 97, (2, 13), device="cuda")
    eager = GreedyDecoder.for_model(model, 2, 16, mode="eager").generate(prompt)
    assert torch.equal(GreedyDecoder.for_model(model, 2, 16, mode=mode).generate(prompt), eager)
