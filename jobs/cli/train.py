"""`arcmatch train`: a run described by TrainConfig, from a config file (`--config`), flags, or both.

The flags are generated from TrainConfig's fields (their types, choices and help), so each default is written
once, in trainer/config.py; a file gives a whole run (trainer/configs/*.json), flags override it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput, NotFound
from jobs.cli.options import job_console, ray_flag, settings_from
from trainer.config import TrainConfig, read_config_file
from trainer.run_record import new_run_name

SKIPPED_REPORT = "skipped.csv"  # beside the model a run wrote: the images it could not read, and why

DEFAULT_BACKBONE = "resnet10t"  # when neither a config file nor --backbone names one; ModelSpec has the rest
SPECIAL = {"data", "spec", "margins"}  # fields with hand-made flags below
MARGIN_FLAGS = {"m1": "multiplicative angular margin (sphereface, combined)", "m2": "additive angular margin "
                "(arcface, combined)", "m3": "additive cosine margin (cosface, combined)", "m": "adaface: margin",
                "h": "adaface: how far the norm moves the margin"}
SPEC_FLAGS = {"backbone": "backbone", "embedding_size": "embedding_size", "input_size": "input_size",
              "crop_box": "crop_box"}


def _field_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in SPECIAL:
            continue
        default = f.default if f.default is not MISSING else None
        kind = hints[f.name]
        options: dict = {"dest": f.name, "default": argparse.SUPPRESS,
                         "help": f"{f.metadata['help']} (default: {default})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            options["choices"] = f.metadata.get("choices")
        p.add_argument("--" + f.name.replace("_", "-"), **options)


def register(sub) -> None:
    p = sub.add_parser("train", help="train an embedding model with Ray Train",
                       description="Flags override --config, which overrides TrainConfig's defaults.")
    p.add_argument("--config", help="a run's JSON file (TrainConfig fields), or a shipped one: demo, r50-gpu")
    p.add_argument("--data", default=argparse.SUPPRESS,
                   help="identity/image tree, manifest (CSV/Parquet: path, identity), or Parquet shards")
    p.add_argument("--out", required=True, help="directory for the exported embedder checkpoint")
    spec = p.add_argument_group("model (the ModelSpec)")
    spec.add_argument("--backbone", help=f"any timm model name (default: {DEFAULT_BACKBONE})")
    spec.add_argument("--embedding-size", type=int, help="embedding dimension (default: 512)")
    spec.add_argument("--input-size", type=int, help="square input side in pixels (default: 112)")
    spec.add_argument("--crop-box", type=float, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                      help="face region as fractions of the image, cropped before the resize (default: whole image)")
    head = p.add_argument_group("margins (radians; default: the head's own)")
    for name, meaning in MARGIN_FLAGS.items():
        head.add_argument(f"--{name}", type=float, help=meaning)
    _field_flags(p.add_argument_group("training (TrainConfig)"))
    run = p.add_argument_group("the run")
    run.add_argument("--storage", default="./runs", help="Ray Train storage path for checkpoints")
    run.add_argument("--name", help="run name (default: arcmatch-train-<time>)")
    run.add_argument("--resume", metavar="NAME", help="continue the run NAME in --storage from its latest checkpoint")
    ray_flag(run)
    p.set_defaults(run=train)


def config_from(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from its defaults, then the --config file, then the flags."""
    data = read_config_file(args.config) if args.config else {}
    data.update({f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if f.name not in SPECIAL and hasattr(args, f.name)})
    spec = {"backbone": DEFAULT_BACKBONE, **data.get("spec", {})}
    for flag, key in SPEC_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            spec[key] = [value, value] if flag == "input_size" else value
    data["spec"] = spec
    margins = {**data.get("margins", {}), **{m: getattr(args, m) for m in MARGIN_FLAGS
                                              if getattr(args, m, None) is not None}}
    data["margins"] = margins
    if hasattr(args, "data"):
        data["data"] = args.data
    if "data" not in data:
        raise BadInput("train needs --data (an image tree, a manifest or Parquet shards)")
    if "://" not in data["data"]:
        data["data"] = str(Path(data["data"]).resolve())
    return TrainConfig.from_dict(data)


def train(args: argparse.Namespace) -> int:
    from jobs.runtime import init_ray
    from trainer.ray_loop import fit

    config = config_from(args)
    if args.resume and not (Path(args.storage) / args.resume).is_dir():
        raise NotFound(f"no run {args.resume!r} in {args.storage} to resume")
    settings = settings_from(args)
    name = args.resume or args.name or new_run_name()
    resuming = (Path(args.storage) / name).is_dir()  # Ray Train goes on from its last checkpoint
    init_ray(settings.ray_address)
    with job_console(settings, "train") as console:
        console.say(f"{'resuming run' if resuming else 'training run'} {name}: {config.spec.backbone} "
                    f"({config.head}) on {config.data} with {config.workers} worker(s)")
        try:
            with console.stage("train", unit="step") as bar:
                result = fit(config, args.out, storage=args.storage, name=name, on_progress=bar.show_training)
        except KeyboardInterrupt:  # what to type to go on, where the run's name was nowhere on the screen
            print(f"run {name} stopped: `arcmatch train ... --resume {name} --storage {args.storage}` with the same "
                  "settings goes on from its last checkpoint", file=sys.stderr)
            raise
        console.finish({"epochs": len(result.history), "steps": sum(h["steps"] for h in result.history),
                        "skipped": len(result.skipped), "seconds": result.seconds,
                        "loss": result.history[-1]["loss"]}, "partial" if result.skipped else "ok")
    first, last = result.history[0], result.history[-1]
    if result.note:
        print(result.note)
    print(f"trained {config.spec.backbone}: loss {first['loss']:.3f} -> {last['loss']:.3f}, "
          f"{last['images_per_s']:.0f} img/s, {len(result.skipped)} images skipped, {result.seconds:.0f} s; "
          f"checkpoint in {args.out}")
    if not result.skipped:
        return EXIT_OK
    report = Path(args.out) / SKIPPED_REPORT  # as every command with skipped inputs: exit 3, and the list
    with report.open("w", newline="") as out:
        csv.writer(out).writerows([("file", "reason"), *result.skipped])
    print(f"the skipped images and why: {report}")
    return EXIT_PARTIAL
