"""A grid whose sites live in this process: the baselines and the unit tests run the same flow without Flower's engine."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from flwr.app import Error, Message

from fedsynth.strategies.site import SITE_ERROR_CODE, SiteHandler, SiteRuntime, all_site_handlers, handle


class InProcessGrid:
    """A grid whose sites live in this process: messages go straight to the site handlers.

    Same messages, same handlers, same replies as over Flower — only the transport differs. ``sent`` and
    ``received`` keep every message, for tests that inspect what left a site.
    """

    def __init__(
        self,
        sites: Sequence[SiteRuntime],
        handlers: Mapping[str, SiteHandler] | None = None,
        *,
        keep_messages: bool = False,
    ) -> None:
        self.sites = {i + 1: s for i, s in enumerate(sites)}
        self.handlers = dict(handlers) if handlers is not None else all_site_handlers()
        self.keep_messages = keep_messages
        self.sent: list[Message] = []
        self.received: list[Message] = []
        _ensure_task_identity()

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for msg in messages:
            site = self.sites[msg.metadata.dst_node_id]
            handler = self.handlers.get(msg.metadata.message_type)
            if handler is None:
                reply = Message(Error(SITE_ERROR_CODE, f"no handler for {msg.metadata.message_type}"), reply_to=msg)
            else:
                reply = handle(handler, msg, site)
            if self.keep_messages:
                self.sent.append(msg)
                self.received.append(reply)
            out.append(reply)
        return out


def _ensure_task_identity() -> None:
    """Flower stamps instructions with the process's task identity, which only its engines set; an in-process
    grid sets a neutral one (run 0, the SuperLink's node id) when none is set yet."""
    from flwr.supercore.task_identity import TaskIdentity

    try:
        _ = TaskIdentity.run_id
    except RuntimeError:
        from flwr.common.constant import SUPERLINK_NODE_ID

        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 0
        TaskIdentity.node_id = SUPERLINK_NODE_ID
