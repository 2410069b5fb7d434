"""Web seeds (BEP 19, GetRight style) as sans-IO pieces: pure, no sockets, no clock.

``urls`` checks a web seed URL and maps it to each file of a torrent; ``ranges`` plans the HTTP
Range requests that fetch a run of pieces (padding bytes filled locally); ``responses`` says
what a response head means for such a request and parses ``Content-Range`` and
``Retry-After``; ``backoff`` is the retry policy of one URL (jittered back-off, slow-downs,
files missing, giving up), with the clock and the random source passed in. The HTTP client is
``shared/runtime/http.py``; the actor that drives these lives in the peer agent.
"""

from torviz.shared.webseed.backoff import (
    MAX_ERROR_TEXT,
    BackoffSettings,
    RetryPolicy,
    WebSeedState,
    WebSeedSummary,
)
from torviz.shared.webseed.ranges import RangeRequest, RunPlan, ZeroFill, plan_run
from torviz.shared.webseed.responses import (
    MAX_RETRY_AFTER,
    ContentRange,
    FileMissing,
    ReadBody,
    ResponseVerdict,
    RetryLater,
    SlowDown,
    UrlBroken,
    interpret_response,
    parse_content_range,
    parse_retry_after,
    request_headers,
)
from torviz.shared.webseed.urls import (
    MAX_URL_LENGTH,
    WebSeedUrl,
    encode_component,
    file_url,
    parse_web_seed_url,
)

__all__ = [
    "MAX_ERROR_TEXT",
    "MAX_RETRY_AFTER",
    "MAX_URL_LENGTH",
    "BackoffSettings",
    "ContentRange",
    "FileMissing",
    "RangeRequest",
    "ReadBody",
    "ResponseVerdict",
    "RetryLater",
    "RetryPolicy",
    "RunPlan",
    "SlowDown",
    "UrlBroken",
    "WebSeedState",
    "WebSeedSummary",
    "WebSeedUrl",
    "ZeroFill",
    "encode_component",
    "file_url",
    "interpret_response",
    "parse_content_range",
    "parse_retry_after",
    "parse_web_seed_url",
    "plan_run",
    "request_headers",
]
