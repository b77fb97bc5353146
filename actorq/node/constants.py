"""Exit codes of the ``actorq`` command. Stable: scripts and supervisors rely on them."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the node ran and its tree gave up (e.g. worker restart intensity exceeded)
EXIT_CONFIG = 2  # bad command line or topology file
EXIT_JOURNAL = 3  # the journal cannot be opened, is locked by another node, or is unusable
EXIT_RETRY = 4  # start-up was cut short from outside (the task import check killed, or too slow): try again
EXIT_FULL = 5  # actorq enqueue: the queue is at its max_depth; nothing of the refused batch was added, try later
