"""The runtimes that ship a model, and what LayerScope measures in them.

- ``onnx``: export to ONNX, profile in ONNX Runtime, map every compiled op back to its layers.

A runtime package exports the model, runs it here and maps what it ran back to layers; ExecuTorch
(XNNPACK) lands beside ONNX Runtime in its own package.
"""
