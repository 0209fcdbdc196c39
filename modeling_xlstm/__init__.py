"""modeling_xlstm: the xLSTM family as a Hugging Face Transformers model.

Importing the package registers `XLSTMConfig` (model type "xlstm_stack") with `AutoConfig`, and the models
with `AutoModel` and `AutoModelForCausalLM`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import XLSTMCache
from .configuration_xlstm import XLSTMConfig
from .modeling_xlstm import XLSTMForCausalLM, XLSTMModel, XLSTMPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(XLSTMConfig.model_type, XLSTMConfig, exist_ok=True)
AutoModel.register(XLSTMConfig, XLSTMModel, exist_ok=True)
AutoModelForCausalLM.register(XLSTMConfig, XLSTMForCausalLM, exist_ok=True)

__all__ = ["XLSTMCache", "XLSTMConfig", "XLSTMForCausalLM", "XLSTMModel", "XLSTMPreTrainedModel", "__version__"]
