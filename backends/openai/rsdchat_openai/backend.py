"""The openai backend: one generator per (role, served model), and `rsdchat doctor`'s checks."""

from __future__ import annotations

import dataclasses
import time

from rsdchat.plugin_api import ConfigError, Role, RoleCheck, RsdchatError, time_tiny_step
from rsdchat_openai.config import BackendConfig, OpenAIConfig
from rsdchat_openai.generator import HttpGenerator, HttpLogprobGenerator
from rsdchat_openai.http import Pool
from rsdchat_openai.states import HOW, PooledStates
from rsdchat_openai.wire import Headers, ServerInfo, choose_model, make_renderer, parse_models, probe


class OpenAIBackend:
    """Hands out one generator per (role, served model); checks the server when it does."""

    def __init__(self, config: OpenAIConfig) -> None:
        self._config = BackendConfig.of(config)
        self._params = {role: config.params(role) for role in Role}  # the <role>_params settings
        self._generators: dict[tuple[Role, str], HttpGenerator] = {}
        self._states: dict[str, PooledStates] = {}  # by served model

    def generator(self, role: Role, model: str) -> HttpGenerator:
        """Blocking (asks the servers what they serve): call it off the event loop."""
        if (role, model) not in self._generators:
            pool = Pool(self._config.endpoint(role))
            server, served = probe(pool, model)
            self._generators[role, model] = self._make(role, pool, server, served)
        return self._generators[role, model]

    def _make(self, role: Role, pool: Pool, server: ServerInfo, model: str) -> HttpGenerator:
        headers = Headers(make_renderer(server, pool, model, self._config.chat_template))
        kind = HttpLogprobGenerator if server.dialect.prompt_logprobs else HttpGenerator
        generator = kind(
            pool, server, model, headers, logprobs=role is Role.DRAFT and self._config.draft_logprobs
        )
        n_params = self._params[role]  # else the size read from the model's name; 0: unknown
        if n_params:
            generator.info = dataclasses.replace(generator.info, n_params=n_params)
        return generator

    def states(self, model: str) -> PooledStates:
        """The draft's hidden states, from its server as an embedding model (`draft_states_url`).

        Blocking (asks the server what it serves): call it off the event loop.
        """
        endpoint = self._config.draft_states
        if endpoint is None:
            raise ConfigError(f"setting draft_states_url: where to read the draft's hidden states ({HOW})")
        if model not in self._states:
            pool = Pool(endpoint)
            server, served = probe(pool, model)
            headers = Headers(make_renderer(server, pool, served, self._config.chat_template))
            self._states[model] = PooledStates(pool, served, headers)
        return self._states[model]

    async def aclose(self) -> None:
        for generator in self._generators.values():
            await generator.pool.aclose()
        self._generators.clear()
        for states in self._states.values():
            await states.aclose()
        self._states.clear()

    async def diagnose(self, role: Role, model: str) -> RoleCheck:
        """Reachable? Model served? One streamed step: streaming, capabilities, latency."""
        check = RoleCheck(role.value, "openai", model)
        try:
            pool = Pool(self._config.endpoint(role))
        except RsdchatError as exc:
            return check.replace(error=str(exc))
        pool.say = lambda _: None  # a replica that is down is this check's error, not a progress line
        check = check.replace(location=", ".join(r.url for r in pool.replicas))
        try:
            return await self._diagnose(check, role, pool, model)
        finally:
            await pool.aclose()

    async def _diagnose(self, check: RoleCheck, role: Role, pool: Pool, model: str) -> RoleCheck:
        latencies = []
        for replica in pool.replicas:
            started = time.perf_counter()
            try:
                body = await pool.get("/v1/models", url=replica.url, quick=True)
            except RsdchatError as exc:
                return check.replace(reachable=False, error=str(exc))
            latencies.append((time.perf_counter() - started) * 1000)
            try:
                server = parse_models(body, pool, replica.url)
                model = choose_model(server, model, pool, replica.url)
            except RsdchatError as exc:
                return check.replace(reachable=True, model_served=False, error=str(exc))
        check = check.replace(
            reachable=True,
            model_served=True,
            logprobs=server.dialect.prompt_logprobs,
            latency_ms=max(latencies),
            notes=(f"{server.dialect.name} server",),
        )
        generator = self._make(role, pool, server, model)
        try:
            streamed, first_step = await time_tiny_step(generator, max_tokens=4)
        except RsdchatError as exc:
            return check.replace(streaming=False, error=str(exc))
        return check.replace(streaming=streamed, notes=(*check.notes, f"4-token step {first_step:.0f} ms"))
