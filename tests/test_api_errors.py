"""The backend's kinds of job failure and the HTTP status each answers with (modules/api/errors.py's table): the
statuses clients have always seen."""
from __future__ import annotations

import pytest

from modules.api.errors import status_of
from modules.jobs import (Interrupted, InternalError, JobError, JobQueue, NotFound, NotReady, OutOfMemory,
                          ScriptFailed, StorageFull)


@pytest.mark.parametrize("kind, status", [
    (JobError, 422), (NotFound, 404), (NotReady, 409), (Interrupted, 409), (OutOfMemory, 507), (StorageFull, 507),
    (ScriptFailed, 500), (InternalError, 500)])
def test_each_kind_of_failure_has_its_status(kind, status):
    assert status_of(kind) == status


def test_a_kind_an_extension_derives_answers_as_its_base():
    class UnknownLora(NotFound):
        pass

    assert status_of(UnknownLora) == 404


def test_the_worker_records_the_kind_of_failure():
    queue = JobQueue()

    def unknown(job):
        raise NotFound("unknown checkpoint 'x'")

    named = queue.submit("load-model", unknown)
    crashed = queue.submit("bug", lambda job: 1 / 0)
    assert crashed.done.wait(10) and named.done.is_set()
    assert (named.state, named.error_kind, named.error) == ("failed", NotFound, "unknown checkpoint 'x'")
    assert crashed.error_kind is InternalError and "ZeroDivisionError" in crashed.error
    queue.shutdown()
