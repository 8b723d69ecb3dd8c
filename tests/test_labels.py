"""Trace schema, per-position labels, batching and the probe bookkeeping, against hand values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from specexit_jax import traces
from specexit_jax.demo import task
from specexit_jax.demo.tokenizer_build import build_tokenizer
from specexit_jax.tokenizer import Tokenizer
from specexit_jax.train import data
from specexit_jax.train.labels import completion_signals, trace_row
from specexit_jax.train.losses import auroc

# The example of the labels.py docstring: prompt of 3, completion of 8, thinking of 5.
HAND = {
    "prompt": [11, 12, 13],
    "completion": [21, 7, 22, 7, 23, 6, 24, 3],
    "think_end": 5,
    "boundaries": [1, 3],
    "confident": [0, 1],
}


@pytest.fixture(scope="module")
def demo_tok(tmp_path_factory) -> Tokenizer:
    folder = tmp_path_factory.mktemp("demo_tok")
    build_tokenizer(folder)
    return Tokenizer(folder)


def test_completion_signals_match_hand_values():
    s = completion_signals(8, 5, [1, 3], [0, 1])
    np.testing.assert_array_equal(s["mask"], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(s["progress"], [0, 0.2, 0.4, 0.6, 0.8, 0, 0, 0])
    np.testing.assert_array_equal(s["remain"], [5, 4, 3, 2, 1, 0, 0, 0])
    # 0 before the first boundary, then the probe of the latest boundary at or before t
    np.testing.assert_array_equal(s["confidence"], [0, 0, 0, 1, 1, 0, 0, 0])


def test_row_puts_labels_at_the_feature_that_predicts_the_token():
    row = trace_row(HAND, seq_len=13, pad_id=0)
    np.testing.assert_array_equal(row["tokens"], HAND["prompt"] + HAND["completion"] + [0, 0])
    # completion tokens (answer included) are targets; prompt and padding are not
    np.testing.assert_array_equal(row["loss_mask"], [0, 0, 0] + [1] * 8 + [0, 0])
    # row position p carries completion index t = p + 1 - P: thinking t = 0..4 -> p = 2..6
    np.testing.assert_array_equal(row["signal_mask"], [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(row["progress"][2:7], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_array_equal(row["remain"][2:7], [5, 4, 3, 2, 1])
    np.testing.assert_array_equal(row["confidence"][2:7], [0, 0, 0, 1, 1])
    assert row["progress"][row["signal_mask"] == 0].sum() == 0


def test_row_cut_at_seq_len_keeps_labels_of_the_full_trace():
    row = trace_row(HAND, seq_len=6)
    np.testing.assert_array_equal(row["tokens"], [11, 12, 13, 21, 7, 22])
    np.testing.assert_array_equal(row["loss_mask"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(row["signal_mask"], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(row["remain"][2:], [5, 4, 3, 2])  # T is still 5


def test_unfinished_thinking_has_token_targets_but_no_signal_labels():
    row = trace_row({**HAND, "think_end": -1, "boundaries": [], "confident": []}, seq_len=12)
    assert row["loss_mask"].sum() == 8
    assert row["signal_mask"].sum() == 0


BAD = [
    ({"prompt": []}, "prompt"),
    ({"prompt": "abc"}, "prompt"),
    ({"completion": [1, -2]}, "completion"),
    ({"think_end": 8}, "think_end"),
    ({"think_end": 2.0}, "think_end"),
    ({"boundaries": [3, 1]}, "boundaries"),
    ({"boundaries": [1, 5]}, "boundaries"),  # 5 is </think>, outside the thinking section
    ({"confident": [1]}, "confident"),
    ({"confident": [0, 2]}, "confident"),
    ({"answer": 30}, "answer"),
    ({"correct": 2}, "correct"),
]


@pytest.mark.parametrize("change,field", BAD)
def test_schema_violations_are_one_line_errors_naming_the_field(change, field):
    with pytest.raises(ValueError) as e:
        traces.validate_trace({**HAND, **change})
    assert f"'{field}'" in str(e.value) and "\n" not in str(e.value)


def test_missing_field_is_named():
    obj = dict(HAND)
    del obj["confident"]
    with pytest.raises(ValueError, match="'confident': missing"):
        traces.validate_trace(obj)


def test_trace_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(HAND) + "\n" + json.dumps({**HAND, "think_end": 99}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:2: trace field 'think_end'"):
        traces.read_traces(path)


def test_demo_traces_label_the_boundaries_where_the_answer_is_already_right(demo_tok):
    samples = task.make_dataset(40, 3)
    for s, tr in zip(samples, traces.demo_traces(40, 3, demo_tok)):
        traces.validate_trace(tr)
        assert tr["completion"][tr["think_end"]] == demo_tok.think_end_id
        assert len(tr["boundaries"]) == len(s.thinking_steps)
        # from the oracle exit boundary on, every forced answer is right
        assert all(tr["confident"][task.oracle_exit_boundary(s) :])
        assert tr["confident"] == [int(a == s.answer) for a in s.step_answers]


def test_answer_prefix_is_what_the_template_writes_after_think_end(demo_tok):
    assert traces.answer_prefix_ids(demo_tok) == demo_tok.encode("\n\n")


def test_probes_force_think_end_after_each_boundary_and_grade_the_answer(demo_tok, monkeypatch):
    """`make_traces` with a scripted target: completions and probe answers are fixed token lists."""
    sample = task.make_dataset(1, 0)[0]
    prompt = demo_tok.encode(task.render_prompt(sample))
    completion = demo_tok.encode(task.render_completion(sample))
    te = completion.index(demo_tok.think_end_id)
    bounds = [i for i in range(te) if completion[i] in demo_tok.step_split_ids]
    right, wrong = demo_tok.encode(f"answer: {sample.answer}"), demo_tok.encode("answer: 1000")
    calls = []

    def scripted(target, prompts, batch_size, **kw):
        calls.append([list(p) for p in prompts])
        if len(calls) == 1:
            return [completion for _ in prompts]
        # probes: the answer is right from the third boundary on
        return [right if len(p) > len(prompt) + bounds[1] + 1 + 2 else wrong for p in prompts]

    monkeypatch.setattr(traces, "generate_padded", scripted)
    item = {"prompt": prompt, "question": sample.question, "answer": sample.answer}
    (tr,) = traces.make_traces(None, [item], demo_tok, grader=traces.make_grader("auto"))
    traces.validate_trace(tr)
    assert tr["think_end"] == te and tr["boundaries"] == bounds and tr["correct"] == 1
    suffix = [demo_tok.think_end_id, *demo_tok.encode("\n\n")]
    assert sorted(calls[1], key=len) == [prompt + completion[: b + 1] + suffix for b in bounds]
    assert tr["confident"] == [0, 0] + [1] * (len(bounds) - 2)


def test_exact_grader_compares_the_answer_text():
    grade = traces.make_grader("exact", eos_texts=["<|im_end|>"])
    assert grade({"answer": "42"}, "</think>\n\n42<|im_end|>")
    assert not grade({"answer": "42"}, "</think>\n\n41<|im_end|>")
    with pytest.raises(ValueError, match="needs an 'answer'"):
        traces.grader_for({"question": "what?"}, "auto")


def test_auroc_matches_hand_values():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)  # a tie counts one half
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_draft_vocab_takes_the_most_frequent_ids_sorted_as_offsets():
    counts = np.array([5, 0, 9, 1, 9, 3])
    d2t = data.draft_vocab_offsets(counts, 3)  # ids 2, 4 (9 each), 0 (5)
    np.testing.assert_array_equal(np.arange(3) + d2t, [0, 2, 4])
    with pytest.raises(ValueError, match="draft vocab size 7"):
        data.draft_vocab_offsets(counts, 7)


def test_batches_resume_from_a_position_and_cover_each_epoch():
    rows = {"tokens": np.arange(10)[:, None] * np.ones((1, 4), np.int32)}
    it = data.Batches(rows, batch_size=3, seed=5)
    seen = [next(it)["tokens"][:, 0] for _ in range(7)]
    again = data.Batches(rows, batch_size=3, seed=5)
    np.testing.assert_array_equal([next(again)["tokens"][:, 0] for _ in range(7)], seen)
    epoch0 = np.concatenate(seen[:3])
    assert len(set(epoch0.tolist())) == 9  # 3 batches of 3 per epoch, no repeats
    assert not np.array_equal(seen[:3], seen[3:6])  # the next epoch is another order
    resumed = data.Batches(rows, 3, 5, data.Position(epoch=1, index=1))
    np.testing.assert_array_equal(next(resumed)["tokens"][:, 0], seen[4])
    assert data.Batches(rows, 3, 5).position == data.Position(0, 0)


def test_lm_documents_pack_into_rows_with_eos_and_masked_padding():
    rows = data.pack_documents([[5, 6, 7], [8, 9, 3]], seq_len=4, eos_id=3, pad_id=0)
    np.testing.assert_array_equal(rows["tokens"], [[5, 6, 7, 3], [8, 9, 3, 0]])
    np.testing.assert_array_equal(rows["loss_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])


def test_traces_cli_writes_one_valid_trace_per_prompt(tmp_path, demo_tok, capsys):
    """A tiny random target with the demo tokenizer: the command line runs generation and grading
    end to end; its random text rarely closes the thinking, so probing is covered above."""
    import jax

    from specexit_jax import model as M
    from specexit_jax.checkpoint import TOKENIZER_FILES, save_checkpoint
    from specexit_jax.config import ModelConfig

    cfg = ModelConfig(vocab_size=116, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=512)
    tok_dir = tmp_path / "tok"
    build_tokenizer(tok_dir)
    files = [tok_dir / f for f in TOKENIZER_FILES if (tok_dir / f).is_file()]
    save_checkpoint(tmp_path / "target", cfg, M.init_params(cfg, jax.random.key(0)), files)
    out = tmp_path / "traces.jsonl"
    args = ["--target", str(tmp_path / "target"), "--prompts", "demo:3:5", "--out", str(out),
            "--max-new-tokens", "12", "--batch-size", "2", "--probe-answer-tokens", "2"]
    assert traces.main(args) == 0
    written = traces.read_traces(out)
    expected = [demo_tok.encode(task.render_prompt(s)) for s in task.make_dataset(3, 5)]
    assert [t["prompt"] for t in written] == expected
    assert all(1 <= len(t["completion"]) <= 12 and t["answer"] for t in written)
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["traces"] == 3
    # a prompt file the grader cannot grade: one line, status 2
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"question": "what is two plus two?"}) + "\n")
    assert traces.main(args[:2] + ["--prompts", str(bad), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: prompt 0: grader 'exact' needs an 'answer' string\n"
