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

from kubernetes import client

from segue import __version__
from segue.api.crd import SHORT_NAMES
from segue.api.migration import MIGRATION_SHORT_NAMES
from segue.cli import commands, lint, render, render_migration, watch
from segue.cli.errors import CliError
from segue.cli.kube import MIGRATION, ROLLOUT, Kind, Obj, Resource, connect
from segue.cli.migration import MigrationView
from segue.cli.rollout import RolloutView, unique_token
from segue.engine.annotations import STEP_INDEX_DIGITS, parse_step_index

PROG: Final = "kubectl segue"
EXAMPLES: Final = """\
examples:
  kubectl segue get -n shop                        all Rollouts of a namespace
  kubectl segue get checkout -n shop --watch       live view of one Rollout
  kubectl segue approve checkout -n shop           approve the step waiting for it
  kubectl segue abort checkout --reason "p99 up"   roll back now
  kubectl segue get migration shop-v2 -w           live view of a Migration's waves
  kubectl segue approve migration shop-v2 --wave 2 let wave 2 of a Migration start
  kubectl segue history migration shop-v2          a Migration's rollback log
  kubectl segue lint deploy/                       validate manifests offline (CI)
"""


def _kind_words(kind: Kind, short_names: list[str]) -> dict[str, Kind]:
    names = [kind.noun, kind.plural, *short_names]
    return {w: kind for n in names for w in (n, f"{n}.segue.dev")}


# The first word of `get`, `history` and `approve` may name the resource, as with kubectl.
KINDS: Final = {
    **_kind_words(ROLLOUT, SHORT_NAMES),
    **_kind_words(MIGRATION, MIGRATION_SHORT_NAMES),
}


@dataclass
class Session:
    """Connection settings from the global flags; connects only when a command needs it
    (``lint`` never does)."""

    kubeconfig: str | None
    context: str | None
    namespace_flag: str | None
    _api: client.ApiClient | None = None
    _default_namespace: str = "default"

    def objects(self, kind: Kind = ROLLOUT) -> Resource:
        if self._api is None:
            self._api, self._default_namespace = connect(self.kubeconfig, self.context)
        return Resource(self._api, kind)

    def rollouts(self) -> Resource:
        return self.objects(ROLLOUT)

    @property
    def namespace(self) -> str:
        self.objects()
        return self.namespace_flag or self._default_namespace


Handler = Callable[[argparse.Namespace, Session], int]


def _now() -> datetime:
    return datetime.now(UTC)


def _width(wide: bool = False) -> int | None:
    return None if wide else shutil.get_terminal_size().columns


def cmd_get(args: argparse.Namespace, session: Session) -> int:
    kind: Kind = args.kind
    resource = session.objects(kind)
    namespace = None if args.all_namespaces else session.namespace
    if args.watch:
        return watch.follow(resource, namespace, args.name, sys.stdout, sys.stdout.isatty())
    if args.name:
        assert namespace is not None  # -A with a NAME is a usage error
        objects = [resource.get(namespace, args.name)]
    else:
        objects, _ = resource.list(namespace)
    if not objects:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"No {kind.plural} found in {where}.", file=sys.stderr)
        return 0
    if kind == MIGRATION:
        print("\n".join(_migrations(objects, args.name is not None, args.wide, namespace)))
        return 0
    views = [RolloutView.from_object(o) for o in objects]
    views.sort(key=lambda v: (v.namespace, v.name))
    lines = render.rollouts_table(views, _now(), _width(args.wide), namespace is None)
    print("\n".join(lines))
    return 0


def _migrations(objects: list[Obj], one: bool, wide: bool, ns: str | None) -> list[str]:
    """One Migration in full (as --watch shows it), or the table of several."""
    views = sorted(
        (MigrationView.from_object(o) for o in objects), key=lambda v: (v.namespace, v.name)
    )
    if one:
        return render_migration.migration_frame(views[0], _now(), _width(wide) or 10_000)
    return render_migration.migrations_table(views, _now(), _width(wide), ns is None)


def cmd_history(args: argparse.Namespace, session: Session) -> int:
    obj = session.objects(args.kind).get(session.namespace, args.name)
    if args.kind == MIGRATION:
        lines = render_migration.history_lines(MigrationView.from_object(obj), _width(args.wide))
    else:
        lines = render.history_table(RolloutView.from_object(obj), _width(args.wide))
    print("\n".join(lines))
    return 0


def _steer(check: commands.Check[RolloutView]) -> Handler:
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


def _wave_index(text: str) -> int:
    """``--wave``: the same digits rule as ``--step``."""
    index = parse_step_index(text)
    if index is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a wave index: 1 to {STEP_INDEX_DIGITS} ASCII digits (0-9)"
        )
    return index


def cmd_approve(args: argparse.Namespace, session: Session) -> int:
    if args.kind != MIGRATION:
        return _steer(lambda v: commands.check_approve(v, args.step))(args, session)
    migrations = session.objects(MIGRATION)
    user = migrations.whoami()
    change = commands.apply_checked(
        migrations,
        session.namespace,
        args.name,
        MigrationView.from_object,
        lambda v: commands.check_approve_migration(v, args.wave),
        user,
        noun=MIGRATION.noun,
    )
    print(change.message)
    return 0


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
        description="Watch and steer Segue Rollouts and Migrations; lint Rollout manifests.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segue {__version__}")
    _connection_flags(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, defaults=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Handler, help_: str, usage: str | None = None
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_, usage=usage)
        p.set_defaults(handler=handler, kind=ROLLOUT)
        return p

    def kinded(name: str, handler: Handler, help_: str, usage: str) -> argparse.ArgumentParser:
        """A command for Rollouts and Migrations: ``NAME`` or ``migration NAME``."""
        p = command(name, handler, help_, usage=f"{PROG} {name} {usage}")
        p.add_argument(
            "words",
            metavar="NAME",
            nargs="*" if name == "get" else "+",
            help="a Rollout; or `migration NAME` for a Migration (`rollout NAME` also works)",
        )
        return p

    def named(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = command(name, handler, help_)
        p.add_argument("name", metavar="NAME", help="the Rollout")
        return p

    get = kinded(
        "get",
        cmd_get,
        "list Rollouts or Migrations, or watch one live with --watch",
        "[migration|migrations] [NAME] [-n NS | -A] [-w] [--wide]",
    )
    get.add_argument(
        "-A", "--all-namespaces", action="store_true", help="objects of every namespace"
    )
    get.add_argument(
        "-w", "--watch", action="store_true", help="keep the view current until Ctrl-C"
    )
    get.add_argument("--wide", action="store_true", help="do not cut long messages")

    approve = kinded(
        "approve",
        cmd_approve,
        "approve the step the Rollout waits at, or the wave the Migration waits at",
        "NAME [--step N] | migration NAME [--wave N]",
    )
    approve.add_argument(
        "--step",
        type=_step_index,
        metavar="N",
        help="approve only if step N is the one waiting (guards against a stale view)",
    )
    approve.add_argument(
        "--wave",
        type=_wave_index,
        metavar="N",
        help="(Migration) approve only if wave N is the one waiting",
    )
    abort = named("abort", cmd_abort, "abort: roll all traffic back to the legacy version")
    abort.add_argument("--reason", default="", metavar="TEXT", help="recorded in the history")
    named("retry", cmd_retry, "start the plan over after a rollback (RolledBack or Failed)")
    pause = named("pause", cmd_pause, "hold the Rollout at its current step")
    pause.add_argument("--reason", default="", metavar="TEXT", help="why (kept on the Rollout)")
    named("resume", cmd_resume, "undo `pause`")
    named("promote", cmd_promote, "skip the remaining steps to 100%% (gates still apply)")
    history = kinded(
        "history",
        cmd_history,
        "the Rollout's audit trail, or the Migration's rollback log",
        "[migration] NAME [--wide]",
    )
    history.add_argument("--wide", action="store_true", help="do not wrap details")

    lint_ = command("lint", cmd_lint, "validate Rollout manifests offline (no cluster)")
    lint_.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="YAML files or directories (*.yaml, *.yml); '-' reads stdin",
    )
    return parser


def _resolve_kind(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``[KIND] NAME`` into ``args.kind`` and ``args.name``: one word is a Rollout's name
    (or, for ``get``, a kind to list); two are a kind and a name."""
    words: list[str] = args.words
    command = args.command
    if len(words) > 2:
        parser.error(f"{command}: expected [KIND] NAME, got {' '.join(words)!r}")
    if len(words) == 2:
        kind = KINDS.get(words[0].lower())
        if kind is None:
            parser.error(f"{command}: unknown kind {words[0]!r}; use rollout or migration")
        args.kind, args.name = kind, words[1]
    elif len(words) == 1 and command == "get" and words[0].lower() in KINDS:
        args.kind, args.name = KINDS[words[0].lower()], None
    else:
        args.kind, args.name = ROLLOUT, (words[0] if words else None)
    if command == "approve":
        if args.kind == MIGRATION and args.step is not None:
            parser.error("approve: --step is for a Rollout; a Migration takes --wave N")
        if args.kind == ROLLOUT and args.wave is not None:
            parser.error("approve: --wave is for a Migration (approve migration NAME --wave N)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if "words" in args:
        _resolve_kind(parser, args)
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
