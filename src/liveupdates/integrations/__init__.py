"""Native integrations with web frameworks, one module each, imported on their own:

- `liveupdates.integrations.fastapi`: authentication through the app's own dependencies
  (``Depends(get_current_user)``) and the routes in one call;
- `liveupdates.integrations.django`: an ASGI application that runs the hub's lifespan and
  routes to Django, authentication from Django's sessions, publishing after
  ``transaction.on_commit``, configuration from ``settings.LIVEUPDATES``;
- `liveupdates.integrations.litestar`: a plugin that registers the hub's lifespan and routes,
  with the app's guards applied to them;
- `liveupdates.integrations.lifespans`: `combine_lifespans`, for any framework.

Each imports its framework; importing ``liveupdates`` imports none of them.
"""

from __future__ import annotations
