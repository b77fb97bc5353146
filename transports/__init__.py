# Moving envelopes between processes: the msgpack codec and ZeroMQ sockets on an asyncio loop.
from actorq.transports.codec import FrameError as FrameError
from actorq.transports.codec import decode as decode
from actorq.transports.codec import encode as encode
from actorq.transports.zmq import LoopSocket as LoopSocket
from actorq.transports.zmq import private_ipc_dir as private_ipc_dir

__all__ = ["FrameError", "LoopSocket", "decode", "encode", "private_ipc_dir"]
