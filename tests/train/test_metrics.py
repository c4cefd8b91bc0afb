"""``RUN/metrics.csv`` written by MetricLogger and its dev-WER curve read back (read_dev_curve)."""

from __future__ import annotations

from omnisparse.train.metrics import MetricLogger, read_dev_curve


def _log_run(run_dir):
    log = MetricLogger(run_dir, tensorboard=False)
    log.log(10, epoch=0, wall_s=1.5, loss=3.2)
    log.log(20, wall_s=3.0, dev_wer=0.9)  # a validation row: the columns grow
    log.log(30, epoch=0, wall_s=4.5, loss=2.1)
    log.log(40, wall_s=6.25, dev_wer=0.7, dev_wer_s0_5=0.8)
    log.close()


def test_dev_curve_reads_back_what_the_logger_wrote(tmp_path):
    _log_run(tmp_path)
    assert read_dev_curve(tmp_path) == [{"step": 20, "wall_s": 3.0, "dev_wer": 0.9},
                                        {"step": 40, "wall_s": 6.25, "dev_wer": 0.7}]
    assert not (tmp_path / "tb").exists()


def test_dev_curve_stops_at_max_step_included(tmp_path):
    _log_run(tmp_path)
    assert [c["step"] for c in read_dev_curve(tmp_path, max_step=40)] == [20, 40]
    assert [c["step"] for c in read_dev_curve(tmp_path, max_step=39)] == [20]
    assert read_dev_curve(tmp_path, max_step=10) == []


def test_dev_curve_after_a_resume_truncation(tmp_path):
    _log_run(tmp_path)
    log = MetricLogger(tmp_path, tensorboard=False)  # a resumed run: rows after its checkpoint dropped
    log.truncate_after(30)
    log.log(40, wall_s=6.0, dev_wer=0.75)
    log.close()
    assert read_dev_curve(tmp_path) == [{"step": 20, "wall_s": 3.0, "dev_wer": 0.9},
                                        {"step": 40, "wall_s": 6.0, "dev_wer": 0.75}]
