"""`gic bench train` on tiny generated data: every phase of both pipelines in its own process,
repeated, with the trainer's ceiling beside it; its timeout; the CPU peak from /proc/cpuinfo.

No timed assertions: speed is a figure the benchmark prints, not something a test can pin on a
shared machine.
"""

import sys

import pytest
from click.testing import CliRunner

import gic.bench as bench
from gic.bench import (BenchRunFailed, Figure, cpu_peak, forward_flops_per_image, phase_flops, run_job,
                       train_flops_per_image)
from gic.cli import main
from gic.cost import conv_macs as vgg16_conv_macs

TINY = ["--size", "32", "--epochs", "1", "--weights", "none", "--threads", "1", "--precision", "fp32"]


def test_vgg16_flops_match_the_published_count_at_224_px():
    # VGG16's conv layers at 224 px: 15.35 GMACs (the usual "15.5 GFLOPs" counts MACs, FC included)
    assert sum(vgg16_conv_macs(224)) == pytest.approx(15.35e9, rel=0.005)
    assert len(vgg16_conv_macs(180)) == 13
    fwd = forward_flops_per_image(180)
    assert train_flops_per_image(180, 0) < 1.01 * fwd  # frozen base: forward plus the head's backward
    assert fwd < train_flops_per_image(180, 3) < 1.2 * fwd  # block5 is small at 180 px (11 x 11)
    # the feature cache: one forward per image, whatever the epoch count
    assert phase_flops("p1", "trainer", 180, 30, 100, 20) < 1.01 * 120 * fwd
    assert phase_flops("p1", "seed", 180, 30, 100, 20) > 29 * 120 * fwd
    # the ceiling is the trainer's arithmetic less its per-epoch validation
    for phase in ("p1", "p1aug", "phase2"):
        assert phase_flops(phase, "ceiling", 128, 3, 282, 70) < phase_flops(phase, "trainer", 128, 3, 282, 70)
    # phase 2 validating on the cached lower convs does less arithmetic than on the whole model
    assert phase_flops("phase2", "trainer", 128, 3, 282, 70) < phase_flops("phase2", "trainer", 128, 3, 282, 70,
                                                                            lower_cached=False)


SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC
cpu MHz\t\t: 2596.138
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni
"""
COOPER_LAKE = ZEN4.replace("AuthenticAMD", "GenuineIntel").replace("cpu family\t: 25", "cpu family\t: 6")
HASWELL = """vendor_id\t: GenuineIntel
cpu family\t: 6
cpu MHz\t\t: 2300.000
flags\t\t: fpu sse avx avx2 fma
"""


def test_cpu_peak_from_the_flags_and_the_clock():
    amx = cpu_peak(SAPPHIRE_RAPIDS, "bf16", cores=4)
    assert amx.flops == pytest.approx(4 * 2.0e9 * 1024) and "AMX-BF16" in amx.how and "cpuinfo MHz" in amx.how
    assert cpu_peak(SAPPHIRE_RAPIDS, "fp32", cores=4).flops == pytest.approx(4 * 2.0e9 * 64)  # AMX is bf16 alone
    assert cpu_peak(COOPER_LAKE, "bf16", cores=2).flops == pytest.approx(2 * 2.596138e9 * 128)
    zen4 = cpu_peak(ZEN4, "bf16", cores=2)  # 512-bit ops on 256-bit units: half Intel's per-cycle figures
    assert zen4.flops == pytest.approx(2 * 2.596138e9 * 64) and "AVX512-BF16" in zen4.how and "Zen 4" in zen4.how
    assert cpu_peak(ZEN4, "fp32", cores=2).flops == pytest.approx(2 * 2.596138e9 * 32)
    for precision in ("bf16", "fp32", "fp16"):  # AVX2 only: no bf16 unit, fp32 FMA for everything
        peak = cpu_peak(HASWELL, precision, cores=1)
        assert peak.flops == pytest.approx(2.3e9 * 32) and "AVX2 FMA" in peak.how
    # the clock: --cpu-ghz, else cpufreq's max, else cpuinfo's MHz
    assert cpu_peak(HASWELL, "fp32", 1, max_khz=3_500_000).flops == pytest.approx(3.5e9 * 32)
    assert "cpufreq max" in cpu_peak(HASWELL, "fp32", 1, max_khz=3_500_000).how
    assert cpu_peak(HASWELL, "fp32", 1, max_khz=3_500_000, ghz=3.0).flops == pytest.approx(3.0e9 * 32)
    assert cpu_peak("flags\t: fpu sse sse2\n", "fp32", 1) is None  # no FMA unit we know
    assert cpu_peak("flags\t: avx2 fma\n", "fp32", 1) is None  # no clock


def test_figures_print_median_spread_and_nothing_for_no_value():
    assert Figure((3.0, 1.0, 2.0)).text() == "2.0 ±1.0"
    assert Figure((0.5,)).text(".3f") == "0.500"
    assert Figure(()).text() == "-"


@pytest.fixture(scope="module")
def bench_run(synth_dir):
    """One real `gic bench train` (2 repeats of the trainer, 1 of the seed), and the rows it printed."""
    seen = {}
    table = bench.format_table

    def keep(rows, meta, *args):
        seen.update(rows=rows, meta=meta)
        return table(rows, meta, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "format_table", keep)
        result = CliRunner().invoke(main, ["bench", "train", "--data", str(synth_dir), *TINY, "--repeats", "2"])
    assert result.exit_code == 0, result.output
    return result.output, seen["rows"], seen["meta"]


def _table_rows(out):
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("phase ")) + 2  # the header, the rule
    return lines[first:lines.index("", first)]


def test_bench_train_prints_every_column_for_every_phase_pipeline_and_ceiling(bench_run):
    out, rows, _ = bench_run
    header = next(line for line in out.splitlines() if line.startswith("phase "))
    for column in ("n", "img/s", "% ceiling", "% ceil CPU", "vs seed", "peak RSS MB", "TFLOP/s", "% peak", "test acc", "wall s"):
        assert column in header
    printed = _table_rows(out)
    kinds = [(r.phase, r.impl) for r in rows]
    assert kinds == [("p1", "trainer"), ("p1", "ceiling"), ("p1", "seed"), ("p1_warm", "trainer"),
                     ("p1_warm", "ceiling"), ("p1aug", "trainer"), ("p1aug", "ceiling"), ("p1aug", "seed"),
                     ("phase2", "trainer"), ("phase2", "ceiling"), ("phase2", "seed")]
    assert len(printed) == len(rows)
    for line, row in zip(printed, rows):
        cells = line[24:].split()  # after the phase label
        assert cells[0] == row.impl and cells[1] == "fp32"
        n = 1 if row.impl == "seed" else 2
        assert cells[2] == str(n)  # the repeat count on every row
        assert len(row.runs) == n
        if row.impl == "trainer":  # % of its ceiling and the ratio to the seed on every trainer row
            assert "x" in line and row.ratio > 0
            assert row.figure("ceiling_fraction").n == 2 and row.figure("ceiling_cpu_fraction").n == 2
        if row.impl != "ceiling":  # its own memory and test accuracy
            assert row.figure("rss_peak_mb").n == n and row.figure("test_accuracy").n == n
        assert row.figure("tflops").n == n and row.figure("peak_fraction").n == n  # the CPU peak is known
    assert "device:" in out and "cpu flags:" in out and "peak fp32:" in out
    assert "goal >= 85%" in out


def test_bench_train_prints_spreads_of_the_repeats(bench_run):
    out, rows, _ = bench_run
    for line, row in zip(_table_rows(out), rows):
        if row.impl == "trainer":  # img/s, both % ceiling, memory, TFLOP/s, % peak, test acc, wall: each with ±
            assert line.count("±") == 8, line
        elif row.impl == "ceiling":  # img/s, TFLOP/s, % peak, wall
            assert line.count("±") == 4, line
        elif row.impl == "seed":  # one run: no spread
            assert "±" not in line
    assert "median ± half the range" in out


def test_each_phase_has_its_own_test_accuracy(bench_run):
    # each phase ran in its own process and was tested on its own best epoch: no row copies another's
    _, rows, _ = bench_run
    by = {(r.phase, r.impl): r for r in rows}
    for impl, phases in (("trainer", ("p1", "p1aug", "phase2")), ("seed", ("p1", "p1aug", "phase2"))):
        for i in range(len(by[("p1", impl)].runs)):
            losses = [by[(phase, impl)].runs[i]["test_loss"] for phase in phases]
            assert len(set(losses)) == 3, (impl, losses)
    assert all(r.figure("test_accuracy").n == 0 for r in rows if r.impl == "ceiling")


def test_a_run_past_the_timeout_is_one_error_line_naming_it(synth_dir):
    result = CliRunner().invoke(main, ["bench", "train", "--data", str(synth_dir), *TINY, "--timeout", "1"])
    assert result.exit_code == 2
    assert "error: benchmark run 'trainer phase 1, no aug' (repeat 1 of 3) did not finish within --timeout 1 s" \
        in result.output
    assert "Traceback" not in result.output


def test_a_failed_run_names_itself_and_exits_1(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(BenchRunFailed, match=r"benchmark run 'seed phase 2' failed \(exit 1\)"):
        run_job({"impl": "seed"}, "'seed phase 2'", timeout=10)


def test_bench_train_names_a_missing_split_and_a_bad_override(synth_dir, tmp_path):
    (tmp_path / "train").mkdir()
    result = CliRunner().invoke(main, ["bench", "train", "--data", str(tmp_path), "--size", "32"])
    assert result.exit_code == 2
    assert "validation: missing" in result.output
    result = CliRunner().invoke(main, ["bench", "train", "--data", str(synth_dir), "--set", "phase1.epoch=2"])
    assert result.exit_code == 2 and "phase1.epochs" in result.output and "Traceback" not in result.output


def test_sigterm_stops_the_run_under_way_and_leaves_no_temporary_folder(synth_dir, tmp_path):
    import os
    import subprocess
    import time

    import psutil

    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "gic.cli", "bench", "train", "--data", str(synth_dir), *TINY],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while not parent.children() and time.monotonic() < deadline:  # the first run has started
        time.sleep(0.1)
    runs = parent.children()
    assert runs and list(tmp_path.glob("gic-bench-*"))
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in out
    gone, alive = psutil.wait_procs(runs, timeout=10)
    assert not alive  # the run in its own session went too
    assert not list(tmp_path.glob("gic-bench-*"))
