"""``hybridgym train``: train a controller in a fitted model (never on the real system), or
save a planner that plans through it."""

from __future__ import annotations

import argparse
import time

from hybridgym.scripts._common import (
    add_common,
    add_task,
    count,
    existing_file,
    output_file,
    setup_torch,
)
from hybridgym.scripts.loop import parse_overrides

ALGOS = ("sac", "td3", "ppo", "mpc", "differentiable")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a controller in a fitted model, or save a planner through it",
        description="sac, td3, ppo: an SB3 agent (the task's defaults) trained for --steps "
        "model steps in --envs learned environments of the model. differentiable: a policy "
        "trained by backpropagation through the model for --steps updates. mpc: no training; "
        "writes a JSON file naming the model and the planner settings.",
    )
    add_task(parser)
    parser.add_argument("--model", required=True, help="checkpoint from `hybridgym fit`")
    parser.add_argument("--algo", required=True, choices=ALGOS, help="what to train")
    parser.add_argument(
        "--steps",
        type=count(1),
        default=None,
        help="model steps (sac, td3, ppo) or policy updates (differentiable); not for mpc",
    )
    parser.add_argument(
        "--out", required=True, help="agent file to write (SB3 zip, .pt, or JSON for mpc)"
    )
    parser.add_argument(
        "--envs", type=count(1), default=16, help="parallel learned envs for SB3 (default 16)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder: start model episodes from its recorded states (default: the "
        "task's start states)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SB3 argument, PolicyTrainingConfig field or MPCAgent argument, VALUE as JSON "
        "(e.g. --set learning_starts=100, --set horizon=20); repeatable",
    )
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from stable_baselines3.common.vec_env import VecMonitor

    from hybridgym.agents import (
        DifferentiablePolicyAgent,
        LoopConfig,
        PolicyTrainingConfig,
        make_agent,
        save_agent,
        save_planner,
    )
    from hybridgym.envs import LearnedVecEnv, get_task, load_model
    from hybridgym.envs.learned import check_model
    from hybridgym.models import TrajectoryDataset

    device = setup_torch(args)
    task = get_task(args.task)
    if args.algo == "mpc" and args.steps is not None:
        raise ValueError("--steps does not apply to --algo mpc (the planner is not trained)")
    if args.algo != "mpc" and args.steps is None:
        raise ValueError(f"--algo {args.algo} needs --steps (the training budget)")
    overrides = parse_overrides(args.set)
    if any(isinstance(v, dict) for v in overrides.values()):
        raise ValueError("--set takes plain KEY=VALUE here (no dots)")
    out = output_file(args.out, "--out")
    model_path = existing_file(args.model, "model")
    model = load_model(model_path, device)
    check_model(model, task)
    data = None
    if args.data is not None:
        data = TrajectoryDataset.load(args.data)
        task.check_dataset(data, f"--data {args.data}")
    defaults = LoopConfig.for_task(task, agent=args.algo).agent_kwargs
    start = time.perf_counter()
    if args.algo == "mpc":
        if data is not None:
            raise ValueError("--data does not apply to --algo mpc (the planner starts nowhere)")
        planner = {**defaults, "seed": args.seed, **overrides}
        save_planner(out, model_path, task, **planner)
        settings = ", ".join(f"{k}={v}" for k, v in planner.items())
        print(f"planner (MPCAgent) for {task.name} through {model_path}: {settings}")
        print(f"agent: {out}")
        return 0
    if args.algo == "differentiable":
        values = {**defaults, "seed": args.seed, "progress": not args.quiet, **overrides}
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        agent = DifferentiablePolicyAgent(task, PolicyTrainingConfig(**values), device)
        starts = None if data is None else data.states()
        report = agent.train(model, args.steps, start_states=starts)
        agent.save(out)
        rewards = report.mean_reward[-10:]
        print(
            f"trained a differentiable policy for {report.iterations} updates in "
            f"{time.perf_counter() - start:.1f} s; mean model reward per step over the last "
            f"{len(rewards)} updates {np.mean(rewards):.4g}"
        )
    else:
        venv = LearnedVecEnv(
            model,
            task,
            args.envs,
            start="task" if data is None else "dataset",
            dataset=data,
            device=device,
        )
        monitored = VecMonitor(venv)
        agent = make_agent(
            args.algo, monitored, task=task, seed=args.seed, device=device, **overrides
        )
        agent.learn(args.steps, progress_bar=not args.quiet)
        save_agent(agent, out)
        episodes = [info["r"] for info in agent.ep_info_buffer]
        summary = (
            f"mean return of the last {len(episodes)} model episodes {np.mean(episodes):.2f}"
            if episodes
            else "no model episode finished"
        )
        print(
            f"trained {args.algo} for {agent.num_timesteps} model steps ({args.envs} learned "
            f"envs of {model_path}) in {time.perf_counter() - start:.1f} s; {summary}"
        )
    print(f"agent: {out}")
    return 0
