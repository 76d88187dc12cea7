"""``python -m train``: train both models, evaluate, save to the stores.

Without data flags it trains on MovieLens-100K (downloaded once). Flags
override a ``--config`` file (TOML or JSON with the same keys, spelled
``ranker_iterations`` or ``ranker-iterations``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from features.schema import DataError
from train.backtest import WorseThanBaseline
from train.config import ConfigError, TrainConfig, build_config, read_config_file
from train.engine import EngineError
from train.kernels import restart_with_pinned_kernels
from train.ranker_training import LOSSES, NotEnoughHistory

EXIT_BAD_DATA = 2

EPILOG = """\
Input schema: docs/training.md, "Your own data" (features/schema.py enforces it): ids
are matched as text (160.0 = 160, spaces stripped); timestamps are unix
seconds, milliseconds, microseconds or nanoseconds (told by magnitude), ISO
8601 text or parquet timestamps; row numbers in messages count the header as
row 1.

Exit codes:
  0  trained; models and feature snapshot saved (unless --no-save)
  2  bad data, bad configuration, too little data to train, or (with
     --fail-if-worse-than-baseline) a model that lost to a baseline;
     the message says which, and nothing was saved
  1  anything else (a bug: please report it with the traceback)
"""


def parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig`, so the two never disagree."""
    cli = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--config", type=Path, help="TOML or JSON file with the keys below (flags override it)")
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        shown = f" (default: {default})" if default not in (None, {}) else ""
        assert field.description is not None, f"TrainConfig.{name} has no description, the flag's help"
        if field.annotation is bool:
            cli.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description + shown)
        else:
            choices = LOSSES if name == "loss" else None
            cli.add_argument(flag, default=None, choices=choices, help=field.description + shown)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    path = args.pop("config")
    flags = {k: v for k, v in args.items() if v is not None}
    try:
        config = build_config(read_config_file(path) if path else {}, flags, path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    from train.run import train

    try:
        # One BLAS thread: ALS and CatBoost bring their own parallelism (numpy is loaded by now,
        # so an environment variable would be too late; threadpoolctl reaches the loaded library).
        with threadpool_limits(1, "blas"):
            train(config)
    except (DataError, NotEnoughHistory, WorseThanBaseline, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    return 0


def cli() -> None:
    """The command line (``python -m train``, ``recsys-train``): pinned kernels first, so that any AVX2 machine
    trains the same model (train/kernels.py); :func:`main` is what tests call in-process."""
    restart_with_pinned_kernels()
    sys.exit(main())


if __name__ == "__main__":
    cli()
