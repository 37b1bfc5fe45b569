"""The contract check on connect: does a stream fit the model, and how to map its channels.

:func:`check_stream` checks the rate (regular, resamplable, at least the model rate), the channel format,
finds the model's channels by name (any order, extra channels ignored) and converts units (names such as
``uV``/``fT``, mne-lsl's power-of-ten exponents, or a ``--units`` override). A refusal raises
:class:`~neurospeech.errors.ContractMismatchError` saying what differs and how to fix it.
"""

from __future__ import annotations

import logging
import math

from ..contract import ChannelMap, ModelContract, match_channels
from ..errors import ConfigError, ContractMismatchError
from ..preprocessing import StreamPreprocessor

__all__ = ["check_stream"]

log = logging.getLogger(__name__)


def check_stream(
    contract: ModelContract,
    names: list[str],
    sfreq: float,
    units: list[str] | None = None,
    types: list[str] | None = None,
    channel_format: str = "float32",
    strict_rate: bool = False,
    unit_override: str | None = None,
) -> ChannelMap:
    """Check a stream against the model contract and return how to map its channels.

    Parameters
    ----------
    contract : ModelContract
    names, units, types : list of str
        Channel labels, units and types in stream order (units/types may hold empty strings: unknown). Units
        are names (``uV``, ``fT``) or mne-lsl's power-of-ten exponents (``-6``); ``units=None`` means the
        data are SI (a file read by MNE). A stream that declares no unit is assumed SI with a warning.
    sfreq : float
        Nominal rate of the stream (0: irregular).
    channel_format : str
        LSL channel format (``float32``, ``double64``, ``int16`` ...; ``string`` is refused).
    strict_rate : bool
        Require ``sfreq == contract.sfreq_raw``.
    unit_override : str or None
        Units to use instead of the stream's (``--units``): ``'uV'`` or ``'mag=fT,grad=fT/cm'``.

    Raises
    ------
    ContractMismatchError
        Saying what differs and how to fix it.
    """
    if channel_format == "string":
        raise ContractMismatchError(
            "the stream carries strings (a marker stream?); connect to the numeric M/EEG data stream "
            "(check --stream-name / --stream-type)"
        )
    model_rate = contract.window.sfreq
    if not (sfreq > 0 and math.isfinite(sfreq)):
        raise ContractMismatchError(
            f"the stream has an irregular sampling rate ({sfreq!r}); the model needs a regular stream of at "
            f"least {model_rate:g} Hz (trained at {contract.sfreq_raw:g} Hz)"
        )
    if sfreq < model_rate:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz is below the model rate {model_rate:g} Hz (trained at "
            f"{contract.sfreq_raw:g} Hz); stream at {contract.sfreq_raw:g} Hz"
        )
    if strict_rate and abs(sfreq - contract.sfreq_raw) > 1e-6 * contract.sfreq_raw:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz differs from the model's training rate {contract.sfreq_raw:g} Hz "
            "(strict_rate is on); stream at the training rate or set strict_rate = false"
        )
    try:
        StreamPreprocessor(sfreq, 1, contract.window, contract.preprocessing)
    except ConfigError as exc:
        raise ContractMismatchError(
            f"stream rate {sfreq:g} Hz cannot be resampled to {model_rate:g} Hz ({exc}); "
            f"stream at {contract.sfreq_raw:g} Hz"
        ) from exc
    cmap = match_channels(contract, list(names), units=units, types=types, unit_override=unit_override)
    if cmap.assumed_units:
        log.warning(
            "UNITS UNKNOWN: the stream declares no unit for %d of the model's %d channels (first: %s); assuming "
            "the model's SI units (%s). If the amplifier sends uV, fT ... every window is scaled wrongly: give "
            "the unit with --units (e.g. --units uV, or --units mag=fT,grad=fT/cm) or fix the outlet's metadata",
            len(cmap.assumed_units), len(contract.channels), cmap.assumed_units[:5],
            ", ".join(sorted({c.unit for c in contract.channels})),
        )
    if cmap.overridden_units:
        declared = sorted({u for u in (units or []) if u})
        log.warning(
            "units of %d channels set by the override %r%s", len(cmap.overridden_units), unit_override,
            f" instead of the stream's {declared[:5]}" if declared else "",
        )
    return cmap

