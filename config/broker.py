"""The embedded default's Celery broker: kombu's filesystem transport, with every write
made atomic.

Upstream, a message file is created empty and then written, and an exchange's table is
created and then filled, while readers look at the same paths: a worker that lists the
queue between the two reads an empty or half-written file and dies on a JSONDecodeError
(seen twice in ten minutes of `up`). Here a message is written under a staging name and
renamed into the queue, and an exchange's table is rewritten the same way under one
writer's lock, so a reader only ever sees whole files. Chosen over kombu's SQLAlchemy
transport because it keeps fanout (Celery's remote control) and adds no dependency; the
Redis broker of the production stack is untouched.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.json import dumps

STAGING = ".staging"  # inside the queue folder: never a queue's file name (no ".<queue>.msg")


def _write_atomically(path: Path, data: str) -> None:
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    with open(temporary, "w") as handle:
        handle.write(data)
    os.replace(temporary, path)


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as kombu's own filesystem.Channel
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staging = Path(self.data_folder_out) / STAGING
        try:
            staging.mkdir(exist_ok=True)
            temporary = staging / name
            temporary.write_text(dumps(payload))
            os.replace(temporary, Path(self.data_folder_out) / name)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._rewrite_table(exchange, lambda queues: queues if entry in queues else [entry, *queues])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._rewrite_table(exchange, lambda queues: [q for q in queues if q != entry])

    def _rewrite_table(self, exchange: str, change: Any) -> None:
        """Changes an exchange's table under the one-writer lock, replacing the file whole."""
        file = self._exchange_file(exchange)
        try:
            self.control_folder.mkdir(exist_ok=True)
            with open(file.parent / f".{file.name}.lock", "a") as guard:
                fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
                queues = self.get_table(exchange)
                changed = change(list(queues))
                if changed != queues:
                    _write_atomically(file, dumps(changed))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
