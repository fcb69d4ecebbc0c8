"""``hybridgym collect``: record episodes of a task's real system into a dataset folder."""

from __future__ import annotations

import argparse
import pathlib

from hybridgym.scripts._common import add_common, add_task, count, setup_torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "collect",
        help="record episodes of a task's real system into a dataset folder",
        description="Run the task's real system under random actions or a saved agent and "
        "write every episode to a TrajectoryDataset folder (one file per episode, each "
        "written atomically as soon as it ends).",
    )
    add_task(parser)
    parser.add_argument("--episodes", type=count(1), required=True, help="episodes to record")
    parser.add_argument(
        "--policy",
        default="random",
        help="random (default), or a saved agent: an SB3 zip or planner JSON from "
        "`hybridgym train`, or a DifferentiablePolicyAgent checkpoint",
    )
    parser.add_argument(
        "--steps-per-episode",
        type=count(1),
        default=None,
        metavar="K",
        help="end each episode after K steps (default: the task's episode length)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="an agent acts without its exploration noise (default: with it)",
    )
    parser.add_argument("--out", required=True, help="dataset folder to create (new or empty)")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from hybridgym.agents import load_controller
    from hybridgym.envs import get_task
    from hybridgym.models import TrajectoryDataset

    device = setup_torch(args)
    task = get_task(args.task)
    out = pathlib.Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; give a new folder")
    policy = None
    if args.policy != "random":
        policy = load_controller(args.policy, task, device=device)
    limit = {} if args.steps_per_episode is None else {"max_episode_steps": args.steps_per_episode}
    env = task.make_real_env(**limit)
    torch.manual_seed(args.seed)  # a stochastic SB3 policy samples from torch's generator
    dataset = None
    with Progress(console=Console(stderr=True), disable=args.quiet, transient=True) as progress:
        job = progress.add_task(f"collect {task.real_env_id}", total=args.episodes)
        for i in range(args.episodes):
            one = TrajectoryDataset.collect(
                env,
                task,
                policy,
                episodes=1,
                seed=args.seed + i,
                deterministic=args.deterministic,
            )
            if dataset is None:
                dataset = one
                dataset.save(out)  # dataset.json and the first episode
            else:
                dataset.append(one.episodes[0])  # one more episode file, atomically
            progress.advance(job)
    env.close()
    returns = np.array([float(np.sum(ep.rewards)) for ep in dataset.episodes])
    source = "random actions" if policy is None else f"agent {args.policy}"
    print(
        f"collected {len(dataset)} episodes, {dataset.num_steps} steps of {task.real_env_id} "
        f"({source}); return per episode {returns.mean():.2f} +- {returns.std():.2f}"
    )
    print(f"dataset: {out}")
    return 0
