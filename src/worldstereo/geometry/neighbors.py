"""Exact k-nearest-neighbour search for 3D points, on the device of the inputs.

Two backends give the same neighbours (up to the order of equidistant ones): ``"kdtree"`` —
SciPy's ``cKDTree`` (C++, multi-threaded), the default for CPU tensors — and ``"grid"`` — pure
PyTorch, the default on accelerators, where it avoids a round trip through host memory.

Grid algorithm (a linear octree): points are sorted once by their Morton code on a 2^21-per-axis grid
over the bounding box of points and queries; the Morton order groups every octree cell of every
level into one contiguous range. The search starts at the finest level whose occupied cells hold
about ``k / 3`` points on average: every query compares itself with all points of the 3x3x3 block of
cells around its own cell (distances as dense (queries x candidates) tiles, query cells bucketed by
their number of candidates). A result is accepted when the k-th distance does not exceed the
distance from the query to the boundary of the block (no point outside can be nearer); the other
queries move up to the level whose cells are as large as the k-th distance found (which bounds the
true one), or two levels up when they had fewer than ``k`` candidates — at the top level the block
holds every point. The result is therefore exact (up to the order of equidistant neighbours).
Queries far from every point need coarse levels whose blocks hold many points; the KD-tree is the
better choice for them on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["knn_points"]

_BITS = 21  # Morton bits per axis (3 x 21 = 63 bits in an int64)
_TILE_ELEMS = 1 << 22  # distances per dense tile
_OFFSETS = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]


def _spread_bits(x: Tensor) -> Tensor:
    """Insert two zero bits between the low 21 bits of each int64 (Morton interleaving)."""
    x = x & 0x1FFFFF
    x = (x | (x << 32)) & 0x1F00000000FFFF
    x = (x | (x << 16)) & 0x1F0000FF0000FF
    x = (x | (x << 8)) & 0x100F00F00F00F00F
    x = (x | (x << 4)) & 0x10C30C30C30C30C3
    x = (x | (x << 2)) & 0x1249249249249249
    return x


def _morton(ijk: Tensor) -> Tensor:
    return (_spread_bits(ijk[..., 0]) << 2) | (_spread_bits(ijk[..., 1]) << 1) | _spread_bits(ijk[..., 2])


def knn_points(query: Tensor, points: Tensor, k: int, *, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest ``points`` of every query point (Euclidean), exactly.

    Args:
        query: (M,3) float query points.
        points: (N,3) float points searched (N >= k; same device as ``query``). A query that is also
            a point finds itself at distance 0.
        k: number of neighbours (>= 1).
        backend: ``"kdtree"`` (SciPy, CPU tensors only), ``"grid"`` (PyTorch, any device) or None
            (``"kdtree"`` on the CPU, ``"grid"`` elsewhere).

    Returns:
        ``(dist, idx)``: (M,k) distances in increasing order (dtype of ``points``, at least float32)
        and (M,k) int64 indices into ``points``.

    Raises:
        ValueError: bad shapes, non-finite coordinates, or ``k`` outside [1, N].
    """
    if query.dim() != 2 or query.shape[1] != 3 or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"query and points must be (M,3) and (N,3); got {tuple(query.shape)} and "
                         f"{tuple(points.shape)}")
    n, m = points.shape[0], query.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the number of points); got {k!r}")
    dev = points.device
    if backend is None:
        backend = "kdtree" if dev.type == "cpu" else "grid"
    if backend not in ("kdtree", "grid"):
        raise ValueError(f"backend must be 'kdtree', 'grid' or None; got {backend!r}")
    if backend == "kdtree" and dev.type != "cpu":
        raise ValueError(f"backend 'kdtree' needs CPU tensors; got points on {dev}")
    dt = torch.promote_types(points.dtype, torch.float32)
    P = points.detach().to(dt)
    Q = query.detach().to(device=dev, dtype=dt)
    dist = torch.full((m, k), math.inf, dtype=dt, device=dev)
    idx = torch.zeros((m, k), dtype=torch.int64, device=dev)
    if m == 0:
        return dist, idx
    if not bool(torch.isfinite(P).all()) or not bool(torch.isfinite(Q).all()):
        raise ValueError("query/points contain non-finite coordinates")
    if backend == "kdtree":
        from scipy.spatial import cKDTree

        d, i = cKDTree(P.numpy()).query(Q.numpy(), k=k, workers=torch.get_num_threads())
        return (torch.from_numpy(d.reshape(m, k)).to(dt), torch.from_numpy(i.reshape(m, k)).long())
    return _knn_grid(Q, P, k, dist, idx)


def _knn_grid(Q: Tensor, P: Tensor, k: int, dist: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """The grid backend of :func:`knn_points` (fills and returns ``dist`` / ``idx``)."""
    dev = P.device
    n, m = P.shape[0], Q.shape[0]

    # the grid: 2^21 finest cells per axis over the bounding box of points and queries. Cell indices
    # and the acceptance test use float64 so that the cell of a point and the geometric block
    # boundary agree (float32 rounding is ~10 % of a finest cell on large scenes).
    lo = torch.minimum(P.min(0).values, Q.min(0).values).double()
    hi = torch.maximum(P.max(0).values, Q.max(0).values).double()
    extent = float((hi - lo).max())
    fine = max(extent, 1e-30) / (2**_BITS - 1)
    scale = 1 << _BITS

    def cells(x: Tensor) -> Tensor:
        return torch.floor((x.double() - lo) / fine).long().clamp_(0, scale - 1)

    p_fine = cells(P)
    order = torch.argsort(_morton(p_fine))
    p_code = _morton(p_fine[order])
    P_sorted = P[order].t().contiguous()  # (3,N) coordinates in Morton order
    del p_fine
    q_fine = cells(Q)

    # start at the finest level whose occupied cells hold k/3 points on average: then the 3x3x3 block
    # around a query's cell typically holds its k neighbours both on surfaces (about 9 occupied
    # cells, radius of the k neighbours ~ sqrt(k / (pi * density)) < cell size) and in volumes
    level0 = _BITS
    for lv in range(_BITS + 1):
        c = p_code >> (3 * lv)
        n_cells = 1 + int((c[1:] != c[:-1]).sum()) if n > 1 else 1
        if 3 * n >= max(k, 4.5) * n_cells:
            level0 = lv
            break

    target = torch.full((m,), level0, dtype=torch.int64, device=dev)  # level at which to search each query
    pending = torch.arange(m, device=dev)
    while pending.numel():
        level = int(target[pending].min())
        now = target[pending] == level
        cur, pending = pending[now], pending[~now]
        q_ijk = q_fine[cur] >> level
        _search_level(cur, q_ijk, level, p_code, P_sorted, order, Q, k, dist, idx)
        if level >= _BITS:  # one cell: the block is the whole point set
            continue
        # accept when the k-th distance is within the block of 3x3x3 cells around the query's cell
        h = fine * (1 << level)
        rel = (Q[cur].double() - lo) - q_ijk.double() * h  # position inside the own cell, in [0, h)
        cover = torch.minimum(rel + h, 2 * h - rel).min(1).values
        kth = dist[cur, k - 1].double()
        failed = kth > cover * (1 - 1e-9)
        if bool(failed.any()):
            cur, kth = cur[failed], kth[failed]
            # the k-th distance found bounds the true one: at a level whose cells are at least that
            # large the block covers it (fewer than k candidates: cells 4x larger)
            need = torch.ceil(torch.log2((kth / fine).clamp(min=1.0, max=float(scale)))).long()
            need = torch.where(torch.isfinite(kth), need, torch.full_like(need, level + 2))
            target[cur] = need.clamp(min=level + 1, max=_BITS)
            pending = torch.cat([pending, cur])
    return dist, idx


def _bucket_size(n: Tensor) -> Tensor:
    """Round candidate counts up to a few sizes per octave (1, 1.25, 1.5, 1.75 x a power of two)."""
    e = torch.floor(torch.log2(n.clamp_min(1).double()))
    step = torch.exp2(e - 2).clamp_min(1)
    return (torch.ceil(n.double() / step) * step).long()


def _search_level(cur: Tensor, q_ijk: Tensor, level: int, p_code: Tensor, P_sorted: Tensor, order: Tensor,
                  Q: Tensor, k: int, dist: Tensor, idx: Tensor) -> None:
    """k nearest candidates of the queries ``cur`` (cells ``q_ijk`` at ``level``) among the points of the
    27 cells around their cells; written into ``dist`` / ``idx``."""
    dev = Q.device
    ucode, counts = torch.unique_consecutive(p_code >> (3 * level), return_counts=True)
    ustart = torch.cumsum(counts, 0) - counts
    q_code = _morton(q_ijk)
    g_code, gid = torch.unique(q_code, return_inverse=True)  # query cells
    g_ijk = torch.zeros(g_code.shape[0], 3, dtype=torch.int64, device=dev).index_copy_(0, gid, q_ijk)
    # candidate ranges (in the sorted points) of the 27 neighbour cells of every query cell
    span = 1 << (_BITS - level)
    r_start = torch.zeros(g_code.shape[0], 27, dtype=torch.int64, device=dev)
    r_count = torch.zeros_like(r_start)
    for j, off in enumerate(_OFFSETS):
        nb = g_ijk + torch.tensor(off, device=dev)
        ok = ((nb >= 0) & (nb < span)).all(1)
        code = _morton(nb.clamp(0, span - 1))
        pos = torch.searchsorted(ucode, code).clamp_(max=ucode.shape[0] - 1)
        found = ok & (ucode[pos] == code)
        r_start[:, j] = torch.where(found, ustart[pos], 0)
        r_count[:, j] = torch.where(found, counts[pos], 0)
    g_pad = _bucket_size(r_count.sum(1).clamp_min(k))
    q_pad = g_pad[gid]
    for nc_pad in torch.unique(g_pad).tolist():
        qs = (q_pad == nc_pad).nonzero().squeeze(1)
        groups, local = torch.unique(gid[qs], return_inverse=True)
        # candidate positions of each cell: its 27 concatenated ranges, padded with -1
        B = groups.shape[0]
        cnt = r_count[groups].reshape(-1)
        st = r_start[groups].reshape(-1)
        total = int(cnt.sum())
        cand = torch.full((B, nc_pad), -1, dtype=torch.int64, device=dev)
        if total:
            rng = torch.repeat_interleave(torch.arange(B * 27, device=dev), cnt)
            within = torch.arange(total, device=dev) - (torch.cumsum(cnt, 0) - cnt)[rng]
            row_first = (torch.cumsum(cnt.view(B, 27), 1) - cnt.view(B, 27)).reshape(-1)
            cand[rng // 27, row_first[rng] + within] = st[rng] + within
        cx, cy, cz = (torch.take(P_sorted[a], cand.clamp_min(0)) for a in range(3))  # (B,nc_pad) each
        cx.masked_fill_(cand < 0, math.inf)  # padding: infinitely far
        rows_per_tile = max(1, _TILE_ELEMS // nc_pad)
        for s in range(0, qs.shape[0], rows_per_tile):
            loc = local[s:s + rows_per_tile]
            rows = cur[qs[s:s + rows_per_tile]]
            q = Q[rows]  # (R,3)
            # coordinate by coordinate: no (R,nc,3) temporary, no |a|^2 + |b|^2 - 2ab cancellation
            d2 = (cx[loc] - q[:, 0:1]).square_()
            d2.add_((cy[loc] - q[:, 1:2]).square_()).add_((cz[loc] - q[:, 2:3]).square_())
            if k == 1:
                val, arg = d2.min(1, keepdim=True)
            else:
                val, arg = torch.topk(d2, k, dim=1, largest=False, sorted=True)
            dist[rows] = val.sqrt_()
            idx[rows] = order[torch.gather(cand[loc], 1, arg).clamp_min(0)]
