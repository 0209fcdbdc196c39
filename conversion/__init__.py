"""Conversion of the public xLSTM checkpoints into modeling_xlstm `save_pretrained` folders.

    python -m modeling_xlstm.conversion SRC OUT [--from auto|nxai-xlstm|nxai-large|hf-xlstm] [--dtype ...]
        [--max-shard-size ...] [--verify]

or, from Python, `convert_checkpoint(src, out, ...)`. See conversion/README.md.
"""

from .convert import ConversionResult, convert_checkpoint, open_source, parse_size
from .errors import ConversionError
from .formats import FORMAT_DESCRIPTIONS, FORMATS, HF_XLSTM_KEY_MAPPING, detect_format, hf_xlstm_config

__all__ = [
    "FORMATS",
    "FORMAT_DESCRIPTIONS",
    "HF_XLSTM_KEY_MAPPING",
    "ConversionError",
    "ConversionResult",
    "convert_checkpoint",
    "detect_format",
    "hf_xlstm_config",
    "open_source",
    "parse_size",
]
