# actorq: an actor runtime with OTP-style supervision and a durable job queue.
#
# Layout, bottom to top (a lower layer never imports a higher one; tests/test_layers.py checks it):
#   actorq.errors, .ids   exceptions, job ids
#   actorq._kernel        actors, refs, mailboxes, the actor system
#   actorq.transports     the msgpack envelope codec, ZeroMQ sockets on an asyncio loop
#   actorq.journal        the Journal protocol, its SQLite and PostgreSQL backends, their settings
#   actorq.supervisors    OTP supervisors; children as actors, OS processes, actors in their own process
#   actorq.jobs           tasks, the job runtime (writer, dispatcher, scheduler, leader, worker), its wire
#   actorq.node           topology.toml, the Node and its tree, the command line
# This module only re-exports the public names, each loaded on first use (PEP 562): a worker
# process that imports `actorq.jobs.worker` does not load the node, the journal or the client.
import logging as _logging
from typing import TYPE_CHECKING

from actorq._exports import lazy_exports as _lazy_exports

from actorq._version import __version__ as __version__

if TYPE_CHECKING:
    from actorq._kernel.actor import Actor as Actor
    from actorq._kernel.ref import ActorRef as ActorRef
    from actorq._kernel.system import ActorSystem as ActorSystem
    from actorq.errors import ActorQError as ActorQError
    from actorq.errors import ActorStopped as ActorStopped
    from actorq.errors import AskTimeout as AskTimeout
    from actorq.errors import JobFailed as JobFailed
    from actorq.errors import JournalError as JournalError
    from actorq.errors import JournalLocked as JournalLocked
    from actorq.errors import MailboxFull as MailboxFull
    from actorq.errors import NotCommitted as NotCommitted
    from actorq.errors import QueueFull as QueueFull
    from actorq.errors import ResultExpired as ResultExpired
    from actorq.errors import UnknownTask as UnknownTask
    from actorq.jobs.async_client import AsyncClient as AsyncClient
    from actorq.jobs.client import Client as Client
    from actorq.jobs.events import NodeEvent as NodeEvent
    from actorq.jobs.queue import QueueRef as QueueRef
    from actorq.jobs.retry import PermanentError as PermanentError
    from actorq.jobs.retry import Retry as Retry
    from actorq.jobs.retry import RetryPolicy as RetryPolicy
    from actorq.jobs.retry import TransientError as TransientError
    from actorq.jobs.schedule import Schedule as Schedule
    from actorq.jobs.task import Discard as Discard
    from actorq.jobs.task import Job as Job
    from actorq.jobs.task import JobContext as JobContext
    from actorq.jobs.task import Task as Task
    from actorq.jobs.task import TaskRegistry as TaskRegistry
    from actorq.jobs.task import current_job as current_job
    from actorq.journal.protocol import CircuitBreaker as CircuitBreaker
    from actorq.journal.protocol import JobState as JobState
    from actorq.node.config import Config as Config
    from actorq.node.config import ConfigError as ConfigError
    from actorq.node.config import load_config as load_config
    from actorq.node.node import Node as Node
    from actorq.node.node import NodeFailed as NodeFailed

_EXPORTS = {
    "Actor": "actorq._kernel.actor",
    "ActorRef": "actorq._kernel.ref",
    "ActorSystem": "actorq._kernel.system",
    "ActorQError": "actorq.errors",
    "ActorStopped": "actorq.errors",
    "AskTimeout": "actorq.errors",
    "JobFailed": "actorq.errors",
    "JournalError": "actorq.errors",
    "JournalLocked": "actorq.errors",
    "MailboxFull": "actorq.errors",
    "NotCommitted": "actorq.errors",
    "QueueFull": "actorq.errors",
    "ResultExpired": "actorq.errors",
    "UnknownTask": "actorq.errors",
    "AsyncClient": "actorq.jobs.async_client",
    "Client": "actorq.jobs.client",
    "NodeEvent": "actorq.jobs.events",
    "QueueRef": "actorq.jobs.queue",
    "PermanentError": "actorq.jobs.retry",
    "Retry": "actorq.jobs.retry",
    "RetryPolicy": "actorq.jobs.retry",
    "TransientError": "actorq.jobs.retry",
    "Schedule": "actorq.jobs.schedule",
    "Discard": "actorq.jobs.task",
    "Job": "actorq.jobs.task",
    "JobContext": "actorq.jobs.task",
    "Task": "actorq.jobs.task",
    "TaskRegistry": "actorq.jobs.task",
    "current_job": "actorq.jobs.task",
    "CircuitBreaker": "actorq.journal.protocol",
    "JobState": "actorq.journal.protocol",
    "Config": "actorq.node.config",
    "ConfigError": "actorq.node.config",
    "load_config": "actorq.node.config",
    "Node": "actorq.node.node",
    "NodeFailed": "actorq.node.node",
}


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

_logging.getLogger("actorq").addHandler(_logging.NullHandler())

__all__ = [
    "Actor",
    "ActorQError",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "AsyncClient",
    "CircuitBreaker",
    "Client",
    "Config",
    "ConfigError",
    "Discard",
    "Job",
    "JobContext",
    "JobFailed",
    "JobState",
    "JournalError",
    "JournalLocked",
    "MailboxFull",
    "Node",
    "NodeEvent",
    "NodeFailed",
    "NotCommitted",
    "PermanentError",
    "QueueFull",
    "QueueRef",
    "ResultExpired",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "Task",
    "TaskRegistry",
    "TransientError",
    "UnknownTask",
    "current_job",
]
