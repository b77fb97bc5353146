"""The web dashboard (docs/dashboard.md): one live page of the supervision tree, queues, jobs,
leases and schedules, with retry, cancel, pause and resume.

- `settings`: the ``[dashboard]`` section (no web stack needed to read it).
- `data`: what the page shows and does, as JSON-able maps (the journal's views, the node's tree).
- `app`: the Starlette application: the page, its assets, the JSON API, CSRF and token checks.
- `server`: uvicorn serving it, on a thread of the node or in the foreground (``actorq dashboard``).

Starlette and uvicorn are imported only when the dashboard is served (``pip install 'actorq[dashboard]'``).
"""
