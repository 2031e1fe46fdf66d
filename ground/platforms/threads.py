"""The `threads` platform: the Threads API (graph.threads.net), Meta's container model again.

Written from Meta's documentation:
- Threads Posts: https://developers.facebook.com/docs/threads/posts/ (``POST /{threads-user-id}/threads``
  with ``media_type`` TEXT / IMAGE / CAROUSEL, ``text``, ``image_url`` ("must be on a public
  server"), ``alt_text``, ``is_carousel_item``, ``children``; then
  ``POST /{threads-user-id}/threads_publish?creation_id=``; text posts "limited to 500
  characters"; carousels up to 20 items);
- Overview / rate limiting: https://developers.facebook.com/docs/threads/overview/ ("250
  API-published posts within a 24-hour moving period. Carousels count as a single post";
  ``GET /{threads-user-id}/threads_publishing_limit?fields=quota_usage,config``);
- container status (``GET /{container-id}?fields=status,error_message``: EXPIRED, ERROR,
  FINISHED, IN_PROGRESS, PUBLISHED) and token refresh
  (``GET /refresh_access_token?grant_type=th_refresh_token``, 60-day long-lived tokens):
  Threads API reference https://developers.facebook.com/documentation/threads/reference;
- errors and rate limits: see ``meta_graph.py``.

Threads re-encodes photos. Retract: ``DELETE /{threads-media-id}`` (``threads_delete``).

Credentials: a long-lived Threads user token (``threads_basic``, ``threads_content_publish``):
``ground account add threads:NAME --token-file F`` (host ``https://graph.threads.net``), then
``ground account check threads:NAME``. Photos need ``ground serve --public-base-url``.
"""

from __future__ import annotations

from .meta_containers import ContainerApi, ContainerPlatform

API = ContainerApi(
    platform="threads",
    title="Threads",
    version="v1.0",
    create_edge="threads",
    publish_edge="threads_publish",
    status_field="status",
    status_detail_field="error_message",
    text_param="text",
    list_edge="threads",
    list_text_field="text",
    quota_edge="threads_publishing_limit",
    refresh_grant="th_refresh_token",
    me_fields="id,username",
    id_field="id",
    image_type="IMAGE",
    text_type="TEXT",
    max_items=20,
    can_delete=True,
)


class ThreadsPlatform(ContainerPlatform):
    api = API
