"""Generate from the command line: plain, speculative (EAGLE-3) or speculative-exit decoding.

    python -m specexit_jax.decode                                  # bundled demo model, demo question
    python -m specexit_jax.decode --target CKPT --draft DRAFT --prompt "What is 17*23?"
    python -m specexit_jax.decode --target CKPT --mode ar --prompt-ids 1,2,3 --prompt-ids 4,5 --json

Text output: the generated text of the first prompt streams to stdout as it is produced (the
other prompts of a batch follow when generation ends), then one summary line per prompt goes to
stderr. `--json`: one JSON object on stdout and nothing else,

    {"tokens": [[ids...], ...], "stats": [{...}, ...], "text": [...], "timing": {...}, "mode": "..."}

with `text` only when the target folder holds a tokenizer. `stats` are `GenerateResult.stats`.

The tokenizer is read from the target checkpoint folder when it holds one: `--prompt` is then
wrapped in its chat template (thinking on), and the thinking markers and end-of-sequence ids come
from it unless given as flags. Without a tokenizer, prompts are given as ids (`--prompt-ids`), and
`specexit` / `budget` need `--think-end-id` and `--step-split-ids`.

Timing: `decode_s` includes compiling the decode loop on first use. `steady_tokens_per_s` counts
only what follows the first streamed chunk of decoding (compilation excluded).

Every error a user can cause ends the program with one line `error: ...` on stderr and status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

MODES = ("ar", "spec", "specexit", "budget", "deer")
SIGNALS = ("confidence", "progress", "remain")
STREAM_EVERY = 8  # rounds between two streamed chunks


# ----------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    """Bad flags are a `ValueError`, reported by `main` as one line."""

    def error(self, message: str):
        raise ValueError(f"{message} (see --help)")


def _int(lo: int | None = None):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None


def _ids(s: str) -> tuple[int, ...]:
    """`"1,2,3"` -> `(1, 2, 3)`."""
    parts = [p.strip() for p in s.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {s!r}")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {s!r}") from None


def _names(s: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in s.split(",") if p.strip())
    bad = [n for n in names if n not in SIGNALS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(SIGNALS)}, got {s!r}"
        )
    return names


class _AppendPrompt(argparse.Action):
    """`--prompt` and `--prompt-ids` append `(kind, value)` to one list, keeping their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        prompts = list(getattr(namespace, self.dest) or [])
        prompts.append((self.const, values))
        setattr(namespace, self.dest, prompts)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m specexit_jax.decode",
        description="Generate with a specexit_jax target checkpoint, optionally with an EAGLE-3 "
        "draft (speculative decoding) and its exit signals (speculative exit). Without --target, "
        "runs the bundled demo model on a demo question.",
    )
    g = p.add_argument_group("models")
    g.add_argument(
        "--target", metavar="CKPT", help="target checkpoint folder (default: the bundled demo model)"
    )
    g.add_argument(
        "--draft", metavar="CKPT", help="draft checkpoint folder (default with the demo: its draft)"
    )
    g.add_argument(
        "--mode",
        choices=MODES,
        help="ar: plain decoding; spec: speculative decoding (needs --draft); specexit: spec plus "
        "the exit policy; budget: thinking budgets only (with the draft when given); deer: the "
        "answer-probing baseline (trial answer at each step boundary). Default: "
        "specexit when the draft has signal heads and the thinking markers are known, spec with "
        "another draft, ar without one",
    )

    g = p.add_argument_group("prompts (repeat for a batch)")
    g.add_argument(
        "--prompt",
        dest="prompts",
        action=_AppendPrompt,
        const="text",
        metavar="TEXT",
        help="a question, wrapped in the tokenizer's chat template with thinking on "
        "(needs a tokenizer in the target folder)",
    )
    g.add_argument(
        "--prompt-ids",
        dest="prompts",
        action=_AppendPrompt,
        const="ids",
        type=_ids,
        metavar="ID,ID,...",
        help="a prompt given as token ids, used as is",
    )

    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-new-tokens",
        type=_int(1),
        default=256,
        metavar="N",
        help="tokens to generate at most per prompt (default 256)",
    )
    g.add_argument("--temperature", type=_float, default=0.0, metavar="T", help="0 is greedy (default 0)")
    g.add_argument(
        "--top-k",
        type=_int(0),
        default=0,
        metavar="K",
        help="keep the K most likely tokens; 0 is off (default 0)",
    )
    g.add_argument(
        "--top-p",
        type=_float,
        default=1.0,
        metavar="P",
        help="nucleus sampling mass in (0, 1]; 1 is off (default 1)",
    )
    g.add_argument("--seed", type=_int(), default=0, metavar="S", help="random seed for sampling (default 0)")
    g.add_argument(
        "--num-draft-tokens",
        type=_int(1),
        default=4,
        metavar="K",
        help="drafts per speculative round (default 4)",
    )

    g = p.add_argument_group("token ids (override the tokenizer; needed without one)")
    g.add_argument("--think-start-id", type=_int(0), metavar="ID", help="id of <think>")
    g.add_argument("--think-end-id", type=_int(0), metavar="ID", help="id of </think>")
    g.add_argument(
        "--step-split-ids",
        type=_ids,
        metavar="ID,ID",
        help="ids of tokens that end a reasoning step (blank lines)",
    )
    g.add_argument("--eos-ids", type=_ids, metavar="ID,ID", help="end-of-sequence ids")

    g = p.add_argument_group("speculative exit (mode specexit)")
    g.add_argument(
        "--exit-confidence",
        type=_float,
        metavar="C",
        help="exit needs smoothed confidence > C (default 0.8; the bundled demo: 0.6)",
    )
    g.add_argument(
        "--exit-progress",
        type=_float,
        default=0.3,
        metavar="P",
        help="exit needs smoothed progress > P (default 0.3)",
    )
    g.add_argument(
        "--exit-remain",
        type=_float,
        default=200.0,
        metavar="R",
        help="exit needs predicted remaining thinking tokens < R (default 200)",
    )
    g.add_argument(
        "--exit-signals",
        type=_names,
        default=SIGNALS,
        metavar="NAMES",
        help="signals that must pass, a subset of confidence,progress,remain (default: all three)",
    )
    g.add_argument(
        "--smoothing",
        choices=("ewma", "window", "boundary"),
        help="how signals are smoothed over rounds; boundary: each step boundary is judged by "
        "its own signals, no smoothing (default ewma; the bundled demo: boundary)",
    )
    g.add_argument(
        "--exit-surprise",
        type=_float,
        metavar="P",
        help="no signal exit after a thinking token to which the target gave probability < P "
        "(at the sampling temperature); 0 is off (default off; the bundled demo: 0.2)",
    )
    g.add_argument(
        "--ewma", type=_float, default=0.1, metavar="A", help="EWMA rate: s <- A*x + (1-A)*s (default 0.1)"
    )
    g.add_argument(
        "--smooth-window",
        type=_int(1),
        default=8,
        metavar="N",
        help="positions averaged with --smoothing window (default 8)",
    )

    g = p.add_argument_group("thinking budgets (modes specexit and budget)")
    g.add_argument(
        "--min-think-tokens",
        type=_int(0),
        default=0,
        metavar="N",
        help="no signal exit before N thinking tokens (default 0)",
    )
    g.add_argument(
        "--max-think-tokens",
        type=_int(1),
        metavar="N",
        help="force </think> after N thinking tokens (default: no limit)",
    )
    g.add_argument(
        "--continue-below-min",
        action="store_true",
        help="replace a natural </think> before --min-think-tokens by a step break",
    )
    g.add_argument(
        "--closing-text", metavar="TEXT", help="text inserted before a forced </think> (needs a tokenizer)"
    )
    g.add_argument(
        "--probe-text",
        metavar="TEXT",
        default="",
        help="deer: text after the trial </think> before the trial answer (needs a tokenizer)",
    )
    g.add_argument("--probe-tokens", type=_int(1), default=8, help="deer: trial-answer tokens (default 8)")
    g.add_argument(
        "--probe-threshold", type=_float, default=0.95, help="deer: exit when the trial answer's mean token probability passes this"
    )
    g.add_argument(
        "--record-signals",
        action="store_true",
        help="keep the raw and smoothed signals of every token (in the --json stats)",
    )

    g = p.add_argument_group("devices")
    g.add_argument(
        "--mesh",
        metavar="SPEC",
        help="split the model and batch over devices, e.g. tensor=4 or data=2,tensor=4 "
        "(axes data, fsdp, tensor; default: one device)",
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (tokens, stats, text, timing, mode) and nothing else on stdout",
    )
    return p


# ----------------------------------------------------------------------------------------------
# Models, tokenizer, prompts.


def _demo_paths() -> tuple[Path, Path | None]:
    """The bundled demo (target, draft) checkpoints; `FileNotFoundError` when not installed."""
    assets = Path(__file__).resolve().parent / "demo" / "assets"
    target, draft = assets / "target", assets / "draft"
    if not (target / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled demo model is not installed (expected in {assets}); pass --target CKPT"
        )
    return target, draft if (draft / "config.json").is_file() else None


def _demo_question(seed: int) -> str:
    from specexit_jax.demo.task import make_dataset

    return make_dataset(1, seed)[0].question


def _load_configs(target: Path, draft: Path | None):
    """Read both configs (params not yet) and check that the draft fits the target."""
    from specexit_jax.checkpoint import load_config
    from specexit_jax.config import ModelConfig
    from specexit_jax.draft import DraftConfig, check_compatible

    cfg = load_config(target)
    if not isinstance(cfg, ModelConfig):
        raise ValueError(f"{target} holds a draft checkpoint; --target needs a target checkpoint")
    dcfg = None
    if draft is not None:
        dcfg = load_config(draft)
        if not isinstance(dcfg, DraftConfig):
            raise ValueError(f"{draft} holds a target checkpoint; --draft needs a draft checkpoint")
        try:
            check_compatible(dcfg, cfg)
        except ValueError as e:
            raise ValueError(f"draft {draft} does not fit target {target}: {e}") from None
    return cfg, dcfg


def _prompt_ids(args, tok, target: Path, demo: bool) -> list[list[int]]:
    prompts = args.prompts or ([("text", _demo_question(args.seed))] if demo else [])
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT or --prompt-ids 1,2,3")
    out = []
    for kind, value in prompts:
        if kind == "ids":
            out.append(list(value))
        elif tok is None:
            raise ValueError(f"--prompt needs a tokenizer and {target} holds none; use --prompt-ids")
        else:
            out.append(tok.chat_prompt(value, thinking=True))
            if not out[-1]:
                raise ValueError(f"--prompt {value!r} encodes to no tokens")
    return out


def _check_ids(what: str, ids, vocab: int) -> None:
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"{what} has token id {bad[0]} outside the vocab (size {vocab})")


# ----------------------------------------------------------------------------------------------
# Streaming.


class _TextStream:
    """Writes the text of a growing id list, holding back incomplete multi-token characters.

    Decodes only a short window (`prefix:`), and writes what it adds to the text of `prefix:read`
    (the usual incremental detokenisation); a trailing U+FFFD means a character is still open.
    """

    def __init__(self, tok, out: TextIO, hide=()):
        self.tok, self.out, self.hide = tok, out, set(hide)
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def push(self, ids) -> None:
        self.ids.extend(i for i in ids if i not in self.hide)
        self._emit(final=False)

    def close(self) -> None:
        self._emit(final=True)
        self.out.write("\n")
        self.out.flush()

    def _emit(self, final: bool) -> None:
        if self.read == len(self.ids):
            return
        done = self.tok.decode(self.ids[self.prefix : self.read])
        text = self.tok.decode(self.ids[self.prefix :])
        if len(text) > len(done) and (final or not text.endswith("\ufffd")):
            self.out.write(text[len(done) :])
            self.out.flush()
            self.prefix, self.read = self.read, len(self.ids)


class _Progress:
    """The `stream` callback of `generate`: records per-row counts over time, echoes row 0's text."""

    def __init__(self, B: int, echo: _TextStream | None):
        self.echo = echo
        self.counts = [0] * B
        self.marks: list[tuple[float, list[int]]] = []  # (time, tokens so far per row)

    def __call__(self, new: list[list[int]]) -> None:
        self.marks.append((time.perf_counter(), [c + len(t) for c, t in zip(self.counts, new)]))
        self.counts = self.marks[-1][1]
        if self.echo is not None:
            self.echo.push(new[0])

    def steady_rates(self) -> tuple[float | None, list[float | None]]:
        """Tokens/s after the first decode chunk (which pays for compilation): batch, per row.

        Marks: 0 after prefill, 1 after the first decode call, ... A row's rate runs from mark 1
        to the last mark at which it still grew.
        """
        if len(self.marks) < 3:
            return None, [None] * len(self.counts)
        t1, c1 = self.marks[1]
        rows = []
        for b in range(len(self.counts)):
            grew = [m for m in range(2, len(self.marks)) if self.marks[m][1][b] > self.marks[m - 1][1][b]]
            if not grew:
                rows.append(None)
                continue
            t, c = self.marks[grew[-1]]
            rows.append((c[b] - c1[b]) / (t - t1))
        t, c = self.marks[-1]
        return (sum(c) - sum(c1)) / (t - t1), rows


# ----------------------------------------------------------------------------------------------
# Main.


def _summary(b: int, row: dict, rate: float | None) -> str:
    parts = [f"[{b}] {row['new_tokens']} new tokens in {row['rounds']} rounds (tau {row['tau']:.2f})"]
    parts.append(f"{row['think_tokens']} thinking tokens")
    reason = row["exit_reason"]
    if reason == "none":
        parts.append("no exit")
    else:
        exit_ = f"exit {reason} at token {row['exit_position']}"
        sig = row.get("exit_signals")
        if reason == "signal" and sig:
            exit_ += " (" + ", ".join(f"{k} {v:.3g}" for k, v in sig.items()) + ")"
        parts.append(exit_)
    if rate is not None:
        parts.append(f"{rate:.1f} tok/s")
    return ", ".join(parts)


def _exit_policy(args, demo: bool) -> dict:
    """The exit-policy flags where given, else the bundled demo's tuned policy (with the demo
    model) or the generic defaults."""
    from specexit_jax.demo import exit_policy

    return exit_policy(demo, args.smoothing, args.exit_confidence, args.exit_surprise)


def _run(args) -> int:
    from specexit_jax.tokenizer import load_tokenizer_if_present

    demo = args.target is None
    if demo:
        target, demo_draft = _demo_paths()
        draft = Path(args.draft) if args.draft else demo_draft
    else:
        target, draft = Path(args.target), Path(args.draft) if args.draft else None
    if args.mode == "ar":
        draft = None  # not used: skip loading it
    if args.mode in ("spec", "specexit") and draft is None:
        raise ValueError(f"--mode {args.mode} needs a draft checkpoint (--draft CKPT)")
    cfg, dcfg = _load_configs(target, draft)

    try:
        tok = load_tokenizer_if_present(
            target,
            think_end_id=args.think_end_id,
            step_split_ids=args.step_split_ids,
            require_markers=args.mode in ("specexit", "budget", "deer"),
        )
    except (ValueError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - a broken tokenizer file is a user error too
        raise ValueError(
            f"cannot read the tokenizer in {target} ({type(e).__name__}: {_one_line(e)})"
        ) from None

    def pick(flag, name: str, default):
        """A flag when given, else the tokenizer's value, else `default`."""
        return flag if flag is not None else getattr(tok, name) if tok is not None else default

    think_start = pick(args.think_start_id, "think_start_id", None)
    think_end = pick(args.think_end_id, "think_end_id", None)
    split = tuple(pick(args.step_split_ids, "step_split_ids", ()))
    eos = tuple(pick(args.eos_ids, "eos_ids", ()))
    if args.closing_text and tok is None:
        raise ValueError(f"--closing-text needs a tokenizer and {target} holds none")
    closing = tuple(tok.encode(args.closing_text)) if args.closing_text else ()
    if args.probe_text and tok is None:
        raise ValueError(f"--probe-text needs a tokenizer and {target} holds none")
    probe = tuple(tok.encode(args.probe_text)) if args.probe_text else ()

    mode = args.mode
    if mode is None:
        markers = think_end is not None and bool(split)
        mode = "ar" if dcfg is None else "specexit" if dcfg.num_signals and markers else "spec"
    if mode in ("specexit", "budget", "deer") and think_end is None:
        raise ValueError(
            f"--mode {mode} needs the </think> id: give --think-end-id (the target has no tokenizer)"
        )
    if mode in ("specexit", "deer") and not split:
        raise ValueError(
            f"--mode {mode} needs step-split ids: give --step-split-ids (the target has no tokenizer)"
        )
    if mode == "budget" and args.max_think_tokens is None and not args.min_think_tokens:
        raise ValueError("--mode budget needs --max-think-tokens or --min-think-tokens")
    if mode == "specexit" and not dcfg.num_signals:
        raise ValueError(
            f"--mode specexit needs a draft with signal heads; {draft} has none (use --mode spec)"
        )
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ValueError("need --temperature >= 0 and 0 < --top-p <= 1")

    prompts = _prompt_ids(args, tok, target, demo)
    V = cfg.vocab_size
    for i, p in enumerate(prompts):
        _check_ids(f"prompt {i}", p, V)
    for name, ids in (
        ("--think-start-id", [think_start] if think_start is not None else []),
        ("--think-end-id", [think_end] if think_end is not None else []),
        ("--step-split-ids", split),
        ("--eos-ids", eos),
        ("--closing-text", closing),
        ("--probe-text", probe),
    ):
        _check_ids(name, ids, V)
    K = args.num_draft_tokens if dcfg is not None and mode != "ar" else 0
    longest = max(map(len, prompts))
    if longest + args.max_new_tokens + K + 1 > cfg.max_position_embeddings:
        raise ValueError(
            f"prompt ({longest} tokens) + --max-new-tokens ({args.max_new_tokens}) + {K + 1} exceeds "
            f"the model's maximum length {cfg.max_position_embeddings}"
        )

    from specexit_jax.checkpoint import load_checkpoint
    from specexit_jax.engine import generate
    from specexit_jax.exit import ExitConfig
    from specexit_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # a no-op unless launched on several hosts

    policy = _exit_policy(args, demo)
    ex = ExitConfig(
        signals=tuple(args.exit_signals),
        progress=args.exit_progress,
        remain=args.exit_remain,
        ewma=args.ewma,
        window=args.smooth_window,
        **policy,
        think_start_id=think_start,
        think_end_id=think_end,
        step_split_ids=split,
        min_think_tokens=args.min_think_tokens,
        max_think_tokens=args.max_think_tokens,
        continue_below_min=args.continue_below_min,
        closing_ids=closing,
        record_signals=args.record_signals,
        probe_ids=probe,
        probe_tokens=args.probe_tokens,
        probe_threshold=args.probe_threshold,
    )
    cfg, params = load_checkpoint(target)
    dc = load_checkpoint(draft) if draft is not None and mode != "ar" else None

    B = len(prompts)
    echo = None if args.json or tok is None else _TextStream(tok, sys.stdout, hide=eos)
    progress = _Progress(B, echo)
    if echo is not None and B > 1:
        print("--- [0] ---", flush=True)
    res = generate(
        (cfg, params),
        dc,
        prompts,
        max_new_tokens=args.max_new_tokens,
        mode=mode,
        exit=ex,
        num_draft_tokens=args.num_draft_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_ids=eos,
        seed=args.seed,
        stream=progress,
        stream_every=STREAM_EVERY,
        mesh=args.mesh,
    )
    steady, row_rates = progress.steady_rates()
    total = sum(len(t) for t in res.tokens)
    timing = dict(res.timing)
    timing["tokens_per_s"] = total / max(timing["decode_s"], 1e-9)
    timing["steady_tokens_per_s"] = steady
    texts = [tok.decode(t) for t in res.tokens] if tok is not None else None

    if args.json:
        out = {"tokens": res.tokens, "stats": res.stats}
        if texts is not None:
            out["text"] = texts
        out.update(timing=timing, mode=mode)
        print(json.dumps(out))
        return 0
    if echo is not None:
        echo.close()
        for b in range(1, B):
            hide = set(eos)
            print(f"--- [{b}] ---\n{tok.decode([t for t in res.tokens[b] if t not in hide])}", flush=True)
    else:  # no tokenizer: the ids
        for b, t in enumerate(res.tokens):
            print(" ".join(map(str, t)) if B == 1 else f"[{b}] " + " ".join(map(str, t)), flush=True)
    for b, row in enumerate(res.stats):
        rate = row_rates[b] if row_rates[b] is not None else row["new_tokens"] / max(timing["decode_s"], 1e-9)
        print(_summary(b, row, rate), file=sys.stderr)
    if demo and not args.prompts:
        _demo_report(args, (cfg, params), dc, prompts[0], res, tok, mode, ex, eos)
    return 0


def _demo_report(args, target, draft, prompt, res, tok, mode, ex, eos) -> None:
    """For the demo problem: the answer and its grade, then the same problem timed (compiled
    programs, so no compilation counted) with this mode and with plain decoding."""
    from specexit_jax.demo.task import extract_answer, is_correct
    from specexit_jax.engine import generate

    question = _demo_question(args.seed)
    text = tok.decode(res.tokens[0])
    verdict = "correct" if is_correct(question, text) else "wrong"
    print(f"answer: {extract_answer(text)} ({verdict}; {question})", file=sys.stderr)
    if mode == "ar":
        return
    kw = dict(max_new_tokens=args.max_new_tokens, exit=ex, num_draft_tokens=args.num_draft_tokens,
              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_ids=eos, seed=args.seed)
    ours = generate(target, draft, [prompt], mode=mode, **kw)
    generate(target, None, [prompt], mode="ar", **kw)  # compile
    plain = generate(target, None, [prompt], mode="ar", **kw)
    t_ours = sum(ours.timing.values())
    t_plain = sum(plain.timing.values())
    a, o = plain.stats[0], ours.stats[0]
    print(
        f"{mode}: {o['new_tokens']} tokens ({o['think_tokens']} thinking) in {t_ours:.3f} s, "
        f"tau {o['tau']:.2f} | ar: {a['new_tokens']} tokens ({a['think_tokens']} thinking) in "
        f"{t_plain:.3f} s | {t_plain / max(t_ours, 1e-9):.2f}x faster, "
        f"{a['think_tokens'] - o['think_tokens']} fewer thinking tokens; plain answer "
        f"{'correct' if is_correct(question, tok.decode(plain.tokens[0])) else 'wrong'}",
        file=sys.stderr,
    )


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _run(args)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
