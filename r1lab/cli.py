"""`r1lab <command>`: parse one config dataclass per command and call the command.

Each command lives in ``r1lab/commands/<name>.py`` and exposes ``Config`` (a dataclass whose
fields are its flags, documented with ``metadata={"help": ...}``), ``run(cfg)`` and a one-line
``HELP``. Fields named in ``POSITIONAL`` (a tuple in the module) become positional arguments.
Every command also takes ``--recipe FILE.toml`` (keys are field names; flags override it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from r1lab.config import add_dataclass_args, build_config
from r1lab.errors import UserError

COMMANDS = ("pretrain", "eval", "score", "zero", "sft", "sample", "distill", "r1", "drive", "drive-lm", "report")


def _load(name: str):
    return importlib.import_module(f"r1lab.commands.{name.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``r1lab zero: error: ... (see r1lab zero --help)``, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="r1lab",
        description="Train reasoning models with the DeepSeek-R1 recipe: pretrain a tiny base, R1-Zero "
        "(GRPO/PPO), SFT, rejection sampling, distillation, the four-stage R1 pipeline, evaluate, score, "
        "GRPO for driving with a V3 mixture-of-experts policy and with a reasoning LM, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        p = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip().split("\n\n")[0])
        positional = getattr(mod, "POSITIONAL", ())
        for pos in positional:
            p.add_argument(pos, nargs="?", default=None, help=f"{pos} (see --help of the field)")
        add_dataclass_args(p, mod.Config, skip=positional)
        p.add_argument("--recipe", default=None, help="TOML recipe file; flags override its values")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser._subparsers._group_actions[0].choices.get(args.command) if args.command else None
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 0
    mod = _load(args.command)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "recipe")}
    try:
        cfg = build_config(mod.Config, args.recipe, overrides, section=args.command)
        mod.run(cfg)
    except UserError as exc:
        print(f"r1lab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"r1lab {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
