"""Region names checked against botocore's own partition data, so a typo is one clear line, not a traceback."""

from __future__ import annotations

import functools

#: The partition the twin emulates (its ARNs, endpoints and moto's backends are the commercial ones).
TWIN_PARTITION = "aws"


@functools.cache
def _partitions() -> dict[str, tuple[str, ...]]:
    import botocore.session

    session = botocore.session.get_session()
    return {
        p: tuple(session.get_available_regions("sqs", partition_name=p)) for p in session.get_available_partitions()
    }


def partition_of(region: str) -> str | None:
    return next((p for p, regions in _partitions().items() if region in regions), None)


def check_region(region: str, partition: str = TWIN_PARTITION) -> str:
    """``region`` if it is a real region of ``partition``; ValueError naming the valid ones otherwise."""
    found = partition_of(region)
    if found == partition:
        return region
    if found is None:
        known = ", ".join(_partitions().get(partition, ()))
        raise ValueError(f"{region!r} is not an AWS region; regions of the {partition} partition: {known}")
    raise ValueError(f"{region} is in the {found} partition; the twin emulates the {partition} partition only")


def check_region_pair(primary: str, dr: str) -> tuple[str, str]:
    """A primary and a DR region: both real, and two different regions (a region cannot back itself up)."""
    check_region(primary)
    check_region(dr)
    if primary == dr:
        raise ValueError(f"the primary and DR regions must differ (both are {primary})")
    return primary, dr
