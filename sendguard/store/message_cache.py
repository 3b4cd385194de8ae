"""Recently stored messages and their content, kept in memory by id.

A message row never changes once committed (a reviewer's edit is a message of its own), so a
copy read or written once serves every later look-up: the dispatcher then reads neither the
message of a delivery it changes nor the content it sends. Both are bounded (least recently
used go first); a miss reads the store as before.
"""

from __future__ import annotations

from collections import OrderedDict

from sendguard.message import Message

MESSAGES = 4096
CONTENT_BYTES = 32 * 1024 * 1024


class MessageCache:
    """Messages and content by message id, least recently used dropped first."""

    def __init__(self, messages: int = MESSAGES, content_bytes: int = CONTENT_BYTES) -> None:
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self._contents: OrderedDict[str, bytes] = OrderedDict()
        self._max_messages = messages
        self._max_bytes = content_bytes
        self._bytes = 0

    def message(self, message_id: str) -> Message | None:
        """The message, if kept."""
        message = self._messages.get(message_id)
        if message is not None:
            self._messages.move_to_end(message_id)
        return message

    def has_message(self, message_id: str) -> bool:
        """Whether the message is kept (safe from any thread: a store job asks it)."""
        return message_id in self._messages

    def keep_message(self, message: Message) -> None:
        """Keep `message` (as committed)."""
        self._messages[message.id] = message
        self._messages.move_to_end(message.id)
        while len(self._messages) > self._max_messages:
            self._messages.popitem(last=False)

    def content(self, message_id: str) -> bytes | None:
        """The content of the message, if kept."""
        content = self._contents.get(message_id)
        if content is not None:
            self._contents.move_to_end(message_id)
        return content

    def keep_content(self, message_id: str, content: bytes) -> None:
        """Keep the content of a message (as committed); one larger than the bound is not."""
        if len(content) > self._max_bytes // 8 or message_id in self._contents:
            return
        self._contents[message_id] = content
        self._bytes += len(content)
        while self._bytes > self._max_bytes:
            _, dropped = self._contents.popitem(last=False)
            self._bytes -= len(dropped)

    def forget(self, message_id: str) -> None:
        """Forget one message and its content (it was not committed after all)."""
        self._messages.pop(message_id, None)
        content = self._contents.pop(message_id, None)
        if content is not None:
            self._bytes -= len(content)

    def clear(self) -> None:
        """Forget everything (messages were deleted)."""
        self._messages.clear()
        self._contents.clear()
        self._bytes = 0
