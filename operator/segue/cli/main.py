"""Entry point of ``segue`` and ``kubectl segue`` (kubectl runs any ``kubectl-*`` on PATH).

Exit codes: 0 done (or nothing to do), 1 refused or failed (the reason on stderr), 2 bad
usage. Ctrl-C ends ``get --watch`` normally (0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from segue import __version__
from segue.cli import commands, lint, render, watch
from segue.cli.errors import CliError
from segue.cli.kube import Rollouts, connect
from segue.cli.rollout import RolloutView, unique_token
from segue.engine.annotations import STEP_INDEX_DIGITS, parse_step_index

PROG: Final = "kubectl segue"
EXAMPLES: Final = """\
examples:
  kubectl segue get -n shop                        all Rollouts of a namespace
  kubectl segue get checkout -n shop --watch       live view of one Rollout
  kubectl segue approve checkout -n shop           approve the step waiting for it
  kubectl segue abort checkout --reason "p99 up"   roll back now
  kubectl segue lint deploy/                       validate manifests offline (CI)
"""


@dataclass
class Session:
    """Connection settings from the global flags; connects only when a command needs it
    (``lint`` never does)."""

    kubeconfig: str | None
    context: str | None
    namespace_flag: str | None
    _rollouts: Rollouts | None = None
    _default_namespace: str = "default"

    def rollouts(self) -> Rollouts:
        if self._rollouts is None:
            api, self._default_namespace = connect(self.kubeconfig, self.context)
            self._rollouts = Rollouts(api)
        return self._rollouts

    @property
    def namespace(self) -> str:
        self.rollouts()
        return self.namespace_flag or self._default_namespace


Handler = Callable[[argparse.Namespace, Session], int]


def _now() -> datetime:
    return datetime.now(UTC)


def _width(wide: bool = False) -> int | None:
    return None if wide else shutil.get_terminal_size().columns


def cmd_get(args: argparse.Namespace, session: Session) -> int:
    rollouts = session.rollouts()
    namespace = None if args.all_namespaces else session.namespace
    if args.watch:
        return watch.follow(rollouts, namespace, args.name, sys.stdout, sys.stdout.isatty())
    if args.name:
        assert namespace is not None  # -A with a NAME is a usage error
        objects = [rollouts.get(namespace, args.name)]
    else:
        objects, _ = rollouts.list(namespace)
    if not objects:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"No rollouts found in {where}.", file=sys.stderr)
        return 0
    views = [RolloutView.from_object(o) for o in objects]
    views.sort(key=lambda v: (v.namespace, v.name))
    lines = render.rollouts_table(views, _now(), _width(args.wide), namespace is None)
    print("\n".join(lines))
    return 0


def cmd_history(args: argparse.Namespace, session: Session) -> int:
    obj = session.rollouts().get(session.namespace, args.name)
    print("\n".join(render.history_table(RolloutView.from_object(obj), _width(args.wide))))
    return 0


def _steer(check: commands.Check) -> Handler:
    def handler(args: argparse.Namespace, session: Session) -> int:
        rollouts = session.rollouts()
        user = rollouts.whoami()
        change = commands.apply(rollouts, session.namespace, args.name, check, user)
        print(change.message)
        return 0

    return handler


def _step_index(text: str) -> int:
    """``--step``: the same rule as the operator's for ``segue.dev/approve``."""
    index = parse_step_index(text)
    if index is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step index: 1 to {STEP_INDEX_DIGITS} ASCII digits (0-9)"
        )
    return index


def cmd_approve(args: argparse.Namespace, session: Session) -> int:
    return _steer(lambda v: commands.check_approve(v, args.step))(args, session)


def cmd_abort(args: argparse.Namespace, session: Session) -> int:
    return _steer(lambda v: commands.check_abort(v, args.reason))(args, session)


def cmd_retry(args: argparse.Namespace, session: Session) -> int:
    token = unique_token(_now())
    return _steer(lambda v: commands.check_retry(v, token))(args, session)


def cmd_pause(args: argparse.Namespace, session: Session) -> int:
    return _steer(lambda v: commands.check_pause(v, args.reason))(args, session)


def cmd_resume(args: argparse.Namespace, session: Session) -> int:
    return _steer(commands.check_resume)(args, session)


def cmd_promote(args: argparse.Namespace, session: Session) -> int:
    token = unique_token(_now())
    return _steer(lambda v: commands.check_promote(v, token))(args, session)


def cmd_lint(args: argparse.Namespace, session: Session) -> int:
    return lint.run(args.files, sys.stdout)


def _connection_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Accepted before and after the command name; after it they must not reset what was
    # given before (hence SUPPRESS on the subcommands).
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument(
        "--kubeconfig", metavar="PATH", default=default, help="kubeconfig file to use"
    )
    parser.add_argument(
        "--context", metavar="NAME", default=default, help="kubeconfig context to use"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        default=default,
        help="namespace (default: the context's namespace, else 'default')",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Watch and steer Segue Rollouts; lint Rollout manifests.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segue {__version__}")
    _connection_flags(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    def named(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = command(name, handler, help_)
        p.add_argument("name", metavar="NAME", help="the Rollout")
        return p

    get = command("get", cmd_get, "list Rollouts, or watch one live with --watch")
    get.add_argument("name", metavar="NAME", nargs="?", help="one Rollout")
    get.add_argument(
        "-A", "--all-namespaces", action="store_true", help="Rollouts of every namespace"
    )
    get.add_argument(
        "-w", "--watch", action="store_true", help="keep the view current until Ctrl-C"
    )
    get.add_argument("--wide", action="store_true", help="do not cut long messages")

    approve = named("approve", cmd_approve, "approve the step the Rollout waits at")
    approve.add_argument(
        "--step",
        type=_step_index,
        metavar="N",
        help="approve only if step N is the one waiting (guards against a stale view)",
    )
    abort = named("abort", cmd_abort, "abort: roll all traffic back to the legacy version")
    abort.add_argument("--reason", default="", metavar="TEXT", help="recorded in the history")
    named("retry", cmd_retry, "start the plan over after a rollback (RolledBack or Failed)")
    pause = named("pause", cmd_pause, "hold the Rollout at its current step")
    pause.add_argument("--reason", default="", metavar="TEXT", help="why (kept on the Rollout)")
    named("resume", cmd_resume, "undo `pause`")
    named("promote", cmd_promote, "skip the remaining steps to 100%% (gates still apply)")
    history = named("history", cmd_history, "the Rollout's audit trail")
    history.add_argument("--wide", action="store_true", help="do not wrap details")

    lint_ = command("lint", cmd_lint, "validate Rollout manifests offline (no cluster)")
    lint_.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="YAML files or directories (*.yaml, *.yml); '-' reads stdin",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "get" and args.name and args.all_namespaces:
        parser.error("get: a NAME cannot be combined with -A/--all-namespaces")
    session = Session(args.kubeconfig, args.context, args.namespace)
    handler: Handler = args.handler
    try:
        return handler(args, session)
    except CliError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`); stop quietly, also at interpreter exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
