//! Any `:authority` on our unix sockets: kubelet's requests as it sends them.
//!
//! A grpc-go client that dials a bare socket path sends that path as the
//! HTTP/2 `:authority` (kubelet's plugin watcher still does; its CSI client
//! did until 1.26), and grpc-core clients send it percent-encoded. h2, under
//! tonic, refuses both as a malformed authority and resets the stream with
//! PROTOCOL_ERROR (hyperium/h2#487, open since 2020), and has no switch for it.
//!
//! So each accepted connection's client-to-server bytes pass through
//! [`Rewriter`] before h2 reads them: it follows the HTTP/2 framing, decodes
//! every header block with HPACK (one decoder per connection, as the client's
//! encoder state requires), replaces an `:authority` that is not a valid
//! URI authority with `localhost`, and re-encodes the block. Every block is
//! re-encoded as literals that never enter the dynamic table, so h2's own
//! decoder state never depends on what the client indexed. All other frames,
//! and everything the server writes, pass unchanged. On anything it cannot
//! follow (no HTTP/2 preface, a broken header block) it hands the bytes over
//! untouched from then on, so h2 reports the error it would have reported.
//!
//! Patching h2 instead would mean carrying a fork of it; this stays outside
//! h2, costs one copy of header frames, and matters only for the few calls
//! kubelet makes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may set, and h2's default:
/// frames we write never exceed it.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is handed to h2 as it came (h2 enforces
/// its own, smaller, header list limit).
const MAX_BLOCK: usize = 1 << 20;
/// What replaces an authority that is not one.
const REPLACEMENT: &[u8] = b"localhost";

#[derive(Debug)]
enum State {
    Preface,
    /// Between frames.
    Frames,
    /// Inside a frame that passes unchanged: this many payload bytes remain.
    Copy(usize),
    /// Not HTTP/2 as we can follow it: everything passes unchanged.
    Passthrough,
}

/// A header block being collected across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as they came, handed on unchanged if the block cannot be decoded.
    raw: Vec<u8>,
}

/// The client-to-server half of one HTTP/2 connection, rewritten as the
/// module documentation says. Sans-IO: bytes in, bytes out.
pub struct Rewriter {
    state: State,
    buffer: Vec<u8>,
    pending: Option<Pending>,
    decoder: Decoder<'static>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter").field("state", &self.state).finish_non_exhaustive()
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        Self { state: State::Preface, buffer: Vec::new(), pending: None, decoder: Decoder::new() }
    }
}

impl Rewriter {
    /// Takes bytes read from the client and appends what h2 should read to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if matches!(self.state, State::Passthrough) {
            out.extend_from_slice(input);
            return;
        }
        self.buffer.extend_from_slice(input);
        let mut at = 0;
        loop {
            let rest = &self.buffer[at..];
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(rest);
                    at = self.buffer.len();
                    break;
                }
                State::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        break;
                    }
                    out.extend_from_slice(PREFACE);
                    at += PREFACE.len();
                    self.state = State::Frames;
                }
                State::Copy(remaining) => {
                    let n = rest.len().min(remaining);
                    out.extend_from_slice(&rest[..n]);
                    at += n;
                    if n < remaining {
                        self.state = State::Copy(remaining - n);
                        break;
                    }
                    self.state = State::Frames;
                }
                State::Frames => {
                    if rest.len() < FRAME_HEADER {
                        break;
                    }
                    let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                    let kind = rest[3];
                    let is_block = kind == HEADERS || kind == CONTINUATION;
                    if !is_block || (kind == CONTINUATION && self.pending.is_none()) {
                        if let Some(pending) = self.pending.take() {
                            // A header block interrupted by another frame is a
                            // connection error h2 reports; give it what came.
                            out.extend_from_slice(&pending.raw);
                            self.state = State::Passthrough;
                            continue;
                        }
                        out.extend_from_slice(&rest[..FRAME_HEADER]);
                        at += FRAME_HEADER;
                        self.state = State::Copy(len);
                        continue;
                    }
                    if len > MAX_BLOCK {
                        self.give_up(out);
                        continue;
                    }
                    if rest.len() < FRAME_HEADER + len {
                        break;
                    }
                    let frame = &rest[..FRAME_HEADER + len];
                    at += frame.len();
                    let frame = frame.to_vec();
                    self.header_frame(&frame, out);
                }
            }
        }
        self.buffer.drain(..at);
    }

    fn give_up(&mut self, out: &mut Vec<u8>) {
        if let Some(pending) = self.pending.take() {
            out.extend_from_slice(&pending.raw);
        }
        self.state = State::Passthrough;
    }

    /// One complete HEADERS or CONTINUATION frame.
    fn header_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if self.pending.is_some() {
                return self.broken(frame, out);
            }
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some((&n, rest)) = payload.split_first() else {
                    return self.broken(frame, out);
                };
                pad = usize::from(n);
                payload = rest;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let Some((p, rest)) = payload.split_first_chunk::<5>() else {
                    return self.broken(frame, out);
                };
                priority = Some(*p);
                payload = rest;
            }
            let Some(block) = payload.len().checked_sub(pad).map(|n| &payload[..n]) else {
                return self.broken(frame, out);
            };
            self.pending =
                Some(Pending { stream, flags, priority, block: block.to_vec(), raw: Vec::new() });
        } else {
            let Some(pending) = self.pending.as_mut().filter(|p| p.stream == stream) else {
                return self.broken(frame, out);
            };
            pending.block.extend_from_slice(payload);
        }
        let pending = self.pending.as_mut().expect("set above");
        pending.raw.extend_from_slice(frame);
        if pending.block.len() > MAX_BLOCK {
            return self.give_up(out);
        }
        if flags & END_HEADERS == 0 {
            return;
        }
        let pending = self.pending.take().expect("set above");
        let mut fields = Vec::new();
        let decoded = self.decoder.decode_with_cb(&pending.block, |name, value| {
            fields.push((name.into_owned(), value.into_owned()));
        });
        if decoded.is_err() {
            out.extend_from_slice(&pending.raw);
            self.state = State::Passthrough;
            return;
        }
        for (name, value) in &mut fields {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                *value = REPLACEMENT.to_vec();
            }
        }
        write_block(&pending, &encode_literals(&fields), out);
    }

    fn broken(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        self.give_up(out);
        out.extend_from_slice(frame);
    }
}

/// HPACK "literal header field without indexing, new name" for every field,
/// without Huffman coding (RFC 7541 §6.2.2, §5.2).
fn encode_literals(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        for s in [name, value] {
            loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut block)
                .expect("writing to a Vec cannot fail");
            block.extend_from_slice(s);
        }
    }
    block
}

/// The block as one HEADERS frame and as many CONTINUATION frames as the
/// smallest allowed frame size needs; END_STREAM and priority are kept, padding is not.
fn write_block(pending: &Pending, block: &[u8], out: &mut Vec<u8>) {
    let keep = pending.flags & !(END_HEADERS | PADDED);
    let mut first = Vec::new();
    if let Some(priority) = pending.priority {
        first.extend_from_slice(&priority);
    }
    let room = MAX_FRAME - first.len();
    let (head, mut rest) = block.split_at(block.len().min(room));
    first.extend_from_slice(head);
    let mut kind = HEADERS;
    let mut flags = keep;
    let mut payload = first;
    loop {
        let last = rest.is_empty();
        let frame_flags = if last { flags | END_HEADERS } else { flags };
        let len = u32::try_from(payload.len()).expect("at most MAX_FRAME").to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], kind, frame_flags]);
        out.extend_from_slice(&pending.stream.to_be_bytes());
        out.extend_from_slice(&payload);
        if last {
            return;
        }
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        payload = chunk.to_vec();
        rest = tail;
        kind = CONTINUATION;
        flags = 0;
    }
}

/// An accepted connection whose incoming bytes pass through a [`Rewriter`].
#[derive(Debug)]
pub struct AnyAuthority<IO> {
    inner: IO,
    rewriter: Rewriter,
    ready: Vec<u8>,
    offset: usize,
}

impl<IO> AnyAuthority<IO> {
    pub fn new(inner: IO) -> Self {
        Self { inner, rewriter: Rewriter::default(), ready: Vec::new(), offset: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AnyAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.offset < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.offset);
                buf.put_slice(&this.ready[this.offset..this.offset + n]);
                this.offset += n;
                return Poll::Ready(Ok(()));
            }
            this.ready.clear();
            this.offset = 0;
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.rewriter.feed(read.filled(), &mut this.ready);
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for AnyAuthority<UnixStream> {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections `listener` accepts, each behind [`AnyAuthority`]: what every
/// gRPC server of ours on a unix socket serves.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = io::Result<AnyAuthority<UnixStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|c| c.map(AnyAuthority::new))
}

#[cfg(test)]
mod tests;
