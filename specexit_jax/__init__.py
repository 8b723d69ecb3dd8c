"""SpecExit in JAX: speculative decoding whose draft also predicts when a reasoning model may stop
thinking.

    import specexit_jax as sx
    sx.convert_hf(hf_dir, out_dir, dtype="bfloat16")     # HF target or EAGLE-3 draft -> ours
    cfg, params = sx.load_checkpoint(path)
    logits = sx.target_logits(params, cfg, tokens)         # int32[B,T] -> float32[B,T,V]
    res = sx.generate((cfg, params), (dcfg, dparams), prompts, mode="specexit", exit=sx.ExitConfig(...))

Names are imported on first use, so command lines (`python -m specexit_jax.convert --help`) start
without loading what they do not need.
"""

import importlib

# public name -> module that defines it
_EXPORTS = {
    "ModelConfig": "specexit_jax.config",
    "DraftConfig": "specexit_jax.draft",
    "target_logits": "specexit_jax.model",
    "load_checkpoint": "specexit_jax.checkpoint",
    "save_checkpoint": "specexit_jax.checkpoint",
    "convert_hf": "specexit_jax.convert",
    "generate": "specexit_jax.engine",
    "GenerateResult": "specexit_jax.engine",
    "ExitConfig": "specexit_jax.exit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'specexit_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
