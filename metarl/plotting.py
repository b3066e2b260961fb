"""PNG figures readable without TensorBoard: adaptation curves and training curves."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from metarl.checkpoint import atomic_write
from metarl.loggers.progress import PROGRESS_FILE
from metarl.metrics import ENV_STEPS, RETURN_AFTER, RETURN_BEFORE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure() -> ModuleType:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path) -> None:
    """Write `fig` as a PNG at `path`, atomically, and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    new_figure().close(fig)
    atomic_write(path, buffer.getvalue())


def finish_axes(ax: Axes, xlabel: str, ylabel: str, title: str, legend_size: float | None = None) -> None:
    """Axis labels, title, legend and a light grid, as metarl's figures have them."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)


def plot_adaptation_curves(curves: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """Mean return (with its 95 % interval) against inner gradient steps, one line per curve."""
    plt = new_figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in curves.items():
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["mean"] for r in rows], marker="o", label=label)
        ax.fill_between(steps, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2)
    ax.set_xticks(steps)
    finish_axes(ax, "inner gradient steps", "mean return", title)
    save_figure(fig, path)


def read_progress(run_dir: Path) -> dict[str, list[float]]:
    """The columns of a run's progress.csv as floats."""
    with (run_dir / PROGRESS_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) if r[key] not in ("", None) else float("nan") for r in rows] for key in rows[0]}


def plot_training_curves(run_dirs: list[Path], path: Path) -> None:
    """Return before and after adaptation against iterations and env steps, all runs on one figure."""
    plt = new_figure()
    fig, (by_iteration, by_steps) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for run_dir in run_dirs:
        progress = read_progress(run_dir)
        env_steps, total = [], 0.0
        for steps in progress[ENV_STEPS]:
            total += steps
            env_steps.append(total)
        for key, style in ((RETURN_BEFORE, "--"), (RETURN_AFTER, "-")):
            label = f"{run_dir.name} {key.split('/')[1].replace('_', ' ')}"
            line = by_iteration.plot(progress["iteration"], progress[key], style, label=label)[0]
            by_steps.plot(env_steps, progress[key], style, color=line.get_color())
    by_iteration.set_xlabel("meta-iteration")
    by_steps.set_xlabel("environment steps")
    by_iteration.set_ylabel("mean episode return")
    by_iteration.legend(fontsize=7)
    for ax in (by_iteration, by_steps):
        ax.grid(alpha=0.3)
    save_figure(fig, path)
