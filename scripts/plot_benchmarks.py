"""Learning curves of the shipped runs, with the published numbers, as PNGs for docs/benchmarks.md.

    python scripts/plot_benchmarks.py [--out docs/img] [--window 10]

Reads `progress.csv` of the shipped runs (`metarl list pretrained`) and of the drift run kept in
`tests/data/runs/navigation-2d-drift`, and draws the mean
return before and after adaptation of each training batch (faint: per iteration; solid: the mean over
`--window` iterations), the validation return after adaptation on the 20 held-out tasks, and the
published figures that docs/benchmarks.md compares against. Prints the files it wrote.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from metarl import pretrained
from metarl.metrics import ENV_STEPS, RETURN_AFTER, RETURN_BEFORE, VALIDATION_RETURN
from metarl.plotting import new_figure, read_progress, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Reference:
    """Published returns after adaptation: (x, return) points, x in the figure's unit."""

    label: str
    points: list[tuple[float, float]]
    horizontal: bool = False  # also draw the return as a line across the figure


@dataclass(frozen=True)
class Figure:
    run: Path  # a run directory
    title: str
    by_env_steps: bool  # x axis: cumulative env steps instead of meta-iterations
    references: list[Reference]
    legend: str = "lower right"
    zoom: int | None = None  # also a panel of the first `zoom` iterations
    xlim: float | None = None  # right end of the whole run's panel (room for a reference beyond the run)


PYTORCH_MAML_RL = Reference(
    "pytorch-maml-rl, after adaptation (issue's measurement)", [(10, -25), (25, -17), (50, -16)]
)


def navigation_figure(run: Path, variant: str) -> Figure:
    """A navigation-2d MAML-TRPO run against pytorch-maml-rl, with a panel of its first 50 iterations."""
    title = f"navigation-2d, MAML-TRPO ({variant}, seed 0)"
    return Figure(run=run, title=title, by_env_steps=False, references=[PYTORCH_MAML_RL], zoom=50)


def published_figure(
    name: str, title: str, label: str, published: tuple[float, float], legend: str = "lower right"
) -> Figure:
    """A shipped MuJoCo run against env steps, with its paper's return after adaptation at its budget as a line."""
    return Figure(
        run=pretrained.root() / name,
        title=title,
        by_env_steps=True,
        references=[Reference(label, [published], True)],
        legend=legend,
        xlim=published[0] * 1.1,
    )


FIGURES = [
    navigation_figure(
        ROOT / "tests" / "data" / "runs" / "navigation-2d-drift", "MAML's inner loss, exact Fisher products"
    ),
    navigation_figure(
        pretrained.root() / "navigation-2d-maml-trpo", "default config: LVC inner loss, cg_subsample 0.5"
    ),
    published_figure(
        "halfcheetah-dir-promp",
        "halfcheetah-dir, ProMP protocol (seed 1; collapsed at iteration 496)",
        "ProMP paper, after adaptation: ≈ 310 at 1.2e8 env steps",
        (1.2e8, 310),
        legend="center right",
    ),
    published_figure(
        "halfcheetah-dir-maml-trpo",
        "halfcheetah-dir, ProMP protocol, MAML-TRPO with the LVC inner loss (seed 1)",
        "ProMP paper, MAML-TRPO after adaptation: ≈ 260 at 1.2e8",
        (1.2e8, 260),
    ),
    published_figure(
        "halfcheetah-vel-maml-trpo",
        "halfcheetah-vel, MAML paper protocol, MAML-TRPO (seed 1)",
        "MAML paper, after one step: ≈ −78 (drawn at 500 iterations)",
        (1.6e8, -78),
    ),
    published_figure(
        "ant-dir-promp",
        "ant-dir-promp (ProMP's AntRandDirec), ProMP (seed 1)",
        "ProMP paper, after adaptation: ≈ 175 at 5e7 env steps",
        (5e7, 175),
    ),
    published_figure(
        "ant-dir-maml-trpo",
        "ant-dir-promp (ProMP's AntRandDirec), MAML-TRPO (seed 1)",
        "ProMP paper, MAML-TRPO after adaptation: ≈ 162 at 5e7 env steps",
        (5e7, 162),
    ),
]


def running_mean(values: list[float], window: int) -> list[float]:
    """Centred mean over `window` values at each point (fewer at the ends), so that it does not lag."""
    before, after = window // 2, window - window // 2
    return [sum(chunk) / len(chunk) for chunk in (values[max(0, i - before) : i + after] for i in range(len(values)))]


def scientific(value: float) -> str:
    """1.2e8 rather than 1.2e+08."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def cumulative(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for value in values:
        total += value
        out.append(total)
    return out


def draw(
    ax: Axes, progress: dict[str, list[float]], x: list[float], figure: Figure, window: int, limit: int, right: float
) -> None:
    """The run's curves up to iteration `limit`, and the references up to `right` on the x axis."""
    n = sum(1 for i in progress["iteration"] if i <= limit)
    xs = x[:n]
    for key, label, color in (
        (RETURN_BEFORE, "before adaptation (training batch)", "C0"),
        (RETURN_AFTER, "after adaptation (training batch)", "C1"),
    ):
        values = progress[key][:n]
        ax.plot(xs, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(xs, running_mean(values, window), color=color, linewidth=1.8, label=f"{label}, mean of {window} it.")
    validation = [(xi, v) for xi, v in zip(xs, progress[VALIDATION_RETURN][:n]) if not math.isnan(v)]
    if validation:
        ax.plot(*zip(*validation), "o-", color="C2", markersize=3, linewidth=1, label="validation, after (held-out)")
    for ref in figure.references:
        points = [(px, py) for px, py in ref.points if px <= right]
        if ref.horizontal:
            for _, py in points:
                ax.axhline(py, color="C3", linestyle="--", linewidth=1)
        if points:
            ax.plot(*zip(*points), "*", color="C3", markersize=13, label=ref.label, linestyle="none")
    ax.set_xlim(0, right * 1.02)  # room for a reference marker at the right end
    ax.set_xlabel("environment steps" if figure.by_env_steps else "meta-iteration")
    ax.set_ylabel("mean episode return")
    ax.grid(alpha=0.3)


def plot(figure: Figure, run_dir: Path, out: Path, window: int) -> Path:
    progress = read_progress(run_dir)
    x = cumulative(progress[ENV_STEPS]) if figure.by_env_steps else progress["iteration"]
    last = int(progress["iteration"][-1])
    limits = [figure.zoom, last] if figure.zoom else [last]
    plt = new_figure()
    fig, axes = plt.subplots(1, len(limits), figsize=(6.5 * len(limits), 4.2), squeeze=False)
    for ax, limit in zip(axes[0], limits):
        right = figure.xlim if figure.xlim and limit == last else x[limit - 1]
        draw(ax, progress, x, figure, window, limit, right)
        ax.set_title(
            f"iterations 1–{limit}" if len(limits) > 1 else f"iterations 1–{limit} ({scientific(x[-1])} env steps)"
        )
    axes[0][0].legend(fontsize=8, loc=figure.legend)
    fig.suptitle(figure.title)
    path = out / f"{figure.run.name}.png"
    save_figure(fig, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the PNGs")
    parser.add_argument("--window", type=int, default=10, help="iterations in each running mean")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for figure in FIGURES:
        path = plot(figure, figure.run, args.out, args.window)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
