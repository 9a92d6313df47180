//! Parsing of the List Blobs response. Hand-rolled over quick-xml events because names
//! may come percent-encoded (`Encoded="true"`) and blobs and prefixes interleave.

use crate::digest::Md5Digest;
use crate::storage::{BlobMeta, Metadata};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::time::SystemTime;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub blobs: Vec<BlobMeta>,
    pub prefixes: Vec<String>,
    pub next_marker: Option<String>,
}

#[derive(Default)]
struct BlobBuilder {
    name: Option<String>,
    size: u64,
    last_modified: Option<SystemTime>,
    etag: String,
    content_md5: Option<Md5Digest>,
    metadata: Metadata,
    /// `<ResourceType>directory</ResourceType>`: a directory of a hierarchical-namespace
    /// account, listed as a blob.
    directory: bool,
}

pub fn parse_list_page(xml: &str) -> Result<ListPage, String> {
    let mut reader = Reader::from_str(xml);
    let mut page = ListPage::default();
    // Element names from the root down to the current element.
    let mut path: Vec<String> = Vec::new();
    let mut blob: Option<BlobBuilder> = None;
    let mut name_encoded = false;
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if tag == "Blob" {
                    blob = Some(BlobBuilder::default());
                }
                if tag == "Name" {
                    name_encoded = e
                        .attributes()
                        .flatten()
                        .any(|a| a.key.as_ref() == b"Encoded" && a.value.as_ref() == b"true");
                }
                path.push(tag);
                text.clear();
            }
            Event::Text(t) => {
                text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) => {
                if let Some(ch) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    text.push(ch);
                } else {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    let ch = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown XML entity &{name};"))?;
                    text.push_str(ch);
                }
            }
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Event::End(_) => {
                let tag = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str).unwrap_or("");
                let value = std::mem::take(&mut text);
                match (parent, tag.as_str()) {
                    ("Blob", "Name") => {
                        if let Some(b) = blob.as_mut() {
                            b.name = Some(decode_name(&value, name_encoded)?);
                        }
                    }
                    ("BlobPrefix", "Name") => {
                        page.prefixes.push(decode_name(&value, name_encoded)?)
                    }
                    ("Properties", "Content-Length") => {
                        if let Some(b) = blob.as_mut() {
                            b.size = value
                                .trim()
                                .parse()
                                .map_err(|_| format!("bad Content-Length {value:?}"))?;
                        }
                    }
                    ("Properties", "Last-Modified") => {
                        if let Some(b) = blob.as_mut() {
                            b.last_modified = Some(parse_http_date(&value)?);
                        }
                    }
                    ("Properties", "Etag") => {
                        if let Some(b) = blob.as_mut() {
                            b.etag = quoted_etag(&value);
                        }
                    }
                    ("Properties", "ResourceType") => {
                        if let Some(b) = blob.as_mut() {
                            b.directory = value.trim().eq_ignore_ascii_case("directory");
                        }
                    }
                    ("Properties", "Content-MD5") if !value.trim().is_empty() => {
                        if let Some(b) = blob.as_mut() {
                            b.content_md5 = Md5Digest::from_base64(&value).ok();
                        }
                    }
                    ("Metadata", key) => {
                        if let Some(b) = blob.as_mut() {
                            b.metadata.insert(key.to_string(), value);
                        }
                    }
                    (_, "Blob") => {
                        let b = blob.take().ok_or("unbalanced <Blob>")?;
                        if b.directory {
                            // A directory is a directory, whether or not it has children
                            // (and so a <BlobPrefix> of its own).
                            let name = b.name.ok_or("a <Blob> without <Name>")?;
                            page.prefixes.push(format!("{name}/"));
                            continue;
                        }
                        page.blobs.push(BlobMeta {
                            name: b.name.ok_or("a <Blob> without <Name>")?,
                            size: b.size,
                            last_modified: b.last_modified.unwrap_or(SystemTime::UNIX_EPOCH),
                            etag: b.etag,
                            content_md5: b.content_md5,
                            metadata: b.metadata,
                        });
                    }
                    ("EnumerationResults", "NextMarker") if !value.is_empty() => {
                        page.next_marker = Some(value);
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(page)
}

fn decode_name(value: &str, encoded: bool) -> Result<String, String> {
    if !encoded {
        return Ok(value.to_string());
    }
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("encoded blob name {value:?} is not UTF-8"))
}

/// ETags appear bare in listings and quoted in headers; adlsfs keeps the quoted form.
pub fn quoted_etag(value: &str) -> String {
    let v = value.trim();
    if v.starts_with('"') {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

pub fn parse_http_date(value: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc2822(value.trim())
        .map(SystemTime::from)
        .map_err(|e| format!("bad date {value:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_a_hierarchical_namespace_account_is_a_prefix_with_or_without_children() {
        let page = parse_list_page(
            r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://a.blob.core.windows.net/" ContainerName="c">
  <Blobs>
    <Blob><Name>d/empty</Name>
      <Properties><Last-Modified>Fri, 27 Nov 2026 02:00:00 GMT</Last-Modified>
        <Etag>0x1</Etag><Content-Length>0</Content-Length>
        <ResourceType>directory</ResourceType></Properties></Blob>
    <Blob><Name>d/file</Name>
      <Properties><Last-Modified>Fri, 27 Nov 2026 02:00:00 GMT</Last-Modified>
        <Etag>0x2</Etag><Content-Length>3</Content-Length>
        <ResourceType>file</ResourceType></Properties></Blob>
    <BlobPrefix><Name>d/full/</Name></BlobPrefix>
  </Blobs>
  <NextMarker />
</EnumerationResults>"#,
        )
        .unwrap();
        assert_eq!(page.prefixes, ["d/empty/", "d/full/"]);
        let names: Vec<_> = page.blobs.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["d/file"]);
    }

    const PAGE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="box">
  <Prefix>dir/</Prefix><MaxResults>5000</MaxResults><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>dir/a &amp; b.txt</Name>
      <Properties><Last-Modified>Fri, 27 Nov 2026 02:00:00 GMT</Last-Modified>
        <Etag>0x8DC1</Etag><Content-Length>12</Content-Length>
        <Content-MD5>b1kCrCNwJL3QwXbLkwY9xA==</Content-MD5></Properties>
      <Metadata><hash_xxh3_128_b64>7vrJ2HEAzRM2suczpUhEJQ==</hash_xxh3_128_b64></Metadata>
    </Blob>
    <BlobPrefix><Name>dir//</Name></BlobPrefix>
    <Blob><Name Encoded="true">dir/ctl%01x</Name>
      <Properties><Last-Modified>Fri, 27 Nov 2026 02:00:00 GMT</Last-Modified>
        <Etag>"0x8DC2"</Etag><Content-Length>0</Content-Length><Content-MD5 /></Properties>
      <Metadata /></Blob>
    <BlobPrefix><Name>dir/sub/</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!abc</NextMarker>
</EnumerationResults>"#;

    #[test]
    fn parses_blobs_prefixes_metadata_and_marker() {
        let page = parse_list_page(PAGE).unwrap();
        assert_eq!(page.prefixes, vec!["dir//", "dir/sub/"]);
        assert_eq!(page.next_marker.as_deref(), Some("2!abc"));
        assert_eq!(page.blobs.len(), 2);
        let a = &page.blobs[0];
        assert_eq!(a.name, "dir/a & b.txt");
        assert_eq!((a.size, a.etag.as_str()), (12, "\"0x8DC1\""));
        assert_eq!(a.content_md5, Some(crate::digest::md5(b"hello world\n")));
        assert_eq!(
            a.xxh3().unwrap(),
            Some(crate::digest::xxh3_128(b"hello world\n"))
        );
        let b = &page.blobs[1];
        assert_eq!(b.name, "dir/ctl\u{1}x");
        assert_eq!(
            (b.size, b.etag.as_str(), b.content_md5),
            (0, "\"0x8DC2\"", None)
        );
        assert!(b.metadata.is_empty());
    }

    #[test]
    fn last_page_has_no_marker() {
        let page =
            parse_list_page("<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>")
                .unwrap();
        assert!(page.next_marker.is_none() && page.blobs.is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_response_body_parses_or_errors_without_panicking(body in ".{0,400}") {
            let _ = parse_list_page(&body);
            let xml = format!("<EnumerationResults><Blobs><Blob><Name>{body}</Name></Blob></Blobs></EnumerationResults>");
            let _ = parse_list_page(&xml);
        }
    }
}
