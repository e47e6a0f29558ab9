//! moto's S3 server for benches that keep the cache on object storage.

#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

/// Spawns moto's S3 server with `python` on a free port and returns the port. The server
/// lives as long as this process: it is stopped when this process's end of its stdin
/// closes, at exit. It takes a moment to listen.
pub fn spawn_moto(python: &str) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{python} -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; \
             cat >/dev/null; kill $pid"
        ))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs");
    std::mem::forget(child);
    port
}

/// Starts moto's S3 server, makes `bucket` there, and returns the endpoint.
pub fn start(bucket: &str) -> String {
    let port = spawn_moto("python3");
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            write!(
                socket,
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            return endpoint;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto's S3 server did not start (pip install \"moto[server]\")");
}

/// The cache options of an engine whose cache is on the server at `endpoint`.
pub fn cache_options(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("endpoint", endpoint.to_owned()),
        ("allow_http", "true".to_owned()),
        ("region", "us-east-1".to_owned()),
        ("access_key_id", "bench".to_owned()),
        ("secret_access_key", "bench".to_owned()),
    ]
}
