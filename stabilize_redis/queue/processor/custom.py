"""Running a user's ``StabilizeHandler`` as one of the processor's handlers.

The engine's handlers ack their message in their own commit; a StabilizeHandler knows nothing
of deliveries, so ``adapt`` wraps it: a message already in the dedup record is only acked;
otherwise ``handle(message)`` runs and then one empty commit marks the message processed and
acks its entry (a DUPLICATE when the handler marked it in its own transaction: acked only).
"""

from __future__ import annotations

from typing import ClassVar

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler, HandlerContext
from stabilize_redis.handlers.stabilize_handler import StabilizeHandler
from stabilize_redis.queue.messages import Message


class StabilizeHandlerAdapter(Handler):
    """A Handler running ``inner`` (see the module docstring)."""

    message_type: ClassVar[type[Message]] = Message

    def __init__(self, ctx: HandlerContext, inner: StabilizeHandler) -> None:
        super().__init__(ctx)
        self.inner = inner

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        if not (message.message_id and
                self.backend.read(message.workflow_id, processed_id=message.message_id).processed):
            self.inner.handle(message)
        return self.backend.commit(Transition(message.workflow_id), message, delivery)


def adapt(ctx: HandlerContext, inner: StabilizeHandler) -> Handler:
    """A Handler for ``inner.message_type`` that runs ``inner``."""
    kind = type(f"{type(inner).__name__}Adapter", (StabilizeHandlerAdapter,), {"message_type": inner.message_type})
    handler: Handler = kind(ctx, inner)
    return handler


__all__ = ["StabilizeHandlerAdapter", "adapt"]
