//! WebSocket framing (RFC 6455), the server's side: a parser for what a
//! client sends and the headers of what the server sends.
//!
//! The parser is fed whatever one read returned and holds no buffer of its
//! own: message bytes are unmasked straight into the caller's output, and
//! only a frame header cut by a read (at most 14 bytes) and a control frame's
//! payload (at most 125) wait for the next read. SignalR records carry their
//! own framing, so a message's bytes are handed on as they arrive; the
//! parser still checks the whole message: its size, its UTF-8 if it is text,
//! and the order of its fragments.

use bytes::{BufMut, BytesMut};

/// Frame opcodes.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close codes.
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// The largest control frame payload.
const MAX_CONTROL: usize = 125;
/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEAD: usize = 14;

/// What makes the parser give up on a client: the close code to send and
/// the reason, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

fn protocol_error(reason: &'static str) -> FrameError {
    FrameError {
        code: CLOSE_PROTOCOL_ERROR,
        reason,
    }
}

/// What a chunk of input held besides message bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The payload of the last Ping: the Pong to send.
    pub(crate) ping: Option<Vec<u8>>,
    /// The client sent a Close frame; nothing after it was looked at.
    pub(crate) close: bool,
    /// Whether the first message bytes handed on were of a binary message.
    pub(crate) binary: bool,
}

/// The frame being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Payload bytes still to come.
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes already read, modulo 4: where the mask stands.
    offset: u8,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A frame of a data message; `fin` if it is the message's last.
    Data { fin: bool },
    /// A control frame: Close, Ping or Pong.
    Control(u8),
}

/// The data message being read (its first frame has been seen).
#[derive(Debug, Default)]
struct Message {
    binary: bool,
    /// Payload bytes of its frames so far, the current one included.
    len: u64,
    utf8: Utf8,
}

/// A client's frames, parsed as they arrive.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// The largest message accepted.
    limit: u64,
    head: [u8; MAX_HEAD],
    head_len: u8,
    frame: Option<Frame>,
    message: Option<Message>,
    /// The payload of the control frame being read.
    control: Vec<u8>,
}

impl FrameReader {
    /// A parser that accepts messages up to `limit` bytes.
    pub(crate) fn new(limit: usize) -> FrameReader {
        FrameReader {
            limit: limit as u64,
            head: [0; MAX_HEAD],
            head_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
        }
    }

    /// Parses `input`, appending the message bytes it holds, unmasked, to
    /// `out`. Stops at a Close frame (`seen.close`) or at the first error.
    pub(crate) fn process(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        seen: &mut Seen,
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            let Some(frame) = self.frame.as_mut() else {
                input = self.read_head(input)?;
                if self.frame.is_some_and(|frame| frame.remaining == 0) {
                    self.end_frame(seen)?;
                    if seen.close {
                        return Ok(());
                    }
                }
                continue;
            };
            let take = frame.remaining.min(input.len() as u64) as usize;
            let (now, rest) = input.split_at(take);
            input = rest;
            let (mask, offset) = (frame.mask, usize::from(frame.offset));
            frame.remaining -= take as u64;
            frame.offset = ((offset + take) % 4) as u8;
            match frame.kind {
                Kind::Data { .. } => {
                    let start = out.len();
                    out.put_slice(now);
                    unmask(&mut out[start..], mask, offset);
                    let message = self.message.as_mut().expect("a data frame has its message");
                    // The first message of the read says how it came (a
                    // handshake error is answered the same way).
                    if start == 0 {
                        seen.binary = message.binary;
                    }
                    if !message.binary && !message.utf8.feed(&out[start..]) {
                        return Err(FrameError {
                            code: CLOSE_INVALID_DATA,
                            reason: "a text message is not valid UTF-8",
                        });
                    }
                }
                Kind::Control(_) => {
                    let start = self.control.len();
                    self.control.extend_from_slice(now);
                    unmask(&mut self.control[start..], mask, offset);
                }
            }
            if self.frame.is_some_and(|frame| frame.remaining == 0) {
                self.end_frame(seen)?;
                if seen.close {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Takes header bytes from `input`; starts the frame once the header
    /// is whole. Returns what is left of `input`.
    fn read_head<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], FrameError> {
        let mut input = input;
        loop {
            let have = usize::from(self.head_len);
            let need = head_len(&self.head[..have]);
            let take = (need - have).min(input.len());
            self.head[have..have + take].copy_from_slice(&input[..take]);
            self.head_len += take as u8;
            input = &input[take..];
            if have < 2 && usize::from(self.head_len) >= 2 {
                // The first two bytes say what is wrong with most bad
                // frames: refuse those before waiting for the rest.
                check_start(self.head[0], self.head[1])?;
                continue;
            }
            if usize::from(self.head_len) < need {
                return Ok(input);
            }
            self.start_frame(need)?;
            self.head_len = 0;
            return Ok(input);
        }
    }

    /// Starts the frame whose header, `need` bytes, is in `self.head`.
    fn start_frame(&mut self, need: usize) -> Result<(), FrameError> {
        let head = &self.head[..need];
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        let len = match head[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            127 => {
                let len = u64::from_be_bytes(head[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(protocol_error("a frame length has its top bit set"));
                }
                len
            }
            len => u64::from(len),
        };
        let mask: [u8; 4] = head[need - 4..need].try_into().expect("4 bytes");
        let too_big = FrameError {
            code: CLOSE_TOO_BIG,
            reason: "a WebSocket message is too long for this server",
        };
        let kind = match opcode {
            OP_CONTINUATION => {
                let Some(message) = self.message.as_mut() else {
                    return Err(protocol_error("a continuation frame without a message"));
                };
                message.len = message.len.saturating_add(len);
                if message.len > self.limit {
                    return Err(too_big);
                }
                Kind::Data { fin }
            }
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(protocol_error(
                        "a new message began before the last one ended",
                    ));
                }
                if len > self.limit {
                    return Err(too_big);
                }
                self.message = Some(Message {
                    binary: opcode == OP_BINARY,
                    len,
                    utf8: Utf8::default(),
                });
                Kind::Data { fin }
            }
            _ => {
                if len > MAX_CONTROL as u64 {
                    return Err(protocol_error("a control frame is longer than 125 bytes"));
                }
                self.control.clear();
                Kind::Control(opcode)
            }
        };
        self.frame = Some(Frame {
            remaining: len,
            mask,
            offset: 0,
            kind,
        });
        Ok(())
    }

    /// Ends the frame whose payload has all been read.
    fn end_frame(&mut self, seen: &mut Seen) -> Result<(), FrameError> {
        let Some(frame) = self.frame.take() else {
            return Ok(());
        };
        match frame.kind {
            Kind::Data { fin: false } => {}
            Kind::Data { fin: true } => {
                let message = self.message.take().expect("a data frame has its message");
                if !message.binary && !message.utf8.is_complete() {
                    return Err(FrameError {
                        code: CLOSE_INVALID_DATA,
                        reason: "a text message ends inside a UTF-8 character",
                    });
                }
            }
            Kind::Control(OP_PING) => seen.ping = Some(std::mem::take(&mut self.control)),
            Kind::Control(OP_CLOSE) => {
                check_close(&self.control)?;
                seen.close = true;
            }
            Kind::Control(_) => {}
        }
        Ok(())
    }
}

/// How long the header that begins with `head` is: 2 bytes until the
/// second byte says more.
fn head_len(head: &[u8]) -> usize {
    match head.get(1) {
        None => 2,
        Some(second) => {
            let extended = match second & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + extended + 4
        }
    }
}

/// Checks a frame's first two bytes.
fn check_start(first: u8, second: u8) -> Result<(), FrameError> {
    if first & 0x70 != 0 {
        return Err(protocol_error("a frame has reserved bits set"));
    }
    if second & 0x80 == 0 {
        return Err(protocol_error("a client frame is not masked"));
    }
    let opcode = first & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => Ok(()),
        OP_CLOSE | OP_PING | OP_PONG if first & 0x80 == 0 => {
            Err(protocol_error("a control frame is fragmented"))
        }
        OP_CLOSE | OP_PING | OP_PONG => Ok(()),
        _ => Err(protocol_error("a frame has an unknown opcode")),
    }
}

/// Checks a Close frame's payload: empty, or a code a peer may send and a
/// UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), FrameError> {
    match payload {
        [] => Ok(()),
        [_] => Err(protocol_error("a Close frame has a one-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(protocol_error(
                    "a Close frame has a code a peer may not send",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError {
                    code: CLOSE_INVALID_DATA,
                    reason: "a Close frame's reason is not valid UTF-8",
                });
            }
            Ok(())
        }
    }
}

/// XORs `data` with `mask`, the first byte of `data` being payload byte
/// `offset` (modulo 4) of its frame.
pub(crate) fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut turned = [0u8; 8];
    for (i, byte) in turned.iter_mut().enumerate() {
        *byte = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(turned);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, mask) in chunks.into_remainder().iter_mut().zip(turned) {
        *byte ^= mask;
    }
}

/// The header of an unmasked server frame: `([bytes], length)`.
pub(crate) fn header(opcode: u8, payload_len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    let len = match payload_len {
        0..=125 => {
            head[1] = payload_len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        }
    };
    (head, len)
}

/// UTF-8 validation of a message that arrives in pieces: a character cut
/// between two pieces waits (up to 3 bytes) for the next.
#[derive(Debug, Default)]
struct Utf8 {
    tail: [u8; 3],
    tail_len: u8,
}

impl Utf8 {
    /// Takes the next piece; `false` once the text cannot be UTF-8.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.tail_len > 0 {
            let have = usize::from(self.tail_len);
            let width = char_width(self.tail[0]);
            let take = (width - have).min(bytes.len());
            let mut char = [0u8; 4];
            char[..have].copy_from_slice(&self.tail[..have]);
            char[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if have + take < width {
                // Still cut: what is there must be a valid beginning.
                if !is_incomplete(&char[..have + take]) {
                    return false;
                }
                self.tail[..have + take].copy_from_slice(&char[..have + take]);
                self.tail_len = (have + take) as u8;
                return true;
            }
            if std::str::from_utf8(&char[..width]).is_err() {
                return false;
            }
            self.tail_len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let rest = &bytes[e.valid_up_to()..];
                self.tail[..rest.len()].copy_from_slice(rest);
                self.tail_len = rest.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the text so far ends on a whole character.
    fn is_complete(&self) -> bool {
        self.tail_len == 0
    }
}

/// Whether `bytes` are the valid beginning of one character, cut short.
fn is_incomplete(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(e) if e.valid_up_to() == 0 && e.error_len().is_none())
}

/// How many bytes the character that begins with `first` takes (`first`
/// is known to begin a valid character).
fn char_width(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            0..=125 => frame.push(0x80 | payload.len() as u8),
            126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        let start = frame.len();
        frame.extend_from_slice(payload);
        unmask(&mut frame[start..], mask, 0);
        frame
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Feeds `input` in pieces of `step` bytes.
    fn parse(limit: usize, input: &[u8], step: usize) -> (Vec<u8>, Seen, Result<(), FrameError>) {
        let mut reader = FrameReader::new(limit);
        let mut out = BytesMut::new();
        let mut seen = Seen::default();
        for piece in input.chunks(step) {
            if let Err(e) = reader.process(piece, &mut out, &mut seen) {
                return (out.to_vec(), seen, Err(e));
            }
            if seen.close {
                break;
            }
        }
        (out.to_vec(), seen, Ok(()))
    }

    #[test]
    fn messages_arrive_whole_however_the_reads_cut_them() {
        let text = "héllo, wörld: ☃ 🎉".repeat(20);
        let mut input = client_frame(false, OP_TEXT, &text.as_bytes()[..100], MASK);
        input.extend(client_frame(true, OP_PING, b"are you there", MASK));
        input.extend(client_frame(
            true,
            OP_CONTINUATION,
            &text.as_bytes()[100..],
            MASK,
        ));
        let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        input.extend(client_frame(true, OP_BINARY, &binary, MASK));
        for step in [1, 2, 3, 7, 13, 64, 4096, input.len()] {
            let (out, seen, result) = parse(1 << 20, &input, step);
            assert_eq!(result, Ok(()), "step {step}");
            let mut expected = text.as_bytes().to_vec();
            expected.extend_from_slice(&binary);
            assert!(out == expected, "step {step}: the bytes differ");
            assert_eq!(seen.ping.as_deref(), Some(&b"are you there"[..]));
            // The first message handed on says how the input came.
            assert!(!seen.binary, "step {step}");
        }
        let (_, seen, _) = parse(1 << 20, &client_frame(true, OP_BINARY, b"b", MASK), 1);
        assert!(seen.binary);
    }

    #[test]
    fn a_close_frame_ends_the_input() {
        let mut input = client_frame(true, OP_TEXT, b"before", MASK);
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        input.extend(client_frame(true, OP_CLOSE, &close, MASK));
        input.extend(client_frame(true, OP_TEXT, b"after", MASK));
        let (out, seen, result) = parse(1024, &input, input.len());
        assert_eq!(result, Ok(()));
        assert_eq!(out, b"before");
        assert!(seen.close);
    }

    fn error_of(input: &[u8]) -> FrameError {
        let (_, _, result) = parse(1024, input, input.len());
        result.expect_err("the input is refused")
    }

    #[test]
    fn bad_frames_are_refused_with_the_right_code() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert_eq!(error_of(&unmasked).code, CLOSE_PROTOCOL_ERROR);
        let mut reserved = client_frame(true, OP_TEXT, b"hi", MASK);
        reserved[0] |= 0x40;
        assert_eq!(error_of(&reserved).code, CLOSE_PROTOCOL_ERROR);
        assert_eq!(
            error_of(&client_frame(true, 0x3, b"", MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            error_of(&client_frame(false, OP_PING, b"", MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            error_of(&client_frame(true, OP_PING, &[0; 126], MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            error_of(&client_frame(true, OP_CONTINUATION, b"x", MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        let mut two_starts = client_frame(false, OP_TEXT, b"a", MASK);
        two_starts.extend(client_frame(true, OP_TEXT, b"b", MASK));
        assert_eq!(error_of(&two_starts).code, CLOSE_PROTOCOL_ERROR);
        assert_eq!(
            error_of(&client_frame(true, OP_CLOSE, &[3], MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        assert_eq!(
            error_of(&client_frame(true, OP_CLOSE, &1005u16.to_be_bytes(), MASK)).code,
            CLOSE_PROTOCOL_ERROR
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert_eq!(error_of(&huge).code, CLOSE_PROTOCOL_ERROR);
    }

    #[test]
    fn invalid_text_is_refused_even_when_cut() {
        // An overlong encoding, a lone continuation byte, a surrogate.
        for bad in [&[0xC0, 0x80][..], &[b'a', 0x80], &[0xED, 0xA0, 0x80]] {
            for step in [1, 2, 64] {
                let input = client_frame(true, OP_TEXT, bad, MASK);
                let (_, _, result) = parse(1024, &input, step);
                assert_eq!(
                    result.map_err(|e| e.code),
                    Err(CLOSE_INVALID_DATA),
                    "{bad:?}"
                );
            }
        }
        // A character cut by the end of the message.
        let input = client_frame(true, OP_TEXT, &"☃".as_bytes()[..2], MASK);
        assert_eq!(error_of(&input).code, CLOSE_INVALID_DATA);
        // Binary messages are not text.
        let (out, _, result) = parse(1024, &client_frame(true, OP_BINARY, &[0xC0], MASK), 1);
        assert_eq!((out, result), (vec![0xC0], Ok(())));
    }

    #[test]
    fn messages_over_the_limit_are_refused_before_their_payload() {
        let head = &client_frame(true, OP_BINARY, &[0; 2000], MASK)[..8];
        assert_eq!(error_of(head).code, CLOSE_TOO_BIG);
        let mut fragments = client_frame(false, OP_BINARY, &[0; 600], MASK);
        fragments.extend(client_frame(true, OP_CONTINUATION, &[0; 600], MASK));
        assert_eq!(error_of(&fragments).code, CLOSE_TOO_BIG);
    }

    #[test]
    fn server_headers_use_the_shortest_length() {
        assert_eq!(header(OP_TEXT, 5), ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        let (head, len) = header(OP_BINARY, 300);
        assert_eq!(&head[..len], &[0x82, 126, 1, 44]);
        let (head, len) = header(OP_BINARY, 70_000);
        assert_eq!(&head[..len], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    proptest::proptest! {
        /// Whatever a client sends, cut however, the parser answers with
        /// bytes, an event or an error, and never panics.
        #[test]
        fn arbitrary_input_never_panics(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            step in 1usize..64,
        ) {
            let _ = parse(512, &input, step);
        }

        /// Messages of any size and kind, fragmented anyhow and read in
        /// pieces of any size, come out whole and in order.
        #[test]
        fn fragmented_messages_come_out_whole(
            messages in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..600), 1usize..4),
                1..6,
            ),
            mask in proptest::array::uniform4(proptest::num::u8::ANY),
            step in 1usize..200,
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (binary, payload, pieces) in &messages {
                // Text messages are ASCII here, so any cut is valid.
                let payload: Vec<u8> = if *binary {
                    payload.clone()
                } else {
                    payload.iter().map(|b| b & 0x7F).collect()
                };
                expected.extend_from_slice(&payload);
                let size = payload.len().div_ceil(*pieces).max(1);
                let parts: Vec<&[u8]> = if payload.is_empty() {
                    vec![&[]]
                } else {
                    payload.chunks(size).collect()
                };
                for (i, part) in parts.iter().enumerate() {
                    let opcode = match (i, *binary) {
                        (0, true) => OP_BINARY,
                        (0, false) => OP_TEXT,
                        _ => OP_CONTINUATION,
                    };
                    input.extend(client_frame(i + 1 == parts.len(), opcode, part, mask));
                }
            }
            let (out, seen, result) = parse(1 << 20, &input, step);
            proptest::prop_assert_eq!(result, Ok(()));
            proptest::prop_assert!(out == expected);
            proptest::prop_assert!(!seen.close);
        }
    }
}
