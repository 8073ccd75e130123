//! Message heads: parsing request and status lines with `httparse`, and the
//! few header facts framing needs (length, chunked, content coding).

use super::FramingError;

/// Headers kept per message; `httparse` rejects heads with more.
const MAX_HEADERS: usize = 96;

/// Header values never kept: credentials must not reach records or logs.
const REDACTED: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "cookie",
];

/// One header, name lowercased, value lossily decoded (credentials emptied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Lowercase name.
    pub name: String,
    /// Value, or empty for credential headers.
    pub value: String,
}

/// A request line and its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Method as sent, e.g. `POST`.
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// A status line and its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// Looks up a header by lowercase name.
pub(crate) fn find<'h>(headers: &'h [Header], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

impl RequestHead {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The target without its query string (queries can carry API keys).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query string, if any, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

impl ResponseHead {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

impl Header {
    /// A header from its bytes on the wire (HTTP/1 line or HPACK field):
    /// the name lowercased, credentials emptied.
    pub(crate) fn from_raw(name: &[u8], value: &[u8]) -> Self {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = if REDACTED.contains(&name.as_str()) {
            String::new()
        } else {
            String::from_utf8_lossy(value).trim().to_owned()
        };
        Header { name, value }
    }
}

fn convert(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header::from_raw(h.name.as_bytes(), h.value))
        .collect()
}

/// Parses a request head; `Ok(None)` while incomplete, else its length.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<(usize, RequestHead)>, FramingError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(buf).map_err(FramingError::BadHead)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => Ok(Some((
            len,
            RequestHead {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                headers: convert(req.headers),
            },
        ))),
    }
}

/// Parses a response head; `Ok(None)` while incomplete, else its length.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<(usize, ResponseHead)>, FramingError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    match res.parse(buf).map_err(FramingError::BadHead)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => Ok(Some((
            len,
            ResponseHead {
                status: res.code.unwrap_or_default(),
                headers: convert(res.headers),
            },
        ))),
    }
}

/// Whether `bytes` could begin a request line: a method token then a space.
pub(crate) fn looks_like_request(bytes: &[u8]) -> bool {
    let token_len = bytes
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    if token_len == 0 || token_len > 16 {
        return false;
    }
    match bytes.get(token_len) {
        Some(b' ') => true,
        Some(_) => false,
        None => true, // the method itself is still arriving
    }
}

/// Whether `bytes` open with a whole HTTP/1.x request line
/// (`METHOD target HTTP/1.x`): stricter than `looks_like_request`, to
/// find where requests start in the middle of a connection's bytes.
pub fn starts_request_line(bytes: &[u8]) -> bool {
    let Some(end) = memchr::memchr(b'\n', bytes) else {
        return false;
    };
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None) => {
            looks_like_request(method) && !target.is_empty() && version.starts_with(b"HTTP/1.")
        }
        _ => false,
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Body framing per RFC 9112 §6.3 for the parsed headers.
pub(crate) fn framing(headers: &[Header], close_delimited: bool) -> Result<Framing, FramingError> {
    if let Some(te) = find(headers, "transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked);
        }
    }
    if let Some(len) = find(headers, "content-length") {
        // Repeated identical values ("5, 5") are allowed by the RFC.
        let first = len.split(',').next().unwrap_or_default().trim();
        let len = first
            .parse::<u64>()
            .map_err(|_| FramingError::BadContentLength)?;
        return Ok(if len == 0 {
            Framing::Empty
        } else {
            Framing::Length(len)
        });
    }
    Ok(if close_delimited {
        Framing::UntilClose
    } else {
        Framing::Empty
    })
}
