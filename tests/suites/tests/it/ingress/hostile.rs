//! Hostile clients: heads trickled on a kept-alive connection, connections
//! past the limit, and compressed bodies.

use std::time::Duration;

use corral_runtime::telemetry::labels::RejectReason;
use corral_testkit::{
    apps::{RunningIngress, TOKEN},
    broker::TestBroker,
    config, fixtures,
    stack::Stack,
};
use reqwest::header;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::helpers::*;

/// `CORRAL_HEADER_TIMEOUT_MS` for the slow-head tests: short, so a test
/// takes seconds, yet far above the gap between two trickled bytes.
const HEADER_TIMEOUT_MS: u64 = 1_000;

/// The pace of a trickling client: one byte per interval.
const TRICKLE: Duration = Duration::from_millis(100);

/// A request head that takes 20 s to trickle at [`TRICKLE`], far past the
/// header deadline.
fn slow_head() -> Vec<u8> {
    format!(
        "POST /webhooks/dropcowboy/sms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         X-Slow: {}\r\n\r\n",
        "s".repeat(60)
    )
    .into_bytes()
}

async fn ingress_with_header_timeout(broker: &TestBroker) -> RunningIngress {
    let mut config = config::ingress(broker.prefix(), TOKEN);
    config.header_timeout_ms = HEADER_TIMEOUT_MS;
    RunningIngress::start(config).await
}

/// Reads one response (head and `Content-Length` body); returns its text.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(REQUEST_BOUND, stream.read(&mut buf))
            .await
            .expect("the ingress should answer")
            .expect("reading the answer");
        assert!(n > 0, "the connection closed mid-answer: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Trickles `head` on `stream` one byte per [`TRICKLE`] and returns what the
/// server sent before closing the connection. Panics if the whole head got
/// through without the connection being cut.
async fn trickle_until_cut(stream: TcpStream, head: &[u8]) -> String {
    let (mut reader, mut writer) = stream.into_split();
    let closed = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // EOF or a reset: either way the server let go.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let trickle = async move {
        let mut pace = tokio::time::interval(TRICKLE);
        for byte in head {
            pace.tick().await;
            if writer.write_all(&[*byte]).await.is_err() {
                // Reset by the server; the reader sees it too.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        answer = closed => answer,
        () = trickle => panic!(
            "a {}-byte head trickled over {:?} and the connection was never cut",
            head.len(),
            TRICKLE * head.len() as u32
        ),
    }
}

/// actix bounds only a connection's first head; after one answer on a
/// kept-alive connection, the next head must still arrive within
/// `CORRAL_HEADER_TIMEOUT_MS` or the connection is closed.
#[tokio::test]
async fn a_second_head_trickled_on_a_kept_alive_connection_is_cut_at_the_deadline() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = ingress_with_header_timeout(broker).await;
    let mut stream = TcpStream::connect(("127.0.0.1", ingress.port))
        .await
        .expect("connecting");
    stream
        .write_all(b"GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("writing the first request");
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 404"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "the connection should be kept alive: {first}"
    );

    let after_cut = trickle_until_cut(stream, &slow_head()).await;
    assert!(
        after_cut.is_empty() || after_cut.starts_with("HTTP/1.1 408"),
        "nothing but a close (or a 408) after the deadline: {after_cut:?}"
    );
    // The listener itself is unharmed.
    post_sample(&ingress).await;
}

/// The first head of a connection is held to the same deadline.
#[tokio::test]
async fn a_first_head_trickled_is_cut_at_the_deadline() {
    let stack = Stack::builder().start().await;
    let broker = stack.broker();
    let ingress = ingress_with_header_timeout(broker).await;
    let stream = TcpStream::connect(("127.0.0.1", ingress.port))
        .await
        .expect("connecting");
    let after_cut = trickle_until_cut(stream, &slow_head()).await;
    assert!(
        after_cut.is_empty() || after_cut.starts_with("HTTP/1.1 408"),
        "{after_cut:?}"
    );
}

/// With `CORRAL_MAX_CONNECTIONS` held by open connections, a further one is
/// not served; it is as soon as one of them closes.
#[tokio::test]
async fn a_connection_past_the_limit_waits_until_one_closes() {
    let stack = Stack::builder().start().await;
    let mut config = stack.ingress_config();
    config.http_workers = 1;
    config.max_connections = 2;
    let ingress = RunningIngress::start(config).await;
    let request = b"GET /elsewhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(("127.0.0.1", ingress.port))
            .await
            .expect("connecting");
        stream.write_all(request).await.expect("writing");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        held.push(stream);
    }

    // The kernel completes the handshake; corral does not take the connection.
    let mut extra = TcpStream::connect(("127.0.0.1", ingress.port))
        .await
        .expect("connecting (the listen backlog takes it)");
    extra.write_all(request).await.expect("writing");
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), extra.read(&mut byte))
            .await
            .is_err(),
        "a connection past the limit was served while the limit was held"
    );

    drop(held.pop());
    let answer = read_response(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

/// A compressed body is refused as such: 415 naming the encoding, counted as
/// `unsupported_encoding`, not as a misleading "invalid JSON" 400.
#[tokio::test]
async fn a_compressed_body_gets_415_naming_its_encoding() {
    let stack = Stack::builder().with_ingress().start().await;
    let (broker, ingress) = (stack.broker(), stack.ingress());
    // The first bytes of a gzip stream; never decoded.
    let gzip_magic: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00];
    let error = assert_rejected(
        broker,
        ingress,
        authenticated(ingress, "sms")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(gzip_magic),
        415,
        RejectReason::UnsupportedEncoding,
    )
    .await;
    assert_eq!(
        error,
        "Content-Encoding gzip is not supported; send the body uncompressed"
    );
    // `identity` is no encoding at all.
    accepted(
        send(
            authenticated(ingress, "sms")
                .header(header::CONTENT_ENCODING, "identity")
                .body(fixtures::SMS_SUCCESS),
        )
        .await,
    )
    .await;
}
