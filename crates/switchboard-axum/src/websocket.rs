//! The WebSockets transport: a SignalR session over one upgraded socket.
//!
//! The framing is switchboard's own ([`crate::frames`]), so that an idle
//! socket holds no buffer: a read goes to a buffer on the stack and its
//! message bytes, unmasked, straight to the session; a write sends the frame
//! header and the session's bytes as they are (one vectored write), without
//! copying them. After a large message nothing stays allocated for it.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::frames::{self, FrameReader, Seen};
use switchboard_session::{
    self as session, ClientSink, ClientStream, Handoff, Payload, ReadError, Transport,
};

use crate::router::{Accepted, Shared};
use crate::upgrade::UpgradedIo;

/// The most one read takes (a buffer on the stack of the connection's task
/// while it runs, nothing while it waits).
const READ_CHUNK: usize = 8 * 1024;

/// The largest WebSocket message accepted, for a hub message limit of
/// `max_message_size`: room for a few records per message, as clients may
/// batch.
pub(crate) fn message_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(4).max(64 * 1024)
}

/// The session's view of one socket.
pub(crate) type SocketTransport<Io = UpgradedIo> = Transport<Reader<Io>, Writer<Io>>;

/// The session's two halves of one socket.
pub(crate) fn transport<Io>(io: Io, message_limit: usize) -> SocketTransport<Io>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send,
{
    let socket = Arc::new(Mutex::new(Socket {
        io,
        out: Out::default(),
        failed: false,
        close_code: frames::CLOSE_NORMAL,
        closing: false,
        frames: FrameReader::new(message_limit),
        ended: false,
    }));
    Transport {
        stream: Reader {
            socket: socket.clone(),
        },
        sink: Writer { socket },
    }
}

/// What both halves share: the connection, what is being written and
/// where reading stands. (On the heap: the halves, which the connection's
/// future holds, are a pointer each.)
struct Socket<Io> {
    io: Io,
    out: Out,
    /// A write failed: nothing more is written.
    failed: bool,
    /// The code of the Close frame the server ends with.
    close_code: u16,
    /// The Close frame is on its way: no control frame follows it.
    closing: bool,
    frames: FrameReader,
    /// The client closed, or broke the protocol: nothing more is read.
    ended: bool,
}

/// Frames on their way out. A frame once begun is written whole before
/// any other (a write cut short by a deadline is finished by the next one),
/// so the stream of frames stays well formed whoever writes next.
#[derive(Default)]
struct Out {
    current: Option<OutFrame>,
    /// A control frame (a Pong, the Close) to write after `current`.
    control: Option<OutFrame>,
}

/// One server frame: its header and its payload, as yet unwritten.
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    head_done: u8,
    payload: Bytes,
}

impl OutFrame {
    fn new(opcode: u8, payload: Bytes) -> OutFrame {
        let (head, head_len) = frames::header(opcode, payload.len());
        OutFrame {
            head,
            head_len: head_len as u8,
            head_done: 0,
            payload,
        }
    }

    fn is_done(&self) -> bool {
        self.head_done == self.head_len && self.payload.is_empty()
    }

    /// Marks `n` more bytes as written.
    fn advance(&mut self, mut n: usize) {
        let head_left = usize::from(self.head_len - self.head_done);
        let from_head = head_left.min(n);
        self.head_done += from_head as u8;
        n -= from_head;
        self.payload.advance(n);
    }
}

impl<Io: AsyncWrite + Unpin> Socket<Io> {
    /// Writes every frame under way, then flushes.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let result = ready!(self.poll_write_out(cx));
        if result.is_err() {
            self.failed = true;
        }
        Poll::Ready(result)
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out.current.is_none() && !self.closing {
                self.out.current = self.out.control.take();
            }
            let Some(frame) = self.out.current.as_mut() else {
                break;
            };
            while !frame.is_done() {
                let head = &frame.head[usize::from(frame.head_done)..usize::from(frame.head_len)];
                let slices = [IoSlice::new(head), IoSlice::new(&frame.payload)];
                let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                frame.advance(written);
            }
            self.out.current = None;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn has_output(&self) -> bool {
        self.out.current.is_some() || self.out.control.is_some()
    }
}

/// Serves one upgraded socket until its connection ends.
///
/// A connection that negotiated stateful reconnect is registered under its
/// token for as long as it lives, so that the client's next socket with
/// the token reaches it (see [`reattach`]); when it ends, a socket that
/// arrived too late is closed.
///
/// A plain function around the async part: the socket is split here, so
/// that the connection's future (which keeps its arguments for its whole
/// life) holds the two small halves.
pub(crate) fn run(
    shared: Arc<Shared>,
    io: UpgradedIo,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    let limit = message_limit(shared.options.max_message_size);
    serve(shared, transport(io, limit), accepted)
}

async fn serve(shared: Arc<Shared>, socket: SocketTransport, accepted: Accepted) {
    let token = accepted
        .guard
        .as_ref()
        .filter(|_| accepted.stateful)
        .map(|live| live.token().to_owned());
    let Some(token) = token else {
        session::run(shared.sessions.clone(), socket, accepted, None).await;
        return;
    };
    let handoff = Handoff::new();
    let registered = shared
        .resumable
        .insert(&token, accepted.user.clone(), handoff.clone());
    session::run(
        shared.sessions.clone(),
        socket,
        accepted,
        Some(handoff.clone()),
    )
    .await;
    if let Some(mut late) = handoff.close() {
        late.sink.finish().await;
    }
    drop(registered);
}

/// Hands a client's new socket to its stateful connection; closes the
/// socket if the connection ended meanwhile, and an older socket that
/// waited in its place.
pub(crate) fn reattach(
    handoff: Arc<Handoff<SocketTransport>>,
    io: UpgradedIo,
    message_limit: usize,
) -> impl Future<Output = ()> + Send {
    hand_over(handoff, transport(io, message_limit))
}

async fn hand_over(handoff: Arc<Handoff<SocketTransport>>, socket: SocketTransport) {
    let mut refused = match handoff.put(socket) {
        Ok(None) => return,
        Ok(Some(replaced)) => replaced,
        Err(gone) => {
            tracing::debug!("a reconnecting socket found its connection gone");
            gone
        }
    };
    refused.sink.finish().await;
}

/// The socket's reading half.
pub(crate) struct Reader<Io = UpgradedIo> {
    socket: Arc<Mutex<Socket<Io>>>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> Reader<Io> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, ReadError>>> {
        let mut guard = self.socket.lock();
        let socket = &mut *guard;
        if socket.ended {
            return Poll::Ready(None);
        }
        if socket.has_output() {
            // A Pong waiting for room (the writer may be idle): a failure
            // is the writer's to report.
            let _ = socket.poll_drive(cx);
        }
        loop {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut socket.io).poll_read(cx, &mut buf)) {
                socket.ended = true;
                return Poll::Ready(Some(Err(ReadError::lost(format!(
                    "the socket failed: {e}"
                )))));
            }
            let input = buf.filled();
            if input.is_empty() {
                socket.ended = true;
                return Poll::Ready(Some(Err(ReadError::lost(
                    "the client went away without the closing handshake",
                ))));
            }
            let mut out = BytesMut::new();
            let mut seen = Seen::default();
            if let Err(e) = socket.frames.process(input, &mut out, &mut seen) {
                socket.ended = true;
                socket.close_code = e.code;
                return Poll::Ready(Some(Err(ReadError::refused(e.reason))));
            }
            if let Some(ping) = seen.ping.filter(|_| !socket.closing) {
                socket.out.control = Some(OutFrame::new(frames::OP_PONG, Bytes::from(ping)));
                let _ = socket.poll_drive(cx);
            }
            // After a Close, what was read before it still counts; the next
            // call ends the stream.
            socket.ended = seen.close;
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Payload {
                    bytes: out.freeze(),
                    binary: seen.binary,
                })));
            }
            if seen.close {
                return Poll::Ready(None);
            }
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for Reader<Io> {
    async fn next(&mut self) -> Option<Result<Payload, ReadError>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The socket's writing half.
pub(crate) struct Writer<Io = UpgradedIo> {
    socket: Arc<Mutex<Socket<Io>>>,
}

/// How long a closed socket is read (and what comes dropped) waiting for
/// the client to close its side.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

impl<Io: AsyncRead + Unpin + Send> Writer<Io> {
    /// Reads and drops input until the end of the stream or an error.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut socket = self.socket.lock();
        loop {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match ready!(Pin::new(&mut socket.io).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {}
                _ => return Poll::Ready(()),
            }
        }
    }
}

impl<Io: AsyncWrite + Unpin + Send> Writer<Io> {
    /// Writes what is under way, then `frame` (if any), whole.
    async fn write(&mut self, mut frame: Option<OutFrame>) -> io::Result<()> {
        poll_fn(|cx| {
            let mut socket = self.socket.lock();
            loop {
                ready!(socket.poll_drive(cx))?;
                match frame.take() {
                    Some(frame) => socket.out.current = Some(frame),
                    None => return Poll::Ready(Ok(())),
                }
            }
        })
        .await
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> ClientSink for Writer<Io> {
    fn transport_name(&self) -> &'static str {
        "websockets"
    }

    async fn send(&mut self, frames: Bytes, binary: bool) -> Result<(), String> {
        // Text hub protocols write UTF-8 by construction.
        let opcode = if binary {
            frames::OP_BINARY
        } else {
            frames::OP_TEXT
        };
        self.write(Some(OutFrame::new(opcode, frames)))
            .await
            .map_err(|e| format!("the socket failed: {e}"))
    }

    async fn finish(&mut self) {
        let code = {
            let mut socket = self.socket.lock();
            socket.closing = true;
            socket.out.control = None;
            socket.close_code
        };
        let close = OutFrame::new(
            frames::OP_CLOSE,
            Bytes::copy_from_slice(&code.to_be_bytes()),
        );
        if self.write(Some(close)).await.is_err() {
            return;
        }
        let _ = poll_fn(|cx| Pin::new(&mut self.socket.lock().io).poll_shutdown(cx)).await;
        // What the client sent and nobody read would make the kernel answer
        // the close with a reset, which can destroy the Close frame before
        // the client reads it: read and drop it until the client closes
        // too, for a moment at most.
        let _ = tokio::time::timeout(LINGER, poll_fn(|cx| self.poll_discard(cx))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, R>(_: impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every idle WebSocket connection holds this future (it is most of
    /// switchboard's share of bench B9's memory per connection), so it must
    /// not grow unnoticed: box what is large and rare instead.
    #[test]
    fn the_connection_future_stays_within_its_budget() {
        let size = future_size(serve);
        assert!(
            size <= 3_584,
            "a WebSocket connection's future takes {size} bytes"
        );
    }
}
