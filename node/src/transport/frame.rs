//! Frames on a QUIC stream: a `u32` big-endian length, then the payload, whose first byte is [`WIRE_VERSION`].
//!
//! The length is checked against [`FRAME_BYTES_MAX`] before anything is allocated, and the payload buffer grows only
//! as bytes actually arrive, so a peer that announces a large frame and sends nothing costs us nothing. Once the first
//! byte of a frame has arrived the whole frame must arrive within the frame timeout (`TransportConfig::frame_timeout`):
//! a slowloris peer that sends half a frame and stalls gets its connection closed. Waiting *between* frames has no
//! deadline (an idle stream is normal; the QUIC keep-alive and idle timeout watch the peer).
//!
//! Every error from peer input is a [`TransportError`], never a panic, and closes the connection with a
//! [`CloseCode`] so the peer learns why.

use super::{CloseCode, TransportError};
use std::time::Duration;
use tokio::time::Instant;

/// The version byte every payload starts with. The wire format behind it belongs to `crdt::wire`.
pub const WIRE_VERSION: u8 = zhaowo_crdt::wire::WIRE_VERSION;
/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;
/// The largest payload: 4 MiB. The largest thing a frame carries is one case document's Automerge sync message, which
/// can be the whole compressed document (~660 bytes per case on average, a few hundred KiB for a case with a long
/// history); 4 MiB leaves an order of magnitude of headroom while one frame still arrives in well under a second on a
/// LAN. Larger transfers must be split into several frames by the sync layer.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
/// The payload buffer starts at most this large and grows with the bytes received, so an announced length is never
/// trusted for an allocation.
const FRAME_BUFFER_INITIAL_BYTES: usize = 64 * 1024;

/// Reads frames from one QUIC receive stream.
#[derive(Debug)]
pub struct FrameReader {
    stream: quinn::RecvStream,
    connection: quinn::Connection,
    frame_timeout: Duration,
}

/// Writes frames to one QUIC send stream.
#[derive(Debug)]
pub struct FrameWriter {
    stream: quinn::SendStream,
    connection: quinn::Connection,
    frame_timeout: Duration,
}

/// Closes the connection with `code` (the peer misbehaved) and returns `error`.
fn drop_peer(connection: &quinn::Connection, code: CloseCode, error: TransportError) -> TransportError {
    tracing::warn!(code = ?code, %error, "closing connection: peer broke the framing");
    connection.close(code.into(), error.to_string().as_bytes());
    error
}

impl FrameReader {
    pub(super) fn new(
        stream: quinn::RecvStream,
        connection: quinn::Connection,
        frame_timeout: Duration,
    ) -> FrameReader {
        FrameReader { stream, connection, frame_timeout }
    }

    /// The next frame's payload (its first byte is [`WIRE_VERSION`]), or `None` when the peer finished the stream
    /// cleanly between frames.
    pub async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        // No deadline before the first byte: an idle stream is not an attack.
        let first = match self.stream.read(&mut header).await.map_err(TransportError::from_read)? {
            None => return Ok(None),
            Some(count) => count,
        };
        let deadline = Instant::now() + self.frame_timeout;
        match tokio::time::timeout_at(deadline, self.read_rest(&mut header, first)).await {
            Ok(result) => result.map(Some),
            Err(_elapsed) => Err(drop_peer(
                &self.connection,
                CloseCode::FrameTimeout,
                TransportError::FrameTimeout { timeout_ms: self.frame_timeout.as_millis() as u64 },
            )),
        }
    }

    async fn read_rest(
        &mut self,
        header: &mut [u8; FRAME_HEADER_BYTES],
        mut filled: usize,
    ) -> Result<Vec<u8>, TransportError> {
        let truncated =
            |connection: &quinn::Connection| drop_peer(connection, CloseCode::Protocol, TransportError::FrameTruncated);
        while filled < FRAME_HEADER_BYTES {
            match self.stream.read(&mut header[filled..]).await.map_err(TransportError::from_read)? {
                None => return Err(truncated(&self.connection)),
                Some(count) => filled += count,
            }
        }
        let length = u32::from_be_bytes(*header) as usize;
        if length > FRAME_BYTES_MAX {
            return Err(drop_peer(
                &self.connection,
                CloseCode::FrameTooLarge,
                TransportError::FrameTooLarge { length, max: FRAME_BYTES_MAX },
            ));
        }
        if length == 0 {
            return Err(drop_peer(&self.connection, CloseCode::Protocol, TransportError::FrameEmpty));
        }
        let mut payload = Vec::with_capacity(length.min(FRAME_BUFFER_INITIAL_BYTES));
        while payload.len() < length {
            match self.stream.read_chunk(length - payload.len(), true).await.map_err(TransportError::from_read)? {
                None => return Err(truncated(&self.connection)),
                Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            }
        }
        if payload[0] != WIRE_VERSION {
            return Err(drop_peer(
                &self.connection,
                CloseCode::Protocol,
                TransportError::WireVersion { version: payload[0], expected: WIRE_VERSION },
            ));
        }
        Ok(payload)
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self) {
        // An error only means the stream is already finished or reset: nothing left to stop.
        drop(self.stream.stop(CloseCode::Normal.into()));
    }

    /// The underlying stream, for tests that must write or read what the framing forbids.
    pub fn stream_mut(&mut self) -> &mut quinn::RecvStream {
        &mut self.stream
    }
}

impl FrameWriter {
    pub(super) fn new(
        stream: quinn::SendStream,
        connection: quinn::Connection,
        frame_timeout: Duration,
    ) -> FrameWriter {
        FrameWriter { stream, connection, frame_timeout }
    }

    /// Sends one frame. `payload` must start with [`WIRE_VERSION`] and hold at most [`FRAME_BYTES_MAX`] bytes; a peer
    /// that does not read it within the frame timeout gets its connection closed.
    pub async fn send_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        if payload.len() > FRAME_BYTES_MAX {
            return Err(TransportError::FrameTooLarge { length: payload.len(), max: FRAME_BYTES_MAX });
        }
        match payload.first() {
            None => return Err(TransportError::FrameEmpty),
            Some(&version) if version != WIRE_VERSION => {
                return Err(TransportError::WireVersion { version, expected: WIRE_VERSION });
            }
            Some(_) => {}
        }
        let header = (payload.len() as u32).to_be_bytes();
        let write = async {
            self.stream.write_all(&header).await?;
            self.stream.write_all(payload).await
        };
        match tokio::time::timeout(self.frame_timeout, write).await {
            Ok(result) => result.map_err(TransportError::from_write),
            Err(_elapsed) => Err(drop_peer(
                &self.connection,
                CloseCode::FrameTimeout,
                TransportError::FrameTimeout { timeout_ms: self.frame_timeout.as_millis() as u64 },
            )),
        }
    }

    /// Finishes the stream: the peer's [`FrameReader::recv_frame`] returns `None` after the last frame.
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.stream.finish().map_err(|_closed| TransportError::StreamClosed)
    }

    /// The underlying stream, for tests that must write what the framing forbids (a huge length, half a frame).
    pub fn stream_mut(&mut self) -> &mut quinn::SendStream {
        &mut self.stream
    }
}
