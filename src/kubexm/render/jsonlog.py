"""``--log-format json``: one JSON object per event, for log shippers and CI."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from kubexm.engine.events import Event


class JsonLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_dict(), default=str, sort_keys=True) + "\n")
        self.stream.flush()
