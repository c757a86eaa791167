"""An asyncio client for services: the sync `Client`'s routes with the same requests and errors
(`inferno.client.wire`), and the events stream as an async iterator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from inferno.client import events, wire
from inferno.client.sdk import API, DEFAULT_URL


class AsyncClient:
    """`async with AsyncClient(url, token) as api:`; `actor` as for `Client` (None: none sent,
    a service names itself)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        actor: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=wire.headers(token, actor),
            timeout=timeout,
            trust_env=False,  # loopback calls must never go through an http_proxy
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # experiments, pipelines, operations
    async def create_experiment(
        self,
        spec: Mapping[str, Any],
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        body = wire.control_body(spec, reason)
        return await self._request("POST", f"{API}/experiments", body, wait, idempotency_key)

    async def upload_dataset(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._request("POST", f"{API}/datasets", {"rows": rows})

    async def experiments(self) -> list[dict[str, Any]]:
        return wire.items(await self._request("GET", f"{API}/experiments"), "experiments")

    async def experiment(self, experiment_id: str) -> dict[str, Any]:
        return await self._request("GET", f"{API}/experiments/{experiment_id}")

    async def pipelines(
        self, experiment_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"experiment_id": experiment_id, "status": status}
        return wire.items(
            await self._request("GET", f"{API}/pipelines", params=params), "pipelines"
        )

    async def pipeline(self, pipeline_id: int) -> dict[str, Any]:
        return await self._request("GET", f"{API}/pipelines/{pipeline_id}")

    async def control(
        self,
        pipeline_id: int,
        action: str,
        changes: Mapping[str, Any] | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """POST /api/v1/pipelines/{id}/`action` (stop, resume, delete, clone with `changes`)."""
        path = f"{API}/pipelines/{pipeline_id}/{action}"
        body = wire.control_body(changes, reason)
        return await self._request("POST", path, body, wait, idempotency_key)

    async def operations(self) -> list[dict[str, Any]]:
        return wire.items(await self._request("GET", f"{API}/operations"), "operations")

    async def operation(self, ic_id: int) -> dict[str, Any]:
        return await self._request("GET", f"{API}/operations/{ic_id}")

    async def executors(self) -> list[dict[str, Any]]:
        return wire.items(await self._request("GET", f"{API}/executors"), "executors")

    async def executor(self, executor_id: str) -> dict[str, Any]:
        return await self._request("GET", f"{API}/executors/{executor_id}")

    async def cleanup_executors(self, older_than_s: float | None = None) -> dict[str, Any]:
        """Remove lapsed executors from the registry: {"removed", "kept", "older_than_s"}."""
        body = {} if older_than_s is None else {"older_than_s": older_than_s}
        return await self._request("POST", f"{API}/admin/cleanup", body)

    # the seed's dispatcher routes
    async def operation_status(self, ic_id: int) -> dict[str, Any]:
        return await self._request("GET", f"/dispatcher/operation-status/{ic_id}")

    async def all_operations(self) -> list[dict[str, Any]]:
        return wire.items(await self._request("GET", "/dispatcher/all-operations"), "operations")

    async def dispatch(
        self,
        route: str,
        body: Mapping[str, Any],
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """As `Client.dispatch`: POST /dispatcher/`route`, `reason` as a query parameter."""
        path, params = wire.dispatcher(route, reason)
        return await self._request("POST", path, dict(body), wait, idempotency_key, params)

    # the history
    async def events_page(
        self, params: Mapping[str, Any], after: str | None = None
    ) -> dict[str, Any]:
        query = {**params, "limit": params.get("limit", events.PAGE), "after": after}
        return await self._request("GET", f"{API}/events", params=query)

    async def events(
        self, after: str | None = None, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every entry matching `filters` from `after` on, oldest first, page by page."""
        params = events.filters(**filters)
        while True:
            page = await self.events_page(params, after)
            for entry in page["entries"]:
                yield entry
            after = page["cursor"]
            if not page["more"]:
                return

    async def follow_events(
        self, after: str | None = None, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """As `Client.follow_events`: entries live over SSE, reconnecting with `Last-Event-ID`
        after a dropped connection, so none is missed or repeated."""
        params = events.filters(**filters)
        last_id = after
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with self._http.stream(
                    "GET",
                    f"{API}/events/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(5.0, read=None),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        raise wire.InfernoError(response.status_code, wire.error_text(response))
                    async for message in events.sse_messages_async(response.aiter_lines()):
                        last_id = message.get("id", last_id)
                        if "data" in message:
                            yield json.loads(message["data"])
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass  # the api went away mid-stream: resume where it stopped
            except httpx.ConnectError as error:
                if last_id is None:
                    raise wire.unreachable(self.base_url, error) from error
            await asyncio.sleep(events.RECONNECT_S)

    async def _request(
        self, method: str, path: str, body: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        request = wire.request_args(self._http.timeout, method, path, body, *args, **kwargs)
        try:
            response = await self._http.request(**request)
        except httpx.TransportError as error:
            raise wire.unreachable(self.base_url, error) from error
        return wire.answer(response, self.base_url)
