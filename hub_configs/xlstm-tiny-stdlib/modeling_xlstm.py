"""Remote-code entry point (`auto_map` in config.json) for `trust_remote_code=True`.

It re-exports the installed `modeling_xlstm` package (pip install modeling-xlstm), so the code that runs is the
package's, kernels included, and never a stale copy.
"""

from modeling_xlstm.modeling_xlstm import XLSTMForCausalLM, XLSTMModel, XLSTMPreTrainedModel

__all__ = ["XLSTMForCausalLM", "XLSTMModel", "XLSTMPreTrainedModel"]
