"""The competitors the benchmarks measure ours against, one adapter each: what exactly runs on their side.

- transformers' `xLSTMForCausalLM` on our weights (`transformers_xlstm`, with `set_their_kernels` and
  `probe_their_kernels` to choose its mLSTM kernels): bench_generate_cpu.py, bench_7b_inference.py, bench_training_cpu.py;
- NX-AI's paper model `xLSTMLMModel` (`nxai_paper_model`): bench_training_cpu.py;
- mlstm_kernels' TFLA chunkwise kernel and Triton decode step (`tfla_chunkwise`, `mlstm_kernels_step`):
  bench_mlstm_kernels.py;
- the `xlstm` package's sLSTM cell (`xlstm_slstm_cell`) and FlashRNN's sLSTM (`flashrnn_slstm`):
  bench_slstm_kernels.py, bench_slstm_cpu.py.

Every adapter imports its package when called, so that importing this module (as every benchmark script does)
needs none of them. The versions are those pyproject.toml's dev extra pins (xlstm, mlstm-kernels 2.0.6) and
benchmarks/fetch_gpu_wheels.sh carries to the GPU machine (those two, flashrnn 1.0.8, the newest transformers
pyproject.toml allows).
"""

from __future__ import annotations

from modeling_xlstm.conversion.formats import NATIVE_KERNELS

# transformers' xLSTM: its mLSTM kernels (chunkwise, sequence, step), names of mlstm_kernels' registries
THEIR_TRITON_KERNELS = ("chunkwise--triton_xl_chunk", "native_sequence__triton", "triton")
THEIR_NATIVE_KERNELS = tuple(NATIVE_KERNELS.values())  # chunkwise, sequence, step: their native PyTorch kernels


# ----------------------------------------------------------------------------------------------------------------
# transformers' xLSTMForCausalLM
# ----------------------------------------------------------------------------------------------------------------


def their_cache_keyword(model) -> str:
    """The keyword that hands a cache to transformers' xLSTM (model or backbone): `cache` from 5.24 on
    (`cache_params` there logs a deprecation), `cache_params` before. Also the name of the output's cache field."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "cache_params"


def _kernel_settings(kernels: tuple[str, str, str]) -> dict[str, str]:
    chunkwise, sequence, step = kernels
    return dict(chunkwise_kernel=chunkwise, sequence_kernel=sequence, step_kernel=step)


def transformers_xlstm(
    ours, kernels: tuple[str, str, str] = THEIR_NATIVE_KERNELS, share_weights: bool = True, mode: str = "inference"
):
    """transformers' own `xLSTMForCausalLM` (the installed release; its mLSTM kernels come from mlstm_kernels
    2.0.6) with the architecture and the weights of `ours`, a 7B-style all-mLSTM `XLSTMForCausalLM` with single
    (unfused) weights.

    Its config is `to_hf_xlstm_config(ours.config)` with `mode` ("inference", or "train" for a training
    benchmark: then it is returned in train mode with gradients), `kernels` = (chunkwise, sequence, step)
    kernel names (default: mlstm_kernels' native PyTorch ones, which run anywhere), `autocast_kernel_dtype` = ours'
    dtype (float32 on CPU, bf16 in the 7B GPU run) and float32 kernel states (`inference_state_dtype`). It is built
    on the meta device in ours' dtype and gets ours' tensors by name (their names map to ours by
    `HF_XLSTM_KEY_MAPPING`), so it lies on ours' device: with `share_weights` the two share one copy of every
    tensor (nothing is copied), otherwise theirs gets copies. Returned in eval mode, without gradients.
    """
    import re

    import torch
    from transformers.models.xlstm import xLSTMConfig, xLSTMForCausalLM

    from modeling_xlstm.conversion.formats import HF_XLSTM_KEY_MAPPING, to_hf_xlstm_config

    dtype = ours.dtype
    config = xLSTMConfig(**to_hf_xlstm_config(
        ours.config, mode=mode, autocast_kernel_dtype=str(dtype).removeprefix("torch."),
        inference_state_dtype="float32", **_kernel_settings(kernels),
    ))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            theirs = xLSTMForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)

    ours_tensors = ours.state_dict()
    our_names = {}
    for name in theirs.state_dict():
        our_name = name
        for pattern, replacement in HF_XLSTM_KEY_MAPPING.items():
            our_name = re.sub(pattern, replacement, our_name)
        our_names[name] = our_name
    missing = sorted(set(our_names.values()) - set(ours_tensors))
    unused = sorted(set(ours_tensors) - set(our_names.values()))
    if missing or unused:
        raise ValueError(f"our model's tensors do not match transformers' xLSTM (fused weights?): theirs need "
                         f"{missing[:3]}, ours have {unused[:3]} besides")
    tensors = {name: ours_tensors[our_name] if share_weights else ours_tensors[our_name].clone()
               for name, our_name in our_names.items()}
    theirs.load_state_dict(tensors, strict=True, assign=True)
    if mode == "train":
        return theirs.train().requires_grad_(True)
    return theirs.requires_grad_(False)


def nxai_paper_model(config, context_length: int, slstm_backend: str = "vanilla"):
    """NX-AI's `xlstm` 2.0.6 `xLSTMLMModel` (the paper's models) with the architecture of our paper-style `config`
    (`to_nxai_paper_config`), its sLSTM cells on `slstm_backend` ("vanilla": the package's PyTorch step loop, the
    one that runs on CPU; "cuda": its CUDA kernel) and its parallel mLSTM form sized for `context_length` tokens.
    Randomly initialised by the package, in train mode."""
    from dacite import Config, from_dict
    from xlstm import xLSTMLMModel, xLSTMLMModelConfig

    from modeling_xlstm.conversion.formats import to_nxai_paper_config

    settings = to_nxai_paper_config(config, context_length=context_length, slstm_backend=slstm_backend)
    return xLSTMLMModel(from_dict(xLSTMLMModelConfig, settings, config=Config(strict=True))).train()


def set_their_kernels(theirs, kernels: tuple[str, str, str]) -> None:
    """Swap the mLSTM kernels (chunkwise, sequence, step) of every block of a `transformers_xlstm` model: new
    mlstm_kernels backends with the old ones' other settings (the backends hold no weights)."""
    from mlstm_kernels.torch.backend_module import mLSTMBackend, mLSTMBackendConfig

    theirs.config.chunkwise_kernel, theirs.config.sequence_kernel, theirs.config.step_kernel = kernels
    for block in theirs.backbone.blocks:
        old = block.mlstm_layer.mlstm_backend.config
        block.mlstm_layer.mlstm_backend = mLSTMBackend(mLSTMBackendConfig(
            **_kernel_settings(kernels), mode=old.mode, chunk_size=old.chunk_size,
            return_last_states=old.return_last_states, autocast_kernel_dtype=old.autocast_kernel_dtype, eps=old.eps,
            inference_state_dtype=old.inference_state_dtype,
        ))


def probe_their_kernels(theirs, device, vocab: int) -> tuple[str, str | None]:
    """Give a `transformers_xlstm` model mlstm_kernels' Triton kernels (THEIR_TRITON_KERNELS, as NX-AI run the 7B)
    if they run here: try them on a short prompt (chunkwise + sequence remainder) and one step, and fall back to
    the native ones (THEIR_NATIVE_KERNELS) if that fails (on a CPU; with Triton 3.9, which removed the
    `tl.make_block_ptr` they use). Returns (the kernel names that ran, the Triton failure or None)."""
    import torch

    ids = torch.randint(1, vocab, (1, 70), device=device)
    try:
        set_their_kernels(theirs, THEIR_TRITON_KERNELS)
        with torch.no_grad():
            keyword = their_cache_keyword(theirs.backbone)
            out = theirs.backbone(ids, use_cache=True)
            theirs.backbone(ids[:, :1], **{keyword: getattr(out, keyword)}, use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return " / ".join(THEIR_TRITON_KERNELS), None
    except Exception as error:  # noqa: BLE001 -- any failure of their Triton path means: use their native kernels
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        set_their_kernels(theirs, THEIR_NATIVE_KERNELS)
        return " / ".join(THEIR_NATIVE_KERNELS), reason


# ----------------------------------------------------------------------------------------------------------------
# mlstm_kernels (NX-AI): TFLA and the Triton decode step
# ----------------------------------------------------------------------------------------------------------------


def tfla_chunkwise(chunk_size: int, autocast_dtype):
    """mlstm_kernels 2.0.6's TFLA chunkwise kernel, registry name "chunkwise--triton_xl_chunk" (Triton, needs
    CUDA), as a function of (q, k [B, NH, S, dqk], v [B, NH, S, dv], i, f [B, NH, S]) -> h [B, NH, S, dv]: chunk
    size `chunk_size`, inputs cast to `autocast_dtype` (the inputs' dtype in the benchmark: bf16), float32
    states, the final state computed too (`return_last_states=True`, as ours does) and dropped."""
    from mlstm_kernels.torch import get_mlstm_kernel

    kernel = get_mlstm_kernel("chunkwise--triton_xl_chunk")

    def call(q, k, v, i, f):
        h, _ = kernel(q, k, v, i, f, return_last_states=True, chunk_size=chunk_size,
                      autocast_kernel_dtype=autocast_dtype)
        return h

    return call


def mlstm_kernels_step():
    """mlstm_kernels 2.0.6's Triton decode-step kernel, registry name "triton" (needs CUDA), called as our
    `mlstm_recurrent_step` is: (q, k [B, NH, dqk], v [B, NH, dv], i, f [B, NH], (c [B, NH, dqk, dv],
    n [B, NH, dqk], m [B, NH, 1])) -> (h, its new state). Its inputs in their own dtype (bf16 in the benchmark),
    float32 states; unlike ours it writes the new state into new tensors, not in place."""
    from mlstm_kernels.torch import get_mlstm_step_kernel

    kernel = get_mlstm_step_kernel("triton")

    def step(q, k, v, i, f, state):
        c, n, m = state
        return kernel(q, k, v, i.unsqueeze(-1), f.unsqueeze(-1), c, n, m)

    return step


# ----------------------------------------------------------------------------------------------------------------
# sLSTM: the xlstm package's cell, FlashRNN
# ----------------------------------------------------------------------------------------------------------------


def xlstm_slstm_cell(hidden_size: int, num_heads: int, backend: str, batch_size: int, dtype, device="cpu",
                     recurrent=None, bias=None):
    """The `xlstm` package's (2.0.6) `sLSTMCell` (xlstm.blocks.slstm.cell) with backend "vanilla" (its PyTorch loop
    over the time steps, the only one that runs on a CPU) or "cuda" (NX-AI's fused CUDA kernel, compiled at first
    use with torch.utils.cpp_extension), in `dtype` (float32, or bfloat16 on the GPU), standard recurrent weight
    init, on `device`, in training mode. The vanilla cell's parameters are cast to `dtype` as well: its loop
    multiplies the (input-dtype) state by R directly.

    Its input: gate pre-activations [B, T, 4 * hidden] laid out (gate i, f, z, o; head; head dim), i.e. ours
    [B, T, 4, NH, DH] reshaped; it returns (h, last state), h [B, NH, T, DH] in this version. With `recurrent`
    [NH, DH, 4, DH] and `bias` [NH, 4, DH] (our layouts) given, its weights are set to them (its layouts: R
    [NH, 4 * DH, DH], bias [(4, NH, DH)]), so that it computes what ours computes."""
    import torch
    from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig

    config = sLSTMCellConfig(
        hidden_size=hidden_size, num_heads=num_heads, backend=backend, batch_size=batch_size,
        dtype="bfloat16" if dtype == torch.bfloat16 else "float32", recurrent_weight_init="standard",
    )
    cell = sLSTMCell(config).to(device)
    if backend == "vanilla":
        cell = cell.to(dtype)
    if recurrent is not None:
        dh = hidden_size // num_heads
        with torch.no_grad():
            cell._recurrent_kernel.copy_(recurrent.permute(0, 2, 3, 1).reshape(num_heads, 4 * dh, dh))
    if bias is not None:
        with torch.no_grad():
            cell._bias.copy_(bias.transpose(0, 1).reshape(-1))
    return cell.train()


def flashrnn_slstm(backend: str, dtype):
    """FlashRNN 1.0.8's sLSTM (NX-AI's newer sLSTM kernels, CUDA only): `flashrnn(Wx, R, b, function="slstm",
    backend=backend, dtype=...)` with backend "cuda_fused" (a fused CUDA kernel, compiled at first use) or
    "triton_fused" (Triton; its README limits it to head dims <= 64), computing in `dtype` (bfloat16 or
    float32). As a function of (Wx [B, T, 4 gates, NH, DH], R [4, NH, DH, DH], b [4, NH, DH]) -> h [B, T, NH, DH]
    (the first of the states [h, c, n, m] it returns for every step)."""
    import torch
    from flashrnn import flashrnn

    dtype_name = "bfloat16" if dtype == torch.bfloat16 else "float32"

    def call(wx, recurrent, bias):
        states, _ = flashrnn(wx, recurrent, bias, function="slstm", backend=backend, dtype=dtype_name)
        return states[0]

    return call
