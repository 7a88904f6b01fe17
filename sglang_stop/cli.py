"""`sglang-stop`: a thin click layer over the library (runner, benchmarks, schema).

User errors (bad flag, file, field) print one line and exit 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from sglang_stop.config import RuntimeConfig, config_from_dict, json_schema, load_config
from sglang_stop.version import __version__
from sglang_stop.cli_errors import run_cli_group
from sglang_stop.errors import UserError, positive_ints, warn

DEFAULT_CONFIG = Path(__file__).parent / "assets" / "default.yaml"


def _build_config(
    config: str | None,
    *,
    n: int | None = None,
    prefix_len: int | None = None,
    keep: int | None = None,
    scorer: str | None = None,
    seed: int | None = None,
    model: str | None = None,
    max_new_tokens: int | None = None,
    checkpoint: str | None = None,
    scorer_options: str | None = None,
    drop_stages: bool = False,
) -> RuntimeConfig:
    """The config file (or the packaged default) with command-line overrides, validated as one."""
    base = load_config(config) if config else load_config(DEFAULT_CONFIG)
    data: dict[str, Any] = base.model_dump()
    if drop_stages:  # calibrate records its own prune points; the config's stages do not apply
        data["stages"] = []
    if n is not None:
        data["n"] = n
    if prefix_len is not None or keep is not None:
        if prefix_len is None or keep is None:
            raise UserError("--prefix-len and --keep go together (one prune stage)")
        data["stages"] = [{"prefix_len": prefix_len, "keep": keep}]
    if scorer is not None:
        data["scorer"] = {"name": scorer, "options": data["scorer"]["options"] if data["scorer"]["name"] == scorer else {}}
        from sglang_stop.scorers import scorer_class

        if not scorer_class(scorer).prunes and prefix_len is None and data["stages"]:
            if config is not None:  # the user's own file: say what is dropped
                warn(f"--scorer {scorer} never prunes: ignoring the {len(data['stages'])} prune stage(s) of {config}")
            data["stages"] = []
    if seed is not None:
        data["seed"] = seed
    if model is not None:
        data["model"]["path"] = model
    if max_new_tokens is not None:
        data["sampling"]["max_new_tokens"] = max_new_tokens
    if scorer_options is not None:
        data["scorer"]["options"] = {**data["scorer"]["options"], **_json_object("--scorer-options", scorer_options)}
    if checkpoint is not None:
        if data["scorer"]["name"] != "stop":
            raise UserError(f"--checkpoint: only the stop scorer takes a checkpoint (scorer is {data['scorer']['name']!r})")
        data["scorer"]["options"] = {**data["scorer"]["options"], "checkpoint": checkpoint}
    src = "packaged default + command line" if config is None else f"{config} + command line"
    cfg = config_from_dict(data, src)
    from sglang_stop.scorers import scorer_class

    scorer_class(cfg.scorer.name)  # unknown scorer -> UserError now, not mid-run
    return cfg


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads: must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def _task_and_problems(cfg: RuntimeConfig, task_spec: str | None, problems: int, seed: int) -> tuple[Any, Any]:
    from sglang_stop.runner import load_problems
    from sglang_stop.tasks import load_task

    task = load_task(task_spec or cfg.task or "default")
    return task, load_problems(task, problems, seed)


@click.group()
@click.version_option(__version__, "--version", prog_name="sglang-stop", message="%(prog)s %(version)s")
def cli() -> None:
    """Parallel reasoning with learned early pruning (STOP) on SGLang."""


_base = [
    click.option("--config", type=click.Path(), default=None, help="runtime config (YAML/JSON); default: packaged"),
    click.option("--model", default=None, help="local HF model dir; default: embedded SmolLM2-135M-Instruct"),
    click.option("--task", default=None, help="reasoning-gym task (chain_sum, ...), mix:..., default, testbed, mmath:SUBSET, or a .jsonl"),
    click.option("--problems", type=click.IntRange(min=1), default=20, show_default=True, help="problems to run"),
    click.option("--seed", type=int, default=None, help="sampling seed (paths are seeded per problem and index)"),
    click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="path length cap"),
    click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True, help="problems run at once"),
    click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (1 is faster on a busy machine)"),
    click.option("--json", "as_json", is_flag=True, help="one JSON object on stdout"),
]
_prune = [
    click.option("--n", type=click.IntRange(min=1), default=None, help="paths per problem (overrides config)"),
    click.option("--prefix-len", type=click.IntRange(min=1), default=None, help="one prune stage: score after this many tokens"),
    click.option("--keep", type=click.IntRange(min=1), default=None, help="paths kept at that stage"),
    click.option("--scorer", default=None, help="registered scorer (none, random, confidence, entropy, stop, ...)"),
]


def server_options(f: Any) -> Any:
    """``--server URL`` (repeatable) or ``--router URL``: sample on SGLang servers instead of in process."""
    f = click.option("--router", default=None, metavar="URL",
                     help="an sglang-router in front of the servers (its workers are used; exclusive with --server)")(f)
    return click.option("--server", "servers", multiple=True, metavar="URL",
                        help="URL of an SGLang server with the sglang-stop plugin (repeat for several; each "
                             "problem is pinned to one)")(f)


def _warn_ignored(servers: tuple[str, ...], router: str | None, **given: Any) -> None:
    """One warning line per local-model option that a server run ignores (the server runs its own)."""
    if not servers and not router:
        return
    for name, value in given.items():
        if value is not None:
            warn(f"--{name} is ignored with --server/--router (the server runs its own model and adapter)")


def base_options(f: Any) -> Any:
    """Model, task, problems, sampling seed and length, concurrency, threads, --json."""
    for opt in reversed(_base):
        f = opt(f)
    return f


def common(f: Any) -> Any:
    """base_options plus one prune stage and the scorer (commands that run the pruned program)."""
    for opt in reversed(_base + _prune):
        f = opt(f)
    return f


@cli.command()
@common
@click.option("--out", type=click.Path(), default=None,
              help="per-problem results (JSONL, one line appended as each problem finishes)")
@click.option("--resume", is_flag=True, help="continue an interrupted --out file (same settings), skipping done problems")
@server_options
@click.option("--checkpoint", default=None, help="STOP checkpoint directory (sets scorer.options.checkpoint)")
@click.option("--scorer-options", "scorer_options", default=None, metavar="JSON",
              help='options of the scorer as a JSON object, e.g. \'{"window": 1, "reduce": "lowest"}\'')
@click.option("--question", default=None, help="answer this one question instead of the task's problems")
def run(
    config: str | None, model: str | None, task: str | None, problems: int, n: int | None, prefix_len: int | None,
    keep: int | None, scorer: str | None, seed: int | None, max_new_tokens: int | None, concurrency: int,
    threads: int | None, as_json: bool, out: str | None, resume: bool, servers: tuple[str, ...], router: str | None,
    checkpoint: str | None, scorer_options: str | None, question: str | None,
) -> None:
    """Run parallel reasoning with pruning on a task's problems and report accuracy and tokens."""
    from sglang_stop.run_command import RunRequest, execute_run

    _warn_ignored(servers, router, model=model, threads=threads, checkpoint=checkpoint)

    cfg = _build_config(config, n=n, prefix_len=prefix_len, keep=keep, scorer=scorer, seed=seed, model=model,
                        max_new_tokens=max_new_tokens, checkpoint=checkpoint, scorer_options=scorer_options)
    _set_threads(threads)
    req = RunRequest(cfg=cfg, task=task, problems=problems, concurrency=concurrency, out=out, resume=resume,
                     servers=list(servers), router=router, question=question, progress=True)
    summary, text = execute_run(req)
    click.echo(summary.model_dump_json() if as_json else text)


@cli.command()
def schema() -> None:
    """Print the runtime config's JSON Schema (what `stop-advise recommend` writes)."""
    click.echo(json.dumps(json_schema(), indent=2))


@cli.command()
@base_options
@click.option("--n-max", type=click.IntRange(min=1), default=16, show_default=True, help="paths sampled per problem")
@click.option("--prefix-lens", default="16,32,64", show_default=True, help="comma-separated prune points to record")
@click.option("--scorers", "scorer_names", default="confidence,entropy", show_default=True,
              help="comma-separated scorers to record (none/random need no recording)")
@click.option("--out", type=click.Path(), required=True, help="calibration JSONL (appended; resumable)")
@server_options
def calibrate(
    config: str | None, model: str | None, task: str | None, problems: int, seed: int | None,
    max_new_tokens: int | None, concurrency: int, threads: int | None, as_json: bool, n_max: int, prefix_lens: str,
    scorer_names: str, out: str, servers: tuple[str, ...], router: str | None,
) -> None:
    """Record every scorer at several prune points on unpruned paths: the advisor's calibration set."""
    from sglang_stop.calibrate import collect, preflight
    from sglang_stop.backends.fleet import Fleet, program_backend
    from sglang_stop.runner import make_backend

    _warn_ignored(servers, router, model=model, threads=threads)
    fleet = Fleet.from_options(servers, router)

    lens = positive_ints("--prefix-lens", prefix_lens)
    cfg = _build_config(config, seed=seed, model=model, max_new_tokens=max_new_tokens, drop_stages=True)
    names = [x.strip() for x in scorer_names.split(",") if x.strip()]
    from sglang_stop.scorers import scorer_class

    for name in names:
        scorer_class(name)
    opts = {name: (cfg.scorer.options if cfg.scorer.name == name else {}) for name in names}
    _set_threads(threads)
    tsk, probs = _task_and_problems(cfg, task, problems, cfg.seed)
    lens = preflight(cfg, tsk, out=out, n_max=n_max, prefix_lens=lens, scorers=opts)
    backend = program_backend(fleet) if fleet is not None else make_backend(cfg.model)
    try:
        added = collect(backend, tsk, probs, cfg, out=out, n_max=n_max, prefix_lens=lens, scorers=opts,
                        model_id=backend.get_model_name(), concurrency=concurrency, progress=True)
    finally:
        backend.shutdown()
    msg = {"out": out, "added": added, "problems": len(probs)}
    click.echo(json.dumps(msg) if as_json else f"{added} new records in {out} ({len(probs)} problems asked)")


@cli.group()
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("pipeline")
@common
def bench_pipeline(
    config: str | None, model: str | None, task: str | None, problems: int, n: int | None, prefix_len: int | None,
    keep: int | None, scorer: str | None, seed: int | None, max_new_tokens: int | None, concurrency: int,
    threads: int | None, as_json: bool,
) -> None:
    """Same problems and seed, pruned vs unpruned: tokens_ratio, wall_ratio, accuracies."""
    from sglang_stop.bench.pipeline import run_pipeline_bench
    from sglang_stop.runner import make_backend

    cfg = _build_config(config, n=n, prefix_len=prefix_len, keep=keep, scorer=scorer, seed=seed, model=model,
                        max_new_tokens=max_new_tokens)
    if len(cfg.stages) != 1 or cfg.stages[0].keep is None:  # the config's one stage is what is compared
        raise UserError("bench pipeline: give one prune stage (--prefix-len and --keep, or a config with one "
                        "stage of a fixed keep)")
    lp, k = cfg.stages[0].prefix_len, cfg.stages[0].keep
    _set_threads(threads)
    tsk, probs = _task_and_problems(cfg, task, problems, cfg.seed)
    backend = make_backend(cfg.model)
    try:
        res = run_pipeline_bench(backend, tsk, probs, cfg, prefix_len=lp, keep=k, scorer=cfg.scorer.name,
                                 concurrency=concurrency, progress=True)
    finally:
        backend.shutdown()
    from sglang_stop.bench.pipeline import pipeline_text

    click.echo(res.model_dump_json() if as_json else pipeline_text(res))


@bench.command("decode")
@click.option("--model", default=None, help="local HF model dir; default: embedded")
@click.option("--branches", default="1,4,16,64", show_default=True, help="comma-separated fork sizes")
@click.option("--tokens", default=64, show_default=True, help="tokens per branch")
@click.option("--json", "as_json", is_flag=True)
def bench_decode(model: str | None, branches: str, tokens: int, as_json: bool) -> None:
    """Decode throughput at 1..N branches of one fork, side by side with HF generate(num_return_sequences=N)."""
    from sglang_stop.bench.decode import run_decode_bench
    from sglang_stop.config import ModelSpec
    from sglang_stop.runner import make_backend

    sizes = positive_ints("--branches", branches)
    backend = make_backend(ModelSpec(path=model))
    try:
        res = run_decode_bench(backend, "Count slowly from one to fifty:", sizes, tokens)
    finally:
        backend.shutdown()
    from sglang_stop.bench.decode import decode_text

    click.echo(res.model_dump_json() if as_json else decode_text(res))


@bench.command("scoring")
@click.option("--model", default=None, help="local HF model dir; default: embedded SmolLM2-135M")
@click.option("--prefix-lens", default="64,128,256,512", show_default=True)
@click.option("--k", default=4, show_default=True, help="[STOP] tokens")
@click.option("--batch", default=16, show_default=True, help="branches scored together")
@click.option("--lora-r", default=16, show_default=True, help="LoRA rank of the untrained net (no --checkpoint)")
@click.option("--checkpoint", default=None, help="a STOP checkpoint instead of an untrained net (same cost)")
@click.option("--repeats", default=3, show_default=True, help="best of this many timings")
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--json", "as_json", is_flag=True)
def bench_scoring(model: str | None, prefix_lens: str, k: int, batch: int, lora_r: int, checkpoint: str | None,
                  repeats: int, threads: int | None, as_json: bool) -> None:
    """STOP scoring with KV reuse vs re-encoding the prefix (ratio = reuse_s / reencode_s)."""
    from sglang_stop.bench.scoring import run_scoring_bench
    from sglang_stop.models import load_model

    _set_threads(threads)
    lens = positive_ints("--prefix-lens", prefix_lens)
    m, _ = load_model(model)
    res = run_scoring_bench(m, model or "smollm2-135m-instruct", lens, k=k, batch=batch, lora_r=lora_r,
                            repeats=repeats, checkpoint=checkpoint)
    from sglang_stop.bench.scoring import scoring_text

    click.echo(res.model_dump_json() if as_json else scoring_text(res))


TESTBED_MODEL = Path(__file__).parent / "assets" / "testbed"
TESTBED_STOP = Path(__file__).parent / "assets" / "testbed-stop"
TESTBED_VERIFIER = Path(__file__).parent / "assets" / "testbed-verifier"
REASONER_STOP = Path(__file__).parent / "assets" / "smollm2-reasoner-stop"
# The committed pairs: a model, the task it is made for, its STOP checkpoint and verifier (if any).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "testbed": {"model": str(TESTBED_MODEL), "task": "testbed", "stop": TESTBED_STOP, "verifier": TESTBED_VERIFIER,
                "max_new_tokens": 64},
    "smollm2-reasoner": {"model": "smollm2-reasoner", "task": "reasoner", "stop": REASONER_STOP, "verifier": None,
                         "max_new_tokens": 96},
}


@bench.command("verifier")
@click.option("--model", default=None, help="HF base model dir; default: the committed testbed model")
@click.option("--checkpoint", default=None, help="STOP checkpoint; default: the committed testbed one")
@click.option("--verifier", "verifier_dir", default=None, help="verifier checkpoint; default: the committed testbed one")
@click.option("--tokens", default=28, show_default=True, help="prompt + prefix tokens per path (testbed: 28)")
@click.option("--batch", default=16, show_default=True, help="paths scored together")
@click.option("--repeats", default=5, show_default=True, help="best of this many timings")
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--json", "as_json", is_flag=True)
def bench_verifier(model: str | None, checkpoint: str | None, verifier_dir: str | None, tokens: int, batch: int,
                   repeats: int, threads: int | None, as_json: bool) -> None:
    """Type II verifier (re-encodes the prefix text) vs STOP (reads the cached KV): scoring cost, side by side."""
    from sglang_stop.bench.scoring import run_verifier_cost, verifier_cost_text
    from sglang_stop.models import load_model

    if model is not None and (checkpoint is None or verifier_dir is None):
        raise UserError("--model: name its --checkpoint and --verifier too (the defaults are the testbed's)")
    _set_threads(threads)
    m, _ = load_model(model or str(TESTBED_MODEL))
    res = run_verifier_cost(m, model or "testbed", checkpoint or str(TESTBED_STOP),
                            verifier_dir or str(TESTBED_VERIFIER), tokens, batch=batch, repeats=repeats)
    click.echo(res.model_dump_json() if as_json else verifier_cost_text(res))


@bench.command("compare")
@click.option("--model", default=None, help="HF model dir or name; default: the committed testbed model")
@click.option("--task", default=None, help="default: the model's own (testbed, reasoner), else the default mix")
@click.option("--problems", default=200, show_default=True)
@click.option("--n", default=16, show_default=True)
@click.option("--prefix-len", default=16, show_default=True)
@click.option("--keep", default=4, show_default=True)
@click.option("--max-new-tokens", type=int, default=None, help="default: the model's (testbed 64, reasoner 96), else 64")
@click.option("--temperature", default=1.0, show_default=True, help="the committed testbed STOP checkpoint's labels are at T=1")
@click.option("--checkpoint", default=None, help="STOP checkpoint; default: the committed testbed one")
@click.option("--scorers", "scorer_names", default="none,random,confidence,entropy,stop", show_default=True)
@click.option("--scorer-options", "scorer_options", multiple=True, metavar="NAME=JSON",
              help='options of one scorer, e.g. logprob=\'{"window": 1, "reduce": "lowest"}\' (repeatable)')
@click.option("--online", "online_json", default=None, metavar="JSON",
              help='add a DeepConf online-mode row with these options, e.g. \'{"warmup": 4, "percentile": 10}\'')
@click.option("--seed", default=1, show_default=True)
@click.option("--concurrency", default=8, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
def bench_compare(model: str | None, task: str | None, problems: int, n: int, prefix_len: int, keep: int,
                  max_new_tokens: int | None, temperature: float, checkpoint: str | None, scorer_names: str,
                  scorer_options: tuple[str, ...], online_json: str | None, seed: int, concurrency: int,
                  threads: int | None, as_json: bool) -> None:
    """Scorers at matched budget (same N, Lp, K, seeds) on held-out problems, with bootstrap intervals."""
    from sglang_stop.bench.compare import run_compare_bench
    from sglang_stop.config import ModelSpec
    from sglang_stop.runner import load_problems, make_backend
    from sglang_stop.scorers import make_scorer
    from sglang_stop.tasks import load_task

    _set_threads(threads)
    defaults = MODEL_DEFAULTS.get(model or "testbed") or {}  # a committed pair: its task and checkpoints
    model_dir = defaults.get("model", model)
    tsk = load_task(task or defaults.get("task", "default"))
    names = [x.strip() for x in scorer_names.split(",") if x.strip()]
    ckpt = checkpoint or (str(defaults["stop"]) if defaults else None)
    if "stop" in names and ckpt is None:
        raise UserError("--checkpoint: the stop scorer needs a STOP checkpoint for this model")
    opts: dict[str, dict[str, Any]] = {name: ({"checkpoint": ckpt} if name == "stop" else {}) for name in names}
    if "verifier" in names and defaults.get("verifier"):  # the committed verifier, as for stop
        opts["verifier"] = {"checkpoint": str(defaults["verifier"])}
    for name, extra in _parse_scorer_options(scorer_options, names).items():
        opts[name].update(extra)
    online = _json_object("--online", online_json) if online_json is not None else None
    max_new_tokens = max_new_tokens or defaults.get("max_new_tokens", 64)
    base = config_from_dict({"n": n, "seed": seed, "sampling": {"max_new_tokens": max_new_tokens,
                                                                 "temperature": temperature}}, "command line")
    if online is not None:  # validated with the row's own config now, before the model loads
        config_from_dict({**base.model_dump(), "stages": [], "scorer": {"name": "none"}, "online": online}, "--online")
    for name, o in opts.items():
        make_scorer(name, o)  # an unknown scorer or a bad option: one line, before the model loads
    probs = load_problems(tsk, problems, seed)
    backend = make_backend(ModelSpec(path=model_dir))
    try:
        res = run_compare_bench(backend, tsk, probs, base, scorers=opts, prefix_len=prefix_len, keep=keep,
                                concurrency=concurrency, seed=seed, progress=True, online=online)
    finally:
        backend.shutdown()
    from sglang_stop.bench.compare import compare_text

    click.echo(res.model_dump_json() if as_json else compare_text(res))


# What `bench signals` scores on each model whose STOP checkpoint ships with the package.
SIGNAL_ROWS: list[tuple[str, str, str, dict[str, Any]]] = [  # (row, taxonomy type, scorer, options)
    ("logprob-min", "III", "logprob", {"window": 1, "reduce": "lowest"}),
    ("logprob-mean", "III", "logprob", {}),
    ("entropy", "III", "entropy", {}),
    ("confidence-mean", "III", "confidence", {"top_k": 20}),
    ("confidence-lowest", "III", "confidence", {"top_k": 20, "window": 8, "reduce": "lowest"}),
    ("confidence-tail", "III", "confidence", {"top_k": 20, "window": 8, "reduce": "tail"}),
    ("confidence-bottom10", "III", "confidence", {"top_k": 20, "window": 8, "reduce": "bottom10"}),
    ("diversity", "I", "diversity", {"unit": "token", "n": 3}),
    ("random", "-", "random", {}),
]


@bench.command("signals")
@click.option("--labels", required=True, help="held-out label JSONL (`sglang-stop label`, e.g. -P 16 -K 1: whole paths)")
@click.option("--model", default=None, help="base model (dir or name); default: the committed testbed model")
@click.option("--checkpoint", default=None, help="STOP checkpoint; default: the model's committed one")
@click.option("--extra-stop", "extra", multiple=True, metavar="NAME=CKPT",
              help="another STOP checkpoint as its own row (ablations: hard labels, no adapter, k)")
@click.option("--verifier", "verifier_dir", default=None, help="Type II verifier checkpoint (default: the model's, if any)")
@click.option("--keep", "keeps", default="1,2,4", show_default=True, help="prefixes kept per problem, comma-separated")
@click.option("--prefix-len", type=click.IntRange(min=1), default=None,
              help="prune later than the labels do: whole-path labels (-K 1) re-cut at this many generated tokens "
                   "(paths ended by then are dropped, as label drops them)")
@click.option("--online", "online_json", multiple=True, metavar="JSON",
              help='replay DeepConf online with these options, e.g. \'{"percentile": 90, "window": 8}\' (repeatable)')
@click.option("--png", default=None, help="write accuracy vs tokens per scorer to this PNG")
@click.option("--out", "out_json", default=None, help="also write the JSON result to this file")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--json", "as_json", is_flag=True)
def bench_signals(labels: str, model: str | None, checkpoint: str | None, extra: tuple[str, ...],
                  verifier_dir: str | None, keeps: str, prefix_len: int | None, online_json: tuple[str, ...], png: str | None,
                  out_json: str | None, seed: int, threads: int | None, as_json: bool) -> None:
    """Every scorer on the same held-out paths: within-problem AUC and pruning replayed at each keep."""
    import random

    from sglang_stop.bench.signals import run_signals_bench, scorer_fn, signals_png, signals_text, stop_fn
    from sglang_stop.models import load_model
    from sglang_stop.training.labels import load_labels, recut

    _set_threads(threads)
    ks = positive_ints("--keep", keeps)
    from sglang_stop.config import OnlineConfig

    from pydantic import ValidationError

    from sglang_stop.errors import validation_message

    online = []
    for raw in online_json:
        try:
            online.append(OnlineConfig.model_validate(_json_object("--online", raw)))
        except ValidationError as e:
            raise UserError(validation_message(e, "--online")) from None
    defaults = MODEL_DEFAULTS.get(model or "testbed")
    if model is not None and defaults is None and checkpoint is None:
        raise UserError(f"--checkpoint: no committed STOP checkpoint for model {model!r}; name one")
    ckpt = checkpoint or (defaults or {}).get("stop")
    verifier = verifier_dir or (defaults or {}).get("verifier")
    records = load_labels(labels)
    if not records:
        raise UserError(f"--labels: {labels}: no label records")
    m, tok = load_model(defaults["model"] if defaults else model)
    if prefix_len is not None:
        n = len(records)
        records = recut(records, prefix_len, tok.decode)
        if not records:
            raise UserError(f"--prefix-len {prefix_len}: every path of {labels} ended by then")
        click.echo(f"re-cut at {prefix_len} tokens: {len(records)} of {n} paths still running", err=True)
    rng = random.Random(seed)
    rows: dict[str, tuple[str, Any]] = {"stop": ("IV", stop_fn(str(ckpt), m))}
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep or not name or name in rows:
            raise UserError(f"--extra-stop {item!r}: expected NAME=CKPT with a new NAME")
        rows[name] = ("IV", stop_fn(path, m))
    if verifier:
        rows["verifier"] = ("II", scorer_fn("verifier", {"checkpoint": str(verifier)}, rng))
    for name, kind, scorer, opts in SIGNAL_ROWS:
        rows[name] = (kind, scorer_fn(scorer, opts, rng))
    if model is None:  # the testbed's written steps can be checked: the oracle a learned scorer approaches
        from sglang_stop.testbed.data import check_steps

        rows["check_steps oracle"] = ("-", lambda p: [float(check_steps(r.question + r.prefix_text)) for r in p.records])
    elif defaults and defaults["task"] == "reasoner":  # the ceiling of any prefix reader: slips written so far
        from sglang_stop.tasks.reasoner import written_slip

        rows["written-slip oracle"] = ("-", lambda p: [float(not written_slip(r.problem_id, r.prefix_text))
                                                         for r in p.records])
    res = run_signals_bench(m, records, rows, keeps=ks, online=online, pad_id=tok.pad_token_id or 0, seed=seed,
                            labels=labels, model_name=model or "testbed", progress=True)
    if png:
        signals_png(res, png)
    if out_json:
        from sglang_stop.io import atomic_write_text

        atomic_write_text(out_json, res.model_dump_json(indent=1) + "\n")
    click.echo(res.model_dump_json() if as_json else signals_text(res))


def _json_object(flag: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def _parse_scorer_options(items: tuple[str, ...], names: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=JSON`` pairs -> {name: options}; the scorer must be one of ``--scorers``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in names:
            raise UserError(f"--scorer-options {item!r}: expected NAME=JSON with NAME one of --scorers ({', '.join(names)})")
        out.setdefault(name, {}).update(_json_object(f"--scorer-options {name}", raw))
    return out


def _add_commands() -> None:
    from sglang_stop.report_cli import report_cmd
    from sglang_stop.serve.cli import serve_cmd
    from sglang_stop.training.cli import label_cmd, train_cmd, train_reasoner_cmd, train_verifier_cmd

    cli.add_command(label_cmd, "label")
    cli.add_command(train_cmd, "train")
    cli.add_command(train_verifier_cmd, "train-verifier")
    cli.add_command(train_reasoner_cmd, "train-reasoner")
    cli.add_command(report_cmd, "report")
    cli.add_command(serve_cmd, "serve")


_add_commands()


def main(argv: list[str] | None = None) -> None:
    run_cli_group(cli, argv)


if __name__ == "__main__":
    main()
