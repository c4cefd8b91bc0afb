"""Export of (sparse) sub-networks to a safetensors-compatible artefact (see :mod:`.format`)."""

from .format import FORMATS, artefact_size, read_artefact, write_artefact

__all__ = ["FORMATS", "artefact_size", "read_artefact", "write_artefact"]
