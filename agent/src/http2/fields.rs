//! A header block: HPACK-decoded (with the direction's dynamic table), its
//! pseudo-headers split from the regular headers.

use loona_hpack::Decoder;

use crate::http::{FramingError, Header};

/// What one header block said.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    /// Regular headers, named and redacted as HTTP/1's are.
    pub headers: Vec<Header>,
}

/// Decodes `block`. Every field goes through the decoder (the dynamic
/// table must stay in step), but only the first `max_bytes` of names and
/// values are kept: a small block can expand to a huge list.
pub(super) fn decode(
    hpack: &mut Decoder<'static>,
    block: &[u8],
    max_bytes: usize,
) -> Result<Fields, FramingError> {
    let mut fields = Fields::default();
    let mut kept = 0usize;
    hpack
        .decode_with_cb(block, |name, value| {
            kept += name.len() + value.len();
            if kept > max_bytes {
                return;
            }
            let text = || String::from_utf8_lossy(&value).into_owned();
            match &*name {
                b":method" => fields.method = Some(text()),
                b":path" => fields.path = Some(text()),
                b":authority" => fields.authority = Some(text()),
                b":status" => fields.status = text().parse().ok(),
                pseudo if pseudo.starts_with(b":") => {}
                _ => fields.headers.push(Header::from_raw(&name, &value)),
            }
        })
        .map_err(|_| FramingError::Http2("bad HPACK block"))?;
    if let Some(authority) = &fields.authority {
        // HTTP/1's Host, for whatever reads it.
        if !fields.headers.iter().any(|h| h.name == "host") {
            fields
                .headers
                .push(Header::from_raw(b"host", authority.as_bytes()));
        }
    }
    Ok(fields)
}
