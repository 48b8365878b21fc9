"""The service runtime: the delivery guarantees of DESIGN §4, written once (docs/runtime.md).

`core` handles records, commands and timers for one partition (task) against small
interfaces; `state`, `timers` and `archive` are those interfaces' implementations;
`service` runs the tasks on a real Kafka cluster.
"""

from tongban.runtime.core import HandlerFailed, Refused
from tongban.runtime.service import NotReady, ServiceRuntime

__all__ = ["HandlerFailed", "NotReady", "Refused", "ServiceRuntime"]
