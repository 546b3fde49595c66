"""Control endpoints for a test in another process: no auth, never recorded, never faulted.

    GET|POST|DELETE /_emulator/faults     list, add (one fault object or a list), clear
    GET|DELETE      /_emulator/requests   list what was received (credentials masked), forget it
    GET             /_emulator/webhooks   list the webhooks delivered
    GET             /_emulator/tasks      list the tasks and their phases

(`GET /_emulator/media/{id}.mp4`, the outputs the providers' URLs point at, is a provider route.)
"""

from __future__ import annotations

from aiohttp import web

from adapters.emulators.emulator import EMULATOR_KEY
from adapters.emulators.faults import Fault

ADMIN_PREFIX = "/_emulator"


def add_admin_routes(app: web.Application) -> None:
    """The control endpoints other processes use to set faults and read what happened."""
    faults = ADMIN_PREFIX + "/faults"
    app.router.add_get(faults, _list_faults, name="admin:faults")
    app.router.add_post(faults, _add_faults, name="admin:add-faults")
    app.router.add_delete(faults, _clear_faults, name="admin:clear-faults")
    app.router.add_get(ADMIN_PREFIX + "/requests", _list_requests, name="admin:requests")
    app.router.add_delete(ADMIN_PREFIX + "/requests", _clear_requests, name="admin:clear-requests")
    app.router.add_get(ADMIN_PREFIX + "/webhooks", _list_webhooks, name="admin:webhooks")
    app.router.add_get(ADMIN_PREFIX + "/tasks", _list_tasks, name="admin:tasks")
    app.router.add_get(ADMIN_PREFIX + "/stats", _stats, name="admin:stats")


async def _list_faults(request: web.Request) -> web.Response:
    return web.json_response([f.to_json() for f in request.app[EMULATOR_KEY].faults.pending])


async def _add_faults(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    try:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        faults = [Fault.from_json(item) for item in items]
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for fault in faults:
        emulator.faults.add(fault)
    return web.json_response([f.to_json() for f in faults], status=201)


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[EMULATOR_KEY].faults.clear()
    return web.Response(status=204)


async def _list_requests(request: web.Request) -> web.Response:
    return web.json_response([r.summary() for r in request.app[EMULATOR_KEY].requests])


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[EMULATOR_KEY].recorder.clear()
    return web.Response(status=204)


async def _list_webhooks(request: web.Request) -> web.Response:
    deliveries = request.app[EMULATOR_KEY].webhooks
    return web.json_response(
        [{"task_id": d.task_id, "url": d.url, "status": d.status, "error": d.error} for d in deliveries]
    )


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMULATOR_KEY].stats())


async def _list_tasks(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    return web.json_response(
        [
            {
                "id": t.id,
                "model": t.model,
                "phase": emulator.phase(t).value,
                "deleted": t.deleted,
                "charged": emulator.charged(t),  # in the provider's unit, as its books would say
                # Unix seconds: submitted, began rendering (later while throttled), ended (or null).
                "created_at": t.created_at,
                "begins_at": t.begins,
                "finished_at": t.finished_at(emulator.clock()),
            }
            for t in emulator.tasks.values()
        ]
    )
