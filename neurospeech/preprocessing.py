"""Signal processing shared by the offline trainer and the live service (numpy/scipy only, no torch).

There is exactly one implementation of each step. The offline path (:func:`preprocess_continuous`) feeds a
whole recording through the same stateful streaming objects that the service feeds LSL chunks through, so the
two paths produce the same samples on the same time grid whatever the chunking.

Pipeline (Défossez et al. 2022, with optional extras off by default)::

    raw (n_times, n_channels) in SI units at the stream rate
      -> [optional causal high-pass, stateful SOS]         (:class:`StreamingHighpass`)
      -> polyphase anti-aliased resampling to 120 Hz          (:class:`StreamingResampler`)
      -> window of -0.5 .. +2.5 s around an anchor (361 samples) (:func:`window_start_index`)
      -> baseline: subtract each channel's mean over -0.5 .. 0 s
      -> drop ``lag`` samples at the start (brain lags speech by 150 ms -> 343 samples)
      -> robust scaling per channel (median, IQR), clamp at +-20     (:class:`RobustScaler`)

Arrays are ``(n_times, n_channels)`` while streaming (the LSL layout) and ``(n_channels, n_times)`` for windows
(the model layout).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from .errors import ConfigError, DataFormatError

__all__ = [
    "PreprocessingSpec",
    "RobustScaler",
    "StreamPreprocessor",
    "StreamingHighpass",
    "StreamingResampler",
    "WindowSpec",
    "antialias_taps",
    "extract_windows",
    "group_delay_table",
    "preprocess_blocks",
    "preprocess_continuous",
    "preprocess_window",
    "window_scaling",
    "window_start_index",
]

FloatArray = NDArray[np.floating[Any]]

RESAMPLE_PHASES = frozenset({"linear", "minimum"})
#: the anti-aliasing filter a newly trained model gets (``TrainConfig.resample_phase``; the benchmarks' untrained
#: exports use it too). :class:`PreprocessingSpec`'s own default stays ``"linear"``: what a contract without the
#: key means.
TRAIN_RESAMPLE_PHASE: Final = "minimum"


# --------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class WindowSpec:
    """Geometry of one decoding window.

    Attributes
    ----------
    sfreq : float
        Model sampling rate in Hz (paper: 120).
    tmin, tmax : float
        Window bounds around the anchor in seconds (paper: -0.5, 2.5). The window holds
        ``round((tmax - tmin) * sfreq) + 1`` samples (361).
    lag : float
        Brain-to-speech lag in seconds (paper: 0.15 -> 18 samples dropped at the start of the brain window
        and at the end of the speech window).
    baseline : tuple of float
        Interval, relative to the anchor, whose per-channel mean is subtracted (paper: -0.5 .. 0).
    """

    sfreq: float = 120.0
    tmin: float = -0.5
    tmax: float = 2.5
    lag: float = 0.15
    baseline: tuple[float, float] = (-0.5, 0.0)

    def __post_init__(self) -> None:
        if not (self.sfreq > 0 and math.isfinite(self.sfreq)):
            raise ConfigError(f"window sfreq must be a positive number of Hz, got {self.sfreq!r}")
        if not self.tmax > self.tmin:
            raise ConfigError(f"window tmax ({self.tmax}) must be greater than tmin ({self.tmin})")
        if not 0 <= self.lag < (self.tmax - self.tmin) / 2:
            raise ConfigError(f"lag must be in [0, half the window), got {self.lag!r} s")
        b0, b1 = self.baseline
        if not (self.tmin - 1e-9 <= b0 < b1 <= self.tmax + 1e-9):
            raise ConfigError(
                f"baseline {self.baseline!r} must be an increasing interval inside the window "
                f"[{self.tmin}, {self.tmax}]"
            )

    @property
    def n_window(self) -> int:
        """Samples in the full window (361 for the paper's settings)."""
        return round((self.tmax - self.tmin) * self.sfreq) + 1

    @property
    def n_lag(self) -> int:
        """Samples dropped for the lag (18)."""
        return round(self.lag * self.sfreq)

    @property
    def n_times(self) -> int:
        """Samples the model sees (343)."""
        return self.n_window - self.n_lag

    @property
    def baseline_slice(self) -> slice:
        """Slice of the full window used for the baseline mean."""
        start = round((self.baseline[0] - self.tmin) * self.sfreq)
        stop = round((self.baseline[1] - self.tmin) * self.sfreq)
        return slice(start, max(stop, start + 1))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baseline"] = list(self.baseline)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowSpec:
        d = dict(d)
        if "baseline" in d:
            d["baseline"] = tuple(d["baseline"])
        return cls(**d)


@dataclass(frozen=True)
class PreprocessingSpec:
    """Continuous preprocessing settings (before windowing).

    Attributes
    ----------
    highpass : float or None
        Causal high-pass cut-off in Hz (None: off, as in the paper).
    highpass_order : int
        Butterworth order of the high-pass.
    resample_half_len : int
        Half length of the anti-aliasing FIR, in units of ``max(up, down)`` input/upsampled samples
        (scipy's ``resample_poly`` uses 10). Smaller means less delay, more aliasing.
    clamp : float
        Clamp after robust scaling, in scaled units (paper: 20).
    resample_phase : {"linear", "minimum"}
        Phase of the anti-aliasing filter. ``"linear"`` (the default, and what a contract without this key
        means): the symmetric Kaiser FIR, group delay ``half_len * max(up, down)`` upsampled samples (83 ms
        for every rate at ``half_len = 10``). ``"minimum"``: the low-delay design of :func:`antialias_taps`
        (pass 0 .. sfreq_out/3, stop from 2/3 sfreq_out, 40 dB, minimum phase): ~9 ms in 1-20 Hz. The contract
        carries this value, so a model is always served with the filter it was trained with.
    """

    highpass: float | None = None
    highpass_order: int = 2
    resample_half_len: int = 10
    clamp: float = 20.0
    resample_phase: str = "linear"

    def __post_init__(self) -> None:
        if self.highpass is not None and not self.highpass > 0:
            raise ConfigError(f"highpass must be None or a positive frequency in Hz, got {self.highpass!r}")
        if not 1 <= self.resample_half_len <= 64:
            raise ConfigError(f"resample_half_len must be in 1..64, got {self.resample_half_len!r}")
        if not self.clamp > 0:
            raise ConfigError(f"clamp must be positive, got {self.clamp!r}")
        if self.resample_phase not in RESAMPLE_PHASES:
            raise ConfigError(
                f"resample_phase must be one of {sorted(RESAMPLE_PHASES)}, got {self.resample_phase!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessingSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"preprocessing settings {unknown} are unknown to this version of neurospeech (known: "
                f"{sorted(known)}); the model was made by a newer version: upgrade neurospeech to serve it"
            )
        return cls(**d)


# --------------------------------------------------------------------------------------------- filters
class StreamingHighpass:
    """Causal Butterworth high-pass with state carried across chunks.

    Parameters
    ----------
    cutoff : float
        Cut-off in Hz.
    sfreq : float
        Sampling rate of the input in Hz.
    n_channels : int
        Number of channels.
    order : int
        Filter order.
    """

    def __init__(self, cutoff: float, sfreq: float, n_channels: int, order: int = 2) -> None:
        if not 0 < cutoff < sfreq / 2:
            raise ConfigError(f"high-pass cut-off {cutoff} Hz must lie in (0, {sfreq / 2}) for sfreq {sfreq}")
        self.sos = signal.butter(order, cutoff, btype="highpass", fs=sfreq, output="sos")
        self._zi: FloatArray | None = None
        self.n_channels = n_channels

    def reset(self) -> None:
        self._zi = None

    def process(self, x: FloatArray) -> FloatArray:
        """Filter one chunk ``(n_times, n_channels)``; returns float64 of the same shape."""
        return self.process_channels(np.asarray(x).T).T

    def process_channels(self, x: FloatArray) -> FloatArray:
        """Filter one channel-major chunk ``(n_channels, n_times)``; returns float64 of the same shape."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] == 0:
            return x
        if self._zi is None:
            # start from steady state for the first sample (no step transient)
            zi0 = signal.sosfilt_zi(self.sos)  # (n_sections, 2)
            self._zi = zi0[:, None, :] * x[:, 0][None, :, None]
        y, self._zi = signal.sosfilt(self.sos, x, axis=1, zi=self._zi)
        return y


def _rate_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """``(up, down)``: the output / input rate ratio as a fraction with denominator <= 1000."""
    if not (sfreq_in > 0 and sfreq_out > 0):
        raise ConfigError(f"sampling rates must be positive, got {sfreq_in!r} -> {sfreq_out!r}")
    frac = Fraction(sfreq_out / sfreq_in).limit_denominator(1000)
    up, down = frac.numerator, frac.denominator
    if abs(up / down * sfreq_in - sfreq_out) > 1e-6 * sfreq_out:
        raise ConfigError(
            f"cannot resample {sfreq_in} Hz to {sfreq_out} Hz with a ratio of small integers; "
            "resample the stream to a standard rate first"
        )
    return up, down


def antialias_taps(
    sfreq_in: float, sfreq_out: float, half_len: int = 10, phase: str = "linear"
) -> tuple[NDArray[np.float64], float]:
    """The resampler's anti-aliasing FIR and the delay that output times are corrected by.

    The filter runs at the upsampled rate ``up * sfreq_in`` (see :class:`StreamingResampler`).

    - ``"linear"``: symmetric Kaiser-window FIR (beta 5) of ``2 * half_len * max(up, down) + 1`` taps, cut-off at
      the lower Nyquist rate (scipy's ``resample_poly`` design); constant group delay ``(n_taps - 1) / 2``
      upsampled samples = ``half_len / min(sfreq_in, sfreq_out)`` s (83 ms at 120 Hz out, ``half_len = 10``).
    - ``"minimum"``: a low-delay design. Passband 0 .. ``sfreq_out / 3`` (40 Hz at 120 Hz out), stopband from
      ``2 * sfreq_out / 3`` (80 Hz: nothing aliases into the passband after decimation), 40 dB, Kaiser order
      from :func:`scipy.signal.kaiserord`, then made minimum phase with :func:`scipy.signal.minimum_phase`
      (homomorphic, full length, so the magnitude is kept). Its group delay varies with frequency: the delay
      returned, used to time-stamp outputs, is the median over the passband (~9 ms for every input rate;
      :func:`group_delay_table` prints it per frequency). Measured alternatives (1200 Hz in, 120 Hz out;
      passband group delay median / at 40 Hz): minimum phase at 55 dB with the linear design's transition
      15.8 / 29 ms; 40-80 Hz at 45 dB 11.8 / 16.8 ms; this design 9.4 / 14.2 ms. A least-squares FIR fitted to a
      fixed 8 ms delay kept a flat delay only with 6-23 dB gain bumps in the transition band or < 30 dB
      stopband, so the library design was kept.

    Parameters
    ----------
    sfreq_in, sfreq_out : float
        Input and output rates in Hz.
    half_len : int
        Length parameter of the linear design (ignored by ``"minimum"``, whose length follows from its bands).
    phase : {"linear", "minimum"}
        The design.

    Returns
    -------
    taps : array, shape (n_taps,)
        FIR taps at the upsampled rate, scaled by ``up`` (DC gain ``up``, i.e. unit gain after decimation).
    delay_up : float
        Delay in upsampled samples that output sample times are corrected by.
    """
    if phase not in RESAMPLE_PHASES:
        raise ConfigError(f"resample_phase must be one of {sorted(RESAMPLE_PHASES)}, got {phase!r}")
    up, down = _rate_ratio(sfreq_in, sfreq_out)
    if up == 1 and down == 1:
        return np.ones(1), 0.0
    if phase == "linear":
        max_rate = max(up, down)
        n_taps = 2 * half_len * max_rate + 1
        taps = signal.firwin(n_taps, 1.0 / max_rate, window=("kaiser", 5.0)) * up
        return taps, (n_taps - 1) / 2.0
    fs_up = up * sfreq_in
    f_pass, f_stop = sfreq_out / 3.0, 2.0 * sfreq_out / 3.0
    f_stop = min(f_stop, 0.5 * fs_up * 0.999)
    numtaps, beta = signal.kaiserord(40.0, (f_stop - f_pass) / (0.5 * fs_up))
    numtaps |= 1  # odd length: the homomorphic method keeps an odd-length filter's magnitude best
    proto = signal.firwin(numtaps, 0.5 * (f_pass + f_stop), window=("kaiser", beta), fs=fs_up)
    h = signal.minimum_phase(proto, method="homomorphic", half=False)
    h = h / h.sum()  # unit DC gain (the homomorphic step leaves it ~1e-6 off)
    freqs = np.linspace(0.01 * f_pass, f_pass, 64)
    _, gd = signal.group_delay((h, [1.0]), w=freqs, fs=fs_up)
    return h * up, float(np.median(gd))


def group_delay_table(
    sfreq_in: float,
    sfreq_out: float = 120.0,
    half_len: int = 10,
    phase: str = "linear",
    freqs: tuple[float, ...] = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0),
) -> dict[str, Any]:
    """Measured properties of the anti-aliasing filter of one rate pair.

    Returns
    -------
    table : dict
        ``n_taps``, ``delay_ms`` (what output times are corrected by), ``group_delay_ms`` per frequency,
        ``passband_ripple`` (max |gain - 1| below ``sfreq_out / 3``) and ``stopband_db`` (max gain from
        ``2 * sfreq_out / 3`` to the upsampled Nyquist, in dB).
    """
    up, _ = _rate_ratio(sfreq_in, sfreq_out)
    taps, delay_up = antialias_taps(sfreq_in, sfreq_out, half_len, phase)
    h = taps / up
    fs_up = up * sfreq_in
    fr = np.asarray([f for f in freqs if f < 0.5 * min(sfreq_in, sfreq_out)], dtype=np.float64)
    if len(h) > 1:
        _, gd = signal.group_delay((h, [1.0]), w=fr, fs=fs_up)
        w, resp = signal.freqz(h, worN=16384, fs=fs_up)
        gain = np.abs(resp)
        ripple = float(np.max(np.abs(gain[w <= sfreq_out / 3.0] - 1.0)))
        stop = w >= 2.0 * sfreq_out / 3.0
        stop_db = float(20 * np.log10(max(float(gain[stop].max()), 1e-12))) if stop.any() else float("nan")
    else:
        gd, ripple, stop_db = np.zeros_like(fr), 0.0, float("nan")
    return {
        "sfreq_in": float(sfreq_in),
        "sfreq_out": float(sfreq_out),
        "phase": phase,
        "n_taps": len(h),
        "delay_ms": 1000.0 * delay_up / fs_up,
        "group_delay_ms": {f"{f:g}": round(1000.0 * float(g) / fs_up, 3) for f, g in zip(fr, gd, strict=True)},
        "passband_ripple": ripple,
        "stopband_db": stop_db,
    }


class StreamingResampler:
    """Polyphase anti-aliased rational resampler with state, for chunked input.

    Output sample ``m`` is the FIR-filtered, up-by-``up`` / down-by-``down`` signal at upsampled index
    ``m * down``. The filter is causal, so output ``m`` stands for input time
    ``t0 + (m * down - delay_up) / (up * sfreq_in)`` where ``delay_up`` is the filter's group delay
    (``(n_taps - 1) / 2`` for the linear-phase design, the passband median for the minimum-phase one; see
    :func:`antialias_taps`): :meth:`output_times` gives the time of every output sample. The same output is
    produced whatever the chunking (tested), which is what makes the offline and online paths identical.

    Parameters
    ----------
    sfreq_in, sfreq_out : float
        Input and output rates in Hz; their ratio is approximated by a fraction with denominator <= 1000.
    n_channels : int
        Number of channels.
    half_len : int
        Filter half length in units of ``max(up, down)`` (see :class:`PreprocessingSpec`).
    phase : {"linear", "minimum"}
        The anti-aliasing design (:func:`antialias_taps`).
    dtype : numpy float dtype
        Precision of the filtering. Each channel's first sample is subtracted before filtering and added back
        after (exact: the filter is linear), so float32 keeps 24 bits for the signal around that reference
        rather than around zero (EEG DC offsets); the service and the trainer store model-rate data as float32
        anyway. float32 halves the memory traffic and doubles the BLAS rate.
    """

    def __init__(
        self,
        sfreq_in: float,
        sfreq_out: float,
        n_channels: int,
        half_len: int = 10,
        dtype: Any = np.float64,
        phase: str = "linear",
    ) -> None:
        self.up, self.down = _rate_ratio(sfreq_in, sfreq_out)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ConfigError(f"resampler dtype must be float32 or float64, got {self.dtype}")
        self.sfreq_in = float(sfreq_in)
        self.sfreq_out = float(sfreq_out)
        self.n_channels = int(n_channels)
        self.phase = phase
        self.taps, self.delay_up = antialias_taps(sfreq_in, sfreq_out, half_len, phase)
        n = len(self.taps)
        # polyphase: phase r uses taps r, r+up, r+2up, ...; pad so that every phase has K taps
        self.k_taps = -(-n // self.up)
        padded = np.zeros(self.k_taps * self.up)
        padded[:n] = self.taps
        self._poly = padded.reshape(self.k_taps, self.up).T.copy()  # (up, K): poly[r, i] = h[r + i*up]
        # reversed, contiguous: weight of the window's k-th sample (oldest first), for BLAS
        self._poly_rev = np.ascontiguousarray(self._poly[:, ::-1])
        self._dc = self._poly.sum(axis=1)  # each phase's gain at DC (multiplies the reference added back)
        self._bands: dict[int, NDArray[Any]] = {}
        self._buf = np.zeros((self.n_channels, self.k_taps - 1), dtype=self.dtype)
        self.reset()

    def _band(self, phase: int) -> NDArray[Any]:
        """Transposed banded matrix ``((nb - 1) * down + K, nb)`` for one phase: column ``i`` holds that phase's
        K taps (reversed) from row ``i * down``, so ``buf[:, s : s + L] @ band`` gives ``nb`` consecutive
        outputs of the phase for every channel from one BLAS matrix product (several times faster than ``nb``
        matrix-vector products)."""
        band = self._bands.get(phase)
        if band is None:
            # at most 8 outputs per block: each block reads (nb - 1) * down + K inputs for nb * K taps, so fewer
            # outputs waste fewer multiplications on the band's zeros; below ~8 BLAS gets inefficient (measured:
            # 1200 -> 120 Hz, 275 channels, 1-s chunks: 8 -> 35 ms per minute, 21 -> 62 ms)
            nb = max(1, min(-(-self.k_taps // self.down), 8))
            b = np.zeros((nb, (nb - 1) * self.down + self.k_taps))
            for i in range(nb):
                b[i, i * self.down : i * self.down + self.k_taps] = self._poly_rev[phase]
            band = np.ascontiguousarray(b.T, dtype=self.dtype)
            self._bands[phase] = band
        return band

    # -- state
    def reset(self) -> None:
        """Forget all input (a new stream or a gap)."""
        # the buffer's first K-1 columns hold the last K-1 input samples before the current chunk, minus the
        # reference (the past before the first sample is that sample repeated: zeros)
        self._buf[:, : self.k_taps - 1] = 0.0
        self._ref = np.zeros(self.n_channels)
        self._ref32: NDArray[np.float32] | None = None
        self._n_in = 0  # input samples consumed so far
        self._n_out = 0  # output samples produced so far
        self._primed = False

    @property
    def n_in(self) -> int:
        return self._n_in

    @property
    def n_out(self) -> int:
        return self._n_out

    @property
    def delay_seconds(self) -> float:
        """Delay of the anti-aliasing filter in seconds (its passband group delay; see :func:`antialias_taps`)."""
        return self.delay_up / (self.up * self.sfreq_in)

    def output_times(self, first_input_time: float, start: int, stop: int) -> NDArray[np.float64]:
        """Times of output samples ``start .. stop-1`` given the time of input sample 0."""
        m = np.arange(start, stop, dtype=np.float64)
        return first_input_time + (m * self.down - self.delay_up) / (self.up * self.sfreq_in)

    def process(self, x: FloatArray) -> FloatArray:
        """Resample one chunk.

        Parameters
        ----------
        x : array, shape (n_times, n_channels)
            The next input samples.

        Returns
        -------
        y : array, shape (n_out, n_channels), of the resampler's dtype
            Every output sample that the input so far fully determines (causally), in order.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise DataFormatError(
                f"resampler expects chunks of shape (n_times, {self.n_channels}), got {x.shape}"
            )
        return self.process_channels(x.T).T

    def process_channels(self, x: FloatArray) -> FloatArray:
        """Resample one channel-major chunk: ``x`` ``(n_channels, n_times)`` -> ``(n_channels, n_out)``.

        The layout of mne data and of the model's windows; rows of ``x`` that are contiguous in time (a slice
        of a recording) are read without a transposing copy.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] != self.n_channels:
            raise DataFormatError(
                f"resampler expects channel-major chunks of shape ({self.n_channels}, n_times), got {x.shape}"
            )
        n_new = x.shape[1]
        if not self._primed and n_new:
            self._ref = np.array(x[:, 0], dtype=np.float64)
            ref32 = self._ref.astype(np.float32)
            # float32 input around a float32 reference: the float32 difference is the correctly rounded exact
            # difference, i.e. what the float64 subtraction rounds to, at a third of the cost (no casting loop)
            self._ref32 = ref32 if np.array_equal(ref32, self._ref) else None
            self._primed = True
        k1 = self.k_taps - 1
        if self._buf.shape[1] < k1 + n_new:  # grows to the largest chunk seen, then stays
            buf = np.zeros((self.n_channels, k1 + max(n_new, 2 * (self._buf.shape[1] - k1))), self.dtype)
            buf[:, :k1] = self._buf[:, :k1]
            self._buf = buf
        buf = self._buf  # buf[:, j + K - 1] = input sample (n_in + j) - reference
        if self.dtype == np.float32 and x.dtype == np.float32 and self._ref32 is not None:
            np.subtract(x, self._ref32[:, None], out=buf[:, k1 : k1 + n_new])
        else:
            np.subtract(x, self._ref[:, None], out=buf[:, k1 : k1 + n_new], casting="same_kind")
        total_in = self._n_in + n_new
        # output m needs input j0 = floor(m*down/up) <= total_in - 1
        m_stop = (total_in * self.up - 1) // self.down + 1 if total_in else 0
        n_out = max(0, m_stop - self._n_out)
        out = np.empty((self.n_channels, n_out), dtype=self.dtype)
        if n_out:
            m = np.arange(self._n_out, m_stop)
            pos = m * self.down
            j0 = pos // self.up  # newest input sample used
            r = pos - j0 * self.up  # phase
            local = j0 - self._n_in + k1  # column of j0 in buf
            row = buf.strides[0]
            col = buf.strides[1]
            for phase in np.unique(r) if self.up > 1 else (0,):
                sel = np.flatnonzero(r == phase) if self.up > 1 else np.arange(n_out)
                # outputs of one phase read windows of K columns starting every `down` columns: a banded
                # matrix product (see _band), in blocks of `nb` outputs
                band = self._band(int(phase))
                width, nb = band.shape
                s0 = int(local[sel[0]]) - k1
                n_full = sel.size // nb
                if n_full:
                    blocks = np.lib.stride_tricks.as_strided(
                        buf[:, s0:], shape=(n_full, self.n_channels, width),
                        strides=(nb * self.down * col, row, col), writeable=False,
                    )
                    res = np.matmul(blocks, band)  # (n_full, C, nb)
                    out[:, sel[: n_full * nb]] = res.transpose(1, 0, 2).reshape(self.n_channels, n_full * nb)
                rest = sel.size - n_full * nb
                if rest:
                    a = s0 + n_full * nb * self.down
                    w = (rest - 1) * self.down + self.k_taps
                    out[:, sel[n_full * nb :]] = buf[:, a : a + w] @ band[:w, :rest]
            # add the reference back, times the DC gain of each output's phase
            if self.up > 1:
                out += (self._ref[:, None] * self._dc[r][None, :]).astype(self.dtype)
            else:
                out += (self._ref * self._dc[0]).astype(self.dtype)[:, None]
        self._n_out = int(m_stop) if n_out else self._n_out
        self._n_in = total_in
        if k1:
            buf[:, :k1] = buf[:, n_new : n_new + k1]  # numpy copies overlapping ranges correctly
        return out


class StreamPreprocessor:
    """The continuous part of the pipeline, stateful: [high-pass] -> resample to the model rate.

    Filtering runs in float32 around each channel's first sample (see :class:`StreamingResampler`): the
    model-rate data is stored as float32 by the trainer and the service alike.

    Parameters
    ----------
    sfreq_in : float
        Input rate in Hz.
    n_channels : int
        Number of channels (already in model order and SI units).
    window : WindowSpec
        Gives the output rate.
    spec : PreprocessingSpec
        Filter settings.
    """

    def __init__(self, sfreq_in: float, n_channels: int, window: WindowSpec, spec: PreprocessingSpec) -> None:
        self.window = window
        self.spec = spec
        self.highpass = (
            StreamingHighpass(spec.highpass, sfreq_in, n_channels, spec.highpass_order)
            if spec.highpass
            else None
        )
        self.resampler = StreamingResampler(
            sfreq_in, window.sfreq, n_channels, spec.resample_half_len, dtype=np.float32,
            phase=spec.resample_phase,
        )

    def reset(self) -> None:
        if self.highpass is not None:
            self.highpass.reset()
        self.resampler.reset()

    def process(self, x: FloatArray) -> FloatArray:
        """Process one chunk ``(n_times, n_channels)``; returns the new 120-Hz samples ``(n_out, n_channels)``."""
        return self.process_channels(np.asarray(x).T).T

    def process_channels(self, x: FloatArray) -> FloatArray:
        """Process one channel-major chunk ``(n_channels, n_times)``; returns ``(n_channels, n_out)`` float32."""
        if self.highpass is not None:
            x = self.highpass.process_channels(x)
        return self.resampler.process_channels(x)

    @property
    def delay_seconds(self) -> float:
        return self.resampler.delay_seconds


def preprocess_continuous(
    data: FloatArray,
    sfreq: float,
    window: WindowSpec | None = None,
    spec: PreprocessingSpec | None = None,
    first_time: float = 0.0,
    block: int = 8192,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Offline path: run a whole recording through :class:`StreamPreprocessor`.

    Parameters
    ----------
    data : array, shape (n_channels, n_times)
        Continuous data in SI units (MNE layout).
    sfreq : float
        Its sampling rate in Hz.
    window, spec : WindowSpec, PreprocessingSpec
        Settings (defaults: the paper's).
    first_time : float
        Time of the first sample in seconds (e.g. 0 for ``raw.times``).
    block : int
        Input samples fed per call (any value gives the same result).

    Returns
    -------
    out : array, shape (n_channels, n_out), float32
        Data at the model rate.
    times : array, shape (n_out,)
        Time of each output sample, on the same clock as ``first_time``.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise DataFormatError(f"expected data of shape (n_channels, n_times), got {data.shape}")
    return preprocess_blocks((data[:, i : i + block] for i in range(0, data.shape[1], block)), data.shape[0],
                             sfreq, window, spec, first_time)


def preprocess_blocks(
    blocks: Iterable[FloatArray],
    n_channels: int,
    sfreq: float,
    window: WindowSpec | None = None,
    spec: PreprocessingSpec | None = None,
    first_time: float = 0.0,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """:func:`preprocess_continuous` of a recording given as consecutive blocks (e.g. read from disk one at a
    time, so the whole recording is never in memory at its raw rate).

    Parameters
    ----------
    blocks : iterable of arrays, each shape (n_channels, n_i)
        Consecutive pieces of the recording, in SI units; any split gives the same result to float32 rounding
        (the filters run in float32, and their block boundaries move).
    n_channels : int
        Number of channels of every block.
    sfreq, window, spec, first_time
        As for :func:`preprocess_continuous`.

    Returns
    -------
    out : array, shape (n_channels, n_out), float32
    times : array, shape (n_out,)
    """
    window = window or WindowSpec()
    spec = spec or PreprocessingSpec()
    pre = StreamPreprocessor(sfreq, n_channels, window, spec)
    chunks = []
    for x in blocks:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] != n_channels:
            raise DataFormatError(f"expected blocks of shape ({n_channels}, n_times), got {x.shape}")
        chunks.append(np.asarray(pre.process_channels(x), dtype=np.float32))
    out = np.concatenate(chunks, axis=1) if chunks else np.empty((n_channels, 0), np.float32)
    times = pre.resampler.output_times(first_time, 0, out.shape[1])
    return np.ascontiguousarray(out, dtype=np.float32), times


# --------------------------------------------------------------------------------------------- windows
def window_start_index(times: NDArray[np.float64], anchor: float, window: WindowSpec) -> int:
    """Index of the first sample of the window around ``anchor`` on a regular time grid.

    The first sample is the one nearest to ``anchor + tmin``. Returns an index that may be out of range;
    callers check ``0 <= i`` and ``i + n_window <= len(times)``.
    """
    if len(times) == 0:
        return -1
    t0 = float(times[0])
    return round((anchor + window.tmin - t0) * window.sfreq)


def window_scaling(
    raw_window: FloatArray, window: WindowSpec, center: FloatArray, scale: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-channel offset and gain that :func:`preprocess_window` applies before clamping.

    ``x = (raw_window[..., n_lag:] - offset) * gain``, computed in the window's precision (float32 windows:
    float32). Both steps are monotonic in each sample, so the scaled extremes of a channel are the scaled
    extremes of its raw samples (the live service's artefact check uses that instead of a pass over ``x``).

    Parameters
    ----------
    raw_window : array, shape (..., n_channels, n_window), floating
    window : WindowSpec
    center, scale : array, shape (n_channels,)

    Returns
    -------
    offset, gain : arrays, shape (..., n_channels, 1), in the window's precision
        ``offset = baseline mean + center``, ``gain = 1 / scale``.
    """
    w = np.asarray(raw_window)
    ft = w.dtype if w.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    base = w[..., window.baseline_slice].mean(axis=-1, keepdims=True, dtype=np.float64)
    off = (base + np.asarray(center, dtype=np.float64)[:, None]).astype(ft)
    inv = (1.0 / np.asarray(scale, dtype=np.float64)[:, None]).astype(ft)
    return off, inv


def preprocess_window(
    raw_window: FloatArray,
    window: WindowSpec,
    center: FloatArray | None = None,
    scale: FloatArray | None = None,
    clamp: float = 20.0,
    out: NDArray[np.float32] | None = None,
    scaling: tuple[FloatArray, FloatArray] | None = None,
) -> NDArray[np.float32]:
    """Baseline, drop the lag, robust-scale and clamp windows.

    Parameters
    ----------
    raw_window : array, shape (..., n_channels, n_window)
        Windows at the model rate (``window.n_window`` samples, e.g. 361).
    window : WindowSpec
        Geometry.
    center, scale : array, shape (n_channels,) or None
        Robust scaler statistics (None: baseline only, used while fitting the scaler).
    clamp : float
        Clamp in scaled units (only applied when a scaler is given).
    out : array, shape (..., n_channels, n_times), float32, or None
        Written in place and returned (e.g. a row of a batch that goes to the encoder as is).
    scaling : (offset, gain) or None
        :func:`window_scaling` of these windows, when the caller already has it (not computed twice).

    Returns
    -------
    x : array, shape (..., n_channels, n_times), float32
        What the model sees (``n_times = n_window - n_lag``, e.g. 343).
    """
    w = np.asarray(raw_window)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(np.float64)
    if w.shape[-1] != window.n_window:
        raise DataFormatError(f"window must have {window.n_window} samples, got shape {w.shape}")
    shape = (*w.shape[:-1], window.n_times)
    if out is not None and (out.shape != shape or out.dtype != np.float32):
        raise DataFormatError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    y = np.empty(shape, dtype=np.float32) if out is None else out
    if center is None or scale is None:
        base = w[..., window.baseline_slice].mean(axis=-1, keepdims=True, dtype=np.float64)
        ft = w.dtype if w.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        np.subtract(w[..., window.n_lag :], base.astype(ft), out=y, casting="same_kind")
        return y
    # (w - (base + center)) / scale in the input's precision (float32 windows from the ring: float32, whose
    # rounding is that of the stored samples), written straight into the result: no window-sized temporary
    # (fresh temporaries cost page faults that made this several times slower)
    off, inv = window_scaling(w, window, center, scale) if scaling is None else scaling
    if off.dtype == np.float32:
        np.subtract(w[..., window.n_lag :], off, out=y)
        y *= inv
    else:
        y[...] = (w[..., window.n_lag :] - off) * inv
    if np.isfinite(clamp):
        np.clip(y, -clamp, clamp, out=y)
    return y


def extract_windows(
    data: FloatArray,
    times: NDArray[np.float64],
    anchors: NDArray[np.float64],
    window: WindowSpec,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Cut raw (not yet baselined) windows around anchors from continuous model-rate data.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        Output of :func:`preprocess_continuous`.
    times : array, shape (n_samples,)
        Its time grid.
    anchors : array, shape (n_anchors,)
        Anchor times on the same clock.
    window : WindowSpec
        Geometry.

    Returns
    -------
    windows : array, shape (n_valid, n_channels, n_window)
        The windows that lie fully inside the data.
    valid : array of bool, shape (n_anchors,)
        Which anchors gave a window.
    """
    anchors = np.atleast_1d(np.asarray(anchors, dtype=np.float64))
    starts = np.array([window_start_index(times, a, window) for a in anchors], dtype=np.int64)
    valid = (starts >= 0) & (starts + window.n_window <= data.shape[1])
    idx = starts[valid][:, None] + np.arange(window.n_window)[None, :]
    out = np.asarray(data)[:, idx]  # (C, n_valid, n_window)
    return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32), valid


# --------------------------------------------------------------------------------------------- scaler
@dataclass
class RobustScaler:
    """Per-channel robust scaler (median, 25-75 % inter-quartile range), fitted per recording/subject.

    Attributes
    ----------
    center : array, shape (n_channels,)
    scale : array, shape (n_channels,)
    """

    center: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    scale: NDArray[np.float64] = field(default_factory=lambda: np.ones(0))

    @classmethod
    def fit(cls, windows: FloatArray, max_windows: int | None = 200, seed: int = 0) -> RobustScaler:
        """Fit on baselined windows ``(n_windows, n_channels, n_times)``.

        Uses at most ``max_windows`` windows drawn with a fixed seed (paper: ~200 training windows).
        """
        w = np.asarray(windows)
        if w.ndim != 3 or w.shape[0] == 0:
            raise DataFormatError(f"scaler needs windows of shape (n, n_channels, n_times), got {w.shape}")
        if max_windows is not None and w.shape[0] > max_windows:
            rng = np.random.default_rng(seed)
            w = w[np.sort(rng.choice(w.shape[0], max_windows, replace=False))]
        flat = w.transpose(1, 0, 2).reshape(w.shape[1], -1).astype(np.float64)
        q25, med, q75 = np.percentile(flat, [25, 50, 75], axis=1)
        iqr = q75 - q25
        bad = ~np.isfinite(iqr) | (iqr <= 0)
        iqr[bad] = 1.0  # flat channel: keep it at zero after centring instead of dividing by zero
        med[~np.isfinite(med)] = 0.0
        return cls(center=med, scale=iqr)

    def to_dict(self) -> dict[str, list[float]]:
        return {"center": [float(v) for v in self.center], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustScaler:
        center = np.asarray(d["center"], dtype=np.float64)
        scale = np.asarray(d["scale"], dtype=np.float64)
        if center.shape != scale.shape or center.ndim != 1:
            raise DataFormatError(f"scaler center/scale shapes differ: {center.shape} vs {scale.shape}")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise DataFormatError("scaler scale must be finite and positive for every channel")
        return cls(center=center, scale=scale)
