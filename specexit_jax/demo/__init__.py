"""Tiny synthetic reasoning task, its tokenizer, and the demo model built on them."""
