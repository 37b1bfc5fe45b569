"""The ``neurospeech`` command line.

Commands are registered here by name and imported lazily from the module that implements them, so that
``neurospeech serve`` never imports torch and ``--help`` is fast. Every command exits with a real code:
0 on success, :attr:`neurospeech.errors.NeurospeechError.exit_code` for a known error, 1 otherwise.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import Any

import click

from . import __version__
from ._extras import EXTRAS, missing_extra_message
from ._log import setup_logging
from .errors import Interrupted, NeurospeechError

__all__ = ["cli", "main"]

log = logging.getLogger(__name__)

# name -> "module:attribute" (a click.Command or click.Group)
COMMANDS: dict[str, tuple[str, str]] = {
    "sys-info": ("neurospeech.cli:sys_info", "Print versions of Python and the key dependencies."),
    "demo": ("neurospeech._demo:demo", "Run the whole pipeline end to end on an embedded default."),
    "simulate": ("neurospeech.tools.simulate._cli:simulate", "Simulate a BIDS M/EEG speech-listening dataset."),
    "simulate-place-cells": (
        "neurospeech.tools.analyses._noise_cli:simulate_place_cells",
        "Simulate place-cell ensembles with/without information-limiting correlations.",
    ),
    "data-check": ("neurospeech.tools.simulate._cli:data_check", "Plot spectra/evoked checks of a dataset."),
    "calibrate": ("neurospeech.tools.simulate._cli:calibrate", "Ridge-decoder calibration of a dataset."),
    "train": ("neurospeech.models._cli:train", "Train a brain encoder (contrastive, paper method)."),
    "evaluate": ("neurospeech.models._cli:evaluate", "Evaluate an encoder and baselines on the test split."),
    "export": ("neurospeech.models._cli:export", "Export a trained encoder to ONNX with its contract."),
    "adapt": ("neurospeech.models._adapt_cli:adapt", "Calibrate a new participant on a trained run."),
    "adapt-curve": ("neurospeech.models._adapt_cli:adapt_curve", "Leave-one-subject-out calibration curve."),
    "bank": ("neurospeech.models._cli:bank", "Build a candidate bank of speech segments for a model."),
    "quantize": ("neurospeech.tools.quantize:quantize_cmd", "Quantize an exported encoder to int8 (calibrated)."),
    "serve": ("neurospeech.service._cli:serve", "Decode a live LSL stream and publish over ZeroMQ."),
    "filters": ("neurospeech._filters_cli:filters", "Group delay and bands of the resampling filters."),
    "decode-file": ("neurospeech.service._cli:decode_file", "Run the streaming pipeline over a file."),
    "compare-decisions": (
        "neurospeech.tools.compare:compare_cmd", "Pair two decoders' word decisions on the same recording.",
    ),
    "replay": ("neurospeech.tools._rt_cli:replay", "Replay a recording into LSL at real-time pace."),
    "listen": ("neurospeech.tools._rt_cli:listen", "Subscribe to a running service and print decodes."),
    "dashboard": ("neurospeech.tools.dashboard._cli:dashboard", "Live dashboard of a running service (browser)."),
    "keys": ("neurospeech.tools._rt_cli:keys", "Create a ZeroMQ CURVE key pair (service or subscriber)."),
    "bench": ("neurospeech.tools.bench._cli:bench", "Benchmarks (latency, throughput, soak)."),
    "analyze": ("neurospeech.cli:analyze", "Analyses: noise limits of decoders, representational geometry."),
    "wm-rnn": ("neurospeech.models.wm_rnn._cli:wm_rnn", "Working-memory RNN (Piwek et al.)."),
    "config-schema": ("neurospeech.cli:config_schema", "JSON Schema of a config file (serve, train, ...)."),
}

# config file kind -> "module:attribute" of its settings model (neurospeech._settings)
CONFIG_MODELS: dict[str, str] = {
    "serve": "neurospeech.service.config:ServeFile",
    "train": "neurospeech.models.train:TrainFile",
    "wm-rnn": "neurospeech.models.wm_rnn._cli:WmRnnFile",
    "noise-limits": "neurospeech.tools.analyses._noise_cli:NoiseLimitsFile",
}

ANALYZE_COMMANDS: dict[str, tuple[str, str]] = {
    "noise-limits": (
        "neurospeech.tools.analyses._noise_cli:noise_limits",
        "Shuffled vs real decoding error vs ensemble size (Hazon et al. 2022).",
    ),
    "geometry": (
        "neurospeech.tools.analyses._geometry_cli:geometry",
        "Plane angles, phase alignment and alignment index of two contexts (Piwek et al.).",
    ),
}


def _load(target: str) -> click.Command:
    module, attr = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise click.ClickException(missing_extra_message(exc.name)) from exc
    return getattr(mod, attr)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            return _load(self.lazy[name][0])
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, self.lazy[n][1]) for n in sorted(self.lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neurospeech")
@click.option("-v", "--verbose", count=True, help="More log output (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """neurospeech: decode perceived speech from M/EEG in real time."""
    setup_logging(verbose, quiet)


@click.group(cls=LazyGroup, lazy=ANALYZE_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def analyze() -> None:
    """Analyses of decoders and representations."""


@click.command("sys-info")
def sys_info() -> None:
    """Print versions of Python and of the key dependencies (pylsl/liblsl, onnxruntime, pyzmq, mne, torch)."""
    import platform
    from importlib import metadata

    click.echo(f"neurospeech {__version__}")
    click.echo(f"python      {platform.python_version()} ({sys.executable})")
    click.echo(f"platform    {platform.platform()}")
    for dist in ("numpy", "scipy", "mne", "mne-bids", "pylsl", "pyxdf", "pyzmq", "onnxruntime", "onnx",
                 "scikit-learn", "msgpack", "torch", "ctranslate2", "transformers"):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v = "not installed"
        extra = ""
        if dist == "pylsl" and v != "not installed":
            try:
                import pylsl

                extra = f" (liblsl {pylsl.library_version()})"
            except Exception as exc:  # liblsl missing is worth reporting, not crashing
                extra = f" (liblsl not loadable: {exc})"
        if dist == "pyzmq" and v != "not installed":
            import zmq

            extra = f" (libzmq {zmq.zmq_version()})"
        if dist == "torch" and v != "not installed":
            try:
                import torch

                extra = f" (cuda available: {torch.cuda.is_available()})"
            except Exception as exc:
                extra = f" (import failed: {exc})"
        click.echo(f"{dist:<12}{v}{extra}")


@click.command("config-schema")
@click.argument("kind", type=click.Choice(sorted(CONFIG_MODELS)))
@click.option("-o", "--out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the schema to this file (default: standard output).")
def config_schema(kind: str, out: str | None) -> None:
    """Print the JSON Schema of a KIND config file (deploy/configs/KIND.example.toml parsed as JSON).

    Editors and `check-jsonschema` validate a TOML file with it; `train` needs the train extra (torch).
    """
    import json

    from ._settings import json_schema

    text = json.dumps(json_schema(_load(CONFIG_MODELS[kind])), indent=1) + "\n"  # type: ignore[arg-type]
    if out is None:
        click.echo(text, nl=False)
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)


#: commands that take SIGTERM/SIGHUP from the start (before their own handlers are installed): a signal while
#: they import or load is an orderly stop (``serve``/``replay``: exit 0, nothing was running yet) instead of a
#: kill by the default handler
_EARLY_SIGNALS = {"serve": 0, "replay": 0, "decode-file": None}


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _early_stop(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _interrupt_in_chain(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` that ``exc`` wraps, if any.

    A signal handler that raises while a C extension initialises (onnxruntime's pybind module, scipy ...)
    comes out as that library's own error, e.g. ``ImportError: initialization failed`` with our
    :class:`Interrupted` as its cause or context: it is still a stop request, not a crash.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, Interrupted):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit codes."""
    command = _command(sys.argv[1:] if argv is None else list(argv)) or ""
    early = command in _EARLY_SIGNALS
    if early:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _early_stop)
    try:
        try:
            cli.main(args=argv, standalone_mode=False, prog_name="neurospeech")
        except Exception as exc:  # a stop request that a third-party import turned into its own error
            wrapped = _interrupt_in_chain(exc)
            if wrapped is None:
                raise
            raise wrapped from None
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort) as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else 130
        clean = _EARLY_SIGNALS.get(command)
        if early and clean is not None:  # stopped before it started: a clean stop
            log.info("stopped by a signal during start-up")
            # like `serve` itself: skip the interpreter's teardown of onnxruntime/scipy (0.5-1 s), so a stop
            # request is honoured within a second in every phase
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(clean)
        click.echo(f"Error: {exc}" if isinstance(exc, Interrupted) else "Aborted.", err=True)
        sys.exit(code)
    except NeurospeechError as exc:
        log.debug("error", exc_info=True)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:  # an optional import inside a command (e.g. pyxdf for an .xdf replay)
        if exc.name is None or exc.name.split(".")[0] not in EXTRAS:
            raise
        click.echo(f"Error: {missing_extra_message(exc.name)}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)
