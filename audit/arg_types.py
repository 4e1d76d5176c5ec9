"""argparse types: each turns one option's text into its value or one clear line (argparse prints it and exits
with status 2). The defaults and rules these values meet live in options.py; cli.py wires them to options."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def devices_arg(text: str) -> str | int:
    if text == "auto":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"a positive number of devices or 'auto', got {text!r}")


def int_at_least(low: int):
    def parse(text: str) -> int:
        if text.lstrip("-").isdigit() and int(text) >= low:
            return int(text)
        raise argparse.ArgumentTypeError(f"a whole number >= {low}, got {text!r}")

    parse.__name__ = f"int>={low}"
    return parse


def l2_arg(text: str) -> float | str:
    return text if text == "auto" else positive_float(text)


def fold_repeats_arg(text: str) -> int | str:
    return "auto" if text == "auto" else int_at_least(1)(text)


def pca_arg(text: str) -> int | None:
    return int_at_least(0)(text) or None


def pca_or_auto(text: str) -> int | str | None:
    return "auto" if text == "auto" else pca_arg(text)


def any_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}") from None
