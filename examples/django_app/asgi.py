"""The Django example's ASGI application, with liveupdates in it.

::

    export DJANGO_SETTINGS_MODULE=examples.django_app.settings
    python -m django migrate
    python -m django createsuperuser
    uvicorn examples.django_app.asgi:application --ws-max-size 131072 \
        --ws-per-message-deflate false
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from liveupdates.integrations.django import get_asgi_application

application = get_asgi_application()
