"""Build the demo tokenizer: a tiny word/char-level vocabulary for the demo task.

Task words, the chat-role names and the blank line ``"\\n\\n"`` are single
tokens; every other ASCII character (digits included) is its own token, so the
decoded text of any encoded ASCII string is the string itself. The saved folder
loads with ``transformers.AutoTokenizer.from_pretrained(dir)`` offline and
carries a Qwen3-like chat template.

Usage: ``python -m specexit_jax.demo.tokenizer_build --out DIR``.
"""

from __future__ import annotations

import argparse
import re
import string
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer
from transformers import PreTrainedTokenizerFast

from specexit_jax.demo.task import IM_END, IM_START, THINK_END, THINK_START, WORDS

PAD, EOT, UNK = "<pad>", "<|endoftext|>", "<unk>"
SPECIAL_TOKENS = (PAD, EOT, IM_START, IM_END, UNK)
"""Control tokens, marked special (dropped by ``skip_special_tokens``)."""
THINK_TOKENS = (THINK_START, THINK_END)
"""Thinking markers: atomic added tokens that are kept when decoding, as in Qwen3."""
ROLE_WORDS = ("system", "user", "assistant")
WHITESPACE = ("\n\n", "\n", " ")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}"
    "{{- '<think>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
"""Qwen3-like template; the generation prompt opens ``<think>`` unless thinking is disabled."""


def vocabulary() -> list[str]:
    """All tokens, in id order: special tokens, think markers, then text pieces."""
    words = sorted(set(WORDS) | set(ROLE_WORDS))
    chars = string.digits + string.ascii_letters + string.punctuation
    return [*SPECIAL_TOKENS, *THINK_TOKENS, *WHITESPACE, *words, *chars]


def build_backend() -> BackendTokenizer:
    """The demo tokenizer as a bare ``tokenizers.Tokenizer``."""
    vocab = vocabulary()
    # Longest first, so the regex prefers whole words; ties alphabetically, so every build is the same.
    words = sorted(set(WORDS) | set(ROLE_WORDS), key=lambda w: (-len(w), w))
    pattern = "|".join(["\n\n", "\n", " ", *map(re.escape, words), r"[\s\S]"])
    backend = BackendTokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(tok, special=False, normalized=False) for tok in THINK_TOKENS])
    return backend


def build_tokenizer(out_dir: str | Path) -> None:
    """Save the demo tokenizer (with chat template) to ``out_dir``."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_backend(),
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[EOT, IM_START],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the demo tokenizer and save it to a folder.")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the tokenizer files to")
    args = parser.parse_args(argv)
    build_tokenizer(args.out)
    print(f"wrote demo tokenizer ({len(vocabulary())} tokens) to {args.out}")


if __name__ == "__main__":
    main()
