"""The ``streammix`` group: one-line errors and warnings, exit code 2 for user errors."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from ..exceptions import StreammixError


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


def quiet_cluster_logs(scheduler):
    """With a scheduler, distributed's own logs (reconnection attempts, tracebacks) stay
    silent: streammix reports what went wrong in one line. ``--debug`` shows them."""
    if scheduler is None or click.get_current_context().find_root().params.get("debug"):
        return
    import distributed  # noqa: F401 -- its logging configuration is applied on import

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class _Group(click.Group):
    """Turns user errors into ``Error: ...`` and exit code 2, unless ``--debug``.

    Bad options too are one line (click's own usage block names the option as
    well, in four). Warnings are one ``Warning: ...`` line each; a closed
    stdout (``| head``) ends the command quietly.
    """

    def invoke(self, ctx):
        debug = ctx.params.get("debug")
        try:
            with warnings.catch_warnings():
                warnings.showwarning = one_line_warning
                return super().invoke(ctx)
        except click.UsageError as exc:
            if debug:
                raise
            command = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"Error: {' '.join(exc.format_message().split())} "
                       f"(see: {command} --help)", err=True)
            ctx.exit(2)
        except BrokenPipeError:
            # The reader went away: stop quietly, as command-line tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except (StreammixError, ValueError, OSError, TypeError) as exc:
            if debug:
                raise
            click.echo(f"Error: {' '.join(str(exc).split())}", err=True)  # one line
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"show_default": True})
@click.option("--debug", is_flag=True,
              help="Show tracebacks of errors (give it before the command: "
                   "streammix --debug fit ...).")
@click.version_option(package_name="streammix")
def main(debug):
    """Cluster data larger than memory and score streams for anomalies.

    \b
    A tour:
      streammix make-data data/ --rows 1000000 --components 5
      streammix fit data/ -k 5 -o model.npz --contamination 0.01
      streammix select data/ -k 1..8 --covariance-type full,diag -o best.npz --plot bic.png
      streammix plot model.npz data/ -o clusters.png
      streammix score model.npz - < events.jsonl
    """


