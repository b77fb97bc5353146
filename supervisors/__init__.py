# Supervision: restart intensity and OS-process children watched through pidfds.
from actorq.supervisors.intensity import RestartIntensity as RestartIntensity
from actorq.supervisors.process import ChildExit as ChildExit
from actorq.supervisors.process import ProcessChild as ProcessChild
from actorq.supervisors.process import ProcessPool as ProcessPool
from actorq.supervisors.process import exit_reason as exit_reason

__all__ = ["ChildExit", "ProcessChild", "ProcessPool", "RestartIntensity", "exit_reason"]
