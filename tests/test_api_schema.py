"""Schemathesis against the OpenAPI spec: generated requests (valid and invalid) never get a 5xx, and the
JSON answers match their documented schemas. Runs over a real pipeline run (25 UCI Online Retail SKUs);
the chat and retrain routes are left out (each request would run the language model or the pipeline)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.config import APISettings
from forecasting.settings import get_settings

MAX_EXAMPLES = int(os.environ.get("STOCKPILOT_SCHEMA_EXAMPLES", "200"))


@pytest.fixture(autouse=True)
def stockpilot_home(pipeline_home):
    """Overrides the per-test home: every generated request reads the module's pipeline run."""
    get_settings.cache_clear()
    return pipeline_home


@pytest.fixture(scope="module")
def app(pipeline_home):
    return create_app(APISettings(api_key="schema-test-key", api_rate_limit=10_000, api_rate_burst=10_000))


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"^/(chat|retrain)")


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema, mode):
    """Valid requests get schema-conforming answers; valid and invalid ones never get a 5xx."""
    checks = [not_a_server_error]
    if mode == schemathesis.GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)

    @given(case=api_schema.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        case.call_and_validate(headers={"X-API-Key": "schema-test-key"}, checks=checks)

    check()
