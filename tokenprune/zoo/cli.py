"""`tokenprune zoo`: export a reference model for vLLM, or retrain one from scratch.

    tokenprune zoo export toy-vlm DIR         # a copy vLLM loads (tokenprune serve DIR ...)
    tokenprune zoo train-vlm|train-vlm2|train-lm --out DIR [--steps N] [--device cuda] [--threads N]

`python -m tokenprune.zoo ...` takes the same arguments.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# subcommand: the model it trains (`train.train_vlm`, `train.train_vlm2`, `train.train_lm`)
TRAINERS = {"train-vlm": "toy-vlm", "train-vlm2": "toy-vlm-2", "train-lm": "toy-lm"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    export = commands.add_parser("export", help="write a reference model in the layout vLLM loads")
    export.add_argument("name", choices=("toy-vlm",))
    export.add_argument("out", type=Path, help="directory for the copy")
    for name in TRAINERS:
        train = commands.add_parser(name, help=f"retrain the {TRAINERS[name]} reference model")
        train.add_argument(
            "--out", type=Path, required=True, help="directory for the checkpoint (save_pretrained)"
        )
        train.add_argument(
            "--steps", type=int, default=None, help="optimizer steps (default: the shipped run's)"
        )
        train.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
        train.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    if args.zoo_command == "export":
        from tokenprune.zoo.export import export_vllm

        directory = export_vllm(args.name, args.out)
        print(
            f"{args.name} for vLLM in {directory}; serve it with: tokenprune serve {directory} "
            "--method visionzip --budget 16"
        )
        return 0

    import torch

    from tokenprune.zoo import train

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = {} if args.steps is None else {"steps": args.steps}
    trainer = getattr(train, args.zoo_command.replace("-", "_"))
    trainer(args.out, device=args.device, log=lambda m: print(m, flush=True), **steps)
    print(f"done in {time.perf_counter() - started:.0f}s; checkpoint in {args.out}", flush=True)
    return 0
