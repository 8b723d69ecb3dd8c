"""`python -m specexit_jax.decode`: its output matches `generate`, its text streams, and every user
error is one `error:` line with status 2.

The runs that generate start as subprocesses at once (each pays for importing JAX and compiling),
and the in-process references are computed while they run.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from specexit_jax import checkpoint, decode, draft, model
from specexit_jax.config import ModelConfig
from specexit_jax.demo.tokenizer_build import build_tokenizer, vocabulary
from specexit_jax.draft import DraftConfig
from specexit_jax.exit import ExitConfig
from specexit_jax.engine import generate
from specexit_jax.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW = 24
# Two id prompts of different lengths (one opens <think>, id 5 in the demo vocabulary).
ID_PROMPTS = [[2, 40, 9, 41, 5, 8] + list(range(20, 34)), [2, 60, 61, 62, 63] + list(range(40, 62))]
QUESTIONS = ["compute 12+7*3 left to right mod 100", "compute 5-9 left to right mod 100"]


def _cfg() -> ModelConfig:
    return ModelConfig(
        vocab_size=len(vocabulary()),
        hidden_size=64,
        intermediate_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        qk_norm=True,
        rope_theta=1e4,
        max_position_embeddings=256,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Checkpoints: a target with the demo tokenizer, the same without it, and a draft."""
    root = tmp_path_factory.mktemp("decode_cli")
    cfg = _cfg()
    params = model.init_params(cfg, jax.random.key(0), scale=0.2)
    dcfg = DraftConfig.for_target(cfg)
    dparams = draft.init_params(dcfg, jax.random.key(1), scale=0.2)
    build_tokenizer(root / "tok")
    checkpoint.save_checkpoint(root / "target", cfg, params, extra_files=sorted((root / "tok").iterdir()))
    checkpoint.save_checkpoint(root / "bare", cfg, params)
    checkpoint.save_checkpoint(root / "draft", dcfg, dparams)
    return {
        "root": root,
        "target": (cfg, params),
        "draft": (dcfg, dparams),
        "tok": Tokenizer(root / "target"),
    }


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "specexit_jax.decode", *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(world):
    """The CLI runs that generate, started together; each test waits for its own."""
    r = world["root"]
    ids = [a for p in ID_PROMPTS for a in ("--prompt-ids", ",".join(map(str, p)))]
    common = ["--target", r / "target", "--max-new-tokens", MAX_NEW]
    procs = {
        "ar": _start(*common, "--mode", "ar", "--json", *ids),
        "spec": _start(
            *common, "--draft", r / "draft", "--mode", "spec", "--num-draft-tokens", 3, "--json", *ids
        ),
        "text": _start(*common, "--mode", "ar", *[a for q in QUESTIONS for a in ("--prompt", q)]),
    }
    yield procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()


def _reference(world, prompts, mode: str, K: int = 4) -> list[list[int]]:
    """`generate` in process, with the settings the CLI takes from the tokenizer."""
    tok = world["tok"]
    ex = ExitConfig(
        think_start_id=tok.think_start_id, think_end_id=tok.think_end_id, step_split_ids=tok.step_split_ids
    )
    return generate(
        world["target"],
        world["draft"] if mode != "ar" else None,
        prompts,
        max_new_tokens=MAX_NEW,
        mode=mode,
        exit=ex,
        num_draft_tokens=K,
        eos_ids=tok.eos_ids,
    ).tokens


@pytest.mark.parametrize("mode", ["ar", "spec"])
def test_json_tokens_equal_generate(world, runs, mode):
    want = _reference(world, ID_PROMPTS, mode, K=3)
    rc, out, err = _finish(runs[mode])
    assert rc == 0, err
    res = json.loads(out)  # the whole of stdout is one JSON object
    assert res["mode"] == mode
    assert res["tokens"] == want
    assert [s["new_tokens"] for s in res["stats"]] == [len(t) for t in want]
    assert res["text"] == [world["tok"].decode(t) for t in want]
    assert res["timing"]["decode_s"] > 0
    if mode == "spec":
        assert all(len(s["accepted_per_position"]) == 3 for s in res["stats"])


def test_prompt_text_streams_to_stdout(world, runs):
    tok = world["tok"]
    want = _reference(world, [tok.chat_prompt(q) for q in QUESTIONS], "ar")
    rc, out, err = _finish(runs["text"])
    assert rc == 0, err
    shown = [tok.decode([t for t in row if t not in tok.eos_ids]) for row in want]
    assert out == f"--- [0] ---\n{shown[0]}\n--- [1] ---\n{shown[1]}\n"
    summary = err.strip().splitlines()
    assert [line.split()[:3] for line in summary] == [[f"[{b}]", str(len(want[b])), "new"] for b in (0, 1)]


class _BytesTokenizer:
    """Ids are UTF-8 bytes: most characters here take several tokens."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_stream_holds_back_incomplete_characters():
    text = "naïve → ✓ 𝔼[x] done"
    out = io.StringIO()
    writes = []
    out.write = lambda s: writes.append(s)  # type: ignore[method-assign]
    stream = decode._TextStream(_BytesTokenizer(), out)
    for b in text.encode():
        stream.push([b])
    stream.close()
    assert "".join(writes) == text + "\n"
    assert not any("\ufffd" in w for w in writes)
    assert len(writes) > 10  # written as it came, not at the end


def test_missing_target_is_one_error_line():
    rc, out, err = _finish(_start("--target", "/nonexistent/ckpt", "--prompt-ids", "1,2"))
    assert (rc, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "/nonexistent/ckpt" in err


def _bad_inputs(root: Path) -> dict[str, list]:
    (root / "corrupt").mkdir(exist_ok=True)
    (root / "corrupt" / "config.json").write_text("{not json")
    # A draft made for a wider target: only its config is read before the mismatch is reported.
    wide = DraftConfig.for_target(ModelConfig(**{**_cfg().to_dict(), "hidden_size": 96}))
    (root / "wide").mkdir(exist_ok=True)
    (root / "wide" / "config.json").write_text(
        json.dumps({"kind": "draft", "config": wide.to_dict(), "format_version": checkpoint.FORMAT_VERSION})
    )
    t, bare, d = root / "target", root / "bare", root / "draft"
    return {
        "corrupt config.json": ["--target", root / "corrupt", "--prompt-ids", "1"],
        "--prompt without tokenizer": ["--target", bare, "--prompt", "hello"],
        "id out of vocab": ["--target", t, "--prompt-ids", f"1,{len(vocabulary())}"],
        "spec without draft": ["--target", t, "--mode", "spec", "--prompt-ids", "1"],
        "max-new-tokens 0": ["--target", t, "--max-new-tokens", "0", "--prompt-ids", "1"],
        "specexit without markers": [
            "--target",
            bare,
            "--draft",
            d,
            "--mode",
            "specexit",
            "--prompt-ids",
            "1",
        ],
        "draft for another target": [
            "--target",
            t,
            "--draft",
            root / "wide",
            "--mode",
            "spec",
            "--prompt-ids",
            "1",
        ],
        "target given as draft": ["--target", t, "--draft", t, "--mode", "spec", "--prompt-ids", "1"],
        "prompt longer than the cache": ["--target", t, "--prompt-ids", ",".join(["1"] * 250)],
        "marker id out of vocab": ["--target", bare, "--think-end-id", "999", "--prompt-ids", "1"],
        "unknown flag": ["--target", t, "--prompt-ids", "1", "--frobnicate"],
        "bad id list": ["--target", t, "--prompt-ids", "1,x"],
        "surprise veto out of range": [
            "--target", t, "--draft", d, "--mode", "specexit", "--exit-surprise", "1.5", "--prompt-ids", "1",
        ],
    }


def test_bad_inputs_are_one_error_line(world, capsys):
    for name, argv in _bad_inputs(world["root"]).items():
        rc = decode.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert rc == 2, name
        assert out == "", name
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)


def test_help_describes_every_flag():
    rc, out, err = _finish(_start("--help"))
    assert rc == 0 and err == ""
    documented = {s for a in decode.build_parser()._actions for s in a.option_strings}
    promised = (
        "--target --draft --mode --prompt --prompt-ids --max-new-tokens --temperature --top-k --top-p "
        "--seed --num-draft-tokens --json --think-start-id --think-end-id --step-split-ids --eos-ids "
        "--exit-confidence --exit-progress --exit-remain --ewma --exit-signals --smoothing --exit-surprise "
        "--min-think-tokens --max-think-tokens --continue-below-min --closing-text --record-signals"
    ).split()
    assert set(promised) <= documented
    for flag in documented:
        assert flag in out
    for a in decode.build_parser()._actions:
        assert a.help, a.option_strings


def test_exit_policy_defaults_to_the_demo_tuning_only_for_the_demo():
    from specexit_jax.demo import EXIT

    parse = decode.build_parser().parse_args
    assert decode._exit_policy(parse([]), demo=True) == EXIT
    assert decode._exit_policy(parse([]), demo=False) == {"smoothing": "ewma", "confidence": 0.8, "surprise": None}
    given = parse(["--smoothing", "window", "--exit-confidence", "0.7", "--exit-surprise", "0"])
    assert decode._exit_policy(given, demo=True) == {"smoothing": "window", "confidence": 0.7, "surprise": None}
    assert decode._exit_policy(parse(["--exit-surprise", "0.1"]), demo=False)["surprise"] == 0.1
