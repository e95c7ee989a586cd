"""An approval channel that records what it was asked to show, for tests."""

from __future__ import annotations

from collections.abc import Mapping

from domain.approvals import Approval
from domain.automations import Run
from domain.errors import Unavailable


class InMemoryApprovalChannel:
    """Records announcements and conclusions; set ``unavailable`` to make announcing fail."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.announced: list[tuple[Approval, Run]] = []
        self.concluded: list[tuple[Approval, Run]] = []
        # The refs each conclusion was given, by approval id.
        self.refs: dict[str, Mapping[str, str]] = {}
        self.unavailable = False
        # Approvals announced with ``recover`` (an earlier owner's claim was taken over).
        self.recovered: list[str] = []

    async def announce(
        self, approval: Approval, run: Run, *, recover: bool = False
    ) -> Mapping[str, str]:
        if self.unavailable:
            raise Unavailable(f"approval channel {self.name} is not answering")
        self.announced.append((approval, run))
        if recover:
            self.recovered.append(approval.id)
        return {"memory": str(len(self.announced))}

    async def conclude(
        self, approval: Approval, run: Run, refs: Mapping[str, str] | None = None
    ) -> None:
        if self.unavailable:
            raise Unavailable(f"approval channel {self.name} is not answering")
        self.concluded.append((approval, run))
        self.refs[approval.id] = dict(refs or {})
