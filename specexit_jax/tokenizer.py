"""Tokenizer wrapper: a local Hugging Face tokenizer plus the markers SpecExit needs.

SpecExit needs the end-of-sequence ids, the ``</think>`` id that closes the
thinking, and the *step-split* ids: vocabulary tokens that end a reasoning step
(a blank line, possibly fused with punctuation or spaces, such as ``"\\n\\n"``,
``".\\n\\n"``, ``" \\n\\n"`` or ``"\\n\\n\\n"``). They are looked up in the
vocabulary, never hard-coded, and can be overridden when a vocabulary lacks them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

THINK_START, THINK_END = "<think>", "</think>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
"""A folder holding any of these files is taken to hold a tokenizer."""

_STEP_SPLIT_RE = re.compile(r"[ \t\r]*[.!?:;,)]?(?:[ \t\r]*\n){2,}[ \t\r]*")


def has_tokenizer_files(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding tokenizer files."""
    folder = Path(path)
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


class Tokenizer:
    """A local tokenizer (never downloaded) with its SpecExit markers.

    ``think_end_id`` and ``step_split_ids`` override the vocabulary lookup
    (the ``--think-end-id`` and ``--step-split-ids`` command-line options).
    Raises ``FileNotFoundError`` when ``path`` holds no tokenizer and, unless
    ``require_markers`` is False (plain decoding of a non-reasoning model), ``ValueError``
    when a marker is neither found nor given; without it, missing markers are ``None`` / ``()``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        think_end_id: int | None = None,
        step_split_ids: Sequence[int] | None = None,
        require_markers: bool = True,
    ) -> None:
        folder = Path(path)
        if not has_tokenizer_files(folder):
            raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in folder {folder}")
        self._tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        vocab = self._tok.get_vocab()
        self._think_start_id = vocab.get(THINK_START)
        self._think_end_id = think_end_id if think_end_id is not None else vocab.get(THINK_END)
        if self._think_end_id is None and require_markers:
            raise ValueError(f"tokenizer in {folder} has no {THINK_END} token; pass its id with --think-end-id")
        self._step_split_ids = tuple(step_split_ids) if step_split_ids else self._find_step_split_ids(vocab)
        if not self._step_split_ids and require_markers:
            raise ValueError(
                f"tokenizer in {folder} has no blank-line (step-split) token; pass ids with --step-split-ids"
            )
        self._eos_ids = self._read_eos_ids(folder)

    def _find_step_split_ids(self, vocab: dict[str, int]) -> tuple[int, ...]:
        special = set(self._tok.all_special_ids)
        special.update(i for i, added in self._tok.added_tokens_decoder.items() if added.special)
        found = (
            idx
            for token, idx in vocab.items()
            if idx not in special and _STEP_SPLIT_RE.fullmatch(self._tok.convert_tokens_to_string([token]))
        )
        return tuple(sorted(found))

    def _read_eos_ids(self, folder: Path) -> tuple[int, ...]:
        ids = [] if self._tok.eos_token_id is None else [self._tok.eos_token_id]
        config = folder / "generation_config.json"
        if config.is_file():
            extra = json.loads(config.read_text()).get("eos_token_id")
            ids.extend([extra] if isinstance(extra, int) else extra or [])
        return tuple(dict.fromkeys(ids))

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """End-of-sequence ids: the tokenizer's, then those of ``generation_config.json``."""
        return self._eos_ids

    @property
    def think_start_id(self) -> int | None:
        """Id of ``<think>``, or ``None`` when the vocabulary lacks it."""
        return self._think_start_id

    @property
    def think_end_id(self) -> int | None:
        """Id of ``</think>``, which closes the thinking."""
        return self._think_end_id

    @property
    def step_split_ids(self) -> tuple[int, ...]:
        """Ids of the tokens that end a reasoning step (sorted)."""
        return self._step_split_ids

    @property
    def pad_id(self) -> int | None:
        """Padding id, or ``None`` when the tokenizer has none."""
        return self._tok.pad_token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without any added BOS/EOS."""
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept, spacing untouched."""
        return self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def chat_prompt(self, question: str, thinking: bool = True) -> list[int]:
        """Prompt ids for a single user turn, ready for the assistant to generate.

        Uses the chat template (with ``enable_thinking=thinking``, which templates
        without that switch ignore); without a template, the plain question.
        """
        if not self._tok.chat_template:
            return self.encode(question)
        text = self._tok.apply_chat_template(
            [{"role": "user", "content": question}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=thinking,
        )
        return self.encode(text)


def load_tokenizer_if_present(
    path: str | Path,
    *,
    think_end_id: int | None = None,
    step_split_ids: Sequence[int] | None = None,
    require_markers: bool = True,
) -> Tokenizer | None:
    """The tokenizer in ``path``, or ``None`` when the folder holds no tokenizer files."""
    if not has_tokenizer_files(path):
        return None
    return Tokenizer(
        path, think_end_id=think_end_id, step_split_ids=step_split_ids, require_markers=require_markers
    )
