"""tools/plot_signals.py renders a recorded SpecExit trace as HTML (one span per token, coloured
by its smoothed signal, the exit marked) and as a PNG."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_plot_signals_renders_a_decoded_trace(tmp_path):
    trace = tmp_path / "trace.json"
    proc = _run("-m", "specexit_jax.decode", "--json", "--record-signals", "--max-new-tokens", "300")
    assert proc.returncode == 0, proc.stderr[-2000:]
    trace.write_text(proc.stdout)
    out = json.loads(proc.stdout)
    stats, tokens = out["stats"][0], out["tokens"][0]
    assert len(stats["signals"]["smoothed"]) == len(tokens)

    from specexit_jax.demo import demo_checkpoints

    target, _ = demo_checkpoints()
    html, png = tmp_path / "t.html", tmp_path / "t.png"
    proc = _run("tools/plot_signals.py", "--trace", str(trace), "--tokenizer", str(target),
                "--html", str(html), "--png", str(png), "--signal", "progress")
    assert proc.returncode == 0, proc.stderr
    page = html.read_text()
    assert page.count('title="progress=') == len(tokens)
    if stats["exit_reason"] == "signal":
        assert page.count("outline:2px solid red") == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_signals_rejects_a_trace_without_signals(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tokens": [[1, 2]], "stats": [{"new_tokens": 2}]}))
    proc = _run("tools/plot_signals.py", "--trace", str(bad), "--html", str(tmp_path / "x.html"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
