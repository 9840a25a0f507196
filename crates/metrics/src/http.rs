//! The minimal HTTP/1.x the admin endpoint speaks: find the end of a request head, parse its
//! request line, check its header lines, and build `Connection: close` responses.
//! Everything here is total: any byte string gives a result, never a panic.

/// Where the request head ends (index just past the empty line), if it is complete.
/// Accepts `\r\n\r\n` and, leniently, `\n\n`.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    /// The method token, e.g. `GET`.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

/// Parses a complete request head (as delimited by [`head_end`]). `None` if it is malformed.
pub(crate) fn parse_head(head: &[u8]) -> Option<Head<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    // RFC 9112 §2.2: a server should ignore empty lines before the request line.
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return None;
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, _value) = line.split_once(':')?;
        // No empty names, no whitespace before the colon, no obsolete line folding.
        if name.is_empty() || !name.bytes().all(is_token_byte) || line.bytes().any(|b| b == b'\r') {
            return None;
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Some(Head { method, path })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Content type of the Prometheus text exposition format.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of every other response.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Appends a full response (head and, unless `head_only`, body) to `out`.
pub(crate) fn response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{extra_headers}Connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// A short plain-text response: `body` followed by a newline.
pub(crate) fn simple(out: &mut Vec<u8>, status: u16, body: &str, head_only: bool) {
    let body = format!("{body}\n");
    response(
        out,
        status,
        TEXT_CONTENT_TYPE,
        "",
        body.as_bytes(),
        head_only,
    );
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nx"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        let ok = parse_head(b"\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
        assert_eq!(
            ok,
            Some(Head {
                method: "GET",
                path: "/metrics"
            })
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost a\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n",
            b"GET /m\xff HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"",
        ] {
            assert_eq!(parse_head(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
