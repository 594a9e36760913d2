"""The `arcmatch` command line: one parser, one small module per command group, one place errors become exits.

Every failure ends as one line on stderr and an exit code from common/errors.py (2 bad input, 3 finished with
skipped inputs, 4 not found, 5 backend unavailable, 6 conflict, 1 a bug). Long commands keep Ray's and the
libraries' logs in a log file (jobs/runtime.py) and show progress bars; `--verbose` shows everything instead.
Set ARCMATCH_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback

from common.errors import EXIT_INTERNAL, ArcmatchError, exit_code

try:
    from jobs.cli import (
        calibrate,
        cluster,
        demo,
        galleries,
        gallery,
        ingest,
        model,
        prepare,
        reembed,
        remote,
        search,
        serve,
        storage,
        submit,
        train,
    )
    from jobs.runtime import log_file, quiet_terminal
except ModuleNotFoundError as missing:  # a Python without arcmatch's dependencies: one line, not a traceback
    from jobs.environment import missing_module

    raise SystemExit(missing_module(missing)) from None

GROUPS = (prepare, train, model, ingest, search, remote, gallery, calibrate, cluster, reembed, storage, galleries,
          serve, submit, demo)
QUIET_COMMANDS = {"prepare", "train", "eval", "export", "ingest", "search", "demo", "reembed", "cluster", "archive"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcmatch", description="Face identity: train, embed, index, look up.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and the libraries' own logs in the terminal")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line, with a command's flags taken between its positionals too (`search a.jpg --json b.jpg`),
    as people type them: argparse alone ends a `nargs="+"` list at the first flag and refuses what follows."""
    args, extra = parser.parse_known_args(argv)
    command = parser._subparsers._group_actions[0].choices[args.command]
    if not extra or any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in command._actions):
        return parser.parse_args(argv)  # nothing left over, or a command that passes its rest on: as argparse says
    ours = command.parse_intermixed_args(argv[argv.index(args.command) + 1:])
    return argparse.Namespace(**{**vars(args), **vars(ours)})


def _said_by(args: argparse.Namespace) -> str:
    """Who speaks in an error line: the command, and its action where it has one (`arcmatch gallery stranger`)."""
    action = getattr(args, "action", None)
    return f"arcmatch {args.command}" + (f" {action}" if isinstance(action, str) else "")


def main(argv: list[str] | None = None) -> int:
    """The CLI. Called without argv it owns the process (the `arcmatch` script) and keeps library logs off the
    terminal; called with argv (tests, scripts) it leaves the process's stderr alone."""
    args = _parse(build_parser(), sys.argv[1:] if argv is None else list(argv))
    if argv is None and args.command in QUIET_COMMANDS and not args.verbose:
        quiet_terminal(args.command)
    if argv is None and not args.verbose:
        # gRPC's C core writes its own complaints (Milvus Lite's "GOAWAY ... too_many_pings" under `serve`) straight
        # to stderr, past every logger; it reads this before the first channel, and argparse has imported no gRPC
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        return _run(args)
    finally:
        if argv is None:  # the process is ours: its Ray goes now, not in the interpreter's exit
            _stop_ray()


def _stop_ray() -> None:
    """The local Ray a command started, shut down with Ctrl-C held off. Left to Ray's own exit handler, a Ctrl-C
    that reached it mid-shutdown (the same Ctrl-C, sent to the process group) printed a KeyboardInterrupt
    traceback after the command's last line, and a QA pass saw an interrupted re-embed end in a segfault."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001  (the command has answered; a failed clean-up is for the log)
        logging.getLogger("arcmatch").warning("Ray's shutdown failed", exc_info=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    """The command, its errors turned into one line and an exit code."""
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("arcmatch: interrupted", file=sys.stderr)
        return exit_code(KeyboardInterrupt())
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say, as every Unix tool goes quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush of stdout must not fail again
        return 128 + signal.SIGPIPE  # what a tool the signal ended would exit with
    except ArcmatchError as exc:  # the edge: our own errors are one line and their exit code
        if os.environ.get("ARCMATCH_DEBUG"):
            traceback.print_exc()
        print(f"{_said_by(args)}: {exc.kind}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:  # a bug, or a foreign error not yet mapped: its first line, the details in the log
        logging.getLogger("arcmatch").error("arcmatch %s failed", args.command, exc_info=exc)
        if os.environ.get("ARCMATCH_DEBUG") or log_file() is None:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        where = f" (traceback in {log_file()})" if log_file() else ""
        print(f"{_said_by(args)}: internal error: {type(exc).__name__}: {first}{where}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
