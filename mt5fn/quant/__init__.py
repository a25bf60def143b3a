"""The low-precision room: int8 weight forms of the parameter pytree (``quantize``, ``dequantize``)."""

from ._int8 import dequantize, int8_compute_dtype, is_quantized, quantize, quantize_weight

__all__ = ["dequantize", "int8_compute_dtype", "is_quantized", "quantize", "quantize_weight"]
