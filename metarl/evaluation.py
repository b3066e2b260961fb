"""Reporting of an evaluation: the table, evaluation.csv / .json, the adaptation-curve plot, and
`evaluate_run`, the whole of `metarl evaluate` for a trainer at a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarl.algos.held_out import TEST_STREAM, AdaptationResult, held_out_rng
from metarl.checkpoint import write_csv, write_json

if TYPE_CHECKING:
    from metarl.trainer import Trainer


def format_table(rows: list[dict[str, float]]) -> str:
    """The summary as aligned text: one line per number of inner steps."""
    success = "success_rate" in rows[0]
    lines = [f"{'steps':>5}  {'mean return':>12}  95% interval" + ("      success rate" if success else "")]
    for r in rows:
        interval = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        rate = f"  {r['success_rate']:>16.3f}" if success else ""
        lines.append(f"{r['step']:>5}  {r['mean']:>12.2f}  {interval}{rate}")
    return "\n".join(lines)


def write_evaluation(run_dir: Path, result: AdaptationResult, meta: dict[str, Any]) -> list[Path]:
    """evaluation.csv, evaluation.json and adaptation_curve.png in the run directory (each atomically)."""
    from metarl.plotting import plot_adaptation_curves

    rows = result.summary()
    num_tasks = result.returns.shape[0]
    summary_keys = list(rows[0])
    header = [*summary_keys, *(f"task_{i}" for i in range(num_tasks))]
    table = [[*(row[k] for k in summary_keys), *column.tolist()] for row, column in zip(rows, result.returns.T)]
    csv_path, json_path, png_path = (
        run_dir / "evaluation.csv",
        run_dir / "evaluation.json",
        run_dir / "adaptation_curve.png",
    )
    write_csv(csv_path, header, table)
    document = {**meta, "summary": rows, "returns": result.returns.tolist(), "tasks": result.tasks}
    if result.success is not None:
        document["success"] = result.success.tolist()
    write_json(json_path, document)
    plot_adaptation_curves({"meta-learned": rows}, f"{meta.get('env', '')}: adaptation on held-out tasks", png_path)
    return [csv_path, json_path, png_path]


def evaluate_run(
    trainer: Trainer,
    out_dir: Path,
    checkpoint: str,
    num_tasks: int,
    steps: int,
    episodes: int | None = None,
    seed: int | None = None,
    baselines: list[str] | None = None,
    baseline_steps: int = 100_000,
    baseline_tasks: int = 3,
    video_tasks: int = 0,
) -> tuple[str, list[Path]]:
    """`metarl evaluate`: adapt on held-out test tasks and write the reports into `out_dir`.

    Returns the printed report and the paths written: evaluation.csv/.json, adaptation_curve.png,
    TensorBoard scalars, the PPO baselines' files when asked, and adaptation.gif with `video_tasks` > 0.
    """
    from torch.utils.tensorboard import SummaryWriter

    config = trainer.config
    seed = config.seed if seed is None else seed
    episodes = episodes or config.fast_batch_size
    tasks = trainer.family.sample_tasks(num_tasks, held_out_rng(seed, TEST_STREAM))
    result = trainer.evaluate(tasks, steps, episodes, seed)
    meta = {
        "env": config.env,
        "evaluated_on": {"env": trainer.family_name, "env_kwargs": trainer.family_kwargs},
        "checkpoint": checkpoint,
        "iteration": trainer.iteration,
        "seed": seed,
        "episodes": episodes,
        "inner_lr": config.inner_lr,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_evaluation(out_dir, result, meta)
    compared: dict[str, Any] = {}
    if baselines:
        from metarl.ppo_baselines import evaluate_baselines

        compared, written = evaluate_baselines(
            trainer, result, baselines, baseline_steps, baseline_tasks, episodes, seed, out_dir
        )
        paths += [p for p in written if p not in paths]
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        for row in result.summary():
            writer.add_scalar("evaluation/return_by_inner_steps", row["mean"], row["step"])
            if "success_rate" in row:
                writer.add_scalar("evaluation/success_rate_by_inner_steps", row["success_rate"], row["step"])
        for row in compared.get("pretrained", {}).get("summary", []):
            writer.add_scalar("evaluation/pretrained_return_by_inner_steps", row["mean"], row["step"])
        if video_tasks:
            from metarl.video import write_adaptation_video

            gif = out_dir / "adaptation.gif"
            horizon = config.horizon_for(trainer.family)
            paths.append(
                write_adaptation_video(trainer.policy, trainer.family, result, video_tasks, horizon, gif, seed, writer)
            )
    lines = [
        f"{config.env}, checkpoint {checkpoint} (iteration {trainer.iteration}), {len(tasks)} held-out tasks, "
        f"{episodes} episodes per task and step",
        format_table(result.summary()),
    ]
    if compared:
        from metarl.ppo_baselines import format_baselines

        lines.append(format_baselines(compared))
    return "\n".join(lines), paths
