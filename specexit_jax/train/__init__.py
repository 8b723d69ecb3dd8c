"""Training: traces -> labels -> batches -> the unrolled draft loss (or a LM loss) -> sharded steps.

    labels.py   per-position signal labels and masks of one trace (numpy)
    data.py     rows, packing, the draft vocab, a resumable batch iterator
    ttt.py      the draft unrolled over whole rows ("training-time test")
    losses.py   token + signal losses and metrics, LM loss, AUROC
    config.py   the YAML schema
    trainer.py  the jitted sharded step, checkpoints, metrics, export

Command line: `python -m specexit_jax.train --config configs/NAME.yaml [--resume]`.
"""
