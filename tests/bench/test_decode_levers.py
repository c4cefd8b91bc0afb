import json

from omnisparse.config import load_config
from omnisparse.train.registry import train


def test_each_average_is_decoded_and_beam_goes_to_the_best_on_dev(load_bench, tiny_corpus, tmp_path):
    bench = load_bench("decode_levers")
    tiny_run = tmp_path / "run"
    train(load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tiny_run}", "--train.max_steps=12",
                               "--train.ckpt_every=4"]))
    out = tmp_path / "levers.json"
    assert bench.main(["--run", str(tiny_run), "--last", "2", "1", "--beam", "2", "--splits", "dev", "test-clean",
                       "--max-utts", "3", "--pred-history", "1000", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    names = list(res["results"])
    assert names[:2] == [n for n in names if n.startswith("newest")]  # the base of every ratio comes first
    assert {"mean of last 1, greedy", "mean of last 2, greedy"} <= set(names)
    best = res["best_average"]
    assert res["chosen_on"] == "dev" and res["averaged_checkpoints"] == [1, 2]
    dev = {n: res["results"][f"mean of last {n}, greedy"]["wer"]["dev"]["wer"] for n in (1, 2)}
    assert dev[best] == min(dev.values())
    assert [n for n in names if n.endswith("beam")] == [names[1], f"mean of last {best}, beam"]
    wide = res["results"][f"mean of last {best}, greedy, history 1000"]
    plain = res["results"][f"mean of last {best}, greedy"]
    assert wide["pred_history"] == 1000  # a window longer than any hypothesis: the same WER
    assert all(wide["wer"][s]["wer"] == plain["wer"][s]["wer"] for s in ("dev", "test-clean"))
    assert out.with_suffix(".png").stat().st_size > 0


def test_max_symbols_rows_and_no_beam(load_bench, tiny_corpus, tmp_path):
    """--max-symbols K decodes the best average greedily with at most K tokens per frame; --beam 0 leaves
    out the beam rows; a chatty model (blank suppressed) loses tokens at K=1."""
    bench = load_bench("decode_levers")
    tiny_run = tmp_path / "run"
    train(load_config("tiny", [f"--data.corpus_dir={tiny_corpus}", f"--train.out_dir={tiny_run}", "--train.max_steps=4",
                               "--train.ckpt_every=4"]))
    out = tmp_path / "levers.json"
    assert bench.main(["--run", str(tiny_run), "--last", "1", "--beam", "0", "--splits", "dev", "--max-utts", "2",
                       "--max-symbols", "1", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert not [n for n in res if "beam" in n]
    assert res["mean of last 1, greedy, max symbols 1"]["max_symbols_per_frame"] == 1
    assert res["mean of last 1, greedy, max symbols 3"]["max_symbols_per_frame"] == 3
    assert next(iter(res.values()))["max_symbols_per_frame"] == 4
