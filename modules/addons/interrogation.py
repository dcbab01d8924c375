"""Interrogation for A1111's extension names (`modules.interrogate`, `modules.deepbooru`, `shared.interrogator`):
one image through the server's Interrogator, as a job of the queue — or at once when the caller is already a job
on the worker (a script's hook), which waiting for the queue would deadlock."""
from __future__ import annotations

from modules.addons import running


def interrogate(image, model: str, overrides: dict | None = None) -> str:
    """`overrides`: settings changed for this call only (DeepBooru's `tag_multi(force_disable_ranks=True)`)."""
    services = running.services()

    def run(job=None) -> str:
        with services.options.overridden(overrides or {}):
            settings = services.options.snapshot()
        return services.interrogator.interrogate(image, model, settings)

    if services.queue.on_worker():
        return run()
    job = services.queue.submit("interrogate", run)
    job.done.wait()
    if job.state != "done":
        raise RuntimeError(f"interrogate ({model}): {job.error or job.state}")
    return job.result
