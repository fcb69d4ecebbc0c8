#!/usr/bin/env bash
# The GPU check (issue 8, "CUDA"), in one go and in under 5 minutes:
#   1. the tests marked `gpu` (pytest -m gpu; their cuda variants),
#   2. the learned-env throughput benchmark on the device for N = 1,024 ... 65,536,
#   3. one iteration of the model-based loop on Pendulum-v1 on the device, timed,
# then one JSON summary with the card's name: $OUT/gpu_check.json where $OUT is set, else
# benchmarks/results/gpu_check.json. Exit status 0 only if every part passed.
#
# Needs only the repository and a Python environment with its dependencies (.venv/bin/python
# when there is one, else `python`): the working tree is put first on the import path, so an
# installed hybridgym, stale or absent, does not matter. See docs/gpu.md.
#
# Settings (environment variables, all optional):
#   DEVICE=cuda            torch device; DEVICE=cpu is a smoke test of this script anywhere
#   SIZES=1024,4096,16384,65536   numbers of learned envs for the benchmark
#   BENCH_SECONDS=0.5 BENCH_REPEATS=3   the benchmark's timing windows (median of repeats)
#   LOOP_ARGS="--set eval_episodes=2"   extra `hybridgym loop` arguments
#   PYTEST_TIMEOUT=80 BENCH_TIMEOUT=100 LOOP_TIMEOUT=90   seconds per part (sum < 5 min)
#   GPU_CHECK_WORK=dir     where the logs, the benchmark's JSON and the loop's run go
#                          (default: gpu_check/ next to gpu_check.json)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -x .venv/bin/python ]]; then
  PY="$REPO/.venv/bin/python"
elif command -v python >/dev/null; then
  PY="$(command -v python)"
elif command -v python3 >/dev/null; then
  PY="$(command -v python3)"
else
  echo "gpu_check.sh: no .venv/bin/python and no python on PATH" >&2
  exit 2
fi
DEVICE="${DEVICE:-cuda}"
SIZES="${SIZES:-1024,4096,16384,65536}"
BENCH_SECONDS="${BENCH_SECONDS:-0.5}"
BENCH_REPEATS="${BENCH_REPEATS:-3}"
LOOP_ARGS="${LOOP_ARGS:---set eval_episodes=2}"
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-80}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-100}"
LOOP_TIMEOUT="${LOOP_TIMEOUT:-90}"

if [[ -n "${OUT:-}" ]]; then OUT_DIR="$OUT"; else OUT_DIR="$REPO/benchmarks/results"; fi
WORK="${GPU_CHECK_WORK:-$OUT_DIR/gpu_check}"
mkdir -p "$OUT_DIR" "$WORK"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(cd "$WORK" && pwd)"

# the working tree as the package hybridgym (the folders map to hybridgym.envs etc.)
SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/hybridgym"
for pkg in envs models agents scripts; do ln -s "$REPO/$pkg" "$SHIM/hybridgym/$pkg"; done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

now() { date +%s.%N; }

# run_part NAME TIMEOUT CMD...: run with a time limit, log to $WORK/NAME.log, record the
# exit status and the seconds in $WORK/NAME.status ("rc seconds")
run_part() {
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit} s): $*" >&2
  local start end rc=0
  start="$(now)"
  timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  end="$(now)"
  echo "$rc $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')" >"$WORK/$name.status"
  if [[ "$rc" -ne 0 ]]; then
    echo "   $name failed (exit $rc; 124 = timed out); last lines of $WORK/$name.log:" >&2
    tail -n 15 "$WORK/$name.log" >&2 || true
  fi
  tail -n 3 "$WORK/$name.log" >&2 || true
}

# nothing of an earlier run may stand in for a part that fails now
rm -rf "$WORK/loop_run" "$WORK/pytest_gpu.xml" "$WORK/throughput.json" "$WORK"/*.status "$WORK"/*.log

run_part pytest_gpu "$PYTEST_TIMEOUT" \
  "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$WORK/pytest_gpu.xml" tests

run_part throughput "$BENCH_TIMEOUT" \
  "$PY" benchmarks/learned_env_throughput.py --device "$DEVICE" --sizes "$SIZES" \
  --seconds "$BENCH_SECONDS" --repeats "$BENCH_REPEATS" --out "$WORK/throughput.json"

# shellcheck disable=SC2086  # LOOP_ARGS is a list of words
run_part loop "$LOOP_TIMEOUT" \
  "$PY" -m hybridgym.scripts.main loop pendulum --run-dir "$WORK/loop_run" --iterations 1 \
  --device "$DEVICE" --quiet $LOOP_ARGS

"$PY" - "$WORK" "$OUT_DIR/gpu_check.json" "$DEVICE" "$SIZES" "$LOOP_ARGS" <<'PYTHON'
"""Collect the three parts into one JSON summary (written atomically)."""
import csv
import json
import os
import pathlib
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import torch

work, out, device, sizes, loop_args = sys.argv[1:6]
work = pathlib.Path(work)


def status(name):
    rc, seconds = (work / f"{name}.status").read_text().split()
    rc = int(rc)
    state = "passed" if rc == 0 else ("timed out" if rc in (124, 137) else "failed")
    return {"status": state, "exit_code": rc, "seconds": float(seconds), "log": str(work / f"{name}.log")}


def pytest_part():
    part = status("pytest_gpu")
    junit = work / "pytest_gpu.xml"
    if junit.exists():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        part.update(counts, test_seconds=float(suite.get("time", 0.0)))
        reasons = sorted({s.get("message", "") for s in root.iter("skipped")})
        part["skip_reasons"] = reasons
        part["failed_tests"] = [
            f"{case.get('classname')}::{case.get('name')}"
            for case in root.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
        if part["exit_code"] == 5:  # pytest: nothing collected
            part["status"] = "failed"
        if device.startswith("cuda") and part["status"] == "passed" and not counts["passed"]:
            part["status"] = "failed"  # on a GPU check, every gpu test skipped checks nothing
            part["note"] = "every gpu test skipped: " + "; ".join(reasons)
    return part


def throughput_part():
    part = status("throughput")
    path = work / "throughput.json"
    if path.exists():
        result = json.loads(path.read_text())
        part["rows"] = result["rows"]
        part["dummy_vec_env"] = result["dummy_vec_env"]
        part["seconds_per_window"] = result["seconds_per_window"]
        part["repeats"] = result["repeats"]
    return part


def loop_part():
    part = status("loop")
    part["command"] = f"hybridgym loop pendulum --iterations 1 --device {device} {loop_args}"
    metrics = work / "loop_run" / "metrics.csv"
    if metrics.exists():
        with metrics.open(newline="") as f:
            rows = list(csv.DictReader(f))
        part["metrics"] = {k: number(v) for k, v in rows[-1].items()}
    config = work / "loop_run" / "config.json"
    if config.exists():
        part["loop_device"] = json.loads(config.read_text())["loop"]["device"]
    return part


def number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


def git_revision():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
    except OSError:
        head = dirty = None
    if head is None or head.returncode != 0:  # no git, or not a clone
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": head.stdout.strip(), "uncommitted_changes": bool(dirty.stdout.strip())}


cuda = torch.cuda.is_available()
target = torch.device(device)
summary = {
    "check": "benchmarks/gpu_check.sh",
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "device": device,
    "card": torch.cuda.get_device_name(target) if cuda and target.type == "cuda" else None,
    "cuda_available": cuda,
    "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "cpus": os.cpu_count(),
    "git": git_revision(),
    "sizes": [int(n) for n in sizes.split(",")],
    "parts": {"pytest_gpu": pytest_part(), "throughput": throughput_part(), "loop": loop_part()},
}
summary["total_seconds"] = round(sum(p["seconds"] for p in summary["parts"].values()), 2)
summary["passed"] = all(p["status"] == "passed" for p in summary["parts"].values())
out = pathlib.Path(out)
tmp = out.with_name(f".{out.name}.tmp")
tmp.write_text(json.dumps(summary, indent=2) + "\n")
os.replace(tmp, out)
print(f"wrote {out}: {'all parts passed' if summary['passed'] else 'SOME PART FAILED'} "
      f"in {summary['total_seconds']} s")
sys.exit(0 if summary["passed"] else 1)
PYTHON
