"""Export of (sparse) sub-networks: the safetensors-compatible artefact (:mod:`.format`) and
standalone model directories (:mod:`.subnet`, imported lazily: it depends on the decoding and
sparsity packages, which import :mod:`.format`)."""

from .format import FORMATS, artefact_size, read_artefact, write_artefact

__all__ = ["FORMATS", "artefact_size", "read_artefact", "write_artefact", "export_subnet", "ExportResult"]


def __getattr__(name: str):
    if name in ("export_subnet", "ExportResult", "ExportError"):
        from . import subnet

        return getattr(subnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
