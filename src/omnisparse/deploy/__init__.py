"""Deployment: fast CPU execution of exported sub-networks (:mod:`.fast`, choosing per Linear among the
execution kinds of :mod:`.kinds` by the timings of :mod:`.timing`), ONNX export / runtime
(:mod:`.onnx_export`, :mod:`.onnx_runner`), the sherpa-onnx export with its parity check (:mod:`.sherpa`)
and the commands that open a model directory and run it (:mod:`.apps`: ``omnisparse transcribe``)."""
