"""``monitor_report.md`` / ``.html``: the violations, every check, and plots of baseline vs
current (counts, confidence, image statistics, the embeddings' first two principal axes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import markdown  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bincount.files import write_text_atomic  # noqa: E402
from bincount.monitoring.drift import Check  # noqa: E402
from bincount.monitoring.stats import IMAGE_STATS, Profile  # noqa: E402

REPORT = "monitor_report"
PLOTS = "monitor_plots.png"


def plot(base: Profile, current: Profile, bins: list[int], path: Path) -> None:
    panels = 3 + len(IMAGE_STATS)
    columns = 3
    fig, axes = plt.subplots((panels + columns - 1) // columns, columns, figsize=(12, 10))
    axes = axes.ravel()
    width = 0.4
    for shift, profile, name in ((-width / 2, base, "baseline"), (width / 2, current, "current")):
        shares = [profile.counts.count(b) / max(1, len(profile)) for b in bins]
        axes[0].bar(np.arange(len(bins)) + shift, shares, width, label=name)
    axes[0].set_xticks(range(len(bins)), [str(b) for b in bins])
    axes[0].set_title("predicted count (share)")
    axes[0].legend()
    series = [("confidence", base.confidences, current.confidences)]
    series += [(k, base.images[k], current.images[k]) for k in IMAGE_STATS]
    for ax, (name, b, c) in zip(axes[1:], series, strict=False):
        edges = np.histogram_bin_edges(np.concatenate([b, c]), bins=20)
        ax.hist(b, edges, density=True, alpha=0.5, label="baseline")
        ax.hist(c, edges, density=True, alpha=0.5, label="current")
        ax.set_title(name)
    ax = axes[1 + len(series)]
    pooled = np.concatenate([base.embeddings, current.embeddings])
    centred = pooled - pooled.mean(0)
    axes2 = np.linalg.svd(centred, full_matrices=False)[2][:2].T
    n = len(base.embeddings)
    ax.scatter(*(centred[:n] @ axes2).T, s=6, alpha=0.5, label="baseline")
    ax.scatter(*(centred[n:] @ axes2).T, s=6, alpha=0.5, label="current")
    ax.set_title("embeddings (PCA)")
    for extra in axes[2 + len(series):]:
        extra.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: Path, checks: list[Check], base: Profile, current: Profile,
                 bins: list[int], header: dict[str, str]) -> Path:
    """Write the plots, ``monitor_report.md`` and ``monitor_report.html``; returns the .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(base, current, bins, out_dir / PLOTS)
    violations = [c for c in checks if c.violated]
    lines = ["# bincount drift report", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["", f"## Violations ({len(violations)})", ""]
    lines += [f"- **{c.name}**: {c.method}={c.value:.3g} > threshold {c.threshold:g}"
              + ("" if c.p_value is None else f" (p={c.p_value:.3g})") + f"; {c.detail}"
              if c.method != "MMD^2" else
              f"- **{c.name}**: p={c.p_value:.3g} < {c.threshold:g} (MMD^2={c.value:.3g}); "
              f"{c.detail}" for c in violations] or ["None: no threshold was crossed."]
    lines += ["", "## Checks", "", "| check | method | value | threshold | p | verdict |",
              "|---|---|---|---|---|---|"]
    for c in checks:
        p = "" if c.p_value is None else f"{c.p_value:.3g}"
        verdict = "**violation**" if c.violated else "ok"
        lines.append(f"| {c.name} | {c.method} | {c.value:.4g} | {c.threshold:g} | {p} | "
                     f"{verdict} |")
    lines += ["", f"![baseline vs current]({PLOTS})", ""]
    text = "\n".join(lines)
    md = out_dir / f"{REPORT}.md"
    write_text_atomic(md, text)
    body = markdown.markdown(text, extensions=["tables"])
    write_text_atomic(out_dir / f"{REPORT}.html", "<!doctype html><meta charset='utf-8'>"
                      "<title>bincount drift report</title>"
                      "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
                      "td,th{border:1px solid #ccc;padding:2px 6px}</style>" + body)
    return md
