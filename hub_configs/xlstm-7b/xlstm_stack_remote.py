"""Remote code of an xLSTM model folder: config.json's `auto_map` points here (`trust_remote_code=True`).

Written by `modeling_xlstm.hub_configs.write_remote_code`; do not edit. The model's code is the installed
`modeling_xlstm` package (pip install modeling-xlstm), kernels included; the classes below only subclass the
package's, so that transformers copies this file (and not the package's own modules) next to a model that was
loaded with `trust_remote_code=True` and then saved. The file is deliberately not called `modeling_xlstm.py`:
a file named like the package would shadow it for any Python started in this folder.
"""

try:
    import modeling_xlstm
except ImportError as error:
    raise ImportError(
        "This model is an xLSTM of the modeling_xlstm package, which is not installed: pip install modeling-xlstm"
    ) from error


class XLSTMConfig(modeling_xlstm.XLSTMConfig):
    pass


class XLSTMModel(modeling_xlstm.XLSTMModel):
    config_class = XLSTMConfig


class XLSTMForCausalLM(modeling_xlstm.XLSTMForCausalLM):
    config_class = XLSTMConfig
