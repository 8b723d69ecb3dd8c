"""Evaluation helpers: benchmark loaders, prompt formatting, answer extraction and graders."""
