"""Schemathesis over the served OpenAPI description: no request, however odd, gets a 500.

Runs against a real bridge on loopback: valid data for every operation with a token of each role
(operator, supervisor, installer, admin), invalid data with an admin's; bounded (``FUZZ_POSITIVE`` and
``FUZZ_NEGATIVE`` cases per operation and run, about a minute) and deterministic, so a failure repeats.
The checks: ``not_a_server_error`` and the answer's conformance to the description (status code
documented, content type, body schema).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from harness import RunningBridge, make_config, postgres_database, running_bridge
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from alarm_centre.http.openapi import describe
from devices.events import DeviceEvent
from devices.vocabulary import EventType

#: Cases per operation: valid data with each role's token, invalid data with an admin's (who passes every
#: right, so the data reaches each handler's checks). Raise them locally for a deeper run.
POSITIVE_EXAMPLES = int(os.environ.get("FUZZ_POSITIVE", "4"))
NEGATIVE_EXAMPLES = int(os.environ.get("FUZZ_NEGATIVE", "15"))
ROLES = ("operator", "supervisor", "installer", "admin")
#: Rows seed() makes, offered as examples so some cases find something.
SEEDED = {"alert_id": "1", "device_id": "unit-1", "resident_id": "res-1", "priority": 1}
#: The live stream never ends by design; its auth and errors are covered in test_api.py.
SKIPPED = {"/api/v1/stream"}


@dataclass
class FuzzReport:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz(spec: dict[str, Any], base_url: str, tokens: dict[str, str]) -> FuzzReport:
    """Run every operation with each role's token; collect failures instead of stopping at the first."""
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_dict(spec)
    report = FuzzReport()
    session = requests.Session()

    def cases_for(operation: Any, role: str, mode: Any) -> Any:
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        examples = POSITIVE_EXAMPLES if mode is GenerationMode.POSITIVE else NEGATIVE_EXAMPLES

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
            report.cases += 1
            report.by_status[response.status_code] = report.by_status.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (AssertionError, BaseExceptionGroup) as exc:  # failures: keep going, list them all
                lines = str(exc).strip().splitlines()
                report.failures.append(
                    f"{operation.method.upper()} {operation.path} as {role} ({mode.value}): "
                    f"{response.status_code} {' | '.join(lines[:6])}"
                )

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        runs = [(role, GenerationMode.POSITIVE) for role in tokens] + [("admin", GenerationMode.NEGATIVE)]
        for role, mode in runs:
            try:
                cases_for(operation, role, mode)()
            except hypothesis.errors.Unsatisfiable:
                continue  # no invalid data exists for an operation without inputs
    return report


async def seed(bridge: RunningBridge) -> None:
    """Something for the ids to find: a resident, a unit, and an alert (id 1)."""
    resident = {"id": "res-1", "name": "Rose"}
    await bridge.call("POST", "/api/v1/residents", user="seed", role="admin", json=resident)
    await bridge.call(
        "POST",
        "/api/v1/devices",
        user="seed",
        role="admin",
        json={"id": "unit-1", "kind": "gsm_unit", "resident_id": "res-1"},
    )
    await bridge.bridge.intake.submit(
        DeviceEvent("unit-1", "fuzz-seed", EventType.PENDANT, datetime.now(UTC))
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def fuzzed_bridge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningBridge]:
    """A bridge on its embedded broker, on each store (PostgreSQL refuses text SQLite takes)."""
    if request.param == "sqlite":
        async with running_bridge(make_config(tmp_path)) as running:
            yield running
        return
    async with (
        postgres_database() as url,
        running_bridge(make_config(tmp_path, TELECARE_STORE__URL=url)) as running,
    ):
        yield running


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_no_request_gets_a_server_error(fuzzed_bridge: RunningBridge) -> None:
    await seed(fuzzed_bridge)
    tokens = {role: await fuzzed_bridge.token(f"fuzz-{role}", role) for role in ROLES}
    spec = describe(fuzzed_bridge.bridge.app)
    for operations in spec["paths"].values():
        for op in operations.values():
            for parameter in op.get("parameters", []):
                if parameter["name"] in SEEDED:
                    parameter["example"] = SEEDED[parameter["name"]]
    started = asyncio.get_running_loop().time()
    report = await asyncio.to_thread(fuzz, spec, fuzzed_bridge.url, tokens)
    took = asyncio.get_running_loop().time() - started
    answers = dict(sorted(report.by_status.items()))
    print(f"schemathesis: {report.cases} cases in {took:.0f} s; answers {answers}")
    assert not report.failures, "\n".join(report.failures[:40])
    assert 500 not in report.by_status
    assert report.cases >= len(spec["paths"]) * len(ROLES) * POSITIVE_EXAMPLES
