"""Search space: genes, sampling, validation, parameter counts and exact artefact sizes."""

from __future__ import annotations

import gc
import json
import os
import random
import struct
import weakref
from collections import OrderedDict

import pytest
import torch
from torch import nn

from omnisparse.config import load_config
from omnisparse.export.format import FORMATS, ArtefactPricing, write_artefact
from omnisparse.models.layers import PrunableLinear
from omnisparse.models.transducer import Transducer
from omnisparse.sparsity.masks import GRANULARITIES, MaskBank, MaskSpec
from omnisparse.sparsity.space import SearchSpace, parse_subnet

V = 17
GRID = tuple(round(0.1 * i, 1) for i in range(10))


def tiny_model(seed: int = 0, **kw) -> Transducer:
    cfg = load_config("tiny").model
    cfg.vocab_size = V
    for k, v in kw.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    return Transducer.from_config(cfg).eval()


class OneMatrix(nn.Module):
    """The smallest 'model' the space and the writer accept: one prunable matrix, gene ``g``."""

    def __init__(self, out_f: int, in_f: int, bias: bool = False):
        super().__init__()
        self.lin = PrunableLinear(in_f, out_f, bias=bias)
        self.config = None

    def prunable_groups(self):
        return OrderedDict(g=[("lin", self.lin)])


# ---------------------------------------------------------------------- construction
def test_from_model_genes_grid_and_no_model_reference():
    model = tiny_model()
    space = SearchSpace.from_model(model, pricing=ArtefactPricing.of(model))
    assert space.genes == ("enc.0.attn", "enc.0.conv", "enc.0.ffn", "enc.1.attn", "enc.1.conv", "enc.1.ffn")
    assert space.grid == GRID and space.spec == MaskSpec()
    with_pj = SearchSpace.from_model(model, prune_pred_joiner=True, grid=[0.5, 0.0, 0.8, 0.5])
    assert with_pj.genes[-2:] == ("pred", "joiner") and with_pj.grid == (0.0, 0.5, 0.8)
    stateless = SearchSpace.from_model(tiny_model(pred_type="stateless"), prune_pred_joiner=True)
    assert stateless.genes[-1] == "joiner" and "pred" not in stateless.genes
    chosen = SearchSpace.from_model(model, genes=["joiner", "enc.1.ffn"])
    assert chosen.genes == ("joiner", "enc.1.ffn")
    with pytest.raises(ValueError, match="unknown gene"):
        SearchSpace.from_model(model, genes=["enc.7.attn"])
    for bad_grid in ([], [0.0, 1.0], [-0.1, 0.5]):
        with pytest.raises(ValueError):
            SearchSpace.from_model(model, grid=bad_grid)
    # only shapes are kept: the model can be garbage-collected while the space lives
    ref = weakref.ref(model)
    del model, with_pj, chosen
    gc.collect()
    assert ref() is None
    assert not any(isinstance(v, (torch.Tensor, nn.Module)) for v in vars(space).values())
    assert space.size_bytes(space.uniform(0.5), "fp32-sparse") > 0


def test_a_space_without_pricing_samples_but_does_not_price():
    model = tiny_model()
    space = SearchSpace.from_model(model)
    priced = SearchSpace.from_model(model, pricing=ArtefactPricing.of(model))
    assert space.genes == priced.genes and space.validate(space.uniform(0.5)) == priced.validate(priced.uniform(0.5))
    for price in (lambda: space.size_bytes(space.uniform(0.5), "fp32-sparse"), lambda: space.nonzero_params({}),
                  lambda: space.model_config):
        with pytest.raises(RuntimeError, match="no pricing"):
            price()
    with pytest.raises(ValueError, match="no prunable matrix"):  # a pricing of another model
        SearchSpace(("enc.0.ffn",), GRID, MaskSpec(), ArtefactPricing.of(OneMatrix(4, 4)))


# ---------------------------------------------------------------------- sampling
def test_sampling_validation_and_keys():
    space = SearchSpace.from_model(tiny_model(), prune_pred_joiner=True)
    genes = space.genes
    assert space.sample_max() == {g: 0.0 for g in genes}
    assert space.sample_min(0.75) == {g: 0.7 for g in genes}
    assert space.sample_min(0.9) == {g: 0.9 for g in genes}
    assert space.sample_min(0.3 - 1e-12) == {g: 0.3 for g in genes}  # float noise tolerated
    assert space.uniform(0.55) == {g: 0.55 for g in genes}  # uniform accepts off-grid values
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        c = space.sample_random(rng, s_max=0.5)
        assert list(c) == list(genes) and all(v in GRID and v <= 0.5 for v in c.values())
        seen.update(c.values())
    assert seen == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    assert space.sample_random(random.Random(3)) == space.sample_random(random.Random(3))
    assert set(space.sample_random(rng, s_max=0.0).values()) == {0.0}

    a, b = space.sample_random(rng), space.sample_random(rng)
    assert space.mutate(a, rng, 0.0) == a
    m = space.mutate(a, rng, 1.0)
    assert all(m[g] != a[g] and m[g] in GRID for g in genes)
    assert all(v <= 0.3 for v in space.mutate(a, rng, 1.0, s_max=0.3).values())
    child = space.crossover(a, b, rng)
    assert all(child[g] in (a[g], b[g]) for g in genes)

    key = space.encode(a)
    assert isinstance(key, tuple) and hash(key) is not None
    assert space.decode(key) == a
    assert space.encode({genes[0]: 0.3}) == (0.3,) + (0.0,) * (len(genes) - 1)
    assert space.encode({genes[0]: 0.1 + 0.2}) == space.encode({genes[0]: 0.3})
    with pytest.raises(ValueError):
        space.decode(key[:-1])

    assert space.validate({genes[0]: 0.5})[genes[0]] == 0.5
    with pytest.raises(ValueError, match="unknown gene"):
        space.validate({"enc.9.attn": 0.5})
    with pytest.raises(ValueError, match="not on the grid"):
        space.validate({genes[0]: 0.55})
    with pytest.raises(ValueError):
        space.validate({genes[0]: 1.0})


def test_parse_subnet(tmp_path):
    space = SearchSpace.from_model(tiny_model())
    assert parse_subnet("uniform:0.7", space) == space.uniform(0.7)
    f = tmp_path / "sub.json"
    f.write_text(json.dumps({"enc.0.attn": 0.5, "enc.1.ffn": 0.8}))
    assert parse_subnet(str(f), space) == {"enc.0.attn": 0.5, "enc.1.ffn": 0.8}
    assert parse_subnet({"enc.0.ffn": 0.2}, space) == {"enc.0.ffn": 0.2}
    f.write_text(json.dumps({"pred": 0.5}))
    for bad in ("uniform:x", "uniform:1.5", "nope.json", str(f)):
        with pytest.raises(ValueError):
            parse_subnet(bad, space)


# ---------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_nonzero_params(granularity):
    model = tiny_model(1, ctc_weight=0.3, vocab_size=24)
    spec = MaskSpec(granularity, 8)  # every dim a multiple of 8: block counts are exact
    space = SearchSpace.from_model(model, spec=spec, prune_pred_joiner=True, pricing=ArtefactPricing.of(model))
    ctc = sum(p.numel() for p in model.ctc_head.parameters())
    assert space.nonzero_params(space.sample_max()) == model.num_params() - ctc
    bank = MaskBank(model, spec, genes=list(space.genes))
    bank.refresh()
    config = space.sample_random(random.Random(1))
    bank.apply(config)
    kept = sum(int(m.mask.expand_as(m.weight).count_nonzero()) if m.mask is not None else m.weight.numel()
               for m in bank.modules.values())
    dense_prunable = sum(m.weight.numel() for m in bank.modules.values())
    assert space.nonzero_params(config) == model.num_params() - ctc - dense_prunable + kept


# ---------------------------------------------------------------------- sizes
def _tensor_bytes(path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return os.path.getsize(path) - 8 - n


@pytest.mark.parametrize("granularity,s,expected", [
    # one 16x8 weight, no bias. unstructured: N=128, s=0.5 -> nnz=64
    #   fp32-dense 16*8*4=512; fp32-sparse values 64*4 + col_idx 64*2 (I16) + row_ptr 17*4 = 452;
    #   int8-sparse 64*1 + 128 + 68 + scale 16*4 = 324
    ("unstructured", 0.5, {"fp32-dense": 512, "fp32-sparse": 452, "int8-sparse": 324}),
    # unstructured s=0.75 -> nnz=32: 32*4 + 32*2 + 68 = 260; 32 + 64 + 68 + 64 = 228
    ("unstructured", 0.75, {"fp32-dense": 512, "fp32-sparse": 260, "int8-sparse": 228}),
    # block 4: 4x2 tiles, N=8, s=0.5 -> 4 tiles: values 4*16*4 + col_idx 4*2 + row_ptr 5*4 = 284;
    #   int8: 4*16 + 8 + 20 + 64 = 156
    ("block", 0.5, {"fp32-dense": 512, "fp32-sparse": 284, "int8-sparse": 156}),
    # row: N=16, s=0.5 -> 8 rows: values 8*8*4 + rows 8*2 = 272; int8: 64 + 16 + 64 = 144
    ("row", 0.5, {"fp32-dense": 512, "fp32-sparse": 272, "int8-sparse": 144}),
    # row at s=0.0 in a sparse format: every row stored: 16*8*4 + 16*2 = 544 (> dense)
    ("row", 0.0, {"fp32-dense": 512, "fp32-sparse": 544, "int8-sparse": 128 + 32 + 64}),
])
def test_size_by_hand_one_matrix(tmp_path, granularity, s, expected):
    model = OneMatrix(16, 8)
    spec = MaskSpec(granularity, 4)
    space = SearchSpace.from_model(model, genes=["g"], spec=spec, pricing=ArtefactPricing.of(model))
    for fmt in FORMATS:
        path = tmp_path / f"{fmt}.safetensors"
        written = write_artefact(path, model, {"g": s}, fmt, spec)
        assert _tensor_bytes(path) == expected[fmt], fmt
        assert written == os.path.getsize(path) == space.size_bytes({"g": s}, fmt)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = f.read(n)
        assert n % 8 == 0 and json.loads(header)["__metadata__"]["format"] == fmt


def test_index_dtype_widens_past_32767(tmp_path):
    model = OneMatrix(2, 32768)
    spec = MaskSpec("unstructured")
    space = SearchSpace.from_model(model, genes=["g"], spec=spec, pricing=ArtefactPricing.of(model))
    path = tmp_path / "wide.safetensors"
    write_artefact(path, model, {"g": 0.5}, "fp32-sparse", spec)
    # nnz = 32768: values 4 B + col_idx I32 4 B each, row_ptr 3 * 4
    assert _tensor_bytes(path) == 32768 * 8 + 12
    assert os.path.getsize(path) == space.size_bytes({"g": 0.5}, "fp32-sparse")
    assert json.loads(open(path, "rb").read()[8:8 + struct.unpack("<Q", open(path, "rb").read(8))[0]])[
        "lin.weight.col_idx"]["dtype"] == "I32"


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_size_bytes_equals_written_file(tmp_path, granularity):
    model = tiny_model(2, ctc_weight=0.3)
    spec = MaskSpec(granularity, 3 if granularity == "block" else 8)  # 3: non-divisible tiles
    space = SearchSpace.from_model(model, spec=spec, grid=GRID + (0.95,), pricing=ArtefactPricing.of(model))
    rng = random.Random(granularity)
    configs = [space.sample_max(), space.sample_min(0.95), space.sample_random(rng),
               {"enc.1.ffn": 0.3}, space.uniform(0.37)]
    sizes = {}
    for i, config in enumerate(configs):
        for fmt in FORMATS:
            path = tmp_path / f"{i}-{fmt}.safetensors"
            written = write_artefact(path, model, config, fmt, spec)
            assert space.size_bytes(config, fmt) == os.path.getsize(path) == written, (config, fmt)
            sizes[i, fmt] = written
            if fmt == "fp32-dense":
                sizes[i, "dense-data"] = _tensor_bytes(path)
    # dense data does not depend on the config (only the header's config JSON does); sparser is
    # smaller in the sparse formats
    assert len({sizes[i, "dense-data"] for i in range(len(configs))}) == 1
    for fmt in ("fp32-sparse", "int8-sparse"):
        assert sizes[1, fmt] < sizes[0, fmt]
        assert sizes[1, "int8-sparse"] < sizes[1, "fp32-sparse"]
    with pytest.raises(ValueError):
        space.size_bytes(space.sample_max(), "fp16-dense")
    with pytest.raises(ValueError):
        space.size_bytes({"joiner": 0.5}, "fp32-sparse")  # not a gene of this space
