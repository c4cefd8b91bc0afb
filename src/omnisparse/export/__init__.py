"""Export of (sparse) sub-networks: the safetensors-compatible artefact (its layout and sizes in
:mod:`.format`, with the :class:`~.format.ArtefactPricing` a search space prices configs with; its
writer :mod:`.writer` and reader :mod:`.reader`), opening any run, checkpoint or exported directory for
inference (:mod:`.loading`: ``load_model``) and writing standalone model directories (:mod:`.subnet`,
imported on first use, so that the artefact format alone does not import the models, the tokenizer
and the search space)."""

from .format import FORMATS, ArtefactPricing, artefact_size
from .reader import read_artefact
from .writer import write_artefact

__all__ = ["FORMATS", "ArtefactPricing", "artefact_size", "read_artefact", "write_artefact", "export_subnet",
           "ExportResult"]


def __getattr__(name: str):
    if name in ("export_subnet", "ExportResult", "ExportError"):
        from . import subnet

        return getattr(subnet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
