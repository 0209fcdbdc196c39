"""benchmarks/matmul_bound.py: the floor the CPU benchmarks report runs exactly the model's matmuls, once each.

A floor that skipped a layer (or ran one twice, or at the wrong shape) would state a wrong bound on every ratio.
"""

import pytest
import torch
from helpers import tiny_config
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.matmul_bound import linear_layers_step
from modeling_xlstm import XLSTMForCausalLM
from modeling_xlstm.modeling_xlstm import XLSTMPaperMLSTMLayer


def record_linear_calls(model: nn.Module) -> tuple[list, list]:
    calls = []
    handles = [
        module.register_forward_hook(lambda module, args, out: calls.append((module, tuple(args[0].shape))))
        for module in model.modules()
        if isinstance(module, nn.Linear)
    ]
    return calls, handles


@pytest.mark.parametrize("style", ["large", "paper"])
def test_floor_runs_each_linear_of_a_forward_once_at_its_shape(style):
    model = XLSTMForCausalLM(tiny_config(style))
    ids = torch.randint(0, model.config.vocab_size, (3, 5))
    calls, handles = record_linear_calls(model)
    with torch.no_grad():
        model(ids, logits_to_keep=1)
    in_forward = [(id(module), shape) for module, shape in calls]
    # the paper mLSTM layer multiplies by its two gate weights at once (one matmul of the concatenated weights, the
    # same arithmetic), so their modules are not called: the floor runs them one by one at the forward's shape
    gates = [gate for layer in model.modules() if isinstance(layer, XLSTMPaperMLSTMLayer)
             for gate in (layer.igate, layer.fgate)]
    assert (style == "paper") == bool(gates) and not {id(gate) for gate in gates} & {key for key, _ in in_forward}
    in_forward = sorted(in_forward + [(id(gate), (3, 5, gate.in_features)) for gate in gates])
    calls.clear()
    linear_layers_step(model, 3, 5, lm_head_positions=1)()
    in_floor = sorted((id(module), shape) for module, shape in calls)
    for handle in handles:
        handle.remove()
    assert in_floor == in_forward and len(in_floor) == sum(isinstance(m, nn.Linear) for m in model.modules())


def test_floor_with_backward_computes_gradients_and_leaves_none_behind():
    model = XLSTMForCausalLM(tiny_config("large"))
    step = linear_layers_step(model, 2, 4, backward=True)
    seen = []
    hooks = [p.register_hook(lambda grad: seen.append(grad.shape)) for p in model.parameters() if p.ndim == 2]
    step()
    for hook in hooks:
        hook.remove()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(seen) == len(linears)  # every weight gradient was computed
    assert all(p.grad is None for p in model.parameters())  # and none left to accumulate across repeats


def test_transposed_floor_runs_each_matmul_of_a_forward_once_at_its_shape():
    # the decoding layout (FlatDecodeStep's copies): [rows, in] @ [in, out] for every Linear, the same products
    class RecordMatmuls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
                x, weight = args[-2:]
                shapes.append((tuple(x.shape), tuple(weight.shape), weight.is_contiguous()))
            return func(*args, **(kwargs or {}))

    model, shapes = XLSTMForCausalLM(tiny_config("large", use_bias=True)), []
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    step = linear_layers_step(model, 3, 1, lm_head_positions=1, transposed=True)
    with RecordMatmuls():
        step()
    assert shapes == [((3, m.in_features), (m.in_features, m.out_features), True) for m in linears]
    with pytest.raises(ValueError, match="forward matmuls only"):
        linear_layers_step(model, 3, 1, backward=True, transposed=True)
