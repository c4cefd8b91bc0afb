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

from omnisparse.export.format import FORMATS, ArtefactPricing
from omnisparse.export.writer import write_artefact
from omnisparse.models.layers import PrunableLinear
from omnisparse.sparsity.masks import GRANULARITIES, MaskBank, MaskSpec, kept_count
from omnisparse.sparsity.space import SearchSpace, parse_subnet
from omnisparse.testing.dummies import tiny_model

GRID = tuple(round(0.1 * i, 1) for i in range(10))


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
def _header(path) -> tuple[int, dict]:
    """``(header length, header JSON)`` of an artefact."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def _tensor_bytes(path) -> int:
    return os.path.getsize(path) - 8 - _header(path)[0]


@pytest.mark.parametrize("granularity,s,expected", [
    # one 16x8 weight, no bias. The sparse formats store the smaller of the dense layout (fp32 16*8*4 =
    # 512, int8 16*8 = 128, + scale 16*4 = 64 in int8) and the sparse one; ties dense.
    # unstructured: N=128, s=0.5 -> nnz=64: fp32-sparse values 64*4 + col_idx 64*2 (I16) + row_ptr
    #   17*4 = 452 < 512; int8 64*1 + 128 + 68 = 260 > 128 -> dense 128 + 64 = 192
    ("unstructured", 0.5, {"fp32-dense": 512, "fp32-sparse": 452, "int8-sparse": 192}),
    # unstructured s=0.75 -> nnz=32: 32*4 + 32*2 + 68 = 260 < 512; int8 32 + 64 + 68 = 164 > 128 -> 192
    ("unstructured", 0.75, {"fp32-dense": 512, "fp32-sparse": 260, "int8-sparse": 192}),
    # unstructured s=0.9 -> nnz=round(12.8)=13: 13*4 + 13*2 + 68 = 146; int8 13 + 26 + 68 = 107 < 128
    #   -> sparse 107 + 64 = 171
    ("unstructured", 0.9, {"fp32-dense": 512, "fp32-sparse": 146, "int8-sparse": 171}),
    # block 4: 4x2 tiles, N=8, s=0.5 -> 4 tiles: values 4*16*4 + col_idx 4*2 + row_ptr 5*4 = 284 < 512;
    #   int8: 4*16 + 8 + 20 = 92 < 128 -> 92 + 64 = 156
    ("block", 0.5, {"fp32-dense": 512, "fp32-sparse": 284, "int8-sparse": 156}),
    # row: N=16, s=0.5 -> 8 rows: values 8*8*4 + rows 8*2 = 272 < 512; int8: 64 + 16 = 80 < 128 -> 144
    ("row", 0.5, {"fp32-dense": 512, "fp32-sparse": 272, "int8-sparse": 144}),
    # row at s=0.0: every row: 16*8*4 + 16*2 = 544 > 512 and 128 + 32 = 160 > 128: dense, 512 / 128 + 64
    ("row", 0.0, {"fp32-dense": 512, "fp32-sparse": 512, "int8-sparse": 128 + 64}),
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
        n, header = _header(path)
        assert n % 8 == 0 and header["__metadata__"]["format"] == fmt


@pytest.mark.parametrize("granularity,fmt,k_switch", [
    # one 16x8 weight; the int8 scale (16*4) is in both layouts, so it does not move the switch.
    # unstructured: sparse = nnz*(v + 2) (values + I16 col_idx) + row_ptr 17*4, dense = 128*v
    ("unstructured", "int8-sparse", 20),  # 3*nnz + 68 >= 128 from nnz = 20 (a tie: dense)
    ("unstructured", "fp32-sparse", 74),  # 6*nnz + 68 >= 512 from nnz = 74 (a tie: dense)
    # row: sparse = k*(8v + 2) (kept rows + I16 row index), dense = 16*8*v
    ("row", "int8-sparse", 13),           # 10k >= 128 from k = 13 (12.8)
    ("row", "fp32-sparse", 16),           # 34k >= 512 from k = 16 (15.06): only s = 0 is dense
])
def test_layout_switches_where_the_byte_counts_cross(tmp_path, granularity, fmt, k_switch):
    out_f, in_f = 16, 8
    v = 1 if fmt == "int8-sparse" else 4
    dense_bytes = out_f * in_f * v

    def sparse_bytes(k: int) -> int:
        return k * (v + 2) + 4 * (out_f + 1) if granularity == "unstructured" else k * (in_f * v + 2)

    assert sparse_bytes(k_switch - 1) < dense_bytes <= sparse_bytes(k_switch)  # the hand values cross here
    n = out_f * in_f if granularity == "unstructured" else out_f
    scale = {"lin.weight.scale"} if fmt == "int8-sparse" else set()
    model = OneMatrix(out_f, in_f)
    spec = MaskSpec(granularity)
    space = SearchSpace.from_model(model, genes=["g"], spec=spec, pricing=ArtefactPricing.of(model))
    # the largest sparsity still dense (k_switch kept), and the next one up, which is sparse
    for k, dense in ((k_switch, True), (k_switch - 1, False)):
        s = 1 - k / n
        assert kept_count(n, s) == k
        path = tmp_path / f"{k}.safetensors"
        written = write_artefact(path, model, {"g": s}, fmt, spec)
        names = set(_header(path)[1]) - {"__metadata__"}
        if dense:
            assert names == {"lin.weight.dense"} | scale
        else:
            assert "lin.weight.values" in names and "lin.weight.dense" not in names and scale <= names
        assert _tensor_bytes(path) == (dense_bytes if dense else sparse_bytes(k)) + 4 * out_f * len(scale)
        assert written == os.path.getsize(path) == space.size_bytes({"g": s}, fmt)


def test_index_dtype_widens_past_32767(tmp_path):
    model = OneMatrix(2, 32768)
    spec = MaskSpec("unstructured")
    space = SearchSpace.from_model(model, genes=["g"], spec=spec, pricing=ArtefactPricing.of(model))
    path = tmp_path / "wide.safetensors"
    write_artefact(path, model, {"g": 0.75}, "fp32-sparse", spec)
    # nnz = 16384: values 4 B + col_idx I32 4 B each, row_ptr 3 * 4 = 131084 < dense 2*32768*4 = 262144
    # (at 0.5, 32768 * 8 + 12 = 262156 would lose to the dense layout)
    assert _tensor_bytes(path) == 16384 * 8 + 12
    assert os.path.getsize(path) == space.size_bytes({"g": 0.75}, "fp32-sparse")
    assert _header(path)[1]["lin.weight.col_idx"]["dtype"] == "I32"


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
    # at sparsity 0 (sample_max) fp32-sparse stores every matrix dense: the same data as fp32-dense
    assert _tensor_bytes(tmp_path / "0-fp32-sparse.safetensors") == sizes[0, "dense-data"]
    for fmt in ("fp32-sparse", "int8-sparse"):
        assert sizes[1, fmt] < sizes[0, fmt]
        assert sizes[1, "int8-sparse"] < sizes[1, "fp32-sparse"]
    with pytest.raises(ValueError):
        space.size_bytes(space.sample_max(), "fp16-dense")
    with pytest.raises(ValueError):
        space.size_bytes({"joiner": 0.5}, "fp32-sparse")  # not a gene of this space
