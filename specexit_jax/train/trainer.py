"""The training loop: one jitted, sharded train step; Orbax checkpoints; metrics; the final export.

Two modes share everything but the objective:

    draft   an EAGLE-3 draft with SpecExit signal rows, on traces (`specexit_jax.traces`). The
            frozen target runs inside the step (online features and soft labels), sharded like
            the draft. Loss: `losses.draft_loss`.
    lm      a target `ModelConfig` trained from scratch on token sequences (the demo model).

Train state (a dict, sharded by `sharding.param_shardings`; optimizer moments follow their
params): `step`, `params` (the trained float leaves), `opt_state` and `consts` (the draft's
`d2t`). The step is `jax.jit` with in/out shardings and the state donated.

Checkpoints: `OUT/checkpoints/<step>` via an Orbax `CheckpointManager` (async saves, `keep` kept)
holds the state and the data position `(epoch, index)` with the seed. The data order is a pure
function of `(seed, epoch)` and the step has no other randomness, so `--resume` after a kill
replays exactly the batches the uninterrupted run would have seen: the same result.

Outputs in `OUT`: `config.yaml` (the resolved config), `metrics.jsonl` (one line per log / eval
interval: `{"step", "split", metric: value, ...}`; TensorBoard events too when `tensorboardX` is
installed), `checkpoints/`, and `final/`, the trained draft (or LM) as our checkpoint
(`checkpoint.save_checkpoint`), with the tokenizer files when a tokenizer folder was given.

Multi-host (a GPU pod or a TPU slice). Run the same command on every host; each process reads the
whole data files, computes the same global batch and feeds only its own devices' rows. The
distributed runtime starts when the environment says there are several processes:

    # 2 hosts x 8 GPUs, explicit coordinator (run on each host with its own JAX_PROCESS_ID):
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        python -m specexit_jax.train --config configs/qwen3_8b_draft.yaml --set mesh=data=2,fsdp=8
    # SLURM (srun, one task per host), Open MPI (mpirun) and Cloud TPU are detected by JAX:
    srun python -m specexit_jax.train --config configs/qwen3_8b_draft.yaml --set mesh=data=2,fsdp=8

`run.out` must be a folder every host sees (NFS, GCS). `checkpoint.save_checkpoint` writes from
one process, so on several hosts the final export is skipped: rerun the same command with
`--resume` on one host (any mesh that fits it) to write `final/` from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import yaml

from specexit_jax import checkpoint as ckpt
from specexit_jax import draft as D
from specexit_jax import model as M
from specexit_jax import sharding as shd
from specexit_jax.config import ModelConfig
from specexit_jax.train import data as data_lib
from specexit_jax.train.config import TrainConfig
from specexit_jax.train.losses import auroc, draft_loss, lm_loss

FINAL = "final"


# ---------------------------------------------------------------------------------------------
# Multi-host


# ---------------------------------------------------------------------------------------------
# What is trained: the objective, its params and its data


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything mode-specific. `objective(params, consts, frozen, batch) -> (loss, metrics)`;
    `probe(params, consts, frozen, batch)` -> per-position confidence `[B,T]` (draft with
    signals) or None; `export(params, consts, out)` writes the final checkpoint."""

    params: dict  # initial trainable params (sharded)
    consts: dict  # untrained leaves (sharded)
    frozen: dict | None  # the frozen target's params (sharded), or None
    frozen_shardings: dict | None
    objective: Callable
    probe: Callable | None
    export: Callable
    train_rows: dict
    eval_rows: dict | None


def _sharded(mesh, fn: Callable[..., dict], *args) -> dict:
    """`fn(*args)`, a params pytree, computed straight into its shardings on `mesh`."""
    shapes = jax.eval_shape(fn, *args)
    return jax.jit(fn, out_shardings=shd.param_shardings(mesh, shapes))(*args)


def _target_config(cfg: TrainConfig) -> ModelConfig:
    """The frozen target's config: from its checkpoint, or `model` for a random target."""
    if cfg.target is None:
        return cfg.model
    tcfg = ckpt.load_config(cfg.target)
    if not isinstance(tcfg, ModelConfig):
        raise ValueError(f"target {cfg.target}: is a draft checkpoint, not a target")
    return tcfg


def _target_params(cfg: TrainConfig, tcfg: ModelConfig, mesh, key) -> tuple[dict, dict]:
    """The frozen target's params (read from its checkpoint, or random) and their shardings."""
    shardings = shd.param_shardings(mesh, M.param_shapes(tcfg))
    if cfg.target is not None:
        return ckpt.load_checkpoint(cfg.target, shardings)[1], shardings
    return _sharded(mesh, lambda k: M.init_params(tcfg, k, cfg.init_scale), key), shardings


def _initial_draft(cfg: TrainConfig, tcfg: ModelConfig, rows: dict, mesh, key) -> tuple[D.DraftConfig, dict]:
    """The draft config and its params (sharded, `d2t` included), trained in float32: from
    `draft.init` (plus signal rows when it has none), or fresh with `d2t` of the most frequent
    completion tokens."""
    spec = cfg.draft
    if spec.init is None:
        counts = data_lib.completion_token_counts(rows, tcfg.vocab_size)
        d2t = data_lib.draft_vocab_offsets(counts, spec.vocab_size or tcfg.vocab_size)
        dcfg = D.DraftConfig.for_target(tcfg, len(d2t), spec.num_signals)
        dcfg = dataclasses.replace(dcfg, dtype="float32")
        return dcfg, _sharded(mesh, lambda k: D.init_params(dcfg, k, d2t=d2t), key)
    dcfg = ckpt.load_config(spec.init)
    if not isinstance(dcfg, D.DraftConfig):
        raise ValueError(f"draft.init {spec.init}: is a target checkpoint, not a draft")
    D.check_compatible(dcfg, tcfg)
    if spec.vocab_size not in (None, dcfg.draft_vocab_size):
        raise ValueError(f"config draft.vocab_size {spec.vocab_size}: draft.init has {dcfg.draft_vocab_size}")
    if dcfg.num_signals > spec.num_signals:
        raise ValueError("config draft.num_signals 0: draft.init has signal rows")
    dp = ckpt.load_checkpoint(spec.init, shd.param_shardings(mesh, D.param_shapes(dcfg)))[1]
    grow = dcfg.num_signals < spec.num_signals
    out_cfg = dataclasses.replace(dcfg, num_signals=spec.num_signals, dtype="float32")

    def prepare(dp, key):
        dp = {k: v.astype(jnp.float32) if k != "d2t" else v for k, v in dp.items()}
        return add_signal_rows(dp, key) if grow else dp

    return out_cfg, _sharded(mesh, prepare, dp, key)


def add_signal_rows(dp: dict, key, scale: float = 0.02) -> dict:
    """A plain EAGLE-3 draft's params plus the 3 SpecExit signal columns of `fc` (fresh, small)."""
    fc = dp["fc"]
    extra = (scale * jax.random.normal(key, (fc.shape[0], 3), jnp.float32)).astype(fc.dtype)
    return {**dp, "fc": jnp.concatenate([fc, extra], axis=1)}


def _in_vocab(rows: dict, source: str, vocab_size: int) -> dict:
    """`rows`, or a one-line error when a token id is outside the model's vocab."""
    top = int(rows["tokens"].max())
    if top >= vocab_size:
        raise ValueError(f"{source}: token id {top} is outside the model vocab (size {vocab_size})")
    return rows


def _tokenizer_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return [folder / f for f in ckpt.TOKENIZER_FILES if (folder / f).is_file()]


def draft_task(cfg: TrainConfig, mesh, tok, tok_dir: Path | None) -> Task:
    k_target, k_draft = jax.random.split(jax.random.key(cfg.seed))
    tcfg = _target_config(cfg)
    if tok is not None and tok.vocab_size > tcfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids, the target vocab only {tcfg.vocab_size}")
    pad = 0 if tok is None or tok.pad_id is None else tok.pad_id

    def rows_of(source):
        return _in_vocab(data_lib.draft_rows(source, cfg.data.seq_len, tok, pad), source, tcfg.vocab_size)

    rows = rows_of(cfg.data.train)
    eval_rows = rows_of(cfg.data.eval) if cfg.data.eval else None
    tparams, tshard = _target_params(cfg, tcfg, mesh, k_target)
    dcfg, params = _initial_draft(cfg, tcfg, rows, mesh, k_draft)
    consts = {"d2t": params.pop("d2t")}
    lcfg = cfg.loss
    compute = jnp.dtype(cfg.compute_dtype)

    def features(frozen, tokens):
        B, T = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        logits, aux, _ = M.forward(frozen, tcfg, tokens, positions)
        return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(aux)

    def objective(params, consts, frozen, batch):
        logits, aux = features(frozen, batch["tokens"])
        dp = {**M.cast_params(params, compute), **consts}
        return draft_loss(dp, dcfg, frozen["embed"], aux, logits, batch, lcfg)

    def probe(params, consts, frozen, batch):
        _, raw = D.project_raw({**params, **consts}, dcfg, features(frozen, batch["tokens"])[1])
        return jax.nn.sigmoid(raw[..., 0])

    def export(params, consts, out: Path):
        out_cfg = dataclasses.replace(dcfg, dtype=tcfg.dtype)
        dp = {**M.cast_params(params, jnp.dtype(tcfg.dtype)), **consts}
        ckpt.save_checkpoint(out, out_cfg, dp, _tokenizer_files(tok_dir), overwrite=True)

    return Task(
        params=params,
        consts=consts,
        frozen=tparams,
        frozen_shardings=tshard,
        objective=objective,
        probe=probe if dcfg.num_signals else None,
        export=export,
        train_rows=rows,
        eval_rows=eval_rows,
    )


def lm_task(cfg: TrainConfig, mesh, tok, tok_dir: Path | None) -> Task:
    mcfg = cfg.model
    if tok is not None and tok.vocab_size > mcfg.vocab_size:
        raise ValueError(f"config model.vocab_size {mcfg.vocab_size}: the tokenizer has {tok.vocab_size} ids")
    eos = tok.eos_ids[0] if tok is not None and tok.eos_ids else None
    pad = 0 if tok is None or tok.pad_id is None else tok.pad_id

    def rows_of(source):
        rows = data_lib.pack_documents(data_lib.lm_documents(source, tok), cfg.data.seq_len, eos, pad)
        return _in_vocab(rows, source, mcfg.vocab_size)

    train_rows = rows_of(cfg.data.train)
    eval_rows = rows_of(cfg.data.eval) if cfg.data.eval else None
    params = _sharded(mesh, lambda k: M.init_params(mcfg, k, cfg.init_scale), jax.random.key(cfg.seed))
    compute = jnp.dtype(cfg.compute_dtype)

    def objective(params, consts, frozen, batch):
        return lm_loss(M.cast_params(params, compute), mcfg, batch["tokens"], batch["loss_mask"])

    def export(params, consts, out: Path):
        ckpt.save_checkpoint(out, mcfg, params, _tokenizer_files(tok_dir), overwrite=True)

    return Task(
        params=params,
        consts={},
        frozen=None,
        frozen_shardings=None,
        objective=objective,
        probe=None,
        export=export,
        train_rows=train_rows,
        eval_rows=eval_rows,
    )


# ---------------------------------------------------------------------------------------------
# Optimizer and the jitted steps


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then AdamW (b2 = 0.95, no decay on rank-1 leaves) with linear
    warmup and cosine decay to 10% of `lr` at `total_steps`."""
    o = cfg.optim
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o.lr, o.warmup_steps, max(o.total_steps, o.warmup_steps + 1), end_value=0.1 * o.lr
    )
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim > 1, params)  # noqa: E731
    tx = optax.chain(
        optax.clip_by_global_norm(o.clip_norm),
        optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=o.weight_decay, mask=decay_mask),
    )
    return tx, schedule


def state_shardings(mesh, tx, state_shapes: dict) -> dict:
    """Shardings of the train state: params by the table, optimizer moments like their params,
    counters and consts replicated."""
    rep = shd.replicated(mesh)
    psh = shd.param_shardings(mesh, state_shapes["params"])
    osh = optax.tree_map_params(
        tx, lambda _, s: s, state_shapes["opt_state"], psh, transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )
    return {"step": rep, "params": psh, "opt_state": osh, "consts": jax.tree.map(lambda _: rep, state_shapes["consts"])}


def make_steps(task: Task, tx, schedule, mesh, state_sh: dict, batch_fields) -> tuple[Callable, Callable]:
    """The jitted `train_step(state, frozen, batch) -> (state, metrics)` (state donated) and
    `eval_step(state, frozen, batch) -> (metrics, confidence or None)`."""
    rep = shd.replicated(mesh)
    bsh = {k: shd.batch_sharding(mesh) for k in batch_fields}
    fsh = task.frozen_shardings

    def train_step(state, frozen, batch):
        grad_fn = jax.value_and_grad(task.objective, has_aux=True)
        (_, metrics), grads = grad_fn(state["params"], state["consts"], frozen, batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        metrics = {**metrics, "grad_norm": grad_norm, "lr": schedule(state["step"])}
        new = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "consts": state["consts"],
        }
        return new, metrics

    def eval_step(state, frozen, batch):
        _, metrics = task.objective(state["params"], state["consts"], frozen, batch)
        conf = None if task.probe is None else task.probe(state["params"], state["consts"], frozen, batch)
        return metrics, conf

    train = jax.jit(train_step, in_shardings=(state_sh, fsh, bsh), out_shardings=(state_sh, rep), donate_argnums=0)
    evaluate = jax.jit(eval_step, in_shardings=(state_sh, fsh, bsh))
    return train, evaluate


def put_batch(batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """A host batch (the same global batch on every process) as global arrays: each process
    fills only the shards of its own devices."""
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx]) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Logging


class MetricsLog:
    """`OUT/metrics.jsonl` (process 0), plus TensorBoard events when tensorboardX is installed."""

    def __init__(self, out: Path, resume_step: int):
        self.path = out / "metrics.jsonl"
        self.main = jax.process_index() == 0
        self.tb = None
        if not self.main:
            return
        if self.path.exists():  # drop lines a killed run wrote after its last checkpoint
            keep = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _mean(acc: dict, n: int) -> dict[str, float]:
    return {k: round(float(v) / n, 6) for k, v in jax.device_get(acc).items()}


def run_eval(task: Task, evaluate, state, batches: list[dict], bsh) -> dict[str, float]:
    """Mean metrics over the eval batches, plus confidence AUROC over all signal positions."""
    total, scores, labels = None, [], []
    for batch in batches:
        metrics, conf = evaluate(state, task.frozen, put_batch(batch, bsh))
        total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
        if conf is not None:
            m = batch["signal_mask"]
            scores.append(np.asarray(jax.device_get(conf))[m])
            labels.append(batch["confidence"][m])
    out = _mean(total, len(batches))
    if scores:
        out["confidence_auroc"] = round(auroc(np.concatenate(scores), np.concatenate(labels)), 6)
    return out


# ---------------------------------------------------------------------------------------------
# The run


def _tokenizer(cfg: TrainConfig, out: Path):
    """The tokenizer (or None) and the folder it lives in; "demo" builds the demo tokenizer."""
    from specexit_jax.tokenizer import Tokenizer, has_tokenizer_files

    spec = cfg.data.tokenizer
    if spec == "demo":
        from specexit_jax.demo.tokenizer_build import build_tokenizer

        folder = out / "tokenizer"
        if jax.process_index() == 0:
            build_tokenizer(folder)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("demo tokenizer written")
        return Tokenizer(folder), folder
    if spec is None and cfg.target is not None and has_tokenizer_files(cfg.target):
        spec = cfg.target
    return (Tokenizer(spec), Path(spec)) if spec is not None else (None, None)


def _checkpoint_manager(out: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
    return ocp.CheckpointManager(out.absolute() / "checkpoints", options=options)


@dataclasses.dataclass
class Run:
    """A built run: the task, the optimizer and the jitted steps over one mesh."""

    task: Task
    tx: optax.GradientTransformation
    shapes: dict  # the train state as ShapeDtypeStructs
    state_sh: dict  # ... and its shardings
    train_step: Callable
    eval_step: Callable
    batch_sh: jax.sharding.Sharding

    def init_state(self) -> dict:
        """Step 0: the task's params and a fresh optimizer state, in their shardings."""
        state = {"step": jnp.int32(0), "params": self.task.params, "opt_state": None, "consts": self.task.consts}
        init = jax.jit(lambda s: {**s, "opt_state": self.tx.init(s["params"])}, out_shardings=self.state_sh)
        return init(state)

    def abstract_state(self) -> dict:
        """The state's shapes with shardings attached (what a checkpoint restores into)."""
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), self.shapes, self.state_sh
        )


def build(cfg: TrainConfig, mesh, out: Path) -> Run:
    """The task of `cfg.mode` on `mesh` (tokenizer files under `out` when `data.tokenizer` is
    "demo"), the optimizer, the state shardings and the jitted steps."""
    shards = shd.batch_shards(mesh)
    if cfg.data.batch_size % shards:
        raise ValueError(f"config data.batch_size {cfg.data.batch_size}: must be a multiple of data x fsdp = {shards}")
    tok, tok_dir = _tokenizer(cfg, out)
    task = (draft_task if cfg.mode == "draft" else lm_task)(cfg, mesh, tok, tok_dir)
    tx, schedule = make_optimizer(cfg)
    state = {"step": jnp.int32(0), "params": task.params, "opt_state": None, "consts": task.consts}
    shapes = jax.eval_shape(lambda s: {**s, "opt_state": tx.init(s["params"])}, state)
    state_sh = state_shardings(mesh, tx, shapes)
    train_step, eval_step = make_steps(task, tx, schedule, mesh, state_sh, tuple(task.train_rows))
    return Run(task, tx, shapes, state_sh, train_step, eval_step, shd.batch_sharding(mesh))


def train(cfg: TrainConfig, *, stop: int | None = None, resume: bool = False, log=print) -> Path | None:
    """Train as `cfg` says until step `stop` (default `optim.total_steps`); returns the export
    folder (None when several processes ran). `resume` continues from the latest checkpoint."""
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    stop = cfg.optim.total_steps if stop is None else stop
    mngr = _checkpoint_manager(out, cfg.run.keep)
    try:
        state, task = _fit(cfg, mngr, out, stop, resume, log)
    finally:
        mngr.wait_until_finished()
        mngr.close()
    if jax.process_count() > 1:
        log("several processes: final export skipped (rerun with --resume on one host to write it)")
        return None
    final = out / FINAL
    task.export(state["params"], state["consts"], final)
    log(f"wrote {cfg.mode} checkpoint {final}")
    return final


def _fit(cfg: TrainConfig, mngr: ocp.CheckpointManager, out: Path, stop: int, resume: bool, log):
    """Build, start or restore, and loop to `stop`; returns the final state and the task."""
    latest = mngr.latest_step()
    if latest is not None and not resume:
        raise ValueError(f"{out}/checkpoints holds step {latest}: pass --resume to continue, or pick a new --out")
    run = build(cfg, shd.make_mesh(cfg.mesh), out)
    position = data_lib.Position()
    if latest is not None:
        args = ocp.args.Composite(state=ocp.args.StandardRestore(run.abstract_state()), data=ocp.args.JsonRestore())
        restored = mngr.restore(latest, args=args)
        state, meta = restored["state"], restored["data"]
        if meta["seed"] != cfg.seed:
            raise ValueError(f"config seed {cfg.seed}: the checkpoint was trained with seed {meta['seed']}")
        position = data_lib.Position(meta["epoch"], meta["index"])
        log(f"resumed from step {latest} ({out}/checkpoints)")
    else:
        state = run.init_state()
    if jax.process_index() == 0:
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    step = int(jax.device_get(state["step"]))
    task = run.task
    batches = data_lib.Batches(task.train_rows, cfg.data.batch_size, cfg.seed, position)
    eval_data = None
    if task.eval_rows is not None:
        eval_data = data_lib.eval_batches(task.eval_rows, cfg.data.batch_size, cfg.data.eval_batches)
    metrics_log = MetricsLog(out, step)
    try:
        state = Loop(cfg, run, mngr, metrics_log, log).run(state, step, stop, batches, eval_data)
    finally:
        metrics_log.close()
    return state, task


@dataclasses.dataclass
class Loop:
    """Steps, logging, evaluation and checkpoint saves from `step` to `stop`."""

    cfg: TrainConfig
    built: Run
    mngr: ocp.CheckpointManager
    metrics_log: MetricsLog
    log: Callable

    def run(self, state: dict, step: int, stop: int, batches: data_lib.Batches, eval_data) -> dict:
        from tqdm import tqdm

        r, rn = self.cfg.run, self.built
        tokens_per_step = self.cfg.data.batch_size * self.cfg.data.seq_len
        acc, n_acc, t0 = None, 0, time.perf_counter()
        bar = tqdm(total=stop, initial=step, unit="step", disable=None if jax.process_index() == 0 else True)
        while step < stop:
            state, metrics = rn.train_step(state, rn.task.frozen, put_batch(next(batches), rn.batch_sh))
            step += 1
            acc = metrics if acc is None else jax.tree.map(jnp.add, acc, metrics)
            n_acc += 1
            bar.update()
            if step % r.log_every == 0 or step == stop:
                mean = _mean(acc, n_acc)
                dt = time.perf_counter() - t0
                mean["tokens_per_s"] = round(n_acc * tokens_per_step / dt, 1)
                self.metrics_log.write(step, "train", mean)
                bar.set_postfix(loss=f"{mean['loss']:.4f}")
                acc, n_acc, t0 = None, 0, time.perf_counter()
            if eval_data is not None and (step % r.eval_every == 0 or step == stop):
                self.metrics_log.write(step, "eval", run_eval(rn.task, rn.eval_step, state, eval_data, rn.batch_sh))
            if step % r.save_every == 0 or step == stop:
                self.save(step, state, batches.position)
        bar.close()
        return state

    def save(self, step: int, state: dict, position: data_lib.Position) -> None:
        meta = {"epoch": position.epoch, "index": position.index, "seed": self.cfg.seed}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(meta))
        self.mngr.save(step, args=args)
