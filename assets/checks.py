"""Great Expectations outcomes as Dagster asset check results that an ops engineer can read."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from ml.quality import SuiteOutcome


def suite_check_result(outcome: SuiteOutcome, check_name: str, asset: str, partition: str,
                       **extra_metadata) -> AssetCheckResult:
    failures = outcome.failures
    return AssetCheckResult(
        asset_key=asset,
        check_name=check_name,
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR,
        description=None if outcome.success else "; ".join(f.describe() for f in failures[:5]),
        metadata={
            "suite": outcome.suite,
            "partition": partition,
            "expectations_evaluated": outcome.evaluated,
            "expectations_failed": len(failures),
            "failed_expectations": MetadataValue.json(
                [
                    {
                        "expectation": f.expectation,
                        "column": f.column,
                        "observed_value": f.observed_value,
                        "unexpected_count": f.unexpected_count,
                        "unexpected_percent": f.unexpected_percent,
                        "sample_unexpected": f.sample_unexpected,
                    }
                    for f in failures
                ]
            ),
            **extra_metadata,
        },
    )
