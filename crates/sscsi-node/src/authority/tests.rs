use httlib_hpack::Encoder;

use super::*;

type Fields = Vec<(&'static str, String)>;

/// A client encoder as grpc-go's (Go's hpack): Huffman and incremental indexing,
/// so a second request refers to the first one's `:authority` by index.
fn client_block(encoder: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
    let flags = Encoder::HUFFMAN_NAME
        | Encoder::HUFFMAN_VALUE
        | Encoder::WITH_INDEXING
        | Encoder::BEST_FORMAT;
    let mut block = Vec::new();
    for (name, value) in fields {
        encoder
            .encode((name.as_bytes().to_vec(), value.as_bytes().to_vec(), flags), &mut block)
            .unwrap();
    }
    block
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn grpc_go_request(authority: &str, path: &str) -> Fields {
    vec![
        (":method", "POST".into()),
        (":scheme", "http".into()),
        (":path", path.into()),
        (":authority", authority.into()),
        ("content-type", "application/grpc".into()),
        ("user-agent", "grpc-go/1.59.0".into()),
        ("te", "trailers".into()),
        ("grpc-timeout", "9999653u".into()),
    ]
}

/// Splits what h2 would read into frames and decodes every header block.
fn parse(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE);
    let mut frames = Vec::new();
    let mut at = PREFACE.len();
    while at < bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        assert!(len <= MAX_FRAME, "a frame of {len} bytes");
        let stream = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap());
        frames.push((bytes[at + 3], bytes[at + 4], stream, bytes[at + 9..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    frames
}

fn decode(decoder: &mut httlib_hpack::Decoder<'_>, block: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    decoder.decode(&mut block.to_vec(), &mut fields).unwrap();
    fields
        .into_iter()
        .map(|(n, v, flags)| {
            assert_eq!(
                flags & httlib_hpack::Decoder::WITH_INDEXING,
                0,
                "nothing enters h2's table"
            );
            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
}

fn expected(fields: &Fields, authority: &str) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(n, v)| {
            let v = if *n == ":authority" { authority.to_owned() } else { v.clone() };
            ((*n).to_owned(), v)
        })
        .collect()
}

/// Feeds `input` in pieces of `step` bytes, as reads from a socket would come.
fn rewrite(input: &[u8], step: usize) -> Vec<u8> {
    let mut rewriter = Rewriter::default();
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        rewriter.feed(piece, &mut out);
    }
    out
}

const SOCKET: &str = "/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock";

#[test]
fn kubelets_socket_path_authority_becomes_localhost_on_every_call_of_a_connection() {
    let mut encoder = Encoder::default();
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0])); // WINDOW_UPDATE
    let first = grpc_go_request(SOCKET, "/pluginregistration.Registration/GetInfo");
    let second =
        grpc_go_request(SOCKET, "/pluginregistration.Registration/NotifyRegistrationStatus");
    let message = [0u8, 0, 0, 0, 2, 8, 1];
    input.extend(frame(HEADERS, END_HEADERS, 1, &client_block(&mut encoder, &first)));
    input.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    // The second block refers to the first one's fields by dynamic-table index.
    let second_block = client_block(&mut encoder, &second);
    assert!(
        second_block.len() < SOCKET.len(),
        "the authority by index: {} bytes",
        second_block.len()
    );
    input.extend(frame(HEADERS, END_HEADERS, 3, &second_block));
    input.extend(frame(0x0, 0x1, 3, &message));

    for step in [1, 7, 4096] {
        let frames = parse(&rewrite(&input, step));
        let kinds: Vec<_> = frames.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0, 0),
                (0x8, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (0, 1, 1),
                (HEADERS, END_HEADERS, 3),
                (0, 1, 3)
            ]
        );
        let mut decoder = httlib_hpack::Decoder::default();
        assert_eq!(decode(&mut decoder, &frames[2].3), expected(&first, "localhost"));
        assert_eq!(decode(&mut decoder, &frames[4].3), expected(&second, "localhost"));
        assert_eq!(frames[5].3, message, "DATA passes unchanged");
        assert_eq!(frames[1].3, [0, 0, 0x10, 0]);
    }
}

#[test]
fn only_an_authority_that_is_not_one_is_replaced() {
    let encoded = "%2Fvar%2Flib%2Fkubelet%2Fplugins%2Fcsi-secrets-store%2Fcsi.sock";
    for (authority, seen) in [
        (SOCKET, "localhost"),
        (encoded, "localhost"),
        ("", "localhost"),
        ("localhost", "localhost"),
        ("csi.sock:0", "csi.sock:0"),
        ("[::1]:10000", "[::1]:10000"),
    ] {
        let fields = grpc_go_request(authority, "/csi.v1.Node/NodeGetInfo");
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &client_block(&mut Encoder::default(), &fields),
        ));
        let frames = parse(&rewrite(&input, 3));
        let mut decoder = httlib_hpack::Decoder::default();
        assert_eq!(decode(&mut decoder, &frames[0].3), expected(&fields, seen), "{authority:?}");
    }
    // No :authority at all stays without one.
    let mut fields = grpc_go_request("x", "/csi.v1.Node/NodeGetInfo");
    fields.retain(|(n, _)| *n != ":authority");
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &client_block(&mut Encoder::default(), &fields)));
    let frames = parse(&rewrite(&input, 5));
    let got = decode(&mut httlib_hpack::Decoder::default(), &frames[0].3);
    assert!(got.iter().all(|(n, _)| n != ":authority"), "{got:?}");
    assert_eq!(got.len(), fields.len());
}

#[test]
fn continuation_padding_and_priority_are_followed() {
    let fields = grpc_go_request(SOCKET, "/csi.v1.Node/NodePublishVolume");
    let block = client_block(&mut Encoder::default(), &fields);
    let (a, b) = block.split_at(block.len() / 2);
    let mut headers = vec![3u8]; // pad length
    headers.extend_from_slice(&[0x80, 0, 0, 7, 15]); // exclusive dependency on 7, weight 15
    headers.extend_from_slice(a);
    headers.extend_from_slice(&[0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | 0x1, 5, &headers));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
    let frames = parse(&rewrite(&input, 2));
    assert_eq!(frames.len(), 1);
    let (kind, flags, stream, payload) = &frames[0];
    assert_eq!((*kind, *flags, *stream), (HEADERS, PRIORITY | 0x1 | END_HEADERS, 5));
    assert_eq!(&payload[..5], &[0x80, 0, 0, 7, 15]);
    assert_eq!(
        decode(&mut httlib_hpack::Decoder::default(), &payload[5..]),
        expected(&fields, "localhost")
    );
}

#[test]
fn a_block_larger_than_a_frame_is_split_into_continuations() {
    let mut fields = grpc_go_request(SOCKET, "/csi.v1.Node/NodePublishVolume");
    fields.push(("x-large", "v".repeat(40_000)));
    let mut input = PREFACE.to_vec();
    // The client may send it in one frame if the server allowed larger frames.
    input.extend(frame(HEADERS, END_HEADERS, 1, &client_block(&mut Encoder::default(), &fields)));
    let frames = parse(&rewrite(&input, 1000));
    let kinds: Vec<_> = frames.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(kinds, [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]);
    let block: Vec<u8> = frames.iter().flat_map(|f| f.3.clone()).collect();
    assert_eq!(
        decode(&mut httlib_hpack::Decoder::default(), &block),
        expected(&fields, "localhost")
    );
}

#[test]
fn what_it_cannot_follow_passes_unchanged() {
    // Not HTTP/2.
    let http1 = b"GET / HTTP/1.1\r\nHost: /tmp/x.sock\r\n\r\n";
    assert_eq!(rewrite(http1, 4), http1);
    // A header block h2 itself would refuse (an index beyond any table).
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]));
    input.extend(frame(0x0, 1, 1, b"after"));
    assert_eq!(rewrite(&input, 3), input);
    // A block interrupted by another frame.
    let block = client_block(&mut Encoder::default(), &grpc_go_request(SOCKET, "/a/b"));
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, 0, 1, &block));
    input.extend(frame(0x6, 0, 0, &[0; 8])); // PING
    assert_eq!(rewrite(&input, 11), input);
}
