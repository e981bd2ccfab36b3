"""Implicit-feedback matrix factorisation: alternating least squares after Hu, Koren and
Volinsky, "Collaborative Filtering for Implicit Feedback Datasets" (ICDM 2008).

Every observed (user, item) pair has preference ``p = 1`` and confidence
``c = 1 + alpha * w`` (``w`` the pair's interaction weight); every other pair has ``p = 0``
and ``c = 1``. ALS minimises

``sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + regularization * (sum_u |x_u|^2 + sum_i |y_i|^2)``

by solving, in turn, for all user factors ``x_u`` with the item factors fixed and vice versa:
``x_u = (YᵀY + Yᵀ(C_u − I)Y + λI)⁻¹ Yᵀ C_u p_u``, where the ``p = 0, c = 1`` pairs only
contribute the shared Gram matrix ``YᵀY``. Each solve is a few conjugate-gradient steps
warm-started from the previous factors (Takács, Pilászy & Tikk, RecSys 2011), so a
half-iteration costs ``O(pairs · D)`` time and memory and no ``D × D`` system per user is
formed.

Two backends compute the same model:

- ``"torch"`` (the default): batched over all users (items) at once in float64, seeded and
  reproducible (bit-identical across thread counts here); no extra dependency. Fitting
  ml-latest-small (100k interactions, 16 factors, 15 iterations) takes 1–3 s on two cores.
- ``"implicit"``: Ben Frederickson's ``implicit`` library (``pip install recenv[data]``), a
  well-kept C++ implementation (conjugate-gradient solves, multi-threaded) for logs of tens of
  millions of interactions. The tests check that both reach the same objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recenv.core.config import check_int
from recenv.data.logs import InteractionLog

BACKENDS = ("torch", "implicit")
CONFIDENCES = ("auto", "binary", "log", "linear")
_CG_STEPS = 3  # conjugate-gradient steps per half-iteration (as implicit's default)
# The largest confidence 1 + alpha * w a pair may get. Beyond it float64 cannot resolve the
# unobserved pairs' confidence 1 next to it (its spacing at 1e16 is 2), so the fit no longer
# means anything, and from about 1e33 the solver's products overflow to NaN factors.
MAX_CONFIDENCE = 1e15


@dataclass
class ImplicitMF:
    """A fitted factorisation: ``score(u, i) = user_factors[u] . item_factors[i]``."""

    user_factors: torch.Tensor  # [U, D] float32
    item_factors: torch.Tensor  # [I, D] float32
    backend: str
    loss: float  # the objective per (user, item) pair at the end of fitting (:func:`als_loss`)

    def scores(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted preference ``[len(users), I]`` (all users when ``users`` is None)."""
        x = self.user_factors if users is None else self.user_factors[users]
        return x @ self.item_factors.T

    def recommend(self, exclude: InteractionLog | None = None, k: int = 10) -> torch.Tensor:
        """Top-``k`` items per user ``[U, k]``, leaving out the pairs in ``exclude`` (a log in
        the fitted log's id space: same ``U`` and ``I``). A user with fewer than ``k`` items
        left gets excluded ones last."""
        U, I = self.user_factors.shape[0], self.item_factors.shape[0]
        k = check_int("k", k, 1, I)  # at most the number of items
        if exclude is not None and (exclude.num_users, exclude.num_items) != (U, I):
            raise ValueError(
                f"exclude has {exclude.num_users} users and {exclude.num_items} items, the model "
                f"{U} and {I}: it must be in the fitted log's id space (not compact()-ed)"
            )
        s = self.scores()
        if exclude is not None:
            s[torch.tensor(exclude.user), torch.tensor(exclude.item)] = -torch.inf  # (read-only)
        return s.topk(k, dim=1).indices


def confidence_weights(log: InteractionLog, confidence: str = "auto") -> np.ndarray:
    """The weight ``w`` of every interaction: ``binary`` 1 each (a rating is one
    interaction, its value is not a preference strength), ``linear`` the rating/weight itself,
    ``log`` ``log1p`` of it (play counts). ``auto``: ``log`` for count logs, else ``binary``."""
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence={confidence!r} must be one of {list(CONFIDENCES)}")
    if confidence == "auto":
        confidence = "log" if log.rating_kind == "count" else "binary"
    if confidence == "binary" or log.rating is None:
        if confidence != "binary":
            raise ValueError(f"confidence={confidence!r} needs ratings; the log has none")
        return np.ones(len(log), dtype=np.float64)
    w = np.clip(log.rating, 0.0, None)
    return np.log1p(w) if confidence == "log" else w


def pair_matrix(log: InteractionLog, weights: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Observed pairs with their summed weights: ``(users [P], items [P], w [P])``, sorted by
    user then item (repeated interactions of a pair add up)."""
    key = log.user * log.num_items + log.item
    pairs, inverse = np.unique(key, return_inverse=True)
    w = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(pairs))
    return (
        torch.as_tensor(pairs // log.num_items),
        torch.as_tensor(pairs % log.num_items),
        torch.as_tensor(w, dtype=torch.float64),  # float32 overflowed for weights near 1e38
    )


def fit_als(
    log: InteractionLog,
    *,
    factors: int = 16,
    regularization: float = 0.1,
    alpha: float = 10.0,
    iterations: int = 15,
    confidence: str = "auto",
    seed: int = 0,
    backend: str = "torch",
) -> ImplicitMF:
    """Fit implicit ALS to ``log`` (see the module docstring for the objective).

    ``ValueError`` for a log without interactions, for confidences ``1 + alpha * w`` above
    :data:`MAX_CONFIDENCE` (before fitting), and for a fit that ends with non-finite factors.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {list(BACKENDS)}")
    factors, iterations = check_int("factors", factors, 1), check_int("iterations", iterations, 1)
    for name, v in (("regularization", regularization), ("alpha", alpha)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"{name}={v!r} must be a finite number >= 0")
    seed = check_int("seed", seed, 0)
    if len(log) == 0:  # the loss was 0 / 0 = NaN, silently
        raise ValueError(f"{log.source or 'the log'} has no interactions: nothing to fit")
    users, items, w = pair_matrix(log, confidence_weights(log, confidence))
    conf = 1.0 + alpha * w  # float64
    top = float(conf.max())
    if not top <= MAX_CONFIDENCE:  # checked before the fit, which would be NaN or meaningless
        raise ValueError(
            f"alpha={alpha:g} (FromLog's als_alpha) times the largest pair weight "
            f"{float(w.max()):g} (confidence={confidence!r}) gives a confidence 1 + alpha * w of "
            f"{top:g}, above {MAX_CONFIDENCE:g}: lower alpha, or use confidence='log' or "
            "'binary' for large weights"
        )
    U, I = log.num_users, log.num_items
    if backend == "implicit":
        x, y = _fit_implicit(users, items, conf, U, I, factors, regularization, iterations, seed)
    else:
        x, y = _fit_torch(users, items, conf, U, I, factors, regularization, iterations, seed)
    loss = als_loss(x, y, users, items, conf, regularization)
    # Non-finite factors made every later step NaN or failed in k-means' torch.multinomial.
    if not (math.isfinite(loss) and bool(torch.isfinite(x).all() and torch.isfinite(y).all())):
        raise ValueError(
            f"ALS diverged (non-finite factors) with alpha={alpha:g}, "
            f"regularization={regularization:g} (FromLog's als_alpha, als_regularization) and "
            f"confidences up to {top:g}: raise regularization or lower alpha"
        )
    return ImplicitMF(x, y, backend, loss)


def als_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    users: torch.Tensor,
    items: torch.Tensor,
    conf: torch.Tensor,
    regularization: float,
) -> float:
    """The objective, divided by the number of (user, item) pairs ``U * I``. The sum over the
    unobserved pairs is taken in closed form (``trace(XᵀX YᵀY)``), so it costs ``O(P D)``."""
    x64, y64 = x.double(), y.double()
    s = (x64[users] * y64[items]).sum(1)
    c = conf.double()
    everywhere = torch.trace((x64.T @ x64) @ (y64.T @ y64))  # sum over all pairs of s^2
    observed = (c * (1.0 - s) ** 2 - s**2).sum()  # replace c=1, p=0 by the true terms
    reg = regularization * (x64.square().sum() + y64.square().sum())
    return float((everywhere + observed + reg) / (x.shape[0] * y.shape[0]))


def _fit_torch(users, items, conf, U, I, D, reg, iterations, seed, cg_steps=_CG_STEPS):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(U, D, generator=g, dtype=torch.float64) * 0.01
    y = torch.randn(I, D, generator=g, dtype=torch.float64) * 0.01
    c = conf.double()
    by_item = torch.argsort(items, stable=True)
    item_side = (items[by_item], users[by_item], c[by_item])
    for _ in range(iterations):
        x = _solve_side(x, y, users, items, c, reg, cg_steps)
        y = _solve_side(y, x, *item_side, reg, cg_steps)
    return x.float(), y.float()


def _solve_side(x, other, rows, cols, c, reg, steps):
    """Improve every row's factors ``x`` [R, D] given the other side's factors, by ``steps``
    conjugate-gradient steps on ``A_r x_r = b_r`` with
    ``A_r = OᵀO + λI + sum_pairs (c − 1) o oᵀ`` and ``b_r = sum_pairs c o``. ``A_r`` is never
    formed: a product ``A_r v`` costs ``O(pairs · D)``."""
    D = other.shape[1]
    gram = other.T @ other + reg * torch.eye(D, dtype=other.dtype)
    f = other[cols]  # [P, D] the other side's factors of every pair
    c_minus_1 = (c - 1.0)[:, None]

    def scatter(values: torch.Tensor) -> torch.Tensor:  # sum over each row's pairs
        return torch.zeros_like(x).index_put_((rows,), values, accumulate=True)

    def A(v: torch.Tensor) -> torch.Tensor:
        return v @ gram + scatter((v[rows] * f).sum(1, keepdim=True) * c_minus_1 * f)

    r = scatter(c[:, None] * f) - A(x)
    p, rs = r.clone(), (r * r).sum(1)
    for _ in range(steps):
        Ap = A(p)
        step = rs / (p * Ap).sum(1).clamp(min=1e-30)
        x = x + step[:, None] * p
        r = r - step[:, None] * Ap
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs.clamp(min=1e-30))[:, None] * p
        rs = rs_new
    return x


def _fit_implicit(users, items, conf, U, I, D, reg, iterations, seed):
    try:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise ImportError(
            f"backend='implicit' needs the implicit library ({e}); install it with "
            "`pip install recenv[data]` or use backend='torch'"
        ) from None
    # implicit takes the matrix entries as the confidence c itself (alpha=1 keeps them).
    m = sp.csr_matrix(
        (conf.numpy().astype(np.float32), (users.numpy(), items.numpy())), shape=(U, I)
    )
    with threadpool_limits(1, "blas"):  # implicit's own advice: BLAS threads fight its threads
        model = AlternatingLeastSquares(
            factors=D,
            regularization=reg,
            alpha=1.0,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        model.fit(m, show_progress=False)
    return (
        torch.as_tensor(np.asarray(model.user_factors), dtype=torch.float32),
        torch.as_tensor(np.asarray(model.item_factors), dtype=torch.float32),
    )
