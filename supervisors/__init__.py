# actorq.supervisors: OTP's supervisor behaviour for actors and OS processes.
#
# Layout:
#   spec.py        ChildSpec, SupFlags, Backoff (validated, frozen); StartFn, what it returns: a Child or IGNORE
#   exits.py       Exit: normal / shutdown / killed / error, for actors and processes
#   child.py       ActorChild, ProcessChild; actor_start, process_start (PDEATHSIG launcher, pidfd watch)
#   supervisor.py  the Supervisor actor, start_supervisor, supervisor_spec
#   ref.py         SupervisorRef (admin calls), ChildInfo, Counts
#   errors.py      SupervisorError and OTP's {error, _} outcomes as classes
#   intensity.py   RestartIntensity (sliding window on an injectable clock)
#   remote.py      actor_process, RemoteRef, RemoteError: an actor in its own OS process behind an ActorRef
# This module only re-exports the public names.
from actorq.supervisors.child import ActorChild as ActorChild
from actorq.supervisors.child import ProcessChild as ProcessChild
from actorq.supervisors.child import actor_start as actor_start
from actorq.supervisors.child import current_system as current_system
from actorq.supervisors.child import process_start as process_start
from actorq.supervisors.errors import AlreadyPresent as AlreadyPresent
from actorq.supervisors.errors import AlreadyStarted as AlreadyStarted
from actorq.supervisors.errors import InvalidChildSpec as InvalidChildSpec
from actorq.supervisors.errors import InvalidSupFlags as InvalidSupFlags
from actorq.supervisors.errors import NotFound as NotFound
from actorq.supervisors.errors import NotSupported as NotSupported
from actorq.supervisors.errors import Restarting as Restarting
from actorq.supervisors.errors import Running as Running
from actorq.supervisors.errors import StartFailed as StartFailed
from actorq.supervisors.errors import SupervisorError as SupervisorError
from actorq.supervisors.exits import KILLED as KILLED
from actorq.supervisors.exits import NORMAL as NORMAL
from actorq.supervisors.exits import SHUTDOWN as SHUTDOWN
from actorq.supervisors.exits import Exit as Exit
from actorq.supervisors.intensity import RestartIntensity as RestartIntensity
from actorq.supervisors.ref import ChildInfo as ChildInfo
from actorq.supervisors.ref import Counts as Counts
from actorq.supervisors.ref import SupervisorRef as SupervisorRef
from actorq.supervisors.remote import RemoteError as RemoteError
from actorq.supervisors.remote import RemoteRef as RemoteRef
from actorq.supervisors.remote import actor_process as actor_process
from actorq.supervisors.spec import IGNORE as IGNORE
from actorq.supervisors.spec import Backoff as Backoff
from actorq.supervisors.spec import Child as Child
from actorq.supervisors.spec import ChildSpec as ChildSpec
from actorq.supervisors.spec import Ignore as Ignore
from actorq.supervisors.spec import StartFn as StartFn
from actorq.supervisors.spec import SupFlags as SupFlags
from actorq.supervisors.supervisor import ChildExitHook as ChildExitHook
from actorq.supervisors.supervisor import start_supervisor as start_supervisor
from actorq.supervisors.supervisor import supervisor_spec as supervisor_spec

__all__ = [
    "ActorChild", "AlreadyPresent", "AlreadyStarted", "Backoff", "Child", "ChildExitHook",
    "ChildInfo", "ChildSpec", "Counts", "Exit", "IGNORE", "Ignore", "InvalidChildSpec", "InvalidSupFlags",
    "KILLED", "NORMAL", "NotFound", "NotSupported", "ProcessChild", "RemoteError", "RemoteRef",
    "RestartIntensity", "Restarting", "Running", "SHUTDOWN", "StartFailed", "StartFn", "SupFlags",
    "SupervisorError", "SupervisorRef", "actor_process", "actor_start", "current_system", "process_start",
    "start_supervisor", "supervisor_spec",
]
