"""The `instagram` platform: the Instagram Graph API's content publishing (professional accounts).

Written from Meta's documentation:
- Content Publishing guide: https://developers.facebook.com/docs/instagram-platform/content-publishing/
  (single image: ``POST /{ig-user-id}/media`` with ``image_url``, ``caption``, ``alt_text``;
  carousel: children with ``is_carousel_item=true``, then ``media_type=CAROUSEL`` with
  ``children``; "We cURL media used in publishing attempts, so the media must be hosted on a
  publicly accessible server at the time of the attempt"; JPEG only);
- IG Container: https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/ig-container
  (``status_code``: EXPIRED, ERROR, FINISHED, IN_PROGRESS, PUBLISHED; ``status`` says why);
- IG User Media Publish: https://developers.facebook.com/documentation/instagram-platform/instagram-graph-api/reference/ig-user/media_publish.md
  (``POST /{ig-user-id}/media_publish?creation_id=``; 50 posts per 24-hour moving period);
- IG User Content Publishing Limit: https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/ig-user/content_publishing_limit/
  (``quota_usage``, ``config.quota_total``, ``config.quota_duration``);
- Refresh Access Token: https://developers.facebook.com/documentation/instagram-platform/reference/refresh_access_token
  (``GET /refresh_access_token?grant_type=ig_refresh_token``; token ≥ 24 h old; 60 days);
- errors and rate limits: see ``meta_graph.py``.

The API cannot delete published media, so a retract fails with a clear reason (delete in the app).
Instagram re-encodes every photo it receives: the bytes served to it are the astronaut's
exact bytes (sha256-checked blob store), what Instagram shows is its own rendition.

Credentials: a long-lived Instagram User access token (Instagram Login, permissions
``instagram_business_basic``, ``instagram_business_content_publish``):
``ground account add instagram:NAME --token-file F`` (host ``https://graph.instagram.com``;
for Facebook Login tokens pass ``--service-url https://graph.facebook.com``), then
``ground account check instagram:NAME``. Needs ``ground serve --public-base-url``.
"""

from __future__ import annotations

from .meta_containers import ContainerApi, ContainerPlatform

API = ContainerApi(
    platform="instagram",
    title="Instagram",
    version="v21.0",
    create_edge="media",
    publish_edge="media_publish",
    status_field="status_code",
    status_detail_field="status",
    text_param="caption",
    list_edge="media",
    list_text_field="caption",
    quota_edge="content_publishing_limit",
    refresh_grant="ig_refresh_token",
    me_fields="user_id,username",
    id_field="user_id",
    image_type=None,
    text_type=None,
    max_items=10,
    can_delete=False,
)


class InstagramPlatform(ContainerPlatform):
    api = API
