"""Representational geometry of a binned feature in two contexts (Piwek, Stokes & Summerfield 2023).

Works on any trials x features data: RNN hidden states, M/EEG epochs (channels or sources) or encoder latents.
numpy / scipy / scikit-learn only. It sits in the core (``neurospeech.geometry``) because the working-memory
RNN (``neurospeech.models.wm_rnn``) and ``neurospeech analyze geometry`` (tools) both use it; plots: ``._plot``.

The pipeline:

1. :func:`condition_means`: bin the feature (e.g. colour, radians) into ``n_bins`` (4) bins per context
   (e.g. location), average -> an ``(2 * n_bins, n_features)`` matrix (rows: context 0 bins, then context 1).
2. :func:`plane_geometry`: PCA of the centred matrix to 3-D; a plane fitted to each context's quadrilateral;
   its normal oriented by the quadrilateral's sides (traversal order of the bins) so that identical rings give
   parallel normals and mirror-image rings give opposite ones; ``cos theta = n1 . n2``; a signed ``theta`` for
   circular statistics; the phase alignment ``psi`` by orthogonal Procrustes after rotating plane 2 onto
   plane 1 (NaN for reflections, self-intersecting quadrilaterals, or ``cos theta <= 0``).
3. :func:`alignment_index` (Elsayed et al. 2016) in the full space for ``d = 2, 3``; :func:`principal_angles`
   (``scipy.linalg.subspace_angles``); variance explained by 3 PCs.
4. Decoding (``_decoding``; scikit-learn, the ``analysis`` extra, imported when used): cross-validated LDA,
   cross-temporal and cross-context.
5. Circular statistics over networks/subjects (``_stats``): Rayleigh and V-tests.
6. :func:`time_resolved`: theta(t), psi(t), AI(t); :func:`analyze`: everything at named times, JSON-ready.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import orthogonal_procrustes, subspace_angles

from ..errors import ConfigError, DataFormatError
from ._decoding import cross_context_decoding, cross_temporal_decoding, decode_lda
from ._stats import circ_mean, circ_resultant, rayleigh_test, v_test

__all__ = [
    "GeometrySettings",
    "PlaneGeometry",
    "alignment_index",
    "analyze",
    "bin_feature",
    "circ_mean",
    "circ_resultant",
    "condition_means",
    "cross_context_decoding",
    "cross_temporal_decoding",
    "decode_lda",
    "group_stats",
    "jsonable",
    "plane_geometry",
    "principal_angles",
    "rayleigh_test",
    "time_resolved",
    "v_test",
    "variance_explained",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeometrySettings:
    """Settings of :func:`analyze`.

    Attributes
    ----------
    n_bins : int
        Feature bins per context (4: quadrilaterals).
    cv : int
        Cross-validation folds of the LDA decoders.
    decoding : bool
        Run the (slower) decoding analyses.
    cross_temporal : bool
        Compute the cross-temporal generalisation matrix (n_times^2 decoders per fold).
    seed : int
        Seed of the fold split.
    """

    n_bins: int = 4
    cv: int = 5
    decoding: bool = True
    cross_temporal: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_bins < 3:
            raise ConfigError(f"n_bins must be >= 3 to define a plane, got {self.n_bins}; the paper uses 4")
        if self.cv < 2:
            raise ConfigError(f"cv must be >= 2, got {self.cv}")


def bin_feature(feature: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Bin circular values (radians) into ``n_bins`` equal bins of ``[-pi, pi)``, shape (n,) int."""
    f = np.asarray(feature, dtype=float)
    if not np.all(np.isfinite(f)):
        raise DataFormatError("feature values contain NaN or inf; they must be angles in radians")
    w = (f + np.pi) % (2 * np.pi)
    return np.minimum((w / (2 * np.pi / n_bins)).astype(np.int64), n_bins - 1)


def _check_trials(x: np.ndarray, feature: np.ndarray, context: np.ndarray) -> tuple[np.ndarray, ...]:
    x = np.asarray(x, dtype=float)
    feature = np.asarray(feature, dtype=float)
    context = np.asarray(context)
    if x.ndim not in (2, 3):
        raise DataFormatError(
            f"data must be (n_trials, n_features) or (n_trials, n_times, n_features), got {x.shape}"
        )
    if feature.shape != (x.shape[0],) or context.shape != (x.shape[0],):
        raise DataFormatError(
            f"feature and context must have shape ({x.shape[0]},) like the trials, got {feature.shape} and "
            f"{context.shape}"
        )
    if not np.isin(context, (0, 1)).all():
        raise DataFormatError(f"context must hold only 0 and 1, got values {np.unique(context)[:10]}")
    if not np.all(np.isfinite(x)):
        raise DataFormatError("data contain NaN or inf; drop or interpolate those trials first")
    return x, feature, context.astype(np.int64)


def condition_means(x: np.ndarray, feature: np.ndarray, context: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Average trials per (context, feature bin).

    Parameters
    ----------
    x : ndarray, shape (n_trials, n_features) or (n_trials, n_times, n_features)
    feature : ndarray, shape (n_trials,)
        Circular feature in radians (e.g. colour). A trial may appear twice (once per context) with different
        features, e.g. the colours at the two locations before the cue.
    context : ndarray of 0/1, shape (n_trials,)

    Returns
    -------
    ndarray, shape (2 * n_bins, n_features) or (2 * n_bins, n_times, n_features)
        Rows ``0..n_bins-1``: context 0, bins in order; rows ``n_bins..``: context 1.
    """
    x, feature, context = _check_trials(x, feature, context)
    b = bin_feature(feature, n_bins)
    out = np.empty((2 * n_bins, *x.shape[1:]))
    for c in (0, 1):
        for k in range(n_bins):
            m = (context == c) & (b == k)
            if not m.any():
                raise DataFormatError(
                    f"no trials in context {c}, feature bin {k} of {n_bins}; every bin needs trials"
                )
            out[c * n_bins + k] = x[m].mean(axis=0)
    return out


def variance_explained(means: np.ndarray, n_components: int = 3) -> float:
    """Fraction of the variance of the centred condition means captured by the first ``n_components`` PCs."""
    m = np.asarray(means, dtype=float)
    m = m - m.mean(axis=0)
    s = np.linalg.svd(m, compute_uv=False) ** 2
    tot = s.sum()
    return float(s[:n_components].sum() / tot) if tot > 0 else float("nan")


def _top_pcs(points: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``d`` principal axes (n_features, d) and singular values squared of centred points."""
    c = points - points.mean(axis=0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    return vt[:d].T, s**2


def alignment_index(means: np.ndarray, d: int = 2, n_bins: int | None = None) -> float:
    """Alignment index of the two contexts' subspaces (Elsayed et al. 2016), in the full space.

    ``AI(1 -> 2) = Tr(D2^T C1 D2) / sum_{i <= d} s1_i``: the variance of context 1 captured by the top-``d``
    PCs of context 2, relative to the variance captured by context 1's own top-``d`` PCs. The symmetric mean
    of both directions is returned: 1 for identical subspaces, 0 for orthogonal ones.

    Parameters
    ----------
    means : ndarray, shape (2 * n_bins, n_features)
        Output of :func:`condition_means`.
    """
    m = np.asarray(means, dtype=float)
    nb = n_bins or m.shape[0] // 2
    if m.ndim != 2 or m.shape[0] != 2 * nb:
        raise DataFormatError(f"means must be (2 * n_bins, n_features), got {m.shape}")
    if not 1 <= d <= min(nb - 1, m.shape[1]):
        raise ConfigError(f"d must lie in [1, {min(nb - 1, m.shape[1])}] for {nb} bins, got {d}")
    a, b = m[:nb] - m[:nb].mean(0), m[nb:] - m[nb:].mean(0)
    vals = []
    for x1, x2 in ((a, b), (b, a)):
        d2, _ = _top_pcs(x2, d)
        _, s1 = _top_pcs(x1, d)
        den = s1[:d].sum()
        vals.append(np.sum((x1 @ d2) ** 2) / den if den > 0 else np.nan)
    return float(np.mean(vals))


def principal_angles(means: np.ndarray, d: int = 2, n_bins: int | None = None) -> np.ndarray:
    """Principal angles (degrees, ascending) between the two contexts' top-``d`` PC subspaces."""
    m = np.asarray(means, dtype=float)
    nb = n_bins or m.shape[0] // 2
    d1, _ = _top_pcs(m[:nb], d)
    d2, _ = _top_pcs(m[nb:], d)
    return np.sort(np.degrees(subspace_angles(d1, d2)))


@dataclass
class PlaneGeometry:
    """Geometry of the two contexts' planes in the 3-D PCA space of the condition means.

    Attributes
    ----------
    theta : float
        Angle between the plane normals, degrees in ``[0, 180]``.
    theta_signed : float
        ``theta`` with the sign of the rotation: positive when the intersection line ``n1 x n2`` points
        towards the first feature bin of context 0 (relative to its centroid); degrees in ``(-180, 180]``.
    cos_theta : float
    psi : float
        Phase alignment, degrees in ``(-180, 180]``; NaN when undefined.
    psi_reason : str
        Why psi is NaN ('' when defined): 'cos_theta<=0', 'reflection', 'self_intersecting'.
    var_explained_3pc : float
    points : ndarray, shape (2 * n_bins, 3)
        Condition means in the 3-D PCA space (for plots).
    normals : ndarray, shape (2, 3)
    """

    theta: float
    theta_signed: float
    cos_theta: float
    psi: float
    psi_reason: str
    var_explained_3pc: float
    points: np.ndarray = field(repr=False)
    normals: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "theta": _num(self.theta),
            "theta_signed": _num(self.theta_signed),
            "cos_theta": _num(self.cos_theta),
            "psi": _num(self.psi),
            "psi_reason": self.psi_reason,
            "var_explained_3pc": _num(self.var_explained_3pc),
            "points_3d": self.points.tolist(),
            "normals": self.normals.tolist(),
        }


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _side_normal(q: np.ndarray) -> np.ndarray:
    """Sum of cross products of consecutive sides of a closed polygon (points in order), shape (3,)."""
    n = len(q)
    s = np.zeros(3)
    for i in range(n):
        a = q[(i + 1) % n] - q[i]
        b = q[(i + 2) % n] - q[(i + 1) % n]
        s += np.cross(a, b)
    return s


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    s = np.linalg.norm(v)
    if s < 1e-12:
        return np.eye(3) if c > 0 else -np.eye(3)
    k = v / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def _segments_cross(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orient(p3, p4, p1), orient(p3, p4, p2)
    d3, d4 = orient(p1, p2, p3), orient(p1, p2, p4)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def _self_intersecting(q2: np.ndarray) -> bool:
    """True if a closed polygon in 2-D (points in traversal order) has two crossing non-adjacent sides."""
    n = len(q2)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue
            if _segments_cross(q2[i], q2[(i + 1) % n], q2[j], q2[(j + 1) % n]):
                return True
    return False


def plane_geometry(means: np.ndarray, n_bins: int | None = None) -> PlaneGeometry:
    """Plane angle and phase alignment of the two contexts (see the module docstring).

    Parameters
    ----------
    means : ndarray, shape (2 * n_bins, n_features)
        Output of :func:`condition_means` at one time; ``n_features >= 3``.
    """
    m = np.asarray(means, dtype=float)
    nb = n_bins or m.shape[0] // 2
    if m.ndim != 2 or m.shape[0] != 2 * nb or nb < 3:
        raise DataFormatError(f"means must be (2 * n_bins, n_features) with n_bins >= 3, got {m.shape}")
    if m.shape[1] < 3:
        raise DataFormatError(f"plane geometry needs >= 3 features for a 3-D PCA space, got {m.shape[1]}")
    mc = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(mc, full_matrices=False)
    pts = mc @ vt[:3].T
    var3 = float((s[:3] ** 2).sum() / (s**2).sum()) if (s**2).sum() > 0 else float("nan")
    quads = [pts[:nb], pts[nb:]]
    normals, bases = [], []
    for q in quads:
        qc = q - q.mean(axis=0)
        _, _, vq = np.linalg.svd(qc)
        n = vq[2]
        side = _side_normal(q)
        if np.dot(n, side) < 0:
            n = -n
        e1 = vq[0]
        e2 = np.cross(n, e1)  # right-handed basis (e1, e2, n) of the plane
        normals.append(n / np.linalg.norm(n))
        bases.append(np.stack([e1, e2]))
    n1, n2 = normals
    cos_t = float(np.clip(np.dot(n1, n2), -1.0, 1.0))
    theta = float(np.degrees(np.arccos(cos_t)))
    axis = np.cross(n1, n2)
    ref = quads[0][0] - quads[0].mean(axis=0)
    sign = 1.0 if np.dot(axis, ref) >= 0 else -1.0
    theta_signed = sign * theta if theta < 180.0 else 180.0

    psi, reason = float("nan"), ""
    own_2d = [(q - q.mean(0)) @ b.T for q, b in zip(quads, bases, strict=True)]
    if _self_intersecting(own_2d[0]) or _self_intersecting(own_2d[1]):
        reason = "self_intersecting"  # the orientation of its normal, hence theta's sign, is ill-defined too
    elif cos_t <= 0:
        reason = "cos_theta<=0"
    else:
        rot = _rotation(n2, n1)
        a2 = own_2d[0]
        b2 = ((quads[1] - quads[1].mean(0)) @ rot.T) @ bases[0].T
        r, _ = orthogonal_procrustes(b2, a2)
        if np.linalg.det(r) < 0:
            reason = "reflection"
        else:
            psi = float(np.degrees(np.arctan2(r[0, 1], r[0, 0])))
    return PlaneGeometry(theta, theta_signed, cos_t, psi, reason, var3, pts, np.stack(normals))


def time_resolved(x: np.ndarray, feature: np.ndarray, context: np.ndarray, n_bins: int = 4) -> dict:
    """theta(t), psi(t), AI(t) and friends at every time of ``x`` (n_trials, n_times, n_features).

    Returns a dict of lists (length n_times): ``theta``, ``theta_signed``, ``psi``, ``ai_d2``, ``ai_d3``,
    ``var_explained_3pc``, ``principal_angle_1``, ``principal_angle_2``. NaN where undefined.
    """
    x, feature, context = _check_trials(x, feature, context)
    if x.ndim != 3:
        raise DataFormatError(f"time-resolved geometry needs (n_trials, n_times, n_features), got {x.shape}")
    means = condition_means(x, feature, context, n_bins)
    keys = [
        "theta",
        "theta_signed",
        "psi",
        "ai_d2",
        "ai_d3",
        "var_explained_3pc",
        "principal_angle_1",
        "principal_angle_2",
    ]
    out: dict[str, list] = {k: [] for k in keys}
    for t in range(x.shape[1]):
        mt = means[:, t]
        if not np.any(mt - mt.mean(0)):
            for k in keys:  # no stimulus-related variance at all (e.g. before the stimulus)
                out[k].append(float("nan"))
            continue
        g = plane_geometry(mt, n_bins)
        pa = principal_angles(mt, 2, n_bins)
        vals = [
            g.theta,
            g.theta_signed,
            g.psi,
            alignment_index(mt, 2, n_bins),
            alignment_index(mt, min(3, n_bins - 1), n_bins),
            g.var_explained_3pc,
            pa[0],
            pa[1],
        ]
        for k, v in zip(keys, vals, strict=True):
            out[k].append(float(v))
    return out


def _at_time(x: np.ndarray, feature: np.ndarray, context: np.ndarray, settings: GeometrySettings) -> dict:
    means = condition_means(x, feature, context, settings.n_bins)
    g = plane_geometry(means, settings.n_bins)
    res = g.to_dict()
    res["ai_d2"] = alignment_index(means, 2, settings.n_bins)
    res["ai_d3"] = alignment_index(means, min(3, settings.n_bins - 1), settings.n_bins)
    res["principal_angles_d2"] = principal_angles(means, 2, settings.n_bins).tolist()
    if settings.decoding:
        fb = bin_feature(feature, settings.n_bins)
        res["decoding"] = cross_context_decoding(x, fb, context, settings.cv, settings.seed)
        res["decoding"]["chance"] = 1.0 / settings.n_bins
    return res


def analyze(
    x: np.ndarray,
    feature: np.ndarray,
    context: np.ndarray,
    times: dict[str, int] | None = None,
    settings: GeometrySettings | None = None,
    time_axis: np.ndarray | None = None,
) -> dict:
    """The full geometry analysis of one labelling, JSON-ready.

    Parameters
    ----------
    x : ndarray, shape (n_trials, n_times, n_features) or (n_trials, n_features)
    feature : ndarray (n_trials,), radians
    context : ndarray (n_trials,), 0/1
    times : dict name -> time index
        Times with the full report (e.g. ``{"pre": 7, "post": 15}``). Default: every time for 2-D data, the
        last time for 3-D data.
    time_axis : ndarray (n_times,), optional
        Time values (e.g. seconds) stored in the output.

    Returns
    -------
    dict
        ``at``: name -> plane geometry, AI, principal angles, decoding; ``time_resolved`` (3-D input);
        ``cross_temporal`` (3-D input, if enabled): accuracy matrix decoding the feature bin regardless of
        context; ``settings``; ``n_trials``; ``n_features``.
    """
    settings = settings or GeometrySettings()
    x, feature, context = _check_trials(x, feature, context)
    x3 = x if x.ndim == 3 else x[:, None, :]
    n_t = x3.shape[1]
    times = dict(times) if times else {"t": n_t - 1}
    for name, t in times.items():
        if not -n_t <= int(t) < n_t:
            raise ConfigError(f"time {name}={t} is outside the {n_t} time points of the data")
    out: dict = {
        "n_trials": int(x3.shape[0]),
        "n_times": int(n_t),
        "n_features": int(x3.shape[2]),
        "settings": settings.__dict__.copy(),
        "times": {k: int(v) for k, v in times.items()},
        "at": {name: _at_time(x3[:, int(t)], feature, context, settings) for name, t in times.items()},
    }
    if time_axis is not None:
        out["time_axis"] = np.asarray(time_axis, dtype=float).tolist()
    if n_t > 1:
        out["time_resolved"] = time_resolved(x3, feature, context, settings.n_bins)
        if settings.decoding and settings.cross_temporal:
            fb = bin_feature(feature, settings.n_bins)
            out["cross_temporal"] = cross_temporal_decoding(x3, fb, settings.cv, settings.seed).tolist()
    return out


def jsonable(obj: object) -> object:
    """Recursively turn numpy values into Python ones and NaN/inf into ``None`` (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def group_stats(theta_signed_deg: np.ndarray, psi_deg: np.ndarray | None = None) -> dict:
    """Circular statistics of per-network/per-subject angles (degrees in, degrees out).

    ``theta``: Rayleigh test, V-test against 0 (parallel planes) and against 90 deg, circular mean and R.
    ``psi`` (if given): Rayleigh test and V-test against 0 (NaNs dropped).
    """
    th = np.radians(np.asarray(theta_signed_deg, dtype=float))
    out = {
        "theta": {
            "circ_mean_deg": float(np.degrees(circ_mean(th))),
            "R": circ_resultant(th),
            "rayleigh": rayleigh_test(th),
            "v_test_0": v_test(th, 0.0),
            "v_test_90_abs": v_test(np.abs(th), np.pi / 2),
        }
    }
    if psi_deg is not None:
        ps = np.radians(np.asarray(psi_deg, dtype=float))
        if np.isfinite(ps).any():
            out["psi"] = {
                "circ_mean_deg": float(np.degrees(circ_mean(ps))),
                "R": circ_resultant(ps),
                "rayleigh": rayleigh_test(ps),
                "v_test_0": v_test(ps, 0.0),
                "n_nan": int(np.sum(~np.isfinite(ps))),
            }
        else:
            out["psi"] = {"n_nan": int(ps.size)}
    return out
