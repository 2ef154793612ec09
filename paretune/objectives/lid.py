"""Local intrinsic dimension (LID) of layer features, for NAS-LID (He et al., AAAI 2023).

* :func:`lid_mle`: the maximum-likelihood estimator of Levina and Bickel (2004) with ``k``
  neighbours, averaged over the points of a batch;
* :func:`layer_outputs` / :func:`lid_profile`: the outputs of chosen sub-modules of any torch
  module (forward hooks, no gradient) and their LIDs, one number per layer (the *profile*);
* :func:`cosine_similarity`: the cosine similarity matrix of profiles;
* :func:`edge_similarity`: NAS-LID's measurement on a cell supernet: for one edge, the profiles
  of single paths that differ only in that edge's operation (a random context of the other edges
  shared by the candidates, repeated over batches), and their mean cosine similarity matrix;
* :func:`leaf_index`: which sub-supernet (its ``edge_options``) holds a path.

The authors' estimator (``lid_term_torch``) is ``-k / sum_{j<=k} log(d_j / d_k)``; Levina and
Bickel's is ``-(k-1) / sum_{j<k} log(d_j / d_k)`` (the ``j = k`` term is zero): they differ by the
constant ``k / (k-1)``, which cosine similarity ignores. ``unbiased=False`` gives the authors'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

EPS = 1e-12


def lid_mle(x: torch.Tensor | np.ndarray, k: int = 20, *, unbiased: bool = True) -> float:
    """Mean over the rows of ``x`` (points, flattened) of the MLE of the local intrinsic
    dimension from each point's ``k`` nearest other points."""
    t = torch.as_tensor(x).detach().reshape(len(x), -1).to(torch.float64)
    n = t.shape[0]
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ValueError(f"lid_mle: k={k!r} must be an integer >= 2")
    if n < k + 1:
        raise ValueError(f"lid_mle: {n} points, need at least k + 1 = {k + 1}")
    d = torch.cdist(t, t)
    d.fill_diagonal_(float("inf"))
    near = torch.topk(d, int(k), dim=1, largest=False).values  # ascending: d_1 .. d_k
    near = near.clamp_min(EPS)
    logs = torch.log(near / near[:, -1:])  # log(d_j / d_k) <= 0, last is 0
    if unbiased:
        per_point = -(k - 1) / (logs[:, :-1].sum(dim=1) - EPS)
    else:
        per_point = -k / (logs.sum(dim=1) - EPS)
    return float(per_point.mean())


def layer_outputs(
    module: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor, **forward_kwargs: Any
) -> list[torch.Tensor]:
    """The outputs of ``layers`` (sub-modules of ``module``) on one no-grad forward of ``x``."""
    seen: list[torch.Tensor | None] = [None] * len(layers)
    handles = []
    for i, layer in enumerate(layers):

        def hook(_m: nn.Module, _inp: Any, out: Any, i: int = i) -> None:
            seen[i] = (out[0] if isinstance(out, tuple) else out).detach()

        handles.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    missing = [i for i, s in enumerate(seen) if s is None]
    if missing:
        raise ValueError(f"layer_outputs: layers {missing} did not run in the forward pass")
    return [s for s in seen if s is not None]


def lid_profile(
    module: nn.Module,
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    k: int = 20,
    *,
    unbiased: bool = True,
    **forward_kwargs: Any,
) -> np.ndarray:
    """The LID of each layer's output (flattened per sample) on the batch ``x``."""
    outs = layer_outputs(module, layers, x, **forward_kwargs)
    return np.array([lid_mle(o.reshape(len(o), -1), k, unbiased=unbiased) for o in outs])


def cosine_similarity(profiles: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of ``profiles`` (as the authors: ``+1e-6`` on the norms)."""
    p = np.nan_to_num(np.asarray(profiles, dtype=np.float64))
    norms = np.linalg.norm(p, axis=1)
    return (p @ p.T) / (np.outer(norms, norms) + 1e-6)


def _bn_buffers(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.named_buffers()}


def edge_similarity(
    net: Any,
    edge: int,
    batches: Sequence[torch.Tensor],
    rng: np.random.Generator,
    k: int = 20,
    *,
    layers: Sequence[nn.Module] | None = None,
    unbiased: bool = True,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """NAS-LID's option similarity on ``edge`` of a cell supernet ``net``.

    Per batch: one random single path (``net.sample_path``; for DARTS one that uses ``edge``)
    fixes the other edges; each option of ``edge`` in turn runs a no-grad forward with batch
    norm in training mode (batch statistics, as the authors' supernet during its training; the
    running statistics are restored afterwards) and gives the LID profile of ``layers``
    (default: every cell and reduction block, ``net.cells``). Returns the options, the
    similarity matrix averaged over the batches, and the profiles (batches x options x layers).
    """
    options = list(net.edge_options[edge])
    layers = list(net.cells) if layers is None else list(layers)
    saved, was_training = _bn_buffers(net), net.training
    net.train()
    sims, profiles = [], []
    try:
        for x in batches:
            for _ in range(100):
                context = list(net.sample_path(rng))
                if context[edge] is not None:
                    break
            else:
                raise ValueError(f"edge {net.edge_names[edge]!r}: no sampled path uses it")
            rows = []
            for o in options:
                context[edge] = o
                rows.append(lid_profile(net, layers, x, k, unbiased=unbiased, path=context))
            rows_arr = np.stack(rows)
            profiles.append(rows_arr)
            sims.append(np.nan_to_num(cosine_similarity(rows_arr)))
    finally:
        with torch.no_grad():
            for name, buf in net.named_buffers():
                buf.copy_(saved[name])
        net.train(was_training)
    return options, np.mean(sims, axis=0), np.stack(profiles)


def leaf_index(leaves: Sequence[Sequence[Sequence[int]]], path: Sequence[int | None]) -> int:
    """Index of the first sub-supernet (its ``edge_options``) whose options hold ``path``
    (``None`` entries: an unused DARTS edge, held by any)."""
    for i, edge_options in enumerate(leaves):
        if all(
            k is None or int(k) in set(opts) for k, opts in zip(path, edge_options, strict=True)
        ):
            return i
    raise ValueError(f"path {list(path)} is in none of the {len(leaves)} sub-supernets")


def leaf_checkpoint(leaves: Sequence[Mapping[str, Any]], path: Sequence[int | None]) -> str:
    """The checkpoint of the sub-supernet (``{"checkpoint", "edge_options"}``) holding ``path``."""
    return str(leaves[leaf_index([leaf["edge_options"] for leaf in leaves], path)]["checkpoint"])


__all__ = [
    "cosine_similarity",
    "edge_similarity",
    "layer_outputs",
    "leaf_checkpoint",
    "leaf_index",
    "lid_mle",
    "lid_profile",
]
