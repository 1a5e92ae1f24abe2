"""edgepack's own ONNX → TFLite converter (no TensorFlow).

`convert(float_onnx_model, options) -> bytes` writes a float32 TFLite flatbuffer with NHWC
activations; `quantize` turns it into float16, dynamic-range int8 or full-integer int8
(the last through LiteRT's own calibrating quantiser).
"""
