"""The pricing vocabulary: scope kinds, request types and price fields.

A plain module (no Django) so that the request-time pricing code and the validators, models
and admin share one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Scope kinds, most specific first, with the scope ids each one requires (the others must
# be empty). The order is the override precedence.
SCOPE_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "virtual_key_provider_key": ("virtual_key", "provider", "provider_key"),
    "virtual_key_provider": ("virtual_key", "provider"),
    "virtual_key": ("virtual_key",),
    "provider_key": ("provider_key",),
    "provider": ("provider",),
    "global": (),
})

BASE_REQUEST_TYPES = (
    "text_completion",
    "chat_completion",
    "responses",
    "embedding",
    "rerank",
    "speech",
    "transcription",
    "image_generation",
    "image_edit",
    "image_variation",
    "video_generation",
)
STREAM_VARIANTS = {
    "text_completion_stream": "text_completion",
    "chat_completion_stream": "chat_completion",
    "responses_stream": "responses",
    "speech_stream": "speech",
    "transcription_stream": "transcription",
    "image_generation_stream": "image_generation",
    "image_edit_stream": "image_edit",
}

# Price fields an override may set, in dollars (per token, per request, per second...).
PATCH_FIELDS = frozenset(
    {
        "input_cost_per_token",
        "output_cost_per_token",
        "input_cost_per_token_priority",
        "output_cost_per_token_priority",
        "input_cost_per_token_flex",
        "output_cost_per_token_flex",
        "input_cost_per_token_batches",
        "output_cost_per_token_batches",
        "input_cost_per_token_above_128k_tokens",
        "output_cost_per_token_above_128k_tokens",
        "input_cost_per_token_above_200k_tokens",
        "output_cost_per_token_above_200k_tokens",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_1hr",
        "cache_read_input_token_cost_above_200k_tokens",
        "cache_creation_input_token_cost_above_200k_tokens",
        "cache_read_input_image_token_cost",
        "input_cost_per_request",
        "input_cost_per_audio_token",
        "output_cost_per_audio_token",
        "input_cost_per_audio_per_second",
        "input_cost_per_second",
        "output_cost_per_second",
        "input_cost_per_video_per_second",
        "output_cost_per_video_per_second",
        "input_cost_per_character",
        "output_cost_per_character",
        "input_cost_per_image",
        "output_cost_per_image",
        "input_cost_per_image_token",
        "output_cost_per_image_token",
        "input_cost_per_pixel",
        "output_cost_per_pixel",
        "search_context_cost_per_query",
        "code_interpreter_cost_per_session",
    }
)
