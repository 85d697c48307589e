"""`rsdchat serve`: the RSD loop behind OpenAI's API, streamed, with each step's provenance.

- `requests`: a request body, checked, as settings and messages (the `rsd` extension);
- `replies`: OpenAI's response and chunk shapes, with `rsd` provenance fields;
- `answering`: admission, the policy in force (the one `in_force`), steps as they become final, draining;
- `app`: the ASGI app (auth, limits, errors, streaming, cancelling on disconnect);
- `metrics`: `/metrics` in Prometheus' text format;
- `web`: uvicorn, stopped by draining first.
"""
