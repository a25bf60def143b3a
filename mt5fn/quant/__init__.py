"""The low-precision room: int8 weight forms of the parameter pytree (``quantize``, ``dequantize``)."""

from ._int8 import SCHEMES, dequantize, int8_compute_dtype, is_projection_path, is_quantized, quantize, quantize_weight

__all__ = ["SCHEMES", "dequantize", "is_projection_path", "int8_compute_dtype", "is_quantized", "quantize", "quantize_weight"]
