//! A minimal HTTP/1.1 keep-alive client over one TCP connection.
//!
//! The load generator shares the machine with the server, so it must cost as little CPU as
//! possible per request: requests are pre-rendered bytes, one `write_all`, and the response is
//! parsed just enough to get the status and the body (Content-Length or chunked).
// Shared by the `bench` and `scale` examples; each uses only part of it.
#![allow(dead_code)]

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Conn {
    /// `addr` is `host:port`; the connection is opened on first use and reopened after an error.
    pub fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one complete request and reads its response. On any error the connection is
    /// dropped (the next call reconnects), so one failure never poisons later requests.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        stream.write_all(request).await?;
        let (status, header_end, framing, close) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let body = match framing {
            Framing::Length(len) => {
                while self.buf.len() < header_end + len {
                    read_more(stream, &mut self.buf).await?;
                }
                let body = self.buf[header_end..header_end + len].to_vec();
                self.buf.drain(..header_end + len);
                body
            }
            Framing::Chunked => loop {
                if let Some((body, used)) = parse_chunked(&self.buf[header_end..])? {
                    self.buf.drain(..header_end + used);
                    break body;
                }
                read_more(stream, &mut self.buf).await?;
            },
        };
        if close {
            self.stream = None;
        }
        Ok(Response { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

enum Framing {
    Length(usize),
    Chunked,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Status, end of the head, body framing and whether the server will close the connection;
/// `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<(u16, usize, Framing, bool)>> {
    let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..pos]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut framing = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => framing = Some(Framing::Length(value.parse().map_err(|_| bad("bad length"))?)),
            "transfer-encoding" if value.contains("chunked") => framing = Some(Framing::Chunked),
            "connection" if value == "close" => close = true,
            _ => {}
        }
    }
    Ok(Some((status, pos + 4, framing.unwrap_or(Framing::Length(0)), close)))
}

/// A complete chunked body and the bytes it used, or `None` if more is needed.
fn parse_chunked(mut buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&buf[..eol]).map_err(|_| bad("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        let rest = &buf[eol + 2..];
        if size == 0 {
            // No trailers are expected: the body ends with an empty line.
            return Ok(rest.starts_with(b"\r\n").then(|| (body, total - rest.len() + 2)));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        buf = &rest[size + 2..];
    }
}

/// Renders a request with the given extra header lines (each ending in `\r\n`).
pub fn request(method: &str, host: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Percent-encodes a path segment (an email's `@` and `+`, for example).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
