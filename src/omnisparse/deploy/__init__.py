"""Deployment: fast CPU execution of exported sub-networks (:mod:`.fast`) and ONNX export / runtime
(:mod:`.onnx_export`, :mod:`.onnx_runner`)."""
