"""The per-frame coverage plot of the preview: an inline SVG (no plotting library, nothing fetched).

Coverage is :func:`worldstereo.geometry.coverage.render_coverage` of the preview's hole mask; the
plot marks :data:`~worldstereo.geometry.coverage.LOW_COVERAGE_THRESHOLD` and the frames below it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from worldstereo.geometry.coverage import LOW_COVERAGE_THRESHOLD, first_low_coverage_frame

__all__ = ["coverage_svg", "coverage_summary"]

_W, _H, _L, _R, _T, _B = 560, 180, 44, 12, 14, 30  # size and margins in pixels


def coverage_svg(coverage: Sequence[float], threshold: float = LOW_COVERAGE_THRESHOLD) -> str:
    """An SVG line plot of ``coverage`` (frame index -> share of covered pixels, 0..1) with the
    ``threshold`` line; frames below it are red dots. Each frame is one ``<circle>`` with
    ``data-frame`` / ``data-coverage`` attributes (what the browser tests read)."""
    n = len(coverage)
    if n == 0:
        return '<svg class="ws-coverage" xmlns="http://www.w3.org/2000/svg" width="560" height="40"></svg>'
    pw, ph = _W - _L - _R, _H - _T - _B

    def x(i: int) -> float:
        return _L + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(c: float) -> float:
        return _T + ph * (1.0 - min(max(float(c), 0.0), 1.0))

    parts = [f'<svg class="ws-coverage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
             f'width="100%" style="max-width:{_W}px" role="img" aria-label="coverage per frame">',
             f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>']
    for level in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{_L - 6}" y="{y(level) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#555">{int(level * 100)}%</text>')
    yt = y(threshold)
    parts.append(f'<line x1="{_L}" y1="{yt:.1f}" x2="{_L + pw}" y2="{yt:.1f}" stroke="#d33" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{_L + pw - 4}" y="{yt - 4:.1f}" font-size="11" text-anchor="end" fill="#d33">'
                 f'{int(round(threshold * 100))}% warning</text>')
    line = " ".join(f"{x(i):.1f},{y(c):.1f}" for i, c in enumerate(coverage))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#2a6fdb" stroke-width="2"/>')
    for i, c in enumerate(coverage):
        color = "#d33" if c < threshold else "#2a6fdb"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(c):.1f}" r="3" fill="{color}" data-frame="{i}" '
                     f'data-coverage="{float(c):.4f}"><title>frame {i}: {100 * float(c):.1f}%</title></circle>')
    for i in sorted({0, n - 1, (n - 1) // 2}):
        parts.append(f'<text x="{x(i):.1f}" y="{_H - _B + 16}" font-size="11" text-anchor="middle" fill="#555">'
                     f'{i}</text>')
    parts.append(f'<text x="{_L + pw / 2}" y="{_H - 4}" font-size="11" text-anchor="middle" fill="#555">frame</text>')
    parts.append("</svg>")
    return "".join(parts)


def coverage_summary(coverage: Sequence[float], threshold: float = LOW_COVERAGE_THRESHOLD) -> str:
    """One line for the user: the lowest coverage, and a warning naming the first frame below
    ``threshold`` with the ways out (as :func:`~worldstereo.geometry.coverage.warn_low_coverage`)."""
    if not coverage:
        return ""
    low = min(coverage)
    first = first_low_coverage_frame(list(coverage), threshold)
    text = f"Coverage: lowest {100 * low:.0f}% (frame {list(coverage).index(low)}), mean {100 * sum(coverage) / len(coverage):.0f}%."
    if first is None:
        return html.escape(text)
    return html.escape(
        f"{text} Warning: coverage collapses from frame {first} ({100 * coverage[first]:.0f}% < "
        f"{100 * threshold:.0f}%): the point cloud leaves the view there and the model has little geometry to "
        "follow. Press 'Fit to scene', shorten the motion, or check the depth.")
