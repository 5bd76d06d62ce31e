"""The ``pipeline`` console command: one subcommand per stage, and ``run`` for all of them."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError, error_line
from pipeline.run_log import close_refused, detach, quiet_terminal, setup_logging

log = logging.getLogger("pipeline")
_collector_paused = False  # console_main paused the cyclic collector for the imports


def _config_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        parser.add_argument("config", nargs="?", help="experiment YAML")
    parser.add_argument("--config", dest="config_opt", help="experiment YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (dotted path)")


def _load(args: argparse.Namespace, writes: bool = True):
    from pipeline.config import load_config
    from pipeline.executor import executor_overrides
    from pipeline.runs import next_version

    path = getattr(args, "config", None) or args.config_opt
    if not path:
        raise PipelineError("no config given: pass CONFIG or --config CONFIG")
    cfg = load_config(path, args.overrides + executor_overrides(
        getattr(args, "executor", None), getattr(args, "address", None)))
    if getattr(args, "new_version", False):
        name = next_version(cfg)
        if name != cfg.name:
            print(f"{cfg.name}: this config runs as {name}", file=sys.stderr)
            cfg = cfg.model_copy(update={"name": name})
    from pipeline.engine.distributed import is_main
    from pipeline.run_writable import run_log

    # a multi-process launch: rank 0 alone writes the run's log (and files)
    setup_logging(run_log(cfg.run_dir, writes) if is_main() else None)
    if not is_main():  # its progress is rank 0's: one log per launch, warnings from each
        logging.getLogger().setLevel(logging.WARNING)
    return cfg


def _training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="retrain a run folder that holds another config")
    parser.add_argument("--new-version", action="store_true",
                        help="run a changed config as <name>-v2, -v3, ... (the next free one)")
    parser.add_argument("--executor", choices=["local", "ray"], default=None,
                        help="where the (seed, fold) jobs run (default: the config's "
                        "'executor.name', local)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster: 'auto' (the one running here) or the head's address "
                        "(default: start one on this machine)")


def cmd_folds(args: argparse.Namespace) -> int:
    from pipeline import folds

    folds.run(_load(args, writes=False))  # the folds file alone
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline import train
    from pipeline.engine.distributed import is_main

    cfg = _load(args)
    score = train.run(cfg, overwrite=args.overwrite)
    if is_main():  # once per launch, not once per rank
        print(f"{cfg.name}: CV {cfg.competition.metric} = {score:.5f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import predict

    predict.run(_load(args))
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    from pipeline import pseudo

    print(pseudo.run(_load(args)))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipeline import submit

    source = args.blend or args.run
    name, submissions_dir, clip = args.name, args.submissions_dir, args.clip
    if source is not None and (args.config or args.config_opt or args.overrides):
        raise PipelineError("give a config, or --run/--blend, not both: the submission comes "
                            "from one source")
    if args.blend and args.run:
        raise PipelineError("give --run or --blend, not both")
    if source is None:
        cfg = _load(args, writes=False)  # reads the run: one attached read-only is submitted
        config_args = shlex.join(["--config", args.config or args.config_opt,
                                  *(x for item in args.overrides for x in ("--set", item))])
        args.competition_dir = submit.check_config_run(cfg, config_args)  # the config's run
        source, name = cfg.run_dir, name or cfg.name
        submissions_dir = submissions_dir or cfg.submissions_dir
        clip = clip or cfg.predict.clip
    path = submit.run(source, name, submissions_dir or "submissions", clip or "auto",
                      args.competition_dir)
    print(path)
    return 0


def cmd_blend(args: argparse.Namespace) -> int:
    from pipeline import blend, submit
    from pipeline.config import parse_value

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineError(f"--param {item!r} must look like key=value")
        params[key] = parse_value(value)
    folder = blend.run(args.runs, method=args.method, name=args.name, blends_dir=args.blends_dir,
                       n_trials=args.trials, storage=args.storage, seed=args.seed,
                       params=params, postprocess=args.postprocess, overwrite=args.overwrite,
                       new_version=args.new_version,
                       submissions_dir=args.submissions_dir or "submissions")
    print(folder)
    if args.submit:
        print(submit.run(folder, None, args.submissions_dir or "submissions"))
    return 0


def cmd_diversity(args: argparse.Namespace) -> int:
    from pipeline.blend import load_members
    from pipeline.ensemble import diversity_report, format_report
    from pipeline.metrics import get_metric
    from pipeline.run_targets import targets_for_meta

    members = load_members(args.runs)
    y = targets_for_meta(members.meta)
    print(format_report(diversity_report(members.names, members.oof, y,
                                         get_metric(members.meta.metric,
                                                    members.meta.scored_values))))
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    from pipeline.pairs import expand_pairs

    for path in expand_pairs(args.config, args.out):
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import submit, train
    from pipeline.competition import load_competition
    from pipeline.engine.distributed import is_main
    from pipeline.runs import last_epoch_note, read_scores

    cfg = _load(args)
    comp = load_competition(cfg.competition)
    score = train.run(cfg, comp, overwrite=args.overwrite)  # folds first, inputs checked
    if not is_main():  # a multi-process launch: rank 0 writes the submission
        return 0
    path = submit.run(cfg.run_dir, cfg.name, cfg.submissions_dir, cfg.predict.clip)
    print(f"{cfg.name}: CV {cfg.competition.metric} = {score:.5f}")
    scores = read_scores(cfg.run_dir)
    last = scores["scores"].get("oof_last_epoch")
    if last is not None and cfg.train.predicting_epoch == "best":
        note = last_epoch_note(cfg, score, last)
        print(f"{cfg.name}: CV of the last epochs = {last:.5f} ({note})")
    if (post := scores.get("postprocess")) and post["applied"]:  # what the labels score
        print(f"{cfg.name}: CV with the tuned post-processing = {post['in_sample']:.5f} "
              f"(nested CV {post['nested']['mean']:.5f}, {post['nested_without']:.5f} without)")
    if how := scores.get("full_fit"):  # the CV above is the folds'; the test rows are not
        made = "of the full models" if how == "replace" else "averaged with the full models"
        print(f"{cfg.name}: test predictions {made} (train.full_fit); the CV is the folds'")
    print(f"submission: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    run_demo(args.root, args.only)
    return 0


_EXAMPLES = """examples:
  pipeline run configs/exp.yaml                     folds + train + submit, prints the CV
  pipeline train configs/exp.yaml --set train.epochs=3 --new-version
  pipeline predict configs/exp.yaml --set "predict.tta=[hflip]"
  pipeline blend --runs runs/a runs/b --method optuna --name ab --submit
  pipeline submit --blend blends/ab
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; examples kept as written."""


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kaggle-pipeline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pipeline`` command."""
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Staged k-fold pipeline for Kaggle-style competitions: "
        "one subcommand per stage, and 'run' for all of them.", epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_package_version()}")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and only warnings in the log")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_text in (
        ("folds", cmd_folds, "write folds/<name>.csv"),
        ("train", cmd_train, "train every seed and fold: OOF + test predictions"),
        ("predict", cmd_predict, "refresh predictions (TTA) from the fold checkpoints"),
        ("pseudo", cmd_pseudo, "pseudo-label test (and unlabelled train) rows per fold"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example: pipeline {name} configs/exp.yaml --set "
                           "train.epochs=3", formatter_class=_Formatter)
        _config_args(p, positional=True)
        if name == "train":
            _training_args(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser("run", help="folds + train + submit from one config")
    _config_args(p, positional=True)
    _training_args(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("submit", help="write submissions/<name>.csv from a run or blend")
    _config_args(p, positional=True)
    p.add_argument("--run", help="run folder (instead of a config)")
    p.add_argument("--blend", help="blend folder (instead of a config)")
    p.add_argument("--name", help="submission name (default: the run's or blend's)")
    p.add_argument("--submissions-dir", default=None)
    p.add_argument("--clip", choices=["auto", "on", "off"], default=None,
                   help="regression: values held to the train target's range where the OOF, "
                   "each fold clipped to its training rows' range, scores better (auto, the "
                   "default, or the config's predict.clip), always (on) or never (off)")
    p.set_defaults(fn=cmd_submit, competition_dir=None)  # a config's: check_config_run
    p = sub.add_parser("blend", help="tune ensemble weights on the OOF of several runs")
    p.add_argument("--runs", nargs="+", required=True, help="run or blend folders")
    p.add_argument("--method", default="optuna",
                   help="mean, optuna, hill_climb, rank, power, stacking")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="blender setting, e.g. per_class=true, n_iter=50, power=3, "
                   "objective=fold_mean (optuna, hill_climb: tune on the mean of the folds' "
                   "scores, not the pooled OOF's; auto: so under ROC AUC and other ranking "
                   "metrics)")
    p.add_argument("--name", default=None)
    p.add_argument("--blends-dir", default="blends")
    p.add_argument("--trials", "--n-trials", dest="trials", type=int, default=300)
    p.add_argument("--storage", default=None,
                   help="Optuna storage: a journal file path (default: <blend>/study.journal, "
                   "resumed by a rerun with more trials) or an RDB URL such as "
                   "sqlite:///study.db or postgresql://... (several machines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--submit", action="store_true", help="also write the submission")
    p.add_argument("--submissions-dir", default=None)
    p.add_argument("--postprocess", choices=["auto", "on", "off"], default="auto",
                   help="label metrics: tuned thresholds / class weights only where they "
                   "improve the nested CV score (auto), always (on) or never (off)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a blend of other members or another method under --name")
    p.add_argument("--new-version", action="store_true",
                   help="write such a blend as <name>-v2, -v3, ... (the next free one)")
    p.set_defaults(fn=cmd_blend)
    p = sub.add_parser("diversity", help="member scores and OOF correlation of runs")
    p.add_argument("--runs", nargs="+", required=True, help="run or blend folders")
    p.set_defaults(fn=cmd_diversity)
    p = sub.add_parser("pairs", help="one config per pair of a config's encoders")
    p.add_argument("config", help="experiment YAML listing 3+ encoders")
    p.add_argument("--out", default=None, help="folder for the new configs (default: beside)")
    p.set_defaults(fn=cmd_pairs)
    p = sub.add_parser("demo", help="build the bundled demo competitions and run them")
    p.add_argument("--root", default="data/demo")
    p.add_argument("--only", nargs="*", default=None, choices=["image", "text", "tabular"],
                   help="run only these demos")
    p.set_defaults(fn=cmd_demo)
    from pipeline.adversarial_validation import register as register_adversarial
    from pipeline.leaderboard import register as register_leaderboard
    from pipeline.pretraining import register as register_pretrain
    from pipeline.report import register as register_report
    from pipeline.sweep import register as register_sweep

    register_adversarial(sub)
    register_leaderboard(sub)
    register_report(sub)
    register_pretrain(sub)
    register_sweep(sub)
    return parser


def _resume_collector() -> None:
    """The imports are in: freeze what they made (modules live as long as the process; the
    collector never walks them again) and let the collector run for the command's own work."""
    global _collector_paused
    if _collector_paused:
        gc.freeze()
        gc.enable()
        _collector_paused = False


def console_main(argv: Sequence[str] | None = None) -> int:
    """:func:`main` as a process's entry point (the ``pipeline`` console script, ``python -m
    pipeline``, the stage scripts), with Python's cyclic garbage collector paused while the
    command's modules import. Each full collection walks every object alive, and the imports
    grow the heap to ~450,000 objects, triggering a full collection each time it grows by a
    quarter: ~0.7 s of every start-up on a 2-core CPU. Not in :func:`main` itself, which
    tests and notebooks call in a process that lives on."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True
    try:
        return main(argv)
    finally:
        _resume_collector()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)  # imports every subcommand's modules
    _resume_collector()
    setup_logging()
    # the terminal gets warnings, the run's log.txt all; for this command alone
    loud_again = quiet_terminal() if getattr(args, "quiet", False) else None
    from pipeline.engine.plan import quiet_library_progress

    quiet_library_progress()  # transformers' 'Loading weights' bars follow ours
    try:
        return int(args.fn(args))
    except PipelineError as err:
        line = error_line(err)
        print(f"error: {line}", file=sys.stderr)
        close_refused(line)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:  # the run's log ends with its command: main() is called again in a notebook
        detach()
        if loud_again is not None:
            loud_again()


if __name__ == "__main__":
    sys.exit(console_main())
