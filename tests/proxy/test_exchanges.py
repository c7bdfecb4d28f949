"""Which candidate can serve which operation, and how: decided once per candidate, before it
is admitted. A candidate whose provider kind cannot answer the request is skipped (never
admitted, never called) for the next one; when none can, the answer is a 400 naming the
model and the operation. A request that cannot be translated for its provider is a 400
naming the field, also before anything is admitted."""

from __future__ import annotations

import httpx
import pytest

from gateway.proxy.adapters import Exchange, UnsupportedOperation, exchange_for
from governance.engine import Governor
from governance.models import UsageRecord, VirtualKey
from tests.factories import RateLimitFactory

CLAUDE = "claude/claude-3-5-haiku-latest"


def post(gateway, world, body, path):
    return httpx.post(f"{gateway.url}{path}", json=body, timeout=20,
                      headers={"authorization": f"Bearer {world['secret']}"})


@pytest.mark.parametrize(("operation", "kind", "expected"), [
    ("chat", "openai", Exchange("chat", anthropic_upstream=False, translated=False)),
    ("completions", "azure", Exchange("completions", anthropic_upstream=False,
                                      translated=False)),
    ("embeddings", "openai_compatible", Exchange("embeddings", anthropic_upstream=False,
                                                 translated=False)),
    ("messages", "openai", Exchange("chat", anthropic_upstream=False, translated=True,
                                    max_tokens_field="max_completion_tokens")),
    ("messages", "azure", Exchange("chat", anthropic_upstream=False, translated=True)),
    ("messages", "anthropic", Exchange("messages", anthropic_upstream=True, translated=False)),
    ("chat", "anthropic", Exchange("messages", anthropic_upstream=True, translated=True)),
])
def test_each_operation_reaches_each_kind_in_one_way(operation, kind, expected):
    assert exchange_for(operation, kind) == expected


@pytest.mark.parametrize(("operation", "kind"), [
    ("completions", "anthropic"), ("embeddings", "anthropic"), ("models", "openai"),
    ("chat", "gemini"),
])
def test_what_a_kind_cannot_serve_is_refused_by_name(operation, kind):
    with pytest.raises(UnsupportedOperation, match=f"{kind} does not serve {operation}"):
        exchange_for(operation, kind)


@pytest.fixture
def admissions(monkeypatch) -> list[str]:
    """The ids the governor admits (the server runs in this process)."""
    admitted: list[str] = []
    admit = Governor.admit

    async def spy(self, request_id, *args, **kwargs):
        admitted.append(request_id)
        return await admit(self, request_id, *args, **kwargs)

    monkeypatch.setattr(Governor, "admit", spy)
    return admitted


def limit_claude_to_one_request(gateway, world):
    config = world["key"].provider_configs.get(provider=world["claude"])
    RateLimitFactory(provider_config=config, request_max_limit=1, request_reset_duration="1h",
                     token_max_limit=None, token_reset_duration=None)
    gateway.reload()


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"model": CLAUDE, "input": "hello"}),
    ("/v1/completions", {"model": CLAUDE, "prompt": "hello"}),
])
def test_an_operation_no_candidate_serves_is_a_400_that_admits_nothing(gateway, world, path,
                                                                       body, admissions):
    limit_claude_to_one_request(gateway, world)
    for _ in range(2):  # twice: a reservation taken by the first would deny the second 429
        response = post(gateway, world, body, path)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert f"'{CLAUDE}' cannot answer {path}" in message
        assert "anthropic does not serve" in message
    assert admissions == []
    assert world["mock"].requests == []
    chat = post(gateway, world, {"model": CLAUDE, "max_tokens": 16,
                                 "messages": [{"role": "user", "content": "hi"}]},
                "/v1/chat/completions")
    assert chat.status_code == 200  # the one request the limit allows was not used up
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.provider, record.request_type) == ("claude", "chat_completion")


def test_a_candidate_that_cannot_serve_is_skipped_for_the_next(gateway, world):
    body = {"model": CLAUDE, "input": "hello", "fallbacks": ["mock/text-embedding-3-small"]}
    response = post(gateway, world, body, "/v1/embeddings")
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert (response.headers["x-gateway-provider"],
            response.headers["x-gateway-fallback-index"]) == ("mock", "1")
    assert [request.path for request in world["mock"].requests] == ["/v1/embeddings"]
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.provider, record.fallback_index, record.status_code) == ("mock", 1, 200)


def test_an_untranslatable_request_is_a_400_naming_the_field_before_admission(
        gateway, world, admissions):
    limit_claude_to_one_request(gateway, world)
    body = {"model": CLAUDE, "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        response = post(gateway, world, body, "/v1/chat/completions")
        assert response.status_code == 400
        assert "n: only one choice" in response.json()["error"]["message"]
    assert admissions == []
    assert world["mock"].requests == []
    del body["n"]
    assert post(gateway, world, body, "/v1/chat/completions").status_code == 200


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"model": "mock/text-embedding-3-small", "input": "hello"}),
    ("/v1/chat/completions", {"model": "mock/gpt-4o-mini", "n": 2,  # n: 2 is Claude's 400
                              "messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_failure_that_reached_its_provider_answers_when_every_fallback_is_skipped(
        gateway, world, path, body):
    body = {**body, "mock": {"status": 503}, "fallbacks": [CLAUDE]}
    response = post(gateway, world, body, path)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(world["mock"].requests) == 3  # 1 + max_retries, then the fallback is skipped
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.provider, record.status_code, record.fallback_index) == ("mock", 502, 0)


def test_a_fallback_is_admitted_under_a_concurrency_limit_of_one(gateway, world):
    """The failed candidate's admission is given back before the fallback's is taken."""
    VirtualKey.objects.filter(pk=world["key"].pk).update(max_concurrent_requests=1)
    gateway.reload()
    body = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "mock": {"status": 503}, "fallbacks": [CLAUDE]}
    response = post(gateway, world, body, "/v1/chat/completions")
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "claude"
