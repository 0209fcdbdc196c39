"""Write hub_configs/<model>/ for every published xLSTM model: config.json and generation_config.json. Run from
the repository root:

    python hub_configs/make_hub_configs.py

The values and where each comes from are listed in hub_configs/README.md. The folders get no remote code and no
`auto_map` (`import modeling_xlstm` registers the classes); `python -m modeling_xlstm.hub_configs export` writes
both into a copy for `trust_remote_code=True`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import GenerationConfig

from modeling_xlstm import XLSTMConfig

HERE = Path(__file__).resolve().parent

# xLSTM 7B (NX-AI/xLSTM-7b): the defaults of transformers' xLSTMConfig, which are the 7B's.
XLSTM_7B = dict(
    block_style="large",
    vocab_size=50304,
    hidden_size=4096,
    num_hidden_layers=32,
    num_heads=8,
    qk_dim_factor=0.5,
    v_dim_factor=1.0,
    ffn_proj_factor=2.667,
    ffn_round_up_to_multiple_of=64,
    gate_soft_cap=15.0,
    output_logit_soft_cap=30.0,
    norm_eps=1e-6,
    eps=1e-6,
    chunk_size=64,
    use_bias=False,
    add_out_norm=True,
    tie_word_embeddings=False,
    weight_mode="single",
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

# The paper's models (Beck et al., 2024, Table 7): embedding dim and number of blocks per size; 4 heads.
PAPER_SIZES = {"125m": (768, 24), "350m": (1024, 48), "760m": (1536, 48), "1.3b": (2048, 48)}
SLSTM_POSITIONS_7_1 = {24: [3, 20], 48: [3, 5, 7, 40, 42, 44]}
PAPER_COMMON = dict(
    block_style="paper",
    vocab_size=50304,
    num_heads=4,
    mlstm_proj_factor=2.0,
    qkv_proj_blocksize=4,
    conv1d_kernel_size=4,
    slstm_num_heads=4,
    slstm_conv1d_kernel_size=4,
    slstm_bias_init="powerlaw_blockdependent",
    slstm_recurrent_weight_init="zeros",
    ffn_proj_factor=1.3,
    ffn_round_up_to_multiple_of=64,
    ffn_act_fn="gelu",
    norm_eps=1e-5,
    eps=1e-6,
    use_bias=False,
    add_out_norm=True,
    tie_word_embeddings=False,
    gate_soft_cap=None,
    output_logit_soft_cap=None,
    weight_mode="fused",  # the paper's feed-forward stores [gate, up] in one matrix
)


def published_models() -> dict[str, dict]:
    models = {"xlstm-7b": XLSTM_7B}
    for ratio in ("1-0", "7-1"):
        for size, (dim, blocks) in PAPER_SIZES.items():
            slstm_at = SLSTM_POSITIONS_7_1[blocks] if ratio == "7-1" else []
            models[f"xlstm-{ratio}-{size}"] = dict(
                PAPER_COMMON, hidden_size=dim, num_hidden_layers=blocks, slstm_at=slstm_at
            )
    return models


def write_folder(folder: Path, settings: dict) -> None:
    """config.json and generation_config.json of one published model."""
    folder.mkdir(exist_ok=True)
    config = XLSTMConfig(**settings)
    config.architectures = ["XLSTMForCausalLM"]
    config.save_pretrained(folder)
    GenerationConfig.from_model_config(config).save_pretrained(folder)


def write_all() -> None:
    if not (HERE.parent / "pyproject.toml").is_file():  # e.g. run as modeling_xlstm.hub_configs.make_hub_configs
        raise SystemExit(f"{HERE} is not the hub_configs/ of a source checkout; run this script from one")
    for name, settings in published_models().items():
        write_folder(HERE / name, settings)
        print(f"wrote {(HERE / name).relative_to(HERE.parent)}")


if __name__ == "__main__":
    write_all()
