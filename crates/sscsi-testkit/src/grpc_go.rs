//! A gRPC client that puts on the wire, frame by frame, what kubelet's
//! grpc-go client sends: the connection preface and SETTINGS, a connection
//! WINDOW_UPDATE, and for each unary call one HEADERS frame
//! (`:method`, `:scheme`, `:path`, `:authority`, `content-type`,
//! `user-agent`, `te`, `grpc-timeout`, in grpc-go's order, HPACK-encoded with
//! Huffman and incremental indexing as Go's encoder does) and one DATA frame
//! with END_STREAM; on the first DATA it receives, the WINDOW_UPDATE and PING
//! of grpc-go's bandwidth estimator. The `:authority` is whatever the test
//! says: kubelet sends the socket path when it dials a bare path.
//!
//! tonic's own client always sends a valid authority, so it cannot show what
//! kubelet's calls meet; this one can.

use std::path::Path;
use std::time::Duration;

use httlib_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The user agent of grpc-go as vendored by kubelet 1.24 (grpc-go v1.40.0).
pub const USER_AGENT: &str = "grpc-go/1.40.0";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// How a call ended, when it did not end with `grpc-status: 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The server reset the stream (h2's answer to a malformed header block).
    Reset {
        code: u32,
    },
    /// The server closed the connection.
    GoAway {
        code: u32,
    },
    /// A gRPC status other than OK.
    Status {
        code: i32,
        message: String,
    },
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reset { code } => {
                write!(f, "stream terminated by RST_STREAM with error code {code}")
            }
            Self::GoAway { code } => {
                write!(f, "connection closed by GOAWAY with error code {code}")
            }
            Self::Status { code, message } => write!(f, "grpc-status {code}: {message}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

/// One HTTP/2 connection to a unix socket, as grpc-go's transport opens it.
pub struct GrpcGoConn {
    io: UnixStream,
    authority: Option<String>,
    encoder: Encoder<'static>,
    decoder: Decoder<'static>,
    next_stream: u32,
    /// grpc-go's BDP estimator pings once the first DATA arrives.
    pinged: bool,
}

impl std::fmt::Debug for GrpcGoConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcGoConn").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl GrpcGoConn {
    /// Connects and writes the client preface; `authority` is sent on every
    /// call (`None`: no `:authority` field at all).
    pub async fn connect(socket: &Path, authority: Option<&str>) -> std::io::Result<Self> {
        let mut io = UnixStream::connect(socket).await?;
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // grpc-go's SETTINGS: with its defaults (dynamic window) none differ
        // from the protocol's, and the connection window is not grown.
        preface.extend(frame(SETTINGS, 0, 0, &[]));
        io.write_all(&preface).await?;
        Ok(Self {
            io,
            authority: authority.map(str::to_owned),
            encoder: Encoder::default(),
            decoder: Decoder::default(),
            next_stream: 1,
            pinged: false,
        })
    }

    /// One unary call of `method` (`/package.Service/Method`), with kubelet's
    /// deadline sent as `grpc-timeout`.
    pub async fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut fields = vec![
            (":method", "POST".to_owned()),
            (":scheme", "http".to_owned()),
            (":path", method.to_owned()),
        ];
        if let Some(authority) = &self.authority {
            fields.push((":authority", authority.clone()));
        }
        fields.extend([
            ("content-type", "application/grpc".to_owned()),
            ("user-agent", USER_AGENT.to_owned()),
            ("te", "trailers".to_owned()),
            ("grpc-timeout", encode_timeout(timeout)),
        ]);
        let flags = Encoder::HUFFMAN_NAME
            | Encoder::HUFFMAN_VALUE
            | Encoder::WITH_INDEXING
            | Encoder::BEST_FORMAT;
        let mut block = Vec::new();
        for (name, value) in fields {
            self.encoder
                .encode((name.as_bytes().to_vec(), value.into_bytes(), flags), &mut block)
                .map_err(|e| CallError::Protocol(format!("encode: {e:?}")))?;
        }
        let body = request.encode_to_vec();
        let mut message = vec![0u8];
        message.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        message.extend_from_slice(&body);
        let mut out = frame(HEADERS, END_HEADERS, stream, &block);
        out.extend(frame(DATA, END_STREAM, stream, &message));
        self.io.write_all(&out).await.map_err(io_error)?;
        self.read_response(stream).await
    }

    async fn read_response<Resp: prost::Message + Default>(
        &mut self,
        stream: u32,
    ) -> Result<Resp, CallError> {
        let mut data = Vec::new();
        let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
        let mut block = Vec::new();
        loop {
            let (kind, flags, id, payload) = self.read_frame().await?;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    self.io.write_all(&frame(SETTINGS, ACK, 0, &[])).await.map_err(io_error)?;
                }
                PING if flags & ACK == 0 => {
                    self.io.write_all(&frame(PING, ACK, 0, &payload)).await.map_err(io_error)?;
                }
                GOAWAY => {
                    let code =
                        payload.get(4..8).map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()));
                    return Err(CallError::GoAway { code });
                }
                RST_STREAM if id == stream => {
                    let code =
                        payload.get(..4).map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()));
                    return Err(CallError::Reset { code });
                }
                HEADERS | CONTINUATION if id == stream => {
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS != 0 {
                        let mut fields = Vec::new();
                        self.decoder
                            .decode(&mut std::mem::take(&mut block), &mut fields)
                            .map_err(|e| CallError::Protocol(format!("decode: {e:?}")))?;
                        blocks.push(
                            fields
                                .into_iter()
                                .map(|(n, v, _)| {
                                    (
                                        String::from_utf8_lossy(&n).into_owned(),
                                        String::from_utf8_lossy(&v).into_owned(),
                                    )
                                })
                                .collect(),
                        );
                    }
                }
                DATA if id == stream => {
                    data.extend_from_slice(&payload);
                    if !self.pinged && !payload.is_empty() {
                        self.pinged = true;
                        let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
                        let mut bdp = frame(WINDOW_UPDATE, 0, 0, &len);
                        bdp.extend(frame(PING, 0, 0, &[2, 4, 16, 16, 9, 14, 7, 7]));
                        self.io.write_all(&bdp).await.map_err(io_error)?;
                    }
                }
                _ => {}
            }
            if id == stream && flags & END_STREAM != 0 && matches!(kind, HEADERS | DATA) {
                break;
            }
        }
        let field =
            |name: &str| blocks.iter().flatten().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        if field(":status").as_deref() != Some("200") {
            return Err(CallError::Protocol(format!("response headers {blocks:?}")));
        }
        let code: i32 = field("grpc-status").and_then(|s| s.parse().ok()).unwrap_or(-1);
        if code != 0 {
            return Err(CallError::Status {
                code,
                message: field("grpc-message").unwrap_or_default(),
            });
        }
        if data.len() < 5 || data[0] != 0 {
            return Err(CallError::Protocol(format!("a message of {} bytes", data.len())));
        }
        Resp::decode(&data[5..]).map_err(|e| CallError::Protocol(format!("response: {e}")))
    }

    async fn read_frame(&mut self) -> Result<(u8, u8, u32, Vec<u8>), CallError> {
        let mut head = [0u8; 9];
        self.io.read_exact(&mut head).await.map_err(io_error)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        self.io.read_exact(&mut payload).await.map_err(io_error)?;
        Ok((head[3], head[4], id, payload))
    }
}

/// grpc-go's `encodeTimeout`: the finest unit whose count has at most eight digits.
pub fn encode_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let ns = timeout.as_nanos();
    if ns == 0 {
        return "0n".into();
    }
    for (unit, per) in [("n", 1), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000)] {
        // Go's div rounds up.
        let count = ns.div_ceil(per);
        if count <= MAX {
            return format!("{count}{unit}");
        }
    }
    for (unit, per) in [("M", 60_000_000_000u128), ("H", 3_600_000_000_000)] {
        let count = ns.div_ceil(per);
        if count <= MAX || unit == "H" {
            return format!("{count}{unit}");
        }
    }
    unreachable!()
}

fn io_error(e: std::io::Error) -> CallError {
    CallError::Protocol(format!("socket: {e}"))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small").to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
