"""Settings of the operator API's jobs (environment prefix ``WALLET_``): how fast each kind of
job may go, so that it never starves live traffic (``docs/operator-jobs.md``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from wallet_platform.config import ENV_PREFIX, CommonSettings


class OperatorJobSettings(CommonSettings):
    """The rates of the three kinds of job."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    operator_job_rebuild_rate: int = Field(
        default=5000,
        ge=1,
        le=1_000_000,
        description="Most facts per second a projection_rebuild job reads from ledger.events.",
    )
    operator_job_replay_rate: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most commands per second a replay job re-runs into the fresh database (it "
        "runs the writer inside the operator API process).",
    )
    operator_job_republish_rate: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Most facts per second a republish job sends to ledger.events.",
    )
