//! The smoke test both minimal examples share: runs the example's binary on port 0, starts a job,
//! and reads its stream to the end over a plain socket.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Sends one request with `Connection: close` and reads the whole answer.
async fn request(addr: &str, method: &str, path: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .expect("read");
    String::from_utf8(answer).expect("UTF-8")
}

/// Runs the example at `binary` and checks one job's stream.
pub(crate) async fn run(binary: &str) {
    let mut child = Command::new(binary)
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the example announces its address")
        .expect("read")
        .expect("a line");
    let addr = line.trim_start_matches("listening on http://").to_owned();

    let created = request(&addr, "POST", "/jobs").await;
    let url = created
        .split("\"stream_url\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no stream_url in {created}"));
    let stream = request(&addr, "GET", url).await;
    assert!(stream.starts_with("HTTP/1.1 200"), "{stream}");
    assert!(stream.contains("text/event-stream"), "{stream}");
    assert_eq!(stream.matches("\"type\":\"progress\"").count(), 3, "{stream}");
    let done = stream.find("\"type\":\"done\"").expect("done");
    assert!(
        stream.rfind("\"type\":\"progress\"").expect("progress") < done,
        "{stream}"
    );

    let missing = request(&addr, "GET", "/streams/not.a.channel").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("\"not_found\""), "{missing}");
}
