"""`python -m modelserver --model NAME --port N`: one model server process (a replica).
`--artifact DIR --task chat|embedding` serves a registered model from its Hugging Face
directory under the name NAME instead of a catalog model; `--artifact hf://OWNER/NAME@REVISION`
fetches that directory first (modelserver.hub)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from modelserver.app import ServerOptions
from modelserver.auth import API_KEY_VARIABLE
from modelserver.catalog import CATALOG, ModelSpec, Task, registered_spec
from modelserver.hub import HubFetchError, HubModel, fetch, mirror_dir
from modelserver.server import serve

# Converted weights are kept here between starts unless --cache-dir says otherwise; the
# platform's launcher passes its own data directory.
# A server inherits its launcher's environment, so a cluster agent started with this set
# runs only faulty replicas: how tests make one revision fail and not the other.
FAULT_RATE_VARIABLE = "SWITCHBOARD_MODELSERVER_FAULT_RATE"
DEFAULT_CACHE_DIR = Path(os.environ.get("SWITCHBOARD_MODEL_CACHE_DIR") or Path.home() / ".cache" / "switchboard" / "models")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelserver", description="Serve one catalog model over an OpenAI-compatible HTTP API."
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"A catalog model ({', '.join(sorted(CATALOG))}), or a registered model's name with --artifact.",
    )
    parser.add_argument(
        "--artifact",
        default=None,
        help="A registered model's Hugging Face directory (config, tokenizer, safetensors), or hf://OWNER/NAME@REVISION to fetch.",
    )
    parser.add_argument("--task", choices=[task.value for task in Task], default=None, help="What the --artifact model serves.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="Where converted weights are kept between starts (default: %(default)s)."
    )
    parser.add_argument(
        "--max-batch-size",
        type=_positive,
        default=None,
        help="Sequences per decode step (default 16) / inputs per embedding pass (default 32).",
    )
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="Longest wait to fill an embedding batch.")
    parser.add_argument("--max-queue", type=_positive, default=None, help="Waiting requests (chat) or inputs (embeddings) before 503.")
    parser.add_argument(
        "--parallel-batches",
        type=_positive,
        default=None,
        help="Embeddings: forward passes in flight at once, each with its share of the CPU cores (default: 2 on CPU, 1 on a GPU).",
    )
    parser.add_argument("--no-batching", action="store_true", help="Batch size 1: one request at a time.")
    parser.add_argument(
        "--fault-rate",
        type=_fraction,
        default=_fraction(os.environ.get(FAULT_RATE_VARIABLE) or "0"),
        help=f"Fault injection for tests and drills: this share of inference requests is answered 500 at random "
        f"(default from {FAULT_RATE_VARIABLE}, else 0). Never set in production.",
    )
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="On SIGTERM, how long requests in flight may take to finish.")
    return parser


def model_spec(args: argparse.Namespace, command: argparse.ArgumentParser) -> ModelSpec:
    """The catalog entry named by --model, or a registered directory's spec."""
    if args.artifact is None:
        if args.task is not None:
            command.error("--task goes with --artifact")
        if args.model not in CATALOG:
            command.error(f"unknown model {args.model!r}: choose one of {', '.join(sorted(CATALOG))}, or give --artifact and --task")
        return CATALOG[args.model]
    if args.task is None:
        command.error("--artifact needs --task (chat or embedding)")
    try:
        hub_model = HubModel.parse(args.artifact)
        directory = Path(args.artifact) if hub_model is None else fetch(hub_model, cache_dir=args.cache_dir, mirror=mirror_dir())
    except (ValueError, HubFetchError) as error:
        command.error(str(error))
    if not directory.is_dir():
        command.error(f"--artifact {args.artifact}: not a directory")
    try:
        return registered_spec(args.model, directory=directory, task=Task(args.task))
    except ValueError as error:
        command.error(str(error))


def main(argv: list[str] | None = None) -> None:
    command = parser()
    args = command.parse_args(argv)
    spec = model_spec(args, command)
    chat = spec.task == "chat"
    batch = 1 if args.no_batching else args.max_batch_size or (16 if chat else 32)
    # On CPU two single-threaded passes beat one two-threaded pass: neither waits on the
    # other's threads when the event loop takes a core for a moment.
    parallel = 1 if args.no_batching or chat else args.parallel_batches or (1 if torch.cuda.is_available() else min(2, os.cpu_count() or 1))
    queue = args.max_queue or (64 if chat else 2048)
    options = ServerOptions(
        cache_dir=args.cache_dir,
        max_batch_size=batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=queue,
        parallel_batches=parallel,
        fault_rate=args.fault_rate,
    )
    api_key = os.environ.get(API_KEY_VARIABLE, "")
    serve(spec, host=args.host, port=args.port, options=options, drain_seconds=args.drain_seconds, api_key=api_key)


if __name__ == "__main__":
    main()
