"""Small configurations and weight randomization shared by the tests."""

import torch

from modeling_xlstm import XLSTMConfig


def tiny_config(block_style: str = "large", **overrides) -> XLSTMConfig:
    """A 4-block model with an sLSTM block at position 1 and a small chunk size (so short tests cross chunks)."""
    settings = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=4,
        slstm_at=[1],
        num_heads=2,
        slstm_num_heads=2,
        block_style=block_style,
        chunk_size=8,
        mlstm_proj_factor=2.0,
        ffn_round_up_to_multiple_of=16,
    )
    settings.update(overrides)
    return XLSTMConfig(**settings)


@torch.no_grad()
def randomize_(model: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter: the published init zeroes gate weights and sLSTM recurrent kernels, which would
    leave those paths untested."""
    g = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(scale * torch.randn(param.shape, generator=g).to(param.dtype))
    return model
