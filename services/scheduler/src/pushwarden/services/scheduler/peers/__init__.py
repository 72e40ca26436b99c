"""The scheduler's side of the contracts it calls: consent, segmentation and delivery.

Every call has a deadline; a call that fails for a reason worth retrying raises
:class:`PeerUnavailable` and the work it was for is tried again later.
"""

from __future__ import annotations

import grpc


class PeerUnavailable(Exception):
    """A peer did not answer in time or refused for a reason worth retrying."""

    @classmethod
    def of(cls, peer: str, error: grpc.aio.AioRpcError) -> PeerUnavailable:
        """The exception for a failed call to ``peer``."""
        return cls(f"{peer} answered {error.code().name}: {error.details()}")
