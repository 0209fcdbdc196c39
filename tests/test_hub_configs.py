"""hub_configs/: every published model's config builds (on the meta device) a model with exactly the parameter
count of NX-AI's reference implementation built from the same settings, and the folders are up to date."""

import json
import sys
from pathlib import Path

import pytest
import torch

from modeling_xlstm import XLSTMConfig, XLSTMForCausalLM

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub_configs"
sys.path.insert(0, str(HUB))
from make_hub_configs import AUTO_MAP, REMOTE_CODE, published_models  # noqa: E402

MODELS = published_models()


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() lists a tied weight once


def reference_paper(config: XLSTMConfig) -> torch.nn.Module:
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMLMModel,
        xLSTMLMModelConfig,
    )

    ref_config = xLSTMLMModelConfig(
        vocab_size=config.vocab_size,
        embedding_dim=config.hidden_size,
        num_blocks=config.num_hidden_layers,
        context_length=128,
        slstm_at=list(config.slstm_at),
        tie_weights=config.tie_word_embeddings,
        bias=config.use_bias,
        mlstm_block=mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(
                num_heads=config.num_heads,
                proj_factor=config.mlstm_proj_factor,
                qkv_proj_blocksize=config.qkv_proj_blocksize,
                conv1d_kernel_size=config.conv1d_kernel_size,
            )
        ),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(
                backend="vanilla",
                num_heads=config.slstm_num_heads,
                conv1d_kernel_size=config.slstm_conv1d_kernel_size,
                bias_init=config.slstm_bias_init,
            ),
            feedforward=FeedForwardConfig(proj_factor=config.ffn_proj_factor, act_fn=config.ffn_act_fn),
        ),
    )
    return xLSTMLMModel(ref_config)


def reference_large(config: XLSTMConfig) -> torch.nn.Module:
    from xlstm.xlstm_large.model import xLSTMLarge, xLSTMLargeConfig

    return xLSTMLarge(
        xLSTMLargeConfig(
            embedding_dim=config.hidden_size,
            num_heads=config.num_heads,
            num_blocks=config.num_hidden_layers,
            vocab_size=config.vocab_size,
            use_bias=config.use_bias,
            qk_dim_factor=config.qk_dim_factor,
            v_dim_factor=config.v_dim_factor,
            ffn_proj_factor=config.ffn_proj_factor,
            ffn_round_up_to_multiple_of=config.ffn_round_up_to_multiple_of,
            gate_soft_cap=config.gate_soft_cap,
            output_logit_soft_cap=config.output_logit_soft_cap,
            weight_mode=config.weight_mode,
        )
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count_matches_reference(name):
    pytest.importorskip("xlstm")
    config = XLSTMConfig.from_pretrained(HUB / name)
    with torch.device("meta"):
        ours = XLSTMForCausalLM(config)
        theirs = reference_paper(config) if config.block_style == "paper" else reference_large(config)
    assert count(ours) == count(theirs)
    # and the parameter shapes agree tensor by tensor (as multisets: the names differ)
    assert sorted(tuple(p.shape) for p in ours.parameters()) == sorted(
        tuple(p.shape) for p in _external_parameters(theirs)
    )


def _external_parameters(model: torch.nn.Module):
    """The reference's parameters with sLSTM cells in the external layout [NH, DH, 4, DH] / [NH, 4, DH]."""
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "_recurrent_kernel_":
                yield module.recurrent_kernel
            elif name == "_bias_":
                yield module.bias
            else:
                yield param


def test_7b_matches_transformers_xlstm_defaults():
    """The 7B's dims are transformers' xLSTMConfig defaults (which are those of NX-AI/xLSTM-7b)."""
    from transformers import xLSTMConfig

    theirs = xLSTMConfig()
    ours = XLSTMConfig.from_pretrained(HUB / "xlstm-7b")
    for our_name, their_name in [
        ("vocab_size", "vocab_size"),
        ("hidden_size", "hidden_size"),
        ("num_hidden_layers", "num_hidden_layers"),
        ("num_heads", "num_heads"),
        ("qk_dim_factor", "qk_dim_factor"),
        ("v_dim_factor", "v_dim_factor"),
        ("ffn_proj_factor", "ffn_proj_factor"),
        ("ffn_round_up_to_multiple_of", "ffn_round_up_to_multiple_of"),
        ("gate_soft_cap", "gate_soft_cap"),
        ("output_logit_soft_cap", "output_logit_soft_cap"),
        ("norm_eps", "norm_eps"),
        ("eps", "eps"),
        ("chunk_size", "chunk_size"),
        ("use_bias", "use_bias"),
        ("weight_mode", "weight_mode"),
        ("pad_token_id", "pad_token_id"),
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
    ]:
        assert getattr(ours, our_name) == getattr(theirs, their_name), our_name
    assert ours.block_types == ["mlstm"] * 32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_folder_is_complete_and_up_to_date(name):
    folder = HUB / name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "xlstm_stack"
    assert config["auto_map"] == AUTO_MAP
    assert (folder / "generation_config.json").is_file()
    for file in REMOTE_CODE:  # the trust_remote_code shims are the template's
        assert (folder / file).read_text() == (HUB / "remote_code" / file).read_text()
    # the folder holds what make_hub_configs.py writes for it
    expected = XLSTMConfig(**MODELS[name]).to_diff_dict()
    written = XLSTMConfig.from_pretrained(folder).to_diff_dict()
    for key in ("transformers_version", "architectures", "auto_map"):
        expected.pop(key, None), written.pop(key, None)
    assert written == expected


def test_paper_sizes_follow_table_7():
    paper = {name: s for name, s in MODELS.items() if name != "xlstm-7b"}
    assert len(paper) == 8
    for name, settings in paper.items():
        assert settings["num_heads"] == 4 and settings["vocab_size"] == 50304
        if name.startswith("xlstm-1-0"):
            assert settings["slstm_at"] == []
        else:  # xLSTM[7:1]: sLSTM blocks at the paper's positions (2 of 24 blocks, 6 of 48; hub_configs/README.md)
            expected = {24: [3, 20], 48: [3, 5, 7, 40, 42, 44]}[settings["num_hidden_layers"]]
            assert settings["slstm_at"] == expected


def test_trust_remote_code_loads_without_importing_the_package(tmp_path):
    """auto_map + the shims: AutoConfig/AutoModelForCausalLM with trust_remote_code in a fresh interpreter."""
    import subprocess

    code = (
        "import torch\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        f"c = AutoConfig.from_pretrained({str(HUB / 'xlstm-7-1-125m')!r}, trust_remote_code=True)\n"
        "with torch.device('meta'):\n"
        "    m = AutoModelForCausalLM.from_config(c, trust_remote_code=True)\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
    )
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    name, params = out.stdout.split()
    assert name == "XLSTMForCausalLM" and int(params) > 100_000_000
