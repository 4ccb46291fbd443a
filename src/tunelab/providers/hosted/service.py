"""What every hosted service shares: its jobs recorded in the registry.

`HostedProvider` is the base of the OpenAI, Together and Anthropic providers (and of plugins
for other hosted services): a job's record is created before the service hears of it, kept
current from the service's answers, stopped and resumed through it
(`tunelab.providers.hosted.jobs`). A service that trains nothing (Anthropic) refuses each
of these by name, through the operations its capabilities lack.
"""

from __future__ import annotations

from tunelab.providers.hosted import jobs as hosted_jobs
from tunelab.providers.provider import FINE_TUNING, Provider
from tunelab.registry import Job


class HostedProvider(Provider):
    """A provider whose jobs run on a remote service and are mirrored in the registry."""

    @classmethod
    def start_job(cls, store, spec, report, *, start: bool = True) -> Job:
        return hosted_jobs.create(store, spec, report)

    @classmethod
    def refresh_job(cls, store, job: Job, *, events: bool = True) -> Job:
        return hosted_jobs.refresh(store, job, events=events)

    @classmethod
    def stop_job(cls, store, job: Job, *, pause: bool) -> Job:
        return hosted_jobs.stop(store, job, pause=pause)

    @classmethod
    def restart_job(cls, store, job: Job, *, start: bool = True) -> Job:
        return hosted_jobs.resume(store, job)

    @classmethod
    def import_job(
        cls, store, job_id: str, *, base_url: str | None = None, key_variable: str | None = None
    ) -> Job:
        if not cls.supports(FINE_TUNING):
            raise cls.unsupported_here("fine-tuning")
        return hosted_jobs.import_job(
            store, cls.name, job_id, base_url=base_url, key_variable=key_variable
        )
