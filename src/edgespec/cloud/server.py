"""The cloud server: accepts many edges, authenticates each, and runs their sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec

from edgespec.cloud.admission import HandshakeGate
from edgespec.cloud.batcher import VerifyBatcher
from edgespec.cloud.colocated import LocalDraft
from edgespec.cloud.session_actor import SessionActor
from edgespec.cloud.verifier import Verifier
from edgespec.config import CloudConfig
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.engine.worker import ModelWorker
from edgespec.metrics.prometheus import CloudMetrics
from edgespec.protocol.codec import ProtocolError
from edgespec.protocol.framing import HANDSHAKE_MAX_FRAME_BYTES
from edgespec.protocol.handshake import check_hello, new_challenge
from edgespec.protocol.messages import (
    Close,
    Decode,
    Error,
    ErrorCode,
    Hello,
    Message,
    Open,
    Ping,
    Pong,
    Verify,
    Welcome,
)
from edgespec.protocol.sessions import SessionBudget, SessionTable
from edgespec.transport.connection import ConnectionClosed, FramedConnection, SendBounds
from edgespec.transport.tls import server_context

log = logging.getLogger("edgespec.cloud")


class CloudServer:
    def __init__(
        self,
        verifier: Verifier,
        tokenizer: TokenizerInfo,
        config: CloudConfig,
        model_name: str,
        local_draft: LocalDraft | None = None,
    ) -> None:
        self.verifier = verifier
        self.local_draft = local_draft
        self.tokenizer = tokenizer
        self.config = config
        self.model_name = model_name
        engine = verifier.engine
        self.limits = msgspec.structs.replace(  # what the engine can hold bounds what the cloud promises
            config.limits,
            vocab_size=engine.vocab_size,
            max_context=min(config.limits.max_context, engine.max_context),
            max_sessions=min(config.limits.max_sessions, engine.max_sessions),
            colocated=local_draft is not None,
        )
        self.budget = SessionBudget(self.limits.max_sessions)
        guards = config.guards
        self.gate = HandshakeGate(guards.max_pending_handshakes, guards.max_pending_per_address)
        self.send_bounds = SendBounds(guards.max_unsent_bytes, guards.send_timeout_s)
        self.worker = ModelWorker("target")
        self.batcher = VerifyBatcher(verifier, self.worker, lambda: self.open_sessions, config.batch_window_s)
        self.connections: set[EdgeConnection] = set()
        self.metrics = CloudMetrics(lambda: self.open_sessions, lambda: len(self.connections))
        self.batcher.on_batch = self.metrics.batch_size.observe
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # one per accepted connection
        self._sockets: set[FramedConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def open_sessions(self) -> int:
        return self.budget.in_use

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port)."""
        cert, key = self.config.tls_cert, self.config.tls_key
        tls = server_context(cert, key) if cert and key else None
        self._server = await asyncio.start_server(
            self._accept,
            self.config.host,
            self.config.port,
            ssl=tls,
            ssl_handshake_timeout=self.config.handshake_timeout_s if tls else None,
        )
        self._sweeper = asyncio.create_task(self._expire_idle_sessions())
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            await connection.shut_down()
        for conn in list(self._sockets):  # still in their handshake
            await conn.close()
        if self._handlers:  # let them end on the closed sockets rather than be cancelled at exit
            await asyncio.wait(self._handlers, timeout=self.config.handshake_timeout_s)
        self.worker.shutdown(last=self.verifier.engine.close)
        if self.local_draft is not None:
            self.local_draft.shutdown()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = str((writer.get_extra_info("peername") or ("?",))[0])
        if not self.gate.try_enter(address):  # a flood: drop at once, before any work
            self.metrics.refused.inc()
            writer.transport.abort()
            return
        conn = FramedConnection(reader, writer, HANDSHAKE_MAX_FRAME_BYTES, self.send_bounds)
        self._track(conn)
        try:
            authenticated = await self._authenticate(conn)
        finally:
            self.gate.leave(address)
        if not authenticated:
            return
        conn.set_max_frame_bytes(self.limits.max_frame_bytes)
        connection = EdgeConnection(self, conn)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def _track(self, conn: FramedConnection) -> None:
        """Remember this connection and its handler until the handler ends (for close())."""
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._sockets.add(conn)

        def forget(_: object) -> None:
            self._handlers.discard(handler)
            self._sockets.discard(conn)

        handler.add_done_callback(forget)

    async def _authenticate(self, conn: FramedConnection) -> bool:
        """The handshake within its timeout; a refusal is answered with an Error and a close."""
        try:
            await asyncio.wait_for(self._handshake(conn), self.config.handshake_timeout_s)
            return True
        except TimeoutError:
            self.metrics.refused.inc()
            await _refuse(conn, ErrorCode.HANDSHAKE_TIMEOUT, "no valid Hello in time")
        except ProtocolError as exc:
            log.warning("refused %s: %s", conn.peer, exc.message)
            self.metrics.refused.inc()
            await _refuse(conn, exc.code, exc.message)
        except ConnectionClosed:
            await conn.close()
        return False

    async def _handshake(self, conn: FramedConnection) -> None:
        challenge = new_challenge()
        await conn.send(challenge)
        hello, _ = await conn.recv()
        if not isinstance(hello, Hello):
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"expected Hello, got {type(hello).__name__}")
        proof = check_hello(challenge, hello, self.config.auth_token, self.tokenizer.identity)
        await conn.send(
            Welcome(
                proof=proof,
                tokenizer=self.tokenizer.identity,
                limits=self.limits,
                model=self.model_name[-256:],
                eos_token_ids=list(self.tokenizer.eos_token_ids),
                chat_template=self.tokenizer.chat_template,
                numerics=self.verifier.numerics,
            )
        )

    async def _expire_idle_sessions(self) -> None:
        timeout = self.config.session_idle_timeout_s
        while True:
            await asyncio.sleep(min(timeout / 4, 30.0))
            deadline = time.monotonic() - timeout
            for connection in list(self.connections):
                connection.expire_idle(deadline)


class EdgeConnection:
    """One authenticated edge: routes its messages to session actors."""

    def __init__(self, server: CloudServer, conn: FramedConnection) -> None:
        self.server = server
        self.conn = conn
        self.table = SessionTable(server.limits, server.budget)
        self.actors: dict[int, SessionActor] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                message, _ = await self.conn.recv()
                await self._dispatch(message)
        except ProtocolError as exc:  # a broken frame: the stream cannot be trusted any more
            log.warning("closing %s: %s", self.conn.peer, exc.message)
            with contextlib.suppress(ConnectionClosed):
                await self.conn.send(Error(code=exc.code, message=exc.message))
        except ConnectionClosed:
            pass
        finally:
            await self.shut_down()

    async def shut_down(self) -> None:
        """Cancel every session of this edge (their KV is freed) and close the socket."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.conn.close()

    def expire_idle(self, deadline: float) -> None:
        for sid, actor in list(self.actors.items()):
            if actor.last_active < deadline:
                log.info("session %d on %s expired", sid, self.conn.peer)
                actor.deliver(Close(sid=sid))
                self.server.metrics.error(ErrorCode.SESSION_EXPIRED.value)
                self._spawn(self._report(Error(code=ErrorCode.SESSION_EXPIRED, message="idle too long", sid=sid)))

    async def _dispatch(self, message: Message) -> None:
        try:
            self._route(message)
        except ProtocolError as exc:
            self.server.metrics.error(exc.code.value)
            await self.conn.send(Error(code=exc.code, message=exc.message, sid=exc.sid))

    def _route(self, message: Message) -> None:
        if isinstance(message, Open):
            self._start_session(message)
        elif isinstance(message, Verify | Decode | Close):
            self._actor(message.sid).deliver(message)
        elif isinstance(message, Ping):  # answered at once: a ping flood must not pile up tasks
            self.conn.send_nowait(Pong(nonce=message.nonce))
        elif not isinstance(message, Error):  # an edge's Error needs no answer
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"{type(message).__name__} is not a request")

    def _start_session(self, message: Open) -> None:
        self.table.open(message)
        actor = SessionActor(
            message,
            self.table,
            self.server.batcher,
            self.conn,
            self.server.tokenizer.eos_token_ids,
            self.server.metrics,
            self.server.local_draft,
        )
        self.actors[message.sid] = actor
        task = self._spawn(actor.run())
        task.add_done_callback(lambda _: self._forget(actor))

    def _forget(self, actor: SessionActor) -> None:
        if self.actors.get(actor.sid) is actor:  # the sid may already belong to a newer session
            del self.actors[actor.sid]

    def _actor(self, sid: int) -> SessionActor:
        try:
            return self.actors[sid]
        except KeyError:
            raise ProtocolError(ErrorCode.UNKNOWN_SESSION, f"no open session {sid}", sid) from None

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _report(self, message: Message) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.conn.send(message)


async def _refuse(conn: FramedConnection, code: ErrorCode, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):  # no waiting on a peer that may not read
        conn.send_nowait(Error(code=code, message=text))
    await conn.close()
