"""`gic bench train` on tiny generated data: it runs both pipelines and prints every column.

No timed assertions: speed is a figure the benchmark prints, not something a test can pin on a
shared machine.
"""

import pytest
from click.testing import CliRunner

from gic.bench import forward_flops_per_image, phase_flops, train_flops_per_image
from gic.cost import conv_macs as vgg16_conv_macs
from gic.cli import main


def test_vgg16_flops_match_the_published_count_at_224_px():
    # VGG16's conv layers at 224 px: 15.35 GMACs (the usual "15.5 GFLOPs" counts MACs, FC included)
    assert sum(vgg16_conv_macs(224)) == pytest.approx(15.35e9, rel=0.005)
    assert len(vgg16_conv_macs(180)) == 13
    fwd = forward_flops_per_image(180)
    assert train_flops_per_image(180, 0) < 1.01 * fwd  # frozen base: forward plus the head's backward
    assert fwd < train_flops_per_image(180, 3) < 1.2 * fwd  # block5 is small at 180 px (11 x 11)
    # the feature cache: one forward per image, whatever the epoch count
    assert phase_flops("features", 180, 30, 100, 20) < 1.01 * 120 * fwd
    assert phase_flops("images", 180, 30, 100, 20) > 29 * 120 * fwd


@pytest.mark.slow
def test_bench_train_prints_every_column_for_every_phase(synth_dir):
    result = CliRunner().invoke(main, ["bench", "train", "--data", str(synth_dir), "--size", "32", "--epochs", "1",
                                       "--weights", "none", "--precision", "fp32", "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    for column in ("img/s", "vs seed", "peak RSS", "GPU peak", "TFLOP/s", "% peak", "test acc", "wall s"):
        assert column in out
    for label in ("phase 1, no aug ", "phase 1, no aug (warm)", "phase 1, aug", "phase 2"):
        assert label in out
    rows = [line for line in out.splitlines() if line.startswith("phase ") and "pipeline" not in line]
    assert len(rows) == 7  # 4 trainer rows, 3 seed rows (warm is the trainer's alone)
    assert sum("seed fp32" in r for r in rows) == 3 and all(r.split()[-1].replace(".", "").isdigit() for r in rows)
    trainer_rows = [r for r in rows if "trainer fp32" in r]
    assert all("x" in r.split("MB")[0] for r in trainer_rows)  # a ratio to the seed on every trainer row
    assert "device:" in out


def test_bench_train_names_a_missing_split(tmp_path):
    (tmp_path / "train").mkdir()
    result = CliRunner().invoke(main, ["bench", "train", "--data", str(tmp_path), "--size", "32"])
    assert result.exit_code == 2
    assert "validation: missing" in result.output
