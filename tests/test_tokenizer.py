"""Tests of the demo tokenizer and of the project's tokenizer wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from specexit_jax.demo.task import make_dataset, render_completion, render_prompt
from specexit_jax.demo.tokenizer_build import build_tokenizer, main
from specexit_jax.tokenizer import Tokenizer, load_tokenizer_if_present

DEMO_IDS = {"<pad>": 0, "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, "<unk>": 4, "<think>": 5,
            "</think>": 6, "\n\n": 7, "\n": 8, " ": 9}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_tokenizer")
    build_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def demo(demo_dir) -> Tokenizer:
    return Tokenizer(demo_dir)


def _save(backend: BackendTokenizer, out: Path, **special: str) -> Path:
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(str(out))
    return out


def _qwen_like(out: Path) -> Path:
    """Byte-level BPE in the style of Qwen: blank lines are 'ĊĊ'-like tokens."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for token in ("ĊĊ", ".ĊĊ", "ĠĊĊ", "ĊĊĊ", "ĠĠ", "Ġthe", "a.Ċ"):
        vocab[token] = len(vocab)
    merges = [("Ċ", "Ċ"), (".", "ĊĊ"), ("Ġ", "ĊĊ"), ("ĊĊ", "Ċ"), ("Ġ", "Ġ")]
    backend = BackendTokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken("<|im_end|>", special=True), AddedToken("\n\n\n\n", special=True)])
    backend.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return _save(backend, out, eos_token="<|im_end|>")


def _word_level(out: Path, tokens: list[str]) -> Path:
    """Plain-text vocabulary whose tokens decode to themselves."""
    vocab = {token: i for i, token in enumerate(["<unk>", "<eos>", *tokens])}
    backend = BackendTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken("<eos>", special=True)])
    return _save(backend, out, eos_token="<eos>", unk_token="<unk>")


def test_demo_vocab_and_special_ids(demo_dir):
    tok = AutoTokenizer.from_pretrained(str(demo_dir), local_files_only=True)
    assert len(tok) == 116
    vocab = tok.get_vocab()
    assert {token: vocab[token] for token in DEMO_IDS} == DEMO_IDS
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (3, 0, 4)


def test_round_trip_on_rendered_samples(demo):
    for sample in make_dataset(200, seed=11):
        text = render_prompt(sample) + render_completion(sample)
        ids = demo.encode(text)
        assert DEMO_IDS["<unk>"] not in ids
        assert demo.decode(ids) == text


def test_blank_line_is_one_token(demo):
    assert demo.encode("\n\n") == [DEMO_IDS["\n\n"]]
    assert demo.encode("\n") == [DEMO_IDS["\n"]]
    assert demo.encode("ok\n\ncheck") == [demo.encode("ok")[0], DEMO_IDS["\n\n"], demo.encode("check")[0]]
    assert len(demo.encode("check")) == 1


def test_chat_template_matches_rendered_prompt(demo_dir, demo):
    tok = AutoTokenizer.from_pretrained(str(demo_dir), local_files_only=True)
    sample = make_dataset(1, seed=5)[0]
    messages = [{"role": "user", "content": sample.question}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert text == render_prompt(sample)
    assert demo.chat_prompt(sample.question) == demo.encode(render_prompt(sample))
    assert demo.decode(demo.chat_prompt("q", thinking=False)).endswith("<think>\n\n</think>\n\n")


def test_wrapper_markers_on_demo(demo):
    assert demo.think_start_id == DEMO_IDS["<think>"]
    assert demo.think_end_id == DEMO_IDS["</think>"]
    assert demo.step_split_ids == (DEMO_IDS["\n\n"],)
    assert demo.eos_ids == (DEMO_IDS["<|im_end|>"],)
    assert (demo.pad_id, demo.vocab_size) == (0, 116)


def test_wrapper_markers_on_qwen_like(tmp_path):
    path = _qwen_like(tmp_path)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 261]}))
    tok = Tokenizer(path)
    raw = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    vocab = raw.get_vocab()
    assert tok.step_split_ids == tuple(sorted(vocab[t] for t in ("ĊĊ", ".ĊĊ", "ĠĊĊ", "ĊĊĊ")))
    assert vocab["\n\n\n\n"] not in tok.step_split_ids
    assert (tok.think_start_id, tok.think_end_id) == (vocab["<think>"], vocab["</think>"])
    assert tok.eos_ids == (vocab["<|im_end|>"], 7, 261)
    assert tok.encode("a.\n\n") == [vocab["a"], vocab[".ĊĊ"]]
    assert tok.chat_prompt("hello") == tok.encode("hello")


def test_wrapper_markers_on_plain_vocab(tmp_path):
    tok = Tokenizer(_word_level(tmp_path, ["\n\n", ".\n\n", " \n\n", "\n", ".", "a\n\n", "</think>"]))
    assert tok.step_split_ids == (2, 3, 4)
    assert tok.think_start_id is None and tok.think_end_id == 8


def test_missing_think_end_names_the_flag(tmp_path):
    path = _word_level(tmp_path, ["\n\n", "x"])
    with pytest.raises(ValueError, match="--think-end-id"):
        Tokenizer(path)
    assert Tokenizer(path, think_end_id=3).think_end_id == 3


def test_missing_step_split_names_the_flag(tmp_path):
    path = _word_level(tmp_path, ["</think>", "\n"])
    with pytest.raises(ValueError, match="--step-split-ids"):
        Tokenizer(path)
    assert Tokenizer(path, step_split_ids=[3]).step_split_ids == (3,)


def test_missing_tokenizer_files(tmp_path, demo_dir):
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        Tokenizer(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        Tokenizer(tmp_path)
    assert load_tokenizer_if_present(tmp_path) is None
    assert load_tokenizer_if_present(tmp_path / "absent") is None
    assert load_tokenizer_if_present(demo_dir).think_end_id == DEMO_IDS["</think>"]


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    main(["--out", str(tmp_path / "tok")])
    assert "116 tokens" in capsys.readouterr().out
    assert Tokenizer(tmp_path / "tok").step_split_ids == (DEMO_IDS["\n\n"],)
