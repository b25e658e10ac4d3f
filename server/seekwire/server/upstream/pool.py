"""Upstream endpoints, their keys, breakers and load; and the choice of where a call goes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from seekwire.server.upstream.breaker import BreakerSettings, CircuitBreaker, Permit, State
from seekwire.server.upstream.client import DeepSeekClient
from seekwire.server.upstream.errors import UpstreamError
from seekwire.server.upstream.timing import Timeouts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    base_url: str
    api_keys: tuple[str, ...] = field(repr=False)
    weight: float = 1.0
    models: Mapping[str, str] = field(default_factory=dict)  # requested model -> this endpoint's


def load_endpoints(path: str) -> list[EndpointConfig]:
    """`[[upstream]]` tables of a TOML file: name, base_url, api_keys, weight, models."""
    data = tomllib.loads(Path(path).read_text())
    configs = []
    names: set[str] = set()
    for i, item in enumerate(data.get("upstream", [])):
        keys = item.get("api_keys") or ([item["api_key"]] if item.get("api_key") else [])
        where = f"{path}: upstream #{i + 1}"
        if not item.get("base_url") or not keys:
            raise ValueError(f"{where} needs base_url and api_keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"{where}: api_keys must be a list of strings")
        models = item.get("models") or {}
        if not isinstance(models, dict):
            raise ValueError(f"{where}: models must be a table of model = model")
        name = str(item.get("name") or item["base_url"])
        if name in names:
            raise ValueError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        configs.append(
            EndpointConfig(
                name=name,
                base_url=str(item["base_url"]),
                api_keys=tuple(keys),
                weight=float(item.get("weight", 1.0)),
                models={str(k): str(v) for k, v in models.items()},
            )
        )
    if not configs:
        raise ValueError(f"{path}: no [[upstream]] tables")
    return configs


def fingerprint(secret: str) -> str:
    """How logs name a key: never the key, nor any of its characters."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclass(slots=True)
class UpstreamKey:
    secret: str = field(repr=False)
    fingerprint: str = ""
    ejected_until: float = 0.0


class Endpoint:
    def __init__(
        self, config: EndpointConfig, client: DeepSeekClient, breaker: CircuitBreaker
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.in_flight = 0
        self.last_used = 0.0
        self.config = config
        self.keys: list[UpstreamKey] = []
        self._next_key = 0
        self.update(config)

    @property
    def name(self) -> str:
        return self.config.name

    def update(self, config: EndpointConfig) -> None:
        """New keys, weight and models; keys that stay keep their ejection state."""
        previous = {k.secret: k for k in self.keys}
        self.config = config
        self.keys = [previous.get(s) or UpstreamKey(s, fingerprint(s)) for s in config.api_keys]

    def key(self, now: float) -> UpstreamKey | None:
        """The next key in rotation that is not ejected."""
        for _ in range(len(self.keys)):
            key = self.keys[self._next_key % len(self.keys)]
            self._next_key += 1
            if key.ejected_until <= now:
                return key
        return None

    def has_key(self, now: float) -> bool:
        return any(k.ejected_until <= now for k in self.keys)

    def body_for(self, body: bytes | None) -> bytes | None:
        """The request body with the model renamed for this endpoint, when it maps models."""
        if body is None or not self.config.models:
            return body
        data = orjson.loads(body)
        model = data.get("model")
        if model in self.config.models:
            data["model"] = self.config.models[model]
            return orjson.dumps(data)
        return body


@dataclass(frozen=True, slots=True)
class PoolSettings:
    timeouts: Timeouts = field(default_factory=Timeouts)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    pool_size: int = 1024
    balancer: str = "p2c"  # least in flight of two random (weighted) choices, or "weighted"
    key_eject_seconds: float = 300.0
    health_interval: float = 30.0
    gzip_requests: bool = False


class Pool:
    """The endpoints calls may go to. `pick` chooses one; outcomes feed breakers and keys."""

    def __init__(
        self, configs: Iterable[EndpointConfig], settings: PoolSettings = PoolSettings()
    ) -> None:
        self._settings = settings
        self._configs = list(configs)
        self.endpoints: dict[str, Endpoint] = {}
        self._health: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self.stats: dict[str, int] = {"keys_ejected": 0}

    def _new(self, config: EndpointConfig) -> Endpoint:
        s = self._settings
        client = DeepSeekClient(
            config.base_url,
            timeouts=s.timeouts,
            pool_size=s.pool_size,
            gzip_requests=s.gzip_requests,
        )
        return Endpoint(config, client, CircuitBreaker(s.breaker))

    async def start(self, *, warm: bool = True) -> None:
        for config in self._configs:
            endpoint = self._new(config)
            await endpoint.client.start()
            self.endpoints[config.name] = endpoint
        if warm:
            await asyncio.gather(*(self.check(e) for e in self.endpoints.values()))
        if self._settings.health_interval > 0:
            self._health = asyncio.create_task(self._keep_fresh())

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
        for task in self._retiring:
            task.cancel()
        for endpoint in self.endpoints.values():
            await endpoint.client.close()

    async def _retire(self, endpoint: Endpoint) -> None:
        """Closes a removed endpoint once its calls in flight have finished."""
        try:
            async with asyncio.timeout(self._settings.timeouts.total):
                while endpoint.in_flight:  # noqa: ASYNC110 (counts change on other tasks' calls)
                    await asyncio.sleep(1.0)
        except TimeoutError:
            pass
        finally:
            await endpoint.client.close()

    async def reload(self, configs: Iterable[EndpointConfig]) -> None:
        """Applies a new endpoint list without dropping calls in flight on the ones that stay."""
        wanted = {c.name: c for c in configs}
        for name, endpoint in list(self.endpoints.items()):
            if name not in wanted or wanted[name].base_url != endpoint.config.base_url:
                del self.endpoints[name]
                self._retiring.add(asyncio.create_task(self._retire(endpoint)))
        for name, config in wanted.items():
            if name in self.endpoints:
                self.endpoints[name].update(config)
            else:
                endpoint = self._new(config)
                await endpoint.client.start()
                self.endpoints[name] = endpoint
        log.info("upstream endpoints reloaded: %s", ", ".join(sorted(self.endpoints)))

    def pick(self, avoid: set[str]) -> tuple[Endpoint, UpstreamKey, Permit]:
        """An endpoint whose breaker lets a call through and that has a live key, preferring
        ones not in `avoid` (failover) but falling back on them; raises when there is none."""
        now = time.monotonic()
        ready = [e for e in self.endpoints.values() if e.has_key(now) and e.breaker.retry_in() == 0]
        for group in (
            [e for e in ready if e.name not in avoid],
            [e for e in ready if e.name in avoid],
        ):
            while group:
                endpoint = self._choose(group)
                group.remove(endpoint)
                permit = endpoint.breaker.allow()
                if permit is None:
                    continue
                key = endpoint.key(now)
                if key is None:
                    permit.abandon()
                    continue
                endpoint.last_used = now
                return endpoint, key, permit
        raise self._nothing_available(now)

    def _choose(self, endpoints: list[Endpoint]) -> Endpoint:
        if len(endpoints) == 1:
            return endpoints[0]
        weights = [max(e.config.weight, 0.0001) for e in endpoints]
        first = random.choices(endpoints, weights)[0]
        if self._settings.balancer == "weighted":
            return first
        others = [e for e in endpoints if e is not first]
        second = random.choices(others, [max(e.config.weight, 0.0001) for e in others])[0]
        # Power of two choices on load relative to weight.
        return min((first, second), key=lambda e: e.in_flight / max(e.config.weight, 0.0001))

    def _nothing_available(self, now: float) -> UpstreamError:
        with_keys = [e for e in self.endpoints.values() if e.has_key(now)]
        if not with_keys:
            return UpstreamError(
                "UPSTREAM_AUTH",
                "every upstream key was rejected by DeepSeek (401/402); check the keys",
            )
        wait = min(e.breaker.retry_in() for e in with_keys)
        return UpstreamError(
            "UPSTREAM_CIRCUIT_OPEN",
            f"every upstream endpoint is failing; the next probe is in {wait:.1f}s",
            retry_after=max(wait, 0.1),
        )

    def live_keys(self) -> int:
        now = time.monotonic()
        return sum(1 for e in self.endpoints.values() for k in e.keys if k.ejected_until <= now)

    def eject(self, endpoint: Endpoint, key: UpstreamKey, error: UpstreamError) -> None:
        key.ejected_until = time.monotonic() + self._settings.key_eject_seconds
        self.stats["keys_ejected"] += 1
        log.error(
            "upstream key %s of %s taken out of rotation for %.0fs: reason=%s status=%s",
            key.fingerprint,
            endpoint.name,
            self._settings.key_eject_seconds,
            error.reason,
            error.http_status,
        )

    async def check(self, endpoint: Endpoint) -> bool:
        """GET /models: opens a connection (warm-up) and tells the breaker whether it works."""
        permit = endpoint.breaker.allow()
        if permit is None:
            return False
        key = endpoint.key(time.monotonic())
        if key is None:
            permit.abandon()
            return False
        loop = asyncio.get_running_loop()
        endpoint.in_flight += 1
        try:
            await endpoint.client.call(
                "GET", "/models", None, loop.time() + 5.0, api_key=key.secret
            )
        except UpstreamError as error:
            if error.reason in ("UPSTREAM_AUTH", "UPSTREAM_INSUFFICIENT_BALANCE"):
                permit.record(failed=False)  # the endpoint answered; the key is the problem
                if self.live_keys() > 1:
                    self.eject(endpoint, key, error)
                return False
            permit.record(failed=True)
            log.warning("upstream %s failed its check: %s", endpoint.name, error.reason)
            return False
        finally:
            endpoint.in_flight -= 1
            permit.abandon()  # a no-op once recorded; covers cancellation and surprises
        permit.record(failed=False)
        return True

    async def _keep_fresh(self) -> None:
        """Probes idle endpoints and open breakers whose wait is over, so state stays current."""
        interval = self._settings.health_interval
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            due = [
                e
                for e in self.endpoints.values()
                if (e.breaker.state is State.OPEN and e.breaker.retry_in() == 0)
                or (e.breaker.state is State.CLOSED and now - e.last_used >= interval)
            ]
            for endpoint in due:
                endpoint.last_used = now
                try:
                    await self.check(endpoint)
                except Exception:  # one bad check must not end the checking
                    log.exception("checking upstream %s failed", endpoint.name)
