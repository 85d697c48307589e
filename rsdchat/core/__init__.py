"""The algorithm, and nothing else: Algorithms 1–2 of the paper and the types they speak.

- `engine`: the RSD loop (Algorithm 1), one asynchronous pipeline per request;
- `decision`: the acceptance rule (Algorithm 2), a pure function;
- `weighting`: ω(r), every weighting function of the paper;
- `policy`: what one answer is written with (mode, reward, ω, budgets);
- `protocols` and `types`: what a backend and a reward source must provide;
- `trace` and `events`: what happened, step by step, and the running costs;
- `answers`: where a final answer ends; `errors`: the exceptions users see.

Nothing here imports a third-party package or another part of rsdchat
(tests/test_architecture.py holds it to that).
"""
