"""The build stages, in the order the pipeline runs them.

- `load`: a PyTorch factory, a `.pt2` program or an ONNX file (torch only for the first two);
- `data`: calibration and evaluation data, checked against the model input;
- `compress`: pruning, low-rank factorisation and distillation (torch only);
- `export`: PyTorch → ONNX (torch only); `graph`: cleaning the float ONNX graph;
- `quantize`: static int8 calibration and QDQ quantisation (ONNX Runtime);
- `emit`: per-target artifact writers (`.ort`, `.tflite`);
- `bundle`: the staging folder and the reference files a bundle carries.

Verification is not a stage here: it is the `edgepack.verification` package, which a device can
run without anything from this one. Only `load`, `compress` and `export` import torch.
"""
