"""Options and parameter types shared by the commands, and how they become objects."""

from __future__ import annotations

import json
import os
import sys
import warnings

import click
import numpy as np

from ..core.gaussian import COVARIANCE_TYPES
from ..estimators import load
from ..exceptions import ConvergenceWarning
from ..io.storage import is_url
from .app import quiet_cluster_logs

#: A share of anomalies: in (0, 0.5], as everywhere (beyond half, they are the normal).
CONTAMINATION = click.FloatRange(0, 0.5, min_open=True)


class CovarianceTypes(click.ParamType):
    """Covariance types, comma-separated (``full,diag``); ``single`` takes exactly one."""

    name = "types"

    def __init__(self, single=False):
        self.single = single

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        kinds = [part.strip() for part in str(value).split(",") if part.strip()]
        unknown = [kind for kind in kinds if kind not in COVARIANCE_TYPES]
        if unknown or not kinds or (self.single and len(kinds) != 1):
            expected = "one" if self.single else "comma-separated"
            self.fail(f"expected {expected} of {', '.join(COVARIANCE_TYPES)}, got {value!r}",
                      param, ctx)
        return kinds[0] if self.single else list(dict.fromkeys(kinds))


class OutputPath(click.ParamType):
    """A path to write: checked when the command line is read, before any work.

    ``kind="file"``: its folder must exist and be writable, and it must not be
    a folder. ``kind="dir"``: a writable folder, or one that can be made in an
    existing writable folder. ``kind="either"``: one or the other. Errors name
    the path as the user gave it.
    """

    name = "path"

    def __init__(self, kind="file", *, urls=False):
        self.kind = kind
        self.urls = urls

    def convert(self, value, param, ctx):
        path = os.fspath(value)
        if is_url(path):
            if not self.urls:
                self.fail(f"{path}: this output is written on this machine; give a local "
                          "or shared path", param, ctx)
            return path  # a URL: the store says at the write (no folders to check)
        parent = os.path.dirname(os.path.abspath(path))
        if self.kind != "file" and os.path.isdir(path):
            if not os.access(path, os.W_OK):
                self.fail(f"{path}: the folder is not writable", param, ctx)
            return path
        if self.kind == "file" and os.path.isdir(path):
            self.fail(f"{path} is a folder; give a file name", param, ctx)
        if self.kind == "dir" and os.path.exists(path):
            self.fail(f"{path} is a file; give a folder", param, ctx)
        if not os.path.isdir(parent):
            self.fail(f"{path}: the folder {os.path.dirname(path) or '.'} does not exist",
                      param, ctx)
        if not os.access(parent, os.W_OK):
            self.fail(f"{path}: the folder {os.path.dirname(path) or '.'} is not writable",
                      param, ctx)
        if os.path.exists(path) and not os.access(path, os.W_OK):
            self.fail(f"{path} exists and is not writable", param, ctx)
        return path


# -- shared options ----------------------------------------------------------------
def verbosity_options(command):
    command = click.option("-q", "--quiet", is_flag=True, help="No progress output.")(command)
    return click.option("-v", "--verbose", count=True,
                        help="Progress even when stderr is not a terminal (-vv: more).")(command)


def data_options(command):
    command = click.option("--dtype", type=click.Choice(["float64", "float32"]),
                           help="Working dtype of the arithmetic (default: float32 when every "
                                "column is float32, else float64).")(command)
    command = click.option("--chunk-size", type=click.IntRange(1),
                           help="Rows per chunk (default: about 8 MiB).")(command)
    command = click.option("--id-field", default="id", show_default=True,
                           help="Left out of the features when DATA has it: the id column "
                                "that predict and score pass through.")(command)
    command = click.option("--exclude-columns",
                           help="Comma-separated columns that are not features (Parquet).")(
        command)
    return click.option("--columns", help="Comma-separated columns to use (Parquet; default: "
                                          "all numeric columns but --exclude-columns and "
                                          "--id-field).")(command)


def _storage_options(ctx, param, values):
    """``KEY=VALUE`` pairs as fsspec storage options (JSON values are parsed: true, 3, {...})."""
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {key.strip()!r}=...")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    ctx.meta["storage_options"] = options or None
    return None


def storage_option(command):
    return click.option(
        "--storage-option", multiple=True, expose_value=False, callback=_storage_options,
        help="KEY=VALUE option of the object store of s3://, gs://, az:// ... URLs "
             "(repeatable; JSON values parsed). Credentials are best left to the store's "
             "usual chain (environment, profile, instance role).")(command)


def cluster_options(command):
    command = storage_option(command)
    command = click.option("--workers", type=click.IntRange(1),
                           help="Threads of the in-process scheduler.")(command)
    return click.option("--scheduler",
                        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.")(command)


def verbosity(verbose, quiet) -> int:
    if quiet:
        warnings.simplefilter("ignore", ConvergenceWarning)
        return 0
    return verbose or int(sys.stderr.isatty())


def load_model(model_path, scheduler=None, workers=None, level=0):
    """The model of ``model_path``, set to compute where this command says (never the file)."""
    model = load(model_path, given_storage_options())
    model.set_params(scheduler=scheduler, n_workers=workers, verbose=level,
                     storage_options=given_storage_options())
    quiet_cluster_logs(scheduler)
    return model


def given_storage_options():
    """The command's --storage-option pairs, or None."""
    return click.get_current_context().meta.get("storage_options")


def split_names(text) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None



def weight_option(command):
    return click.option("--weight-column",
                        help="Parquet column of per-row weights (sample_weight); not a "
                             "feature.")(command)


class FloatList(click.ParamType):
    """``"0.5,1,-2"``: comma-separated finite numbers."""

    name = "numbers"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            values = [float(part) for part in str(value).split(",")]
        except ValueError:
            values = []
        if not values or not np.isfinite(values).all():
            self.fail(f"expected comma-separated numbers such as 0.5,1,-2, got {value!r}",
                      param, ctx)
        return values


class IntegerList(click.ParamType):
    """``"1..10"`` (both ends included, either order), ``"2,4,8"``, ``"3"`` or a mix:
    positive integers."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        values = []
        try:
            for part in str(value).split(","):
                if ".." in part:
                    low, high = sorted(int(end) for end in part.split(".."))
                    # 8..4 is read as 4..8: the set of candidates is what counts
                    values.extend(range(low, high + 1))
                elif part.strip():
                    values.append(int(part))
        except ValueError:
            values = []
        if not values or min(values) < 1:
            self.fail(f"expected positive integers such as 3, 2,4,8 or 1..10 (both ends "
                      f"included), got {value!r}", param, ctx)
        return values


def refuse_unused(ctx: click.Context, rules) -> None:
    """Refuse, in one line, an option given on the command line that would do nothing.

    ``rules``: ``(parameter name, applies, where it applies)`` triples; an option
    given while ``applies`` is false is a UsageError naming it as the user spelled
    it (``--no-drift``, not ``drift``) and saying where it does apply. Options left
    at their defaults are never refused.
    """
    from click.core import ParameterSource

    for name, applies, where in rules:
        if applies or ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        raise click.UsageError(f"{_spelled(ctx, name)} applies {where} only", ctx)


def _spelled(ctx: click.Context, name: str) -> str:
    """The option ``name`` as given: a boolean flag's off form when it was turned off."""
    param = next(p for p in ctx.command.params if p.name == name)
    off = isinstance(param, click.Option) and param.secondary_opts and ctx.params[name] is False
    return max(param.secondary_opts if off else param.opts, key=len)


def say(message, quiet=False):
    """A result line on stderr (stdout stays for data), unless --quiet."""
    if not quiet:
        click.echo(message, err=True)




def open_source(data, columns=None, chunk_size=None, dtype=None, weight_column=None,
                exclude_columns=None, id_field=None):
    """DATA as a source, with the command's comma-separated column lists and storage
    options (see :func:`streammix.io.open_data`)."""
    from ..io import open_data

    return open_data(data, split_names(columns), exclude_columns=split_names(exclude_columns),
                     id_field=id_field, chunk_size=chunk_size, dtype=dtype,
                     weight_column=weight_column, storage_options=given_storage_options())
