"""`rsdchat serve`: the RSD loop behind OpenAI's API, streamed, with each step's provenance.

- `requests`: a request body, checked, as settings and messages (the `rsd` extension);
- `replies`: OpenAI's response and chunk shapes, with `rsd` provenance fields;
- `app`: the ASGI app (admission, streaming, cancelling on disconnect, draining);
- `metrics`: `/metrics` in Prometheus' text format;
- `web`: uvicorn, stopped by draining first.
"""
