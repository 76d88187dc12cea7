"""``python -m train``: train both models, evaluate, save to the stores.

Without data flags it trains on MovieLens-100K (downloaded once). Flags
override a ``--config`` file (TOML or JSON with the same keys).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError
from threadpoolctl import threadpool_limits

from features.schema import DataError
from train.config import TrainConfig, read_config_file
from train.ranker_training import NotEnoughHistory

EXIT_BAD_DATA = 2


def parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig`, so the two never disagree."""
    cli = argparse.ArgumentParser(
        prog="python -m train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--config", type=Path, help="TOML or JSON file with the keys below")
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            cli.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {field.default})"
            )
        else:
            cli.add_argument(flag, default=None, help=f"{field.description or ''} (default {field.default})".strip())
    return cli


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    values = read_config_file(args.pop("config")) if args.get("config") else {}
    values.update({k: v for k, v in args.items() if v is not None})
    try:
        config = TrainConfig(**values)
    except ValidationError as exc:
        print(f"error: bad configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    from train.run import train

    try:
        # One BLAS thread: ALS and CatBoost bring their own parallelism (numpy is loaded by now,
        # so an environment variable would be too late; threadpoolctl reaches the loaded library).
        with threadpool_limits(1, "blas"):
            train(config)
    except (DataError, NotEnoughHistory) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    return 0


if __name__ == "__main__":
    sys.exit(main())
